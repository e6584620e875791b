#!/usr/bin/env bash
# Builds tpkit's tests and runs them: the README's test command and what CI runs.
# Installs what the build needs on Debian/Ubuntu when it is missing (as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

catch2_header=/usr/include/catch2/catch.hpp
[ -f /usr/include/catch2/catch_all.hpp ] && catch2_header=/usr/include/catch2/catch_all.hpp
# Open MPI: the MPI backend and the multi-process engine are tested under mpirun.
bash scripts/ensure-packages.sh cmake=cmake g++=g++ make=make "$catch2_header=catch2" mpirun=openmpi-bin \
  mpicxx=libopenmpi-dev

build=${TPKIT_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${TPKIT_CMAKE_ARGS:-}
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure -j2
