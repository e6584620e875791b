#!/usr/bin/env bash
# The serving measurements of docs/performance.md, on a random model of the stories110M shape
# (768 wide, 12 layers, 32000 tokens; context 4096 here, for the 2k-token prompts) with the
# Mistral tokenizer (32000 ids) for text:
#   1. server efficiency: HTTP output tokens/s at 16 concurrent streams / the offline engine's
#      tokens/s on the same requests
#   2. fairness: TTFT of short requests alone, and while 2k-token prompts prefill: chunked with
#      the long prefill capped per step (--long-prefill-token-threshold 16 and 32), chunked first
#      come first served (--max-num-batched-tokens 64), and not chunked (2048: a whole prompt)
#   3. prefix caching: TTFT of requests sharing a 1k-token prefix, cache on and off
#   4. TP scaling: throughput at TP 1 and TP 2 (threads), and TP 2 over MPI
# Usage: bash bench/run_serving.sh [OUT_DIR]   (results as JSON in OUT_DIR, default /tmp/tpkit-serving;
# TPKIT_BENCH_ONLY=24 takes measurements 2 and 4 only)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/tpkit-serving}
mkdir -p "$out"
build=${TPKIT_BUILD_DIR:-build-bench}
models=${TPKIT_MODELS_DIR:-../shared/models}
tokenizer=$models/tokenizers/mistral-v1
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTPKIT_NATIVE=ON -DTPKIT_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j2 --target tpkit-serve bench_serving make_random_model >/dev/null
model=$out/random110m.bin
only=${TPKIT_BENCH_ONLY:-1234}  # which measurements to take
[ -f "$model" ] || "$build/bench/make_random_model" "$model" 768 2048 12 12 12 32000 4096
serve="$build/serve/tpkit-serve --model $model --tokenizer $tokenizer --served-model-name m --port 0"
bench="$build/bench/bench_serving --model m"

server_pid=""
start_server() {  # start_server [launcher...] -- [options]: sets $url
  local launcher=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do launcher+=("$1"); shift; done
  shift
  "${launcher[@]}" $serve "$@" > "$out/server.out" 2> "$out/server.err" &
  server_pid=$!
  for _ in $(seq 600); do
    url=$(grep -o 'http://[^ ]*' "$out/server.out" 2>/dev/null || true)
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  echo "the server did not start" >&2; cat "$out/server.err" >&2; exit 1
}
stop_server() {  # under mpirun SIGTERM goes to world rank 0, which drains and stops the job
  local target=$server_pid p
  for p in $(pgrep -P "$server_pid" || true); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=0 && target=$p
  done
  kill -TERM "$target" 2>/dev/null || true
  wait "$server_pid" || true
}

if [[ $only == *1* ]]; then
echo "== 1. server efficiency (16 streams, 64 requests of 128 + 128 tokens)"
common="--num-requests 64 --input-len 128 --output-len 128 --seed 1"
start_server -- --tp 2 --max-num-seqs 16
$bench --url "$url" $common --concurrency 16 --json "$out/efficiency_http.json"
stop_server
$bench --offline "$model" --tokenizer "$tokenizer" --tp 2 --max-num-seqs 16 $common \
  --json "$out/efficiency_offline.json"

fi
if [[ $only == *2* ]]; then
echo "== 2. fairness (short: 32 + 4 tokens at concurrency 2; long: 2000-token prompts, 1 in flight)"
short="--num-requests 8 --input-len 32 --output-len 4 --concurrency 2 --seed 2"
long="--background-concurrency 1 --background-input-len 2000 --background-output-len 1"
start_server -- --tp 2
$bench --url "$url" $short --json "$out/fair_alone.json"
stop_server
for cap in 16 32; do  # chunked, a long prefill capped at $cap tokens a step
  start_server -- --tp 2 --long-prefill-token-threshold $cap
  $bench --url "$url" $short $long --json "$out/fair_capped$cap.json"
  stop_server
done
start_server -- --tp 2 --max-num-batched-tokens 64  # chunked, first come first served
$bench --url "$url" $short $long --json "$out/fair_chunked64.json"
stop_server
start_server -- --tp 2 --max-num-batched-tokens 2048  # not chunked: a whole prompt in one step
$bench --url "$url" $short $long --json "$out/fair_unchunked.json"
stop_server

fi
if [[ $only == *3* ]]; then
echo "== 3. prefix caching (a 1024-token shared prefix + 32 tokens, 8 tokens out, one at a time)"
prefix="--num-requests 6 --prefix-len 1024 --input-len 32 --output-len 8 --concurrency 1 --seed 3"
start_server -- --tp 2
$bench --url "$url" $prefix --json "$out/prefix_on.json"
stop_server
start_server -- --tp 2 --no-enable-prefix-caching
$bench --url "$url" $prefix --json "$out/prefix_off.json"
stop_server

fi
if [[ $only == *4* ]]; then
echo "== 4. TP scaling (16 streams, 32 requests of 64 + 64 tokens)"
scale="--num-requests 32 --input-len 64 --output-len 64 --concurrency 16 --seed 4"
for tp in 1 2; do
  start_server -- --tp $tp --max-num-seqs 16
  $bench --url "$url" $scale --json "$out/tp${tp}_threads.json"
  stop_server
done
if command -v mpirun >/dev/null; then
  root=""; [ "$(id -u)" -eq 0 ] && root=--allow-run-as-root
  start_server mpirun $root --oversubscribe -np 2 -- --tp 2 --max-num-seqs 16
  $bench --url "$url" $scale --json "$out/tp2_mpi.json"
  stop_server
fi
fi
echo "results in $out"
