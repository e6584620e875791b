// tpkit/cuda/nccl_engine.cuh: the example engine with one GPU per process over NCCL (what
// `tpkit-generate --device cuda` runs under mpirun, torchrun-style launchers or srun).
// Each process is one rank of a TP x PP world: DistributedEngine<NcclBackend, CudaOps> on its
// own GPU, with the layers' collectives and the pipeline's sends on that GPU's stream. The
// engine's small host messages (sampled tokens, the agreement fingerprints) are staged through
// device memory by NcclBackend.
//
// Needs <nccl.h>: link CUDA::cudart, CUDA::cublasLt and nccl. Not included by engine.cuh.
//
// Status: compiled in CI; tests/cuda/test_nccl_engine.cu has not yet run on a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/comm/nccl.hpp"
#include "tpkit/cuda/engine.cuh"

namespace tpkit::cuda {

// The KV blocks every rank of a world with one GPU per process can have: each process sizes its
// own device's share (kv_blocks_for_memory for its rank alone) and the world takes the
// smallest, since every rank runs the same schedulers over the same block numbers. A rank
// whose device has no room makes every rank throw. `o` as resolved (micro_batches set).
template <class Backend>
std::int64_t agreed_kv_blocks(Communicator<Backend>& world, const ModelConfig& c, const EngineOptions& o) {
  constexpr std::int64_t kNoRoom = std::numeric_limits<std::int64_t>::max();
  std::int64_t negated = kNoRoom;  // the world's max of -blocks is -(the smallest)
  std::string error;
  try {
    negated = -kv_blocks_for_memory(c, o, {world.rank()});
  } catch (const Error& e) {
    error = e.what();
  }
  world.all_reduce(&negated, 1, ReduceOp::max);
  if (!error.empty()) throw Error(error);
  TPKIT_REQUIRE(negated != kNoRoom, "another rank's GPU has no room for the KV cache (see its error)");
  return -negated;
}

// One rank of the world on one GPU. Create and use it on one thread: its CudaContext is bound
// to the creating thread for the engine's lifetime.
class NcclEngine {
 public:
  // make_world(stream) creates this rank's NCCL world on `stream` (NcclBackend::create with a
  // unique id shared by other means, for instance).
  NcclEngine(int device, const std::function<NcclBackend(cudaStream_t)>& make_world, const std::string& model_path,
             EngineOptions options)
      : context_(make_context(device)),
        bind_(*context_),
        world_(make_world(context_->stream())),
        engine_(world_, model_path, sized(model_path, std::move(options))) {}

  // The world from torchrun-style variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
  // LOCAL_RANK) or Slurm's and Open MPI's; this process takes GPU LOCAL_RANK.
  static NcclEngine from_env(const std::string& model_path, EngineOptions options, NcclOptions nccl = {}) {
    return NcclEngine(
        bootstrap_from_env().local_rank,
        [&](cudaStream_t stream) { return NcclBackend::create_from_env(stream, nccl); }, model_path,
        std::move(options));
  }

  DistributedEngine<NcclBackend, CudaOps>& engine() { return engine_; }
  Communicator<NcclBackend>& world() { return world_; }

 private:
  static std::unique_ptr<CudaContext> make_context(int device) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw Error("NcclEngine: no CUDA device is present");
    }
    TPKIT_REQUIRE(device >= 0 && device < devices, "NcclEngine: GPU ", device,
                  " (LOCAL_RANK) does not exist: this machine has ", devices,
                  " GPU(s); start at most that many processes per machine");
    return std::make_unique<CudaContext>(device);
  }

  // The options with the KV cache sized from this GPU's memory (num_kv_blocks 0), agreed by
  // every rank.
  EngineOptions sized(const std::string& model_path, EngineOptions o) {
    o.layout().validate(world_.size());
    const bool from_memory = o.num_kv_blocks == 0;
    const Checkpoint checkpoint = Checkpoint::open(model_path);  // memory-mapped: the config is all it reads
    o = engine_detail::resolve_options(checkpoint.config(), std::move(o));
    if (from_memory) o.num_kv_blocks = agreed_kv_blocks(world_, checkpoint.config(), o);
    return o;
  }

  std::unique_ptr<CudaContext> context_;
  ScopedContext bind_;
  Communicator<NcclBackend> world_;
  DistributedEngine<NcclBackend, CudaOps> engine_;
};

}  // namespace tpkit::cuda
