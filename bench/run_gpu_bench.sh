#!/usr/bin/env bash
# On a GPU machine: bench_gpu, then PyTorch on the same shapes where it is installed, in one
# run, into one Markdown file for docs/performance.md.
#   bash bench/run_gpu_bench.sh [BUILD_DIR] > gpu.md
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%d)"
echo
"$build/bench/bench_gpu"
python3 bench/torch_side_by_side.py || echo "torch_side_by_side.py failed (exit $?)"
