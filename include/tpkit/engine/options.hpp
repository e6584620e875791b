// tpkit/engine/options.hpp: the engine's options, how they are checked against a model, and
// what is derived from them (the KV-cache size, the micro-batches, the threads of each rank).
// GPU engines take their device options separately (GpuOptions, tpkit/engine/cuda_engine.cuh).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "tpkit/comm/mock.hpp"
#include "tpkit/core/checked_math.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/layers/moe.hpp"
#include "tpkit/model/config.hpp"
#include "tpkit/parallel/pipeline.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

struct EngineOptions {
  int tp_size = 1;
  int pp_size = 1;                             // pipeline stages; the world has tp_size x pp_size ranks
  std::vector<std::int64_t> layers_per_stage;  // empty: balanced split over pp_size stages
  int micro_batches = 0;                       // sequences' groups in flight in the pipeline; 0: pp_size
  DType dtype = DType::f32;                    // storage of weights and activations: f32, bf16 or f16
  std::string tokenizer;  // tokenizer.json, llama2.c .bin or a folder with one; empty: none (token ids only)
  std::int64_t max_num_seqs = 16;
  std::int64_t max_num_batched_tokens = 512;
  // A prefill with more tokens left than this computes at most this many per step (0: no cap), so
  // short requests are not queued behind a long prompt's prefill (SchedulerOptions).
  std::int64_t long_prefill_token_threshold = 0;
  std::int64_t block_size = 16;
  std::int64_t num_kv_blocks = 0;  // 0: enough for max_num_seqs full-length sequences, within kv_cache_bytes
  std::int64_t kv_cache_bytes = std::int64_t(1) << 30;  // per rank, when num_kv_blocks is 0 (CPU)
  // Automatic prefix caching: a prompt reuses the KV blocks of earlier requests that began with
  // the same tokens (kv/block_pool.hpp); outputs are the same with it on or off.
  bool enable_prefix_caching = true;
  // CPU engines: threads inside each rank (linear layers, attention heads, the LM head). 0: the
  // cores this process may use divided by the ranks on this host, at least 1. Results are
  // bitwise the same at any count.
  int threads_per_rank = 0;
  // Mixture-of-experts models: how the sparse layers use the TP group (tp: every expert split
  // over it; ep: whole experts per rank, vLLM's --enable-expert-parallel; ep-dispatch: tokens
  // sent to the experts' ranks by all-to-all), and in the expert layouts which rank holds which
  // experts, by layer (layers not listed: a balanced split; see engine/placement.hpp and
  // tpkit-placement).
  MoELayout moe_layout = MoELayout::tensor_parallel;
  std::map<std::int64_t, ExpertPlacement> expert_placements;
  MockOptions comm;  // the threaded engines' in-process backend (timeouts, injected faults)
  // Ranks that are processes (DistributedEngine::serve): how often an idle controller sends the
  // others an empty step, so that they wait for work without tripping their backend's timeout
  // and still notice a controller that died. Keep it well under that timeout.
  std::chrono::milliseconds idle_heartbeat{1000};

  ParallelLayout layout() const { return {tp_size, pp_size}; }
  MoEModelOptions moe() const { return {moe_layout, expert_placements}; }
};

// The CPU cores this process may run on (its affinity mask; the hardware's count elsewhere).
inline int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1, int(std::thread::hardware_concurrency()));
}

