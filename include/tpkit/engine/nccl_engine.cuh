// tpkit/engine/nccl_engine.cuh: the example engine with one GPU per process over NCCL (what
// `tpkit-generate --device cuda` runs under mpirun, torchrun-style launchers or srun).
// Each process is one rank of a TP x PP world: DistributedEngine<NcclBackend, CudaOps> on its
// own GPU, with the layers' collectives and the pipeline's sends on that GPU's stream. The
// engine's small host messages (sampled tokens, the agreement fingerprints) are staged through
// device memory by NcclBackend.
//
// Not included by cuda_engine.cuh.
// Status: compiled in CI; tests/cuda/test_nccl_engine.cu has not yet run on a GPU.
// Needs: CUDA, NCCL (nvcc; link tpkit::cuda and tpkit::nccl).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/comm/nccl.hpp"
#include "tpkit/engine/cuda_engine.cuh"
#include "tpkit/engine/distributed_engine.hpp"

namespace tpkit {
namespace gpu {

// The KV blocks every rank of a world with one GPU per process can have: each process sizes its
// own device's share (kv_blocks_for_memory for its rank alone) and the world takes the
// smallest, since every rank runs the same schedulers over the same block numbers. A rank
// whose device has no room makes every rank throw. `o` as resolved (micro_batches set).
template <class Backend>
std::int64_t agreed_kv_blocks(Communicator<Backend>& world, const ModelConfig& c, const EngineOptions& o,
                              const GpuOptions& g) {
  constexpr std::int64_t kNoRoom = std::numeric_limits<std::int64_t>::max();
  std::int64_t negated = kNoRoom;  // the world's max of -blocks is -(the smallest)
  std::string error;
  try {
    negated = -kv_blocks_for_memory(c, o, g, {world.rank()});
  } catch (const Error& e) {
    error = e.what();
  }
  world.all_reduce(&negated, 1, ReduceOp::max);
  if (!error.empty()) throw Error(error);
  TPKIT_REQUIRE(negated != kNoRoom, "another rank's GPU has no room for the KV cache (see its error)");
  return -negated;
}

}  // namespace gpu

// One rank of the world on one GPU: its CudaContext, its NCCL world on that context's stream,
// and DistributedEngine<NcclBackend, CudaOps>. Create and use it on one thread.
class NcclEngine {
 public:
  // make_world(stream) creates this rank's NCCL world on `stream` (NcclBackend::create over a
  // Bootstrap, for instance). GpuOptions::device is this process's GPU.
  NcclEngine(const std::function<NcclBackend(cudaStream_t)>& make_world, const std::string& model_path,
             EngineOptions options, GpuOptions gpu = {})
      : context_(make_context(gpu.device)),
        world_(make_world(context_->stream())),
        options_(sized(model_path, std::move(options), gpu)),
        engine_(world_, model_path, options_, CudaOps(*context_), gpu.enforce_eager ? 0 : options_.max_num_seqs) {}

  // The world from torchrun-style variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
  // LOCAL_RANK) or Slurm's and Open MPI's; this process takes GPU LOCAL_RANK.
  static NcclEngine from_env(const std::string& model_path, EngineOptions options, GpuOptions gpu = {},
                             NcclOptions nccl = {}) {
    gpu.device = bootstrap_from_env().local_rank;
    return NcclEngine([&](cudaStream_t stream) { return NcclBackend::create_from_env(stream, nccl); }, model_path,
                      std::move(options), gpu);
  }
  NcclEngine(const NcclEngine&) = delete;  // engine_ refers to world_
  NcclEngine& operator=(const NcclEngine&) = delete;

  DistributedEngine<NcclBackend, CudaOps>& engine() { return engine_; }
  Communicator<NcclBackend>& world() { return world_; }

 private:
  static std::unique_ptr<gpu::CudaContext> make_context(int device) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw Error("NcclEngine: no CUDA device is present");
    }
    TPKIT_REQUIRE(device >= 0 && device < devices, "NcclEngine: GPU ", device,
                  " (LOCAL_RANK) does not exist: this machine has ", devices,
                  " GPU(s); start at most that many processes per machine");
    return std::make_unique<gpu::CudaContext>(device);  // also makes it this thread's device
  }

  // The options with the KV cache sized from this GPU's memory (num_kv_blocks 0), agreed by
  // every rank.
  EngineOptions sized(const std::string& model_path, EngineOptions o, const GpuOptions& gpu) {
    o.layout().validate(world_.size());
    const bool from_memory = o.num_kv_blocks == 0;
    const Checkpoint checkpoint = Checkpoint::open(model_path);  // memory-mapped: the config is all it reads
    o = resolve_options(checkpoint.config(), std::move(o));
    if (from_memory) o.num_kv_blocks = gpu::agreed_kv_blocks(world_, checkpoint.config(), o, gpu);
    return o;
  }

  std::unique_ptr<gpu::CudaContext> context_;
  Communicator<NcclBackend> world_;
  EngineOptions options_;
  DistributedEngine<NcclBackend, CudaOps> engine_;
};

}  // namespace tpkit
