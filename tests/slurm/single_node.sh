#!/usr/bin/env bash
# The engine under Slurm: starts a private one-node Slurm cluster (its own config, spool
# directories and ports; munged if none runs), then, through srun with PMIx:
#   * the MPI engine tests at 4 ranks (tests/mpi/test_mpi_engine.cpp),
#   * tpkit-generate --tp 2 --pp 2, whose story must be stdout,
#   * the torchrun-style bootstrap reading Slurm's variables (SLURM_PROCID, SLURM_NTASKS):
#     bootstrap_probe at 3 ranks, every rank seeing rank 0's id.
# Needs root and Slurm's daemons (slurm-wlm, munge); exits 77 (skipped) without them.
#   single_node.sh TEST_MPI_ENGINE TPKIT_GENERATE MODEL.bin BOOTSTRAP_PROBE
set -uo pipefail
engine_test=$1 generate=$2 model=$3 probe=$4
. "$(dirname "$0")/cluster.sh"
srun=(srun --overcommit --mpi=pmix --time=5)
status=0

echo "== the MPI engine tests, 4 ranks under srun"
timeout 240 "${srun[@]}" -n 4 "$engine_test" || { echo "FAILED: test_mpi_engine under srun"; status=1; }

echo "== tpkit-generate --tp 2 --pp 2 under srun"
story="Once upon a time, there was a little girl named Lily"
timeout 120 "${srun[@]}" -n 4 "$generate" --model "$model" --tp 2 --pp 2 --max-tokens 24 \
  --prompt "Once upon a time" > "$tmp/out" 2> "$tmp/err"
cat "$tmp/err" "$tmp/out"
grep -q "$story" "$tmp/out" || { echo "FAILED: the story is not on stdout"; status=1; }

echo "== the torchrun-style bootstrap from Slurm's variables, 3 ranks"
MASTER_ADDR=127.0.0.1 MASTER_PORT=$((port + 2)) timeout 60 "${srun[@]}" -n 3 "$probe" > "$tmp/probe" 2>&1
cat "$tmp/probe"
[ "$(grep -c 'id id-from-rank-0' "$tmp/probe")" = 3 ] || { echo "FAILED: bootstrap under srun"; status=1; }
exit $status
