#!/usr/bin/env bash
# Fetches stories260K (llama2.c format, MIT, Andrej Karpathy) from its public home,
# karpathy/tinyllamas on Hugging Face, into models/stories260K/, checks the files' sha256, and
# prints the models folder. Used only when ../shared/models is not there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=models/stories260K
base=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K
mkdir -p "$dest"
fetch() {
  if command -v curl >/dev/null; then curl -fsSL -o "$2" "$1"; else wget -q -O "$2" "$1"; fi
}
for f in stories260K.bin tok512.bin; do
  [ -s "$dest/$f" ] || fetch "$base/$f" "$dest/$f" >&2
done
sha256sum -c - >&2 <<SUMS
b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696  $dest/stories260K.bin
037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312  $dest/tok512.bin
SUMS
echo "$PWD/models"
