#!/usr/bin/env bash
# tpkit-router across two "hosts": two network namespaces joined by a veth pair, a tpkit-serve
# replica on each (TP 2, threads), the router on host a. Requests through the router reach both
# hosts and answer as a replica does alone; when host b's replica is killed mid-load, nothing fails
# and the router reports it unhealthy. Needs root (ip netns); exits 77 (skipped) where it cannot
# create the namespaces.
#   router_two_hosts.sh TPKIT_SERVE TPKIT_ROUTER MODEL.bin
set -uo pipefail
serve=$1 router=$2 model=$3
ns_a=tpkit-ra-$$ ns_b=tpkit-rb-$$
tmp=$(mktemp -d)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns_a" 2>/dev/null; ip netns del "$ns_b" 2>/dev/null; rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/hosts.sh"
two_hosts "$ns_a" "$ns_b" 10.78.0

listening() {  # LOG PID: the URL a server printed
  for _ in $(seq 600); do
    grep -q '^listening on ' "$1" && { sed -n 's/^listening on //p' "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "no server in $1" >&2; cat "${1%.out}.err" >&2; return 1
}
start() {  # NAMESPACE NAME COMMAND...: starts it, sets $url
  local ns=$1 name=$2
  shift 2
  ip netns exec "$ns" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err" &
  pids+=($!)
  url=$(listening "$tmp/$name.out" $!)
}
start "$ns_a" replica_a "$serve" --model "$model" --tp 2 --host 10.78.0.1 --port 0 --served-model-name stories
url_a=$url pid_a=${pids[-1]}
start "$ns_b" replica_b "$serve" --model "$model" --tp 2 --host 10.78.0.2 --port 0 --served-model-name stories
url_b=$url pid_b=${pids[-1]}
start "$ns_a" router "$router" --host 10.78.0.1 --port 0 --policy round_robin --worker "$url_a" --worker "$url_b" \
  --health-check-interval 0.5 --health-check-timeout 0.25
url_r=$url
echo "router $url_r; replicas $url_a (host a), $url_b (host b)"

# The client (on host a): completions through the router and directly; the answers must agree.
client() {
  ip netns exec "$ns_a" python3 - "$@" <<'PY'
import json, sys, urllib.request
router, direct, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def complete(base, prompt):
    body = json.dumps({"prompt": prompt, "max_tokens": 40, "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["text"]
prompts = ["Once upon a time", "Lily and Tom", "The little dog", "The sun was"]
for k in range(count):
    p = prompts[k % len(prompts)]
    got, want = complete(router, p), complete(direct, p)
    assert got == want, (p, got, want)
stats = json.load(urllib.request.urlopen(router + "/stats", timeout=10))
print(json.dumps({w["url"]: [w["served"], w["health"]] for w in stats["workers"]}))
PY
}
echo "== 8 requests through the router, compared with replica a's own answers"
out=$(client "$url_r" "$url_a" 8)
echo "$out"
grep -q "\"$url_a\": \[4, \"healthy\"\]" <<<"$out"
grep -q "\"$url_b\": \[4, \"healthy\"\]" <<<"$out"
echo "== host b's replica dies: the router answers every request, and marks it unhealthy"
kill -9 "$pid_b"
out=$(client "$url_r" "$url_a" 8)
sleep 2
out=$(client "$url_r" "$url_a" 4)
echo "$out"
grep -q "\"$url_b\": \[[0-9]*, \"unhealthy\"\]" <<<"$out"
echo "router across two hosts: passed"
exit 0
