#!/usr/bin/env bash
# tpkit-generate on a mixture-of-experts fixture: the same tokens at TP 1, with --moe-layout
# ep-dispatch at TP 2 (recording --expert-stats), and with --moe-layout ep at TP 2 under the
# placement tpkit-placement computes from those statistics (a redundant copy included).
# Usage: moe_placement_cli.sh TPKIT_GENERATE TPKIT_PLACEMENT MODEL_DIR WORK_DIR
set -euo pipefail
generate=$1 placement=$2 model=$3 work=$4
mkdir -p "$work"
run() { "$generate" --model "$model" --prompt-ids 5,17,99,3 --max-tokens 16 "$@"; }
one=$(run --tp 1)
dispatch=$(run --tp 2 --moe-layout ep-dispatch --expert-stats "$work/stats.json")
"$placement" --stats "$work/stats.json" --ranks 2 --redundant 1 -o "$work/placement.json"
grep -q '"layers"' "$work/placement.json"
placed=$(run --tp 2 --moe-layout ep --expert-placement "$work/placement.json" 2> "$work/placed.err")
grep -q "moe layout ep: 2 sparse layers" "$work/placed.err"
echo "tp 1:        $one"
echo "ep-dispatch: $dispatch"
echo "ep, placed:  $placed"
[[ -n "$one" && "$one" == "$dispatch" && "$one" == "$placed" ]]
# A placement for another group size is refused by name.
if run --tp 1 --moe-layout ep --expert-placement "$work/placement.json" 2> "$work/bad.err"; then exit 1; fi
grep -q "is for 2 ranks but the group has 1" "$work/bad.err"
