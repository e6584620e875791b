// tpkit-generate --device cuda: the GPU engines, compiled by nvcc apart from the CPU engines so
// that the rest of the program stays plain C++ (and MPI-friendly): every rank as a thread on one
// GPU (tpkit/engine/cuda_engine.cuh), or one GPU per process over NCCL
// (tpkit/engine/nccl_engine.cuh).
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include <tpkit/engine/cuda_engine.cuh>
#ifdef TPKIT_WITH_NCCL
#include <tpkit/engine/nccl_engine.cuh>
#endif

#include "generate_run.hpp"

int generate_on_gpu(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                    const tpkit::GpuOptions& gpu) {
  try {
    tpkit::CudaEngine engine(model, options, gpu);
    generate::run(engine, request, true, engine.options());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-generate: %s\n", tpkit::user_message(e).c_str());
    return 1;
  }
  return 0;
}

#ifdef TPKIT_WITH_NCCL
int generate_over_nccl(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                       const tpkit::GpuOptions& gpu, std::chrono::milliseconds timeout) {
  std::string rank = "?";
  try {
    rank = std::to_string(tpkit::bootstrap_from_env().rank);
    tpkit::NcclOptions nccl;
    nccl.timeout = timeout;
    auto process = tpkit::NcclEngine::from_env(model, options, gpu, nccl);
    auto& engine = process.engine();
    generate::run(engine, request, engine.leader(), engine.options());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-generate (world rank %s): %s\n", rank.c_str(), tpkit::user_message(e).c_str());
    return 1;
  }
  return 0;
}
#endif
