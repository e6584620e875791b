# Two "hosts" for the tests: network namespaces joined by a veth pair. Source it from bash, then
#   two_hosts NS_A NS_B PREFIX     (PREFIX like 10.77.0: PREFIX.1 in NS_A, PREFIX.2 in NS_B)
# It exits 77 (skipped) where the namespaces cannot be made (root and ip are needed), and turns on
# `set -e`. Deleting the namespaces (ip netns del) is the caller's, on exit.
two_hosts() {
  local a=$1 b=$2 prefix=$3 veth_a=tpa$$ veth_b=tpb$$
  if ! command -v ip >/dev/null || [ "$(id -u)" != 0 ] || ! ip netns add "$a" 2>/dev/null; then
    echo "skipped: cannot create network namespaces here (needs root and ip)"
    exit 77
  fi
  set -e
  ip netns add "$b"
  ip link add "$veth_a" type veth peer name "$veth_b"
  ip link set "$veth_a" netns "$a"
  ip link set "$veth_b" netns "$b"
  ip -n "$a" addr add "$prefix.1/24" dev "$veth_a"
  ip -n "$b" addr add "$prefix.2/24" dev "$veth_b"
  for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
  ip -n "$a" link set "$veth_a" up
  ip -n "$b" link set "$veth_b" up
}
