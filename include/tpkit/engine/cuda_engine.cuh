// tpkit/engine/cuda_engine.cuh: the example engine on one GPU. The same EngineRank as the CPU engines,
// instantiated with CudaOps: weights, activations and the paged KV cache live in device memory
// and every layer runs through cuBLASLt and tpkit's kernels. tp_size x pp_size ranks run as
// threads, each with its own CUDA stream, over DeviceMockBackend (so TP and PP on one GPU give
// the answers of TP and PP on several). Logits stay on the device; only the sampled tokens come
// back (CudaOps::sample).
//
// KV cache size: with num_kv_blocks 0, kv_blocks_for_memory over all the ranks. One GPU per
// process over NCCL is tpkit/engine/nccl_engine.cuh. The device options are GpuOptions;
// EngineOptions::threads_per_rank does not apply.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/engine/engine_base.hpp"
#include "tpkit/engine/engine_rank.hpp"
#include "tpkit/engine/gpu_options.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/gpu/context.cuh"
#include "tpkit/gpu/cuda_ops.cuh"
#include "tpkit/gpu/device_mock.cuh"

namespace tpkit {
namespace gpu {

// Bytes of world rank `rank`'s weights, from the config and the layers' own splits: its query,
// KV (replicated heads included), gate/up and down slices of its stage's layers, its (padded)
// vocabulary rows on the first and last stages, and its float norms.
inline std::int64_t weight_bytes_of_rank(const ModelConfig& c, const EngineOptions& o, int rank) {
  const ParallelLayout layout = o.layout();
  const ShardSpec shard{layout.tp_rank(rank), o.tp_size};
  const std::vector<Range> stages = split_layers(c.num_layers, o.pp_size, o.layers_per_stage);
  const Range layers = stages[std::size_t(layout.pp_rank(rank))];
  const HeadPartition heads = partition_heads(c.num_heads, c.num_kv_heads, shard);
  const std::int64_t H = c.hidden_size, hd = c.head_dim;
  const std::int64_t intermediate = split_dimension(c.intermediate_size, shard, 1, "intermediate_size").size();
  const std::int64_t per_layer =
      2 * H * heads.local_q_heads() * hd + 2 * H * heads.local_kv_heads() * hd + 3 * H * intermediate;
  const std::int64_t vocab_rows = partition_vocab(c.vocab_size, shard).rows_per_rank;
  const bool first = layers.begin == 0, last = layers.end == c.num_layers;
  const std::int64_t tables = (first ? 1 : 0) + (last && !(c.tie_embeddings && first) ? 1 : 0);
  return (layers.size() * per_layer + tables * vocab_rows * H) * std::int64_t(dtype_size(o.dtype)) +
         (2 * layers.size() + 1) * H * 4;
}

// The KV-cache blocks each of `ranks` (world ranks sharing this device) can have: the blocks
// that fit in gpu_memory_utilization of the device's memory once this process's current use,
// those ranks' weights and activation reserves are taken out, split evenly, and never more
// than max_num_seqs full-length sequences can use. `o` as resolved (micro_batches set).
inline std::int64_t kv_blocks_for_memory(const ModelConfig& c, const EngineOptions& o, const GpuOptions& g,
                                         const std::vector<int>& ranks) {
  std::size_t free = 0, total = 0;
  check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  const std::int64_t here = std::int64_t(ranks.size());
  // Activations: the step's buffers at max_num_batched_tokens, logits, staging and slack per
  // rank, and the sampling workspace of the rank that samples.
  const std::int64_t tokens = std::max(o.max_num_batched_tokens, o.max_num_seqs), H = c.hidden_size;
  SamplingPlan sampling;  // its workspace: sort keys and ids, in and out, and CUB's buffers
  check_status(plan_sampling(int(o.max_num_seqs), c.vocab_size, &sampling), "sampling plan");
  // The decode attention's workspace for max_num_seqs full-length sequences (reserved at load),
  // on the rank with the most query heads (rank 0).
  PagedDecodePlan decode;
  check_status(plan_paged_decode(int(o.max_num_seqs),
                                 partition_heads(c.num_heads, c.num_kv_heads, {0, o.tp_size}).local_q_heads(),
                                 int(std::min<std::int64_t>(c.head_dim, 256)), c.max_position, &decode),
               "paged decode plan");
  const std::int64_t activations =
      here * (tokens * (4 * H + c.q_size() + 2 * c.kv_size() + 3 * c.intermediate_size) * 4 +
              2 * o.max_num_seqs * c.vocab_size * 4 + std::int64_t(decode.workspace_bytes) + (std::int64_t(64) << 20)) +
      std::int64_t(sampling.workspace_bytes);
  std::int64_t weights = 0;
  for (int r : ranks) weights += weight_bytes_of_rank(c, o, r);
  const std::int64_t used = std::int64_t(total - free);
  const std::int64_t budget = std::int64_t(g.gpu_memory_utilization * double(total)) - used - weights - activations;
  const std::int64_t block_bytes =
      engine_detail::kv_block_bytes(c, o, split_layers(c.num_layers, o.pp_size, o.layers_per_stage));
  const std::int64_t per_rank = budget / here;
  TPKIT_REQUIRE(per_rank >= block_bytes * o.micro_batches, "gpu_memory_utilization ", g.gpu_memory_utilization, " of ",
                total >> 20, " MiB leaves no room for the KV cache: ", used >> 20, " MiB already in use, about ",
                weights >> 20, " MiB of weights and ", activations >> 20, " MiB of activations");
  return std::min(engine_detail::blocks_for_full_sequences(c, o), per_rank / block_bytes);
}

}  // namespace gpu

class CudaEngine : public engine_detail::EngineBase<CudaEngine> {
 public:
  explicit CudaEngine(const std::string& model_path, EngineOptions options = {}, GpuOptions gpu = {})
      : CudaEngine(model_path, options, gpu, options.num_kv_blocks == 0) {}

