// tpkit/cuda/engine.cuh: the example engine on one GPU. The same EngineRank as the CPU engines,
// instantiated with CudaOps: weights, activations and the paged KV cache live in device memory
// and every layer runs through cuBLASLt and tpkit's kernels. tp_size x pp_size ranks run as
// threads, each with its own CUDA stream, over DeviceMockBackend (so TP and PP on one GPU give
// the answers of TP and PP on several). Logits stay on the device; only the sampled tokens come
// back (CudaOps::sample).
//
// KV cache size: with num_kv_blocks 0, the blocks that fit in gpu_memory_utilization of the
// device's memory once this process's current use, the weights (computed from the config) and
// an activation reserve are taken out, split between the ranks, and never more than
// max_num_seqs full-length sequences can use.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/cuda/context.cuh"
#include "tpkit/cuda/cuda_ops.cuh"
#include "tpkit/cuda/device_mock.cuh"
#include "tpkit/engine/engine.hpp"

namespace tpkit::cuda {

// Bytes of the weights of every rank together: the whole model, plus the KV heads that ranks
// replicate, plus each rank's norms.
inline std::int64_t weight_bytes_all_ranks(const ModelConfig& c, const EngineOptions& o) {
  const std::int64_t H = c.hidden_size, hd = c.head_dim, L = c.num_layers, size = dtype_size(o.dtype);
  std::int64_t kv_heads = 0;
  for (int r = 0; r < o.tp_size; ++r)
    kv_heads += partition_heads(c.num_heads, c.num_kv_heads, {r, o.tp_size}).local_kv_heads();
  const std::int64_t per_layer = H * c.q_size() * 2 + 2 * H * kv_heads * hd + 3 * H * c.intermediate_size;
  const std::int64_t embeddings = c.vocab_size * H * (c.tie_embeddings ? 1 : 2);
  const std::int64_t norms = (2 * L + 1) * H * 4 * o.tp_size;
  return (L * per_layer + embeddings) * size + norms;
}

// `o` as resolved (micro_batches set).
inline std::int64_t kv_blocks_for_memory(const ModelConfig& c, const EngineOptions& o) {
  std::size_t free = 0, total = 0;
  check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  const std::int64_t world = o.layout().world_size();
  // Activations: the step's buffers at max_num_batched_tokens, logits, staging and slack per
  // rank, and the sampling workspace of the rank that samples.
  const std::int64_t tokens = o.max_num_batched_tokens, H = c.hidden_size;
  SamplingPlan sampling;  // its workspace: sort keys and ids, in and out, and CUB's buffers
  check_status(plan_sampling(o.max_num_seqs, c.vocab_size, &sampling), "sampling plan");
  const std::int64_t activations =
      world * (tokens * (4 * H + c.q_size() + 2 * c.kv_size() + 3 * c.intermediate_size) * 4 +
               2 * o.max_num_seqs * c.vocab_size * 4 + (std::int64_t(64) << 20)) +
      std::int64_t(sampling.workspace_bytes);
  const std::int64_t weights = weight_bytes_all_ranks(c, o);
  const std::int64_t used = std::int64_t(total - free);
  const std::int64_t budget = std::int64_t(o.gpu_memory_utilization * double(total)) - used - weights - activations;
  const std::int64_t block_bytes =
      engine_detail::kv_block_bytes(c, o, split_layers(c.num_layers, o.pp_size, o.layers_per_stage));
  const std::int64_t per_rank = budget / world;
  TPKIT_REQUIRE(per_rank >= block_bytes * o.micro_batches, "gpu_memory_utilization ", o.gpu_memory_utilization, " of ",
                total >> 20, " MiB leaves no room for the KV cache: ", used >> 20, " MiB already in use, about ",
                weights >> 20, " MiB of weights and ", activations >> 20, " MiB of activations");
  return std::min(engine_detail::blocks_for_full_sequences(c, o), per_rank / block_bytes);
}

class CudaEngine : public engine_detail::EngineBase<CudaEngine> {
 public:
  explicit CudaEngine(const std::string& model_path, EngineOptions options = {})
      : CudaEngine(model_path, options, options.num_kv_blocks == 0) {}

  using EngineBase::generate;  // text prompts

  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    return generate_on_threads(
        prompts, params, on_token, [&](auto&& fn) { run_device_mock_ranks(contexts_, fn, options_.comm); }, ranks_);
  }

 private:
  CudaEngine(const std::string& model_path, EngineOptions options, bool size_from_memory)
      : EngineBase(model_path, std::move(options)) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      cudaGetLastError();
      throw Error("CudaEngine: no CUDA device is present");
    }
    TPKIT_REQUIRE(options_.gpu >= 0 && options_.gpu < devices, "gpu ", options_.gpu, " does not exist (", devices,
                  " device(s))");
    TPKIT_REQUIRE(options_.gpu_memory_utilization > 0 && options_.gpu_memory_utilization <= 1,
                  "gpu_memory_utilization must be in (0, 1] (got ", options_.gpu_memory_utilization, ")");
    contexts_ = make_contexts(options_.layout().world_size(), options_.gpu);
    if (size_from_memory) options_.num_kv_blocks = kv_blocks_for_memory(config(), options_);
    options_ = engine_detail::resolve_options(config(), options_);
    ranks_.resize(contexts_.size());
    run_device_mock_ranks(
        contexts_,
        [&](Communicator<DeviceMockBackend>& comm) {
          ranks_[std::size_t(comm.rank())] = std::make_unique<EngineRank<DeviceMockBackend, CudaOps>>(
              checkpoint_, options_, tokenizer_.get(), comm.rank());
          CudaContext::current().synchronize("loading the model");
        },
        options_.comm);
  }

  std::vector<std::unique_ptr<CudaContext>> contexts_;  // before ranks_: destroyed after the models
  std::vector<std::unique_ptr<EngineRank<DeviceMockBackend, CudaOps>>> ranks_;
};

}  // namespace tpkit::cuda
