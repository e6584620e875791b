# A private one-node Slurm cluster for tests (its own config, spool directories and ports; munged
# if none runs), torn down when the sourcing script exits. Source it from bash:
#   . "$(dirname "$0")/cluster.sh"     # sets tmp (a scratch folder), port (5 free ports from it),
#                                      # SLURM_CONF; exits 77 (skipped) without Slurm, munge or root
for tool in slurmctld slurmd srun sbatch munged munge; do
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
  # Jobs first: a job's processes would outlive the daemons.
  squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null && sleep 1
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
mkdir -p "$tmp/spool" "$tmp/state" "$tmp/pmix"
# PMIx's client folders in this cluster's scratch folder: job ids start at 1 in every private
# cluster, so folders in /tmp named by job and step would collide with an earlier run's.
echo "PMIxCliTmpDirBase=$tmp/pmix" > "$tmp/mpi.conf"
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