  using EngineBase::generate;  // text prompts

  const GpuOptions& gpu_options() const { return gpu_; }

  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    return generate_on_loop(prompts, params, on_token);
  }

  // Stops taking requests, ends the ones in flight as `mode` says, and stops the ranks.
  void shutdown(ShutdownMode mode = ShutdownMode::drain) { runner_.stop(mode); }

 private:
  CudaEngine(const std::string& model_path, EngineOptions options, GpuOptions gpu, bool size_from_memory)
      : EngineBase(model_path, std::move(options)), gpu_(gpu) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw Error("CudaEngine: no CUDA device is present");
    }
    TPKIT_REQUIRE(gpu_.device >= 0 && gpu_.device < devices, "gpu ", gpu_.device, " does not exist (", devices,
                  " device(s))");
    TPKIT_REQUIRE(gpu_.gpu_memory_utilization > 0 && gpu_.gpu_memory_utilization <= 1,
                  "gpu_memory_utilization must be in (0, 1] (got ", gpu_.gpu_memory_utilization, ")");
    contexts_ = gpu::make_contexts(options_.layout().world_size(), gpu_.device);
    if (size_from_memory) {
      std::vector<int> ranks(contexts_.size());
      for (std::size_t r = 0; r < ranks.size(); ++r) ranks[r] = int(r);
      gpu::DeviceScope device(gpu_.device);
      options_.num_kv_blocks = gpu::kv_blocks_for_memory(config(), options_, gpu_, ranks);
    }
    options_ = resolve_options(config(), options_);
    ranks_.resize(contexts_.size());
    gpu::run_device_mock_ranks(
        contexts_,
        [&](Communicator<gpu::DeviceMockBackend>& comm) {
          gpu::CudaContext& context = *contexts_[std::size_t(comm.rank())];
          ranks_[std::size_t(comm.rank())] = std::make_unique<EngineRank<gpu::DeviceMockBackend, CudaOps>>(
              checkpoint_, options_, decoder(), comm.rank(), CudaOps(context),
              gpu_.enforce_eager ? 0 : options_.max_num_seqs);
          context.synchronize("loading the model");
        },
        options_.comm);
    start_on_threads(
        runner_, [this](auto&& fn) { gpu::run_device_mock_ranks(contexts_, fn, options_.comm); }, ranks_);
  }

  GpuOptions gpu_;
  std::vector<std::unique_ptr<gpu::CudaContext>> contexts_;  // before ranks_: destroyed after the models
  std::vector<std::unique_ptr<EngineRank<gpu::DeviceMockBackend, CudaOps>>> ranks_;
  engine_detail::RankRunner runner_;  // last: stops before the ranks go
};

}  // namespace tpkit
