#!/usr/bin/env bash
# Builds tpkit's tests and runs them: the README's test command and what CI runs.
# Installs what the build needs on Debian/Ubuntu when it is missing (as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

catch2_header=/usr/include/catch2/catch.hpp
[ -f /usr/include/catch2/catch_all.hpp ] && catch2_header=/usr/include/catch2/catch_all.hpp
# Open MPI: the MPI backend and the multi-process engine are tested under mpirun. CLI11: the
# command lines. cpp-httplib and nlohmann-json (found with pkg-config and CMake): tpkit-serve;
# python3-venv: its tests with the openai client and schemathesis (from PyPI). clang and its
# runtime: the libFuzzer targets (fuzz/). locales: the comma-decimal locale the loaders are tested
# under (built with localedef at test time).
bash scripts/ensure-packages.sh cmake=cmake g++=g++ make=make "$catch2_header=catch2" mpirun=openmpi-bin \
  mpicxx=libopenmpi-dev /usr/include/CLI/CLI.hpp=libcli11-dev pkg-config=pkg-config \
  /usr/include/httplib.h=libcpp-httplib-dev /usr/include/nlohmann/json.hpp=nlohmann-json3-dev \
  /usr/share/doc/python3-venv=python3-venv clang++=clang \
  /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a=libclang-rt-14-dev \
  /usr/share/i18n/locales/de_DE=locales

build=${TPKIT_BUILD_DIR:-build}
# RelWithDebInfo with line tables only (-g1): a crash's backtrace keeps its files and lines, and the
# header-only build is about a third faster than with full debug information.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
  "-DCMAKE_CUDA_FLAGS_RELWITHDEBINFO=-O2 -Xcompiler=-g1 -DNDEBUG" ${TPKIT_CMAKE_ARGS:-}
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure -j2
