#!/usr/bin/env bash
# Builds tpkit-generate and tpkit-tokenize (Release, -march=native) and tells a story with stories260K at TP 2 (two
# ranks as threads). Extra arguments go to tpkit-generate (e.g. --prompt "Lily" --temperature 0.8
# --seed 7); `--help` lists them all.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-packages.sh cmake=cmake g++=g++ make=make /usr/include/CLI/CLI.hpp=libcli11-dev

models=${TPKIT_MODELS_DIR:-../shared/models}
if [ ! -f "$models/stories260K/stories260K.bin" ]; then
  bash scripts/ensure-packages.sh curl=curl /etc/ssl/certs/ca-certificates.crt=ca-certificates
  models=$(bash scripts/fetch-models.sh)
fi

cmake -S . -B build-example -DCMAKE_BUILD_TYPE=Release -DTPKIT_NATIVE=ON -DTPKIT_BUILD_TESTS=OFF \
  -DTPKIT_BUILD_BENCH=OFF -DTPKIT_CUDA=OFF >/dev/null
cmake --build build-example -j2 --target tpkit-generate tpkit-tokenize >/dev/null
./build-example/examples/tpkit-generate --model "$models/stories260K/stories260K.bin" --tp 2 \
  --prompt "Once upon a time" --max-tokens 256 "$@"
