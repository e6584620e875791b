#!/usr/bin/env bash
# Starts N tpkit-serve replicas of one model on this machine (each a TP x PP group: threads, or
# processes under mpirun with --mpirun) and tpkit-router in front of them, then waits. Ctrl-C or
# SIGTERM stops them all (the router first, so that it drains). Each replica's and the router's
# output goes to LOGDIR.
#
#   scripts/serve-replicas.sh --model M --replicas 3 [--tp 2 --pp 1] [--mpirun]
#       [--port 8000] [--policy least_loaded] [--bin build] [--logdir DIR]
#       [-- extra tpkit-serve options] [--router-args "extra tpkit-router options"]
#
# Prints the router's "listening on http://HOST:PORT" line once every replica is up.
set -euo pipefail

model="" replicas=2 tp=1 pp=1 mpirun=0 port=8000 policy=least_loaded bin=build logdir="" router_args=""
serve_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --tp) tp=$2; shift 2 ;;
    --pp) pp=$2; shift 2 ;;
    --mpirun) mpirun=1; shift ;;
    --port) port=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --logdir) logdir=$2; shift 2 ;;
    --router-args) router_args=$2; shift 2 ;;
    --) shift; serve_args=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "serve-replicas.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] || { echo "serve-replicas.sh: --model is required" >&2; exit 2; }
serve=$bin/serve/tpkit-serve router=$bin/router/tpkit-router
for b in "$serve" "$router"; do
  [ -x "$b" ] || { echo "serve-replicas.sh: $b is not built (cmake --build $bin --target tpkit-serve tpkit-router)" >&2; exit 2; }
done
logdir=${logdir:-$(mktemp -d /tmp/tpkit-replicas.XXXXXX)}
mkdir -p "$logdir"

pids=()
stop() {
  trap - INT TERM EXIT
  [ -n "${router_pid:-}" ] && kill -TERM "$router_pid" 2>/dev/null && wait "$router_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# "listening on http://HOST:PORT" from the log of process $2, within a minute.
url_from() {
  for _ in $(seq 600); do
    if grep -q '^listening on ' "$1" 2>/dev/null; then sed -n 's/^listening on //p' "$1" | head -1; return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "serve-replicas.sh: $1 shows no 'listening on' line:" >&2
  tail -5 "${1%.out}.err" >&2
  return 1
}

workers=()
for i in $(seq "$replicas"); do
  cmd=("$serve" --model "$model" --port 0 --tp "$tp" --pp "$pp" "${serve_args[@]}")
  if [ "$mpirun" = 1 ]; then
    cmd=(mpirun -np $((tp * pp)) --oversubscribe "${cmd[@]}")
  else
    # Threads: one replica's ranks share the cores with the others'.
    cores=$(nproc)
    per=$(( cores / replicas / (tp * pp) )); [ "$per" -ge 1 ] || per=1
    cmd+=(--threads-per-rank "$per")
  fi
  "${cmd[@]}" > "$logdir/replica$i.out" 2> "$logdir/replica$i.err" &
  pids+=($!)
done
for i in $(seq "$replicas"); do workers+=(--worker "$(url_from "$logdir/replica$i.out" "${pids[$((i - 1))]}")"); done
# shellcheck disable=SC2086  # router_args is a list of words
"$router" --port "$port" --policy "$policy" "${workers[@]}" $router_args > "$logdir/router.out" 2> "$logdir/router.err" &
router_pid=$!
echo "$(url_from "$logdir/router.out" "$router_pid" | sed 's/^/listening on /') ($replicas replicas of TP $tp x PP $pp; logs in $logdir)"
wait "$router_pid"
