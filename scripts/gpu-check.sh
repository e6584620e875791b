#!/usr/bin/env bash
# The one prepared GPU check (docs/performance.md, "The GPU check").
#
#   bash scripts/gpu-check.sh prepare
#       On the CPU machine: builds every CUDA test program, bench_gpu and tpkit-generate (CUDA,
#       sm_90, Release) and packs them, stripped, with the stories260K models and the CLI11
#       headers into gpu-check/ (git-ignored), then prints its size. Fails when gpu-check/ and the
#       working tree together would not fit the 64 MiB a device call carries.
#
#   bash scripts/gpu-check.sh run OUTDIR
#       On the GPU machine, from the repository root, with gpu-check/ carried: prints nvidia-smi,
#       runs every CUDA test program, tpkit-generate --device cuda at TP 1, 2 and 4 (checked
#       against the golden story), bench_gpu, then compute-sanitizer memcheck and racecheck over
#       the kernel tests (reduced sizes), each step under a timeout within one deadline
#       (TPKIT_GPU_CHECK_SECONDS, 450 by default). Writes OUTDIR/report.md and the logs (at most
#       8 files). Where the carried programs cannot load there (other system libraries), it
#       rebuilds them from the working tree first. Without a CUDA device it says so and exits 77.
#
# The device call: run(command="bash scripts/gpu-check.sh run $OUT", carry=["gpu-check"],
# timeout_s=600).
set -uo pipefail
cd "$(dirname "$0")/.."
pack=${TPKIT_GPU_CHECK_PACK:-gpu-check}
case $pack in /*) ;; *) pack=$PWD/$pack ;; esac
limit_bytes=$((64 * 1024 * 1024))

programs_tests="test_cuda_dtype test_fused_kernels test_sampling_cuda test_paged_attention_cuda test_paged_prefill_cuda
test_cuda_layers test_device_mock test_cuda_moe test_cuda_engine test_cuda_moe_engine test_nccl test_nccl_engine"
kernel_tests="test_cuda_dtype test_fused_kernels test_sampling_cuda test_paged_attention_cuda test_paged_prefill_cuda
test_cuda_moe"
story="Once upon a time, there was a little girl named Lily"

prepare() {
  set -e
  local models=${TPKIT_MODELS_DIR:-../shared/models}
  local build=${TPKIT_GPU_CHECK_BUILD:-build-gpu-check}
  if [ ! -f "$models/stories260K/stories260K.bin" ] || [ ! -f "$models/stories260K_hf/model.safetensors" ]; then
    echo "gpu-check prepare: no stories260K in $models (set TPKIT_MODELS_DIR)" >&2
    exit 1
  fi
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  bash scripts/ensure-packages.sh cmake=cmake g++=g++ make=make /usr/include/CLI/CLI.hpp=libcli11-dev
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTPKIT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DTPKIT_CUDA_TESTS_ONLY=ON -DTPKIT_BUILD_BENCH=ON -DTPKIT_BUILD_EXAMPLES=ON \
    -DTPKIT_MODELS_DIR="$models" >/dev/null
  # shellcheck disable=SC2086
  cmake --build "$build" -j2 --target $programs_tests bench_gpu tpkit-generate
  rm -rf "$pack"
  mkdir -p "$pack/bin" "$pack/models" "$pack/cli11"
  local p
  for p in $programs_tests; do cp "$build/tests/cuda/$p" "$pack/bin/"; done
  cp "$build/bench/bench_gpu" "$build/examples/tpkit-generate" "$pack/bin/"
  strip "$pack"/bin/*
  cp -r "$models/stories260K" "$models/stories260K_hf" "$pack/models/"
  chmod -R u+w "$pack/models"
  cp -r /usr/include/CLI "$pack/cli11/"
  {
    echo "commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(nvcc --version | tail -1)"
  } >"$pack/manifest.txt"
  local tree packed
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  packed=$(du -sb "$pack" | cut -f1)
  echo "gpu-check/: $((packed / 1048576)) MiB; with the working tree ($((tree / 1048576)) MiB): $(((packed + tree) / 1048576)) MiB of the 64 MiB a device call carries"
  if [ $((packed + tree)) -gt $limit_bytes ]; then
    echo "gpu-check prepare: too large to carry; nothing fits the device call" >&2
    exit 1
  fi
  echo "ready: run(command=\"bash scripts/gpu-check.sh run \$OUT\", carry=[\"gpu-check\"], timeout_s=600)"
}

# ---------------------------------------------------------------------------------------------
# The run half: no `set -e`; every step is timed, logged and reported, and none can hang.

start=$(date +%s)
deadline_seconds=${TPKIT_GPU_CHECK_SECONDS:-450}
remaining() { echo $((start + deadline_seconds - $(date +%s))); }

# step NAME CAP COMMAND...: runs COMMAND under min(CAP, time left) seconds, appends its output to
# the log, and adds a report row. Returns the command's status (124: timed out).
step() {
  local name=$1 cap=$2
  shift 2
  local left
  left=$(remaining)
  [ "$cap" -gt "$left" ] && cap=$left
  if [ "$cap" -le 5 ]; then
    echo "| $name | not run: the deadline was reached | |" >>"$report_rows"
    return 125
  fi
  local t0 t1 rc
  t0=$(date +%s%N)
  {
    echo
    echo "=== $name (timeout ${cap}s): $*"
  } >>"$log"
  timeout --kill-after=5 "$cap" "$@" >>"$log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  local ms=$(((t1 - t0) / 1000000)) took verdict
  took="$((ms / 1000)).$(((ms % 1000) / 100))"
  case $rc in
    0) verdict="passed" ;;
    77) verdict="skipped" ;;
    124 | 137) verdict="**timed out** after ${cap} s" ;;
    *) verdict="**FAILED** (exit $rc)" ;;
  esac
  echo "| $name | $verdict | ${took} s |" >>"$report_rows"
  echo "$name: $verdict (${took} s)"
  return $rc
}

# The directories holding the CUDA libraries the programs link (the toolkit's, or the NVIDIA
# Python wheels' on images that have those instead).
library_path() {
  local dirs="" d lib
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && dirs="$dirs:$d"
  done
  local found
  found=$(timeout 30 find /usr /opt \( -name libcublasLt.so.13 -o -name libnccl.so.2 -o -name libcudart.so.13 \) \
    2>/dev/null)
  for d in $found; do dirs="$dirs:$(dirname "$d")"; done
  echo "${dirs#:}"
}

# Whether every carried program finds its libraries here.
programs_load() {
  local p missing=0
  for p in "$bin"/*; do
    if ldd "$p" 2>&1 | grep -q "not found"; then
      echo "$(basename "$p") cannot load here:" >>"$log"
      ldd "$p" 2>&1 | grep "not found" >>"$log"
      missing=1
    fi
  done
  return $missing
}

# (Run in a child bash under `step`: it leaves the programs in /tmp/tpkit-gpu-check-bin.)
rebuild_here() {
  local build=/tmp/tpkit-gpu-check-build generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  cmake -S . -B $build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTPKIT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DTPKIT_CUDA_TESTS_ONLY=ON -DTPKIT_BUILD_BENCH=ON -DTPKIT_BUILD_EXAMPLES=ON \
    -DTPKIT_MODELS_DIR="$pack/models" -DTPKIT_CLI11_INCLUDE_DIR="$pack/cli11" &&
    # shellcheck disable=SC2086
    cmake --build $build -j "$(nproc)" --target $programs_tests bench_gpu tpkit-generate || return 1
  mkdir -p /tmp/tpkit-gpu-check-bin
  local p
  for p in $programs_tests; do cp "$build/tests/cuda/$p" /tmp/tpkit-gpu-check-bin/; done
  cp "$build/bench/bench_gpu" "$build/examples/tpkit-generate" /tmp/tpkit-gpu-check-bin/
}

# tpkit-generate on one GPU at TP n; passes when the greedy story is on stdout.
generate_at() {
  local tp=$1 out
  out=$("$bin/tpkit-generate" --device cuda --tp "$tp" --max-tokens 24 --prompt "Once upon a time" \
    --model "$pack/models/stories260K/stories260K.bin" --gpu-memory-utilization 0.3 2>&1)
  local rc=$?
  echo "$out"
  [ $rc -eq 0 ] || return $rc
  grep -q "$story" <<<"$out" || {
    echo "the golden story is not in the output"
    return 1
  }
}

run() {
  local outdir=${1:?usage: gpu-check.sh run OUTDIR}
  mkdir -p "$outdir"
  log=$outdir/gpu-check.log
  report=$outdir/report.md
  : >"$log"
  bin=$pack/bin
  if [ ! -d "$bin" ]; then
    echo "gpu-check run: $pack/bin is missing: run 'gpu-check.sh prepare' first and carry gpu-check/" | tee "$report"
    exit 1
  fi
  export PATH=$PATH:/usr/local/cuda/bin  # compute-sanitizer, nvcc (a rebuild)
  export LD_LIBRARY_PATH="$(library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export TPKIT_TEST_MODELS=$pack/models
  export TPKIT_TEST_DATA=$PWD/tests/data/hf  # the transformers fixtures (test_cuda_moe_engine)
  {
    echo "# tpkit GPU check"
    echo
    echo "- $(cat "$pack/manifest.txt" 2>/dev/null | paste -sd';' - | sed 's/;/; /g')"
    echo "- run $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), $(nproc) CPUs"
  } >"$report"

  local gpus
  gpus=$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)
  if ! timeout 20 nvidia-smi >"$outdir/nvidia-smi.txt" 2>&1 || [ -z "$gpus" ]; then
    echo "- **no CUDA device**: nvidia-smi found no GPU, so nothing was run" >>"$report"
    echo "no CUDA device: nothing run"
    cat "$outdir/nvidia-smi.txt" >>"$log" 2>/dev/null
    exit 77
  fi
  echo "- device: $(head -1 <<<"$gpus")" >>"$report"
  cat "$outdir/nvidia-smi.txt"
  # The rows go into the report as each step ends: a run cut short still reports what it did.
  report_rows=$report
  {
    echo
    echo "| step | result | time |"
    echo "| --- | --- | --- |"
  } >>"$report"

  export -f rebuild_here generate_at
  export pack story programs_tests
  if ! programs_load; then
    echo "the carried programs cannot load here: rebuilding from the working tree" | tee -a "$log"
    if step "rebuild here (the carried programs did not load)" 300 bash -c rebuild_here; then
      bin=/tmp/tpkit-gpu-check-bin
    else
      echo "| (the rebuild failed: the steps below use the carried programs) | | |" >>"$report_rows"
    fi
  fi
  export bin

  local p
  for p in $programs_tests; do step "$p" 120 "$bin/$p"; done
  for tp in 1 2 4; do step "tpkit-generate --device cuda --tp $tp" 60 bash -c "generate_at $tp"; done
  step "bench_gpu" 150 bash -o pipefail -c "'$bin/bench_gpu' | tee '$outdir/bench_gpu.md'"
  if command -v compute-sanitizer >/dev/null; then
    for p in $kernel_tests; do
      step "memcheck $p" 60 env TPKIT_CUDA_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 99 "$bin/$p"
    done
    for p in test_fused_kernels test_paged_attention_cuda test_paged_prefill_cuda test_sampling_cuda; do
      step "racecheck $p" 60 env TPKIT_CUDA_TEST_QUICK=1 compute-sanitizer --tool racecheck --error-exitcode 99 "$bin/$p"
    done
  else
    echo "| compute-sanitizer | not found on this machine | |" >>"$report_rows"
  fi

  {
    echo
    echo "Total $(($(date +%s) - start)) s of a ${deadline_seconds} s deadline. Logs: gpu-check.log (every step's"
    echo "output), nvidia-smi.txt, bench_gpu.md."
    if [ -s "$outdir/bench_gpu.md" ]; then
      echo
      cat "$outdir/bench_gpu.md"
    fi
  } >>"$report"
  # Files come back at 16 MiB at most: a runaway log keeps its beginning and its end.
  if [ "$(stat -c %s "$log")" -gt $((15 * 1024 * 1024)) ]; then
    { head -c $((7 * 1024 * 1024)) "$log"; echo; echo "[... cut ...]"; tail -c $((7 * 1024 * 1024)) "$log"; } >"$log.cut"
    mv "$log.cut" "$log"
  fi
  echo
  cat "$report"
  grep -q "FAILED\|timed out\|not run" "$report" && exit 1
  exit 0
}

case ${1:-} in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  *)
    echo "usage: gpu-check.sh prepare | gpu-check.sh run OUTDIR" >&2
    exit 2
    ;;
esac