// Ranks of this job on this host: the launcher's local size (torchrun, Open MPI, MPICH, Slurm),
// else `world_size` (every rank here, as in the threaded engine).
inline int ranks_on_this_host(int world_size) {
  for (const char* name : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"})
    if (const char* v = std::getenv(name)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (*v && !*end && n >= 1 && n <= world_size) return int(n);
    }
  return std::max(1, world_size);
}

// threads_per_rank as given, or the default for `ranks_here` ranks sharing this host's cores.
inline int resolve_threads_per_rank(int requested, int ranks_here) {
  TPKIT_REQUIRE(requested >= 0 && requested <= 1024, "threads_per_rank must be in [0, 1024] (got ", requested, ")");
  return requested > 0 ? requested : std::max(1, available_cores() / std::max(1, ranks_here));
}

namespace engine_detail {
// Bytes of one KV-cache block on the rank that needs the most. A rank holds at most
// ceil(q_heads / group) + 1 KV heads (one more when its query heads straddle a group) and rank 0
// has the most query heads: its count + 1 bounds all. Its layers are those of the largest stage.
inline std::int64_t kv_block_bytes(const ModelConfig& c, const EngineOptions& o, const std::vector<Range>& stages) {
  std::int64_t layers = 0;
  for (const Range& r : stages) layers = std::max(layers, r.size());
  const std::int64_t kv_heads = partition_heads(c.num_heads, c.num_kv_heads, {0, o.tp_size}).local_kv_heads() + 1;
  std::int64_t bytes = checked_mul<std::int64_t>(2 * layers, o.block_size, "KV block size");
  bytes = checked_mul(bytes, kv_heads * c.head_dim, "KV block size");
  return checked_mul<std::int64_t>(bytes, std::int64_t(dtype_size(o.dtype)), "KV block size");
}

// Blocks that max_num_seqs sequences of the model's full length use: more would never be used.
inline std::int64_t blocks_for_full_sequences(const ModelConfig& c, const EngineOptions& o) {
  return checked_mul(o.max_num_seqs, (c.max_position + o.block_size - 1) / o.block_size, "KV blocks");
}
}  // namespace engine_detail

// Checks the options against the model and fills in num_kv_blocks and micro_batches.
inline EngineOptions resolve_options(const ModelConfig& c, EngineOptions o) {
  c.check_tp_size(o.tp_size);
  const std::vector<Range> stages = split_layers(c.num_layers, o.pp_size, o.layers_per_stage);
  TPKIT_REQUIRE(o.block_size >= 1 && o.block_size <= (1 << 20), "block_size must be in [1, 2^20] (got ", o.block_size,
                ")");
  TPKIT_REQUIRE(o.long_prefill_token_threshold >= 0, "long_prefill_token_threshold must be >= 0 (got ",
                o.long_prefill_token_threshold, ")");
  TPKIT_REQUIRE(o.max_num_seqs >= 1 && o.max_num_batched_tokens >= 1, "max_num_seqs (", o.max_num_seqs,
                ") and max_num_batched_tokens (", o.max_num_batched_tokens, ") must be >= 1");
  TPKIT_REQUIRE(o.max_num_seqs <= (1 << 20) && o.max_num_batched_tokens <= (1 << 24), "max_num_seqs (", o.max_num_seqs,
                ") must be <= 2^20 and max_num_batched_tokens (", o.max_num_batched_tokens, ") <= 2^24");
  TPKIT_REQUIRE(o.num_kv_blocks >= 0 && o.num_kv_blocks < (std::int64_t(1) << 31) && o.kv_cache_bytes >= 1,
                "num_kv_blocks (", o.num_kv_blocks, ") must be >= 0 and below 2^31, and kv_cache_bytes (",
                o.kv_cache_bytes, ") >= 1");
  TPKIT_REQUIRE(o.micro_batches >= 0, "micro_batches must be >= 0 (got ", o.micro_batches, ")");
  TPKIT_REQUIRE(o.threads_per_rank >= 0 && o.threads_per_rank <= 1024, "threads_per_rank must be in [0, 1024] (got ",
                o.threads_per_rank, ")");
  if (c.moe.enabled()) {
    TPKIT_REQUIRE(o.moe_layout != MoELayout::tensor_parallel || o.tp_size <= c.moe.expert_intermediate_size,
                  "tp_size (", o.tp_size, ") exceeds the experts' intermediate size (", c.moe.expert_intermediate_size,
                  ") under the tp MoE layout; the ep layouts split whole experts instead");
    TPKIT_REQUIRE(o.expert_placements.empty() || o.moe_layout != MoELayout::tensor_parallel,
                  "an expert placement needs the ep or ep-dispatch MoE layout (the tp layout splits every expert)");
    for (const auto& [layer, placement] : o.expert_placements) {
      TPKIT_REQUIRE(layer >= 0 && layer < c.num_layers && c.sparse_layer(layer), "the expert placement lists layer ",
                    layer, ", which is not a sparse layer of this model");
      placement.validate(c.moe.num_experts, o.tp_size);
    }
  } else {
    TPKIT_REQUIRE(o.expert_placements.empty(), "an expert placement was given but the model has no experts");
  }
  if (o.micro_batches == 0) o.micro_batches = o.pp_size;
  if (o.num_kv_blocks == 0)  // enough for max_num_seqs full-length sequences, within kv_cache_bytes per rank
    o.num_kv_blocks = std::max<std::int64_t>(o.micro_batches,
                                             std::min(engine_detail::blocks_for_full_sequences(c, o),
                                                      o.kv_cache_bytes / engine_detail::kv_block_bytes(c, o, stages)));
  TPKIT_REQUIRE(o.num_kv_blocks >= o.micro_batches, "num_kv_blocks (", o.num_kv_blocks, ") must give each of the ",
                o.micro_batches, " micro-batches at least one block");
  TPKIT_REQUIRE(o.dtype == DType::f32 || o.dtype == DType::bf16 || o.dtype == DType::f16,
                "engine dtype must be f32, bf16 or f16 (got ", dtype_name(o.dtype), ")");
  return o;
}

}  // namespace tpkit
