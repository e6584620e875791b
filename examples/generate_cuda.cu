// tpkit-generate --device cuda: the GPU engine (tpkit/cuda/engine.cuh), compiled by nvcc apart
// from the CPU engines so that the rest of the program stays plain C++ (and MPI-friendly).
#include <cstdio>
#include <exception>
#include <string>

#include <tpkit/cuda/engine.cuh>

#include "generate_run.hpp"

int generate_on_gpu(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options) {
  try {
    tpkit::cuda::CudaEngine engine(model, options);
    generate::run(engine, request, true, engine.options());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
