// tpkit-generate --device cuda: the GPU engines, compiled by nvcc apart from the CPU engines so
// that the rest of the program stays plain C++ (and MPI-friendly): every rank as a thread on one
// GPU (tpkit/cuda/engine.cuh), or one GPU per process over NCCL (tpkit/cuda/nccl_engine.cuh).
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include <tpkit/cuda/engine.cuh>
#ifdef TPKIT_WITH_NCCL
#include <tpkit/cuda/nccl_engine.cuh>
#endif

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

#ifdef TPKIT_WITH_NCCL
int generate_over_nccl(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                       std::chrono::milliseconds timeout) {
  std::string rank = "?";
  try {
    rank = std::to_string(tpkit::bootstrap_from_env().rank);
    tpkit::NcclOptions nccl;
    nccl.timeout = timeout;
    auto process = tpkit::cuda::NcclEngine::from_env(model, options, nccl);
    auto& engine = process.engine();
    generate::run(engine, request, engine.leader(), engine.options());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-generate (world rank %s): %s\n", rank.c_str(), e.what());
    return 1;
  }
  return 0;
}
#endif
