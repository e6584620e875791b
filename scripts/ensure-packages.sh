#!/usr/bin/env bash
# ensure-packages.sh COMMAND_OR_FILE=PACKAGE ...: installs each Debian PACKAGE whose command
# (or, for a path, file) is missing, with apt-get as root or through sudo.
set -euo pipefail
need=()
for pair in "$@"; do
  probe=${pair%%=*} package=${pair#*=}
  if [[ $probe == /* ]]; then [ -e "$probe" ] || need+=("$package")
  else command -v "$probe" >/dev/null || need+=("$package"); fi
done
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
