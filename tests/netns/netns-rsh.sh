#!/usr/bin/env bash
# Open MPI's launch agent for the two-host test: "netns-rsh.sh HOST COMMAND..." runs COMMAND in
# HOST's network namespace, with its own host name (what ssh would do on a real second host).
host=$1
shift
case $host in
  "$TPKIT_NETNS_IP_B") ns=$TPKIT_NETNS_B name=tpkit-host-b ;;
  *) ns=$TPKIT_NETNS_A name=tpkit-host-a ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $name; $*"
