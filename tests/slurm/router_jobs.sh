#!/usr/bin/env bash
# deploy/slurm's job scripts on a private one-node Slurm cluster (tests/slurm/cluster.sh): the
# router job, then a job array of 2 replicas, each TP 2 as 2 processes under srun with PMIx, which
# register themselves with the router; requests through the router reach both and answer as
# tpkit-generate does; cancelling the replicas' jobs removes them from the router. Needs root,
# Slurm and munge; exits 77 (skipped) without them.
#   router_jobs.sh SOURCE_DIR BUILD_DIR MODEL.bin TPKIT_GENERATE
set -uo pipefail
source_dir=$1 build=$2 model=$3 generate=$4
. "$(dirname "$0")/cluster.sh"
export TPKIT_SHARED=$tmp/run TPKIT_BIN=$build MODEL=$model TP=2 PP=1 SERVED_MODEL_NAME=stories
export ROUTER_PORT=$((port + 3)) REPLICA_PORT=$((port + 4)) ROUTER_POLICY=round_robin
cd "$tmp"
fail() {
  echo "FAILED: $*"; squeue
  for f in "$tmp"/*.out "$TPKIT_SHARED"/*.out "$tmp/slurmd.log"; do echo "-- $f"; tail -8 "$f"; done
  exit 1
}
healthy() { curl -s "$router/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["healthy"])' 2>/dev/null; }
# Waits until the router has $1 healthy workers (false after 2 minutes, or when no replica job runs).
wait_healthy() {
  for _ in $(seq 240); do
    [ -z "$router" ] && [ -s "$TPKIT_SHARED/router.url" ] && router=$(cat "$TPKIT_SHARED/router.url")
    [ -n "$router" ] && [ "$(healthy)" = "$1" ] && return 0
    sleep 0.5
  done
  return 1
}
router_job=$(sbatch --parsable --output="$tmp/router-%j.out" "$source_dir/deploy/slurm/router.sbatch") || fail "sbatch router"
router=""
# The replicas one after the other, each seen registered before the next starts.
replica_jobs=()
for task in 0 1; do
  replica_jobs+=("$(sbatch --parsable --array=$task --ntasks=2 --output="$tmp/replica-%A-%a.out" \
    "$source_dir/deploy/slurm/replica.sbatch")") || fail "sbatch replica $task"
  wait_healthy $((task + 1)) || fail "replica $task did not register"
done
echo "router job $router_job, replica jobs ${replica_jobs[*]}"
echo "== 4 requests through the router at $router"
want=$("$generate" --model "$model" --prompt "Once upon a time" --max-tokens 24 --temperature 0 2>/dev/null)
for k in 1 2 3 4; do
  got=$(curl -s "$router/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}' |
    python3 -c 'import json,sys; print("Once upon a time" + json.load(sys.stdin)["choices"][0]["text"])')
  [ "$got" = "$want" ] || fail "request $k: '$got', want '$want'"
done
curl -s "$router/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print({w["url"]: w["served"] for w in s["workers"]})
sys.exit(sorted(w["served"] for w in s["workers"]) != [2, 2])' || fail "the requests did not reach both replicas"
echo "== the replicas' jobs are cancelled: they leave the router"
scancel "${replica_jobs[@]}"
for _ in $(seq 120); do
  [ "$(curl -s "$router/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["workers"])')" = 0 ] && break
  sleep 0.5
done
curl -s "$router/stats" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["totals"]["workers"] != 0)' ||
  fail "the cancelled replicas are still registered"
scancel "$router_job"
echo "Slurm jobs: passed"
