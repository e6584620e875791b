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
for tool in slurmctld slurmd srun munged munge; do
  if ! command -v "$tool" >/dev/null; then
    echo "skipped: $tool is not installed (Debian: slurm-wlm, munge)"
    exit 77
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "skipped: starting Slurm's daemons needs root"
  exit 77
fi
tmp=$(mktemp -d)
port=$((20000 + $$ % 20000))
host=$(hostname -s)
started_munge=""
cleanup() {
  local pids=""
  for f in "$tmp/slurmd.pid" "$tmp/slurmctld.pid"; do [ -f "$f" ] && pids+=" $(cat "$f")"; done
  for pid in $pids; do kill "$pid" 2>/dev/null; done
  [ -n "$started_munge" ] && pkill -x munged 2>/dev/null
  for _ in $(seq 50); do  # the daemons' exit, so that no test that follows meets them
    alive=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=yes; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
if ! munge -n >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null
  [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; } >/dev/null 2>&1
  runuser -u munge -- munged 2>/dev/null || munged --force || { echo "FAILED: munged does not start"; exit 1; }
  started_munge=yes
  sleep 1
fi
mkdir -p "$tmp/spool" "$tmp/state"
export SLURM_CONF=$tmp/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=tpkit$$
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=tpkit Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
CONF
slurmctld -i || { echo "FAILED: slurmctld does not start"; cat "$tmp/slurmctld.log"; exit 1; }
slurmd || { echo "FAILED: slurmd does not start"; cat "$tmp/slurmd.log"; exit 1; }
for _ in $(seq 50); do
  sinfo -h -o %T 2>/dev/null | grep -qx idle && break
  sleep 0.2
done
sinfo -h -o %T | grep -qx idle || { echo "FAILED: the node did not come up"; sinfo; cat "$tmp/slurmd.log"; exit 1; }
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
