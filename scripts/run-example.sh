#!/usr/bin/env bash
# Builds tpkit-generate and tells a story with stories260K at TP 2 (two ranks as threads).
# Extra arguments go to tpkit-generate (e.g. --prompt "Lily" --temperature 0.8 --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" ca-certificates curl >/dev/null
fi

models=${TPKIT_MODELS_DIR:-../shared/models}
[ -f "$models/stories260K/stories260K.bin" ] || models=$(bash scripts/fetch-models.sh)

cmake -S . -B build-example -DCMAKE_BUILD_TYPE=Release -DTPKIT_BUILD_TESTS=OFF -DTPKIT_BUILD_BENCH=OFF \
  -DTPKIT_CUDA=OFF >/dev/null
cmake --build build-example -j2 --target tpkit-generate >/dev/null
./build-example/examples/tpkit-generate --model "$models/stories260K/stories260K.bin" --tp 2 \
  --prompt "Once upon a time" --max-tokens 256 "$@"
