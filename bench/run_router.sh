#!/usr/bin/env bash
# The router measurements of docs/performance.md:
#   1. overhead: what tpkit-router adds to a request against a trivial upstream, side by side with
#      the direct path (bench_router)
#   2. shared prefixes: 3 replicas, 8 groups of requests each sharing a 384-token prefix, KV caches
#      too small to hold every group's prefix on every replica: prefix-cache hit rate and TTFT with
#      prefix_aware and with round_robin
#   3. scaling: output tokens/s through the router with 1, 2 and 3 replicas
# Replicas are a random model of stories15M's shape (288 wide, 6 layers, 32000 tokens, context
# 1024) with the Mistral tokenizer, one rank and one thread each.
# Usage: bash bench/run_router.sh [OUT_DIR]   (JSON results in OUT_DIR, default /tmp/tpkit-router;
# TPKIT_BENCH_ONLY=23 takes measurements 2 and 3 only)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/tpkit-router}
mkdir -p "$out"
build=${TPKIT_BUILD_DIR:-build-bench}
only=${TPKIT_BENCH_ONLY:-123}
models=${TPKIT_MODELS_DIR:-../shared/models}
tokenizer=$models/tokenizers/mistral-v1  # 32000 ids, for text
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTPKIT_NATIVE=ON -DTPKIT_BUILD_TESTS=OFF -DTPKIT_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j2 --target tpkit-serve tpkit-router bench_serving bench_router make_random_model >/dev/null
model=$out/random15m.bin
[ -f "$model" ] || "$build/bench/make_random_model" "$model" 288 768 6 6 6 32000 1024

if [[ $only == *1* ]]; then
  echo "== 1. router overhead (trivial upstream)"
  "$build/bench/bench_router" --requests 2000 --clients 8 --seconds 3 --json "$out/overhead.json"
fi

group=""
start_group() {  # start_group REPLICAS POLICY [tpkit-serve options...]: sets $url
  local n=$1 policy=$2
  shift 2
  scripts/serve-replicas.sh --bin "$build" --model "$model" --replicas "$n" --port 0 --policy "$policy" \
    --logdir "$out/logs-$n-$policy" -- --served-model-name m --tokenizer "$tokenizer" "$@" > "$out/group.out" 2>&1 &
  group=$!
  for _ in $(seq 600); do
    url=$(grep -o 'http://[^ ]*' "$out/group.out" 2>/dev/null || true)
    [ -n "$url" ] && return 0
    sleep 0.1
  done
  echo "the replicas did not start" >&2; cat "$out/group.out" >&2; exit 1
}
stop_group() { kill -TERM "$group" 2>/dev/null || true; wait "$group" 2>/dev/null || true; }
trap stop_group EXIT

if [[ $only == *2* ]]; then
  for policy in prefix_aware round_robin; do
    echo "== 2. shared prefixes, 3 replicas, $policy"
    # 128 blocks of 16 tokens: 2 running requests (28 blocks each) leave room for 3 of the 8 prefixes.
    start_group 3 "$policy" --num-kv-blocks 128 --block-size 16 --max-num-seqs 4
    "$build/bench/bench_serving" --url "$url" --model m --num-requests 192 --concurrency 6 --prefix-len 384 \
      --prefix-groups 8 --input-len 32 --output-len 32 --json "$out/prefix-$policy.json"
    stop_group
  done
fi

if [[ $only == *3* ]]; then
  for n in 1 2 3; do
    echo "== 3. scaling, $n replica(s)"
    start_group "$n" least_loaded --max-num-seqs 8
    "$build/bench/bench_serving" --url "$url" --model m --num-requests 96 --concurrency 12 --input-len 128 \
      --output-len 128 --json "$out/replicas-$n.json"
    stop_group
  done
fi
