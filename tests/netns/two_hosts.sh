#!/usr/bin/env bash
# The MPI engine across two "hosts": two network namespaces joined by a veth pair, 2 ranks in
# each, launched by mpirun through an agent that enters the other namespace (as ssh would
# reach another machine). Needs root (ip netns, unshare); exits 77 (skipped) where it cannot
# create them.
#   two_hosts.sh TEST_MPI_ENGINE TPKIT_GENERATE MODEL.bin BOOTSTRAP_PROBE
set -uo pipefail
engine_test=$1 generate=$2 model=$3 probe=$4
here=$(cd "$(dirname "$0")" && pwd)
export TPKIT_NETNS_A=tpkit-a-$$ TPKIT_NETNS_B=tpkit-b-$$ TPKIT_NETNS_IP_B=10.77.0.2
tmp=$(mktemp -d)
cleanup() { ip netns del "$TPKIT_NETNS_A" 2>/dev/null; ip netns del "$TPKIT_NETNS_B" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
if ! command -v unshare >/dev/null; then
  echo "skipped: unshare is missing"
  exit 77
fi
. "$here/hosts.sh"
two_hosts "$TPKIT_NETNS_A" "$TPKIT_NETNS_B" 10.77.0

# Every byte between the hosts goes over the veth pair (TCP); ranks on one host may share memory.
mpirun=(mpirun --allow-run-as-root --oversubscribe --mca plm_rsh_agent "$here/netns-rsh.sh"
        --mca btl tcp,vader,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24
        --host 10.77.0.1:2,10.77.0.2:2 -np 4)
on_host_a() { ip netns exec "$TPKIT_NETNS_A" unshare --uts sh -c 'hostname tpkit-host-a; exec "$@"' sh "$@"; }

echo "== where the ranks run"
on_host_a "${mpirun[@]}" sh -c 'echo "world rank $OMPI_COMM_WORLD_RANK on $(hostname)"' | sort
echo "== the MPI engine tests, 4 ranks over 2 hosts"
on_host_a "${mpirun[@]}" "$engine_test"
echo "== tpkit-generate, TP 2 within each host x PP 2 across the hosts"
out=$(on_host_a "${mpirun[@]}" "$generate" --model "$model" --tp 2 --pp 2 --max-tokens 24 --prompt "Once upon a time")
echo "$out"
grep -q "Once upon a time, there was a little girl named Lily" <<<"$out"
echo "== a rank on host b stalls: the others name it within the timeout"
set +e
out=$(on_host_a "${mpirun[@]}" "$generate" --model "$model" --tp 2 --pp 2 --max-tokens 24 --prompt "Once" \
      --comm-timeout-ms 1000 --fault stall:2:60:30000 2>&1)
set -e
echo "$out" | grep "tpkit-generate (world rank" | head -3
grep -q "world rank(s) 2 did not respond" <<<"$out"
echo "== torchrun-style bootstrap, no launcher: ranks 0, 1 on host a, ranks 2, 3 on host b"
on_host() {  # NAMESPACE HOSTNAME RANK WORLD_SIZE: one probe process
  ip netns exec "$1" unshare --uts env MASTER_ADDR=10.77.0.1 MASTER_PORT=29533 RANK="$3" WORLD_SIZE="$4" \
    sh -c "hostname $2; exec $probe"
}
pids=()
for r in 0 1; do on_host "$TPKIT_NETNS_A" tpkit-host-a $r 4 >"$tmp/probe$r" & pids+=($!); done
for r in 2 3; do on_host "$TPKIT_NETNS_B" tpkit-host-b $r 4 >"$tmp/probe$r" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
cat "$tmp"/probe*
for r in 0 1 2 3; do
  grep -q "rank $r of 4: tpkit-host-a tpkit-host-a tpkit-host-b tpkit-host-b id id-from-rank-0" "$tmp/probe$r"
done
echo "== the same with rank 3 (host b) missing: every rank that joined names it"
pids=()
for r in 0 1; do on_host "$TPKIT_NETNS_A" tpkit-host-a $r 4 >"$tmp/probe$r" & pids+=($!); done
on_host "$TPKIT_NETNS_B" tpkit-host-b 2 4 >"$tmp/probe2" & pids+=($!)
for p in "${pids[@]}"; do wait "$p" || true; done
cat "$tmp/probe0" "$tmp/probe1" "$tmp/probe2"
for r in 0 1 2; do grep -q "rank(s) 3 of 4 did not connect within 2000 ms" "$tmp/probe$r"; done
echo "two hosts: passed"
