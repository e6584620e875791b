// tpkit/engine/request.hpp: what a caller asks of the engine and gets back. SamplingParams are
// the sampling rule (tpkit/sampling/sampler.hpp) plus what only the engine acts on: the seed of
// the request's generator, max_tokens, stop strings and tokens, ignore_eos and how the text is
// decoded.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/sampling/sampler.hpp"

namespace tpkit {

struct SamplingParams : SamplingRule {
  std::optional<std::uint64_t> seed;  // none: drawn per request; with one, a request repeats exactly
  int max_tokens = 64;
  std::vector<std::string> stop;             // stop strings (need a tokenizer)
  std::vector<std::int32_t> stop_token_ids;  // end the sequence like the model's EOS ids (a chat's end of turn)
  bool ignore_eos = false;                   // the model's EOS ids and stop_token_ids do not end it
  bool skip_special_tokens = true;           // special tokens add no text (as vLLM's default)

  void validate() const {
    SamplingRule::validate();
    TPKIT_REQUIRE(max_tokens >= 1, "max_tokens must be >= 1 (got ", max_tokens, ")");
    for (const auto& s : stop) TPKIT_REQUIRE(!s.empty(), "stop strings must not be empty");
    for (std::int32_t id : stop_token_ids) TPKIT_REQUIRE(id >= 0, "stop token ids must be >= 0 (got ", id, ")");
  }
};

struct GenerationResult {
  std::vector<std::int32_t> prompt_ids, token_ids;  // token_ids: generated, without EOS
  std::string text;                                 // decoded generation (empty without a tokenizer)
  std::string finish_reason;                        // "stop", "length" or "error: ..."
};

// Tokens routed to each expert of one mixture-of-experts layer (a token counts once per expert
// it chose; a fixed-shape step's padding rows do not count).
struct ExpertLoad {
  std::int64_t layer = 0;
  std::vector<std::int64_t> tokens;  // per expert

  // The busiest expert's tokens over the mean: 1 is a perfect balance (0 before any token).
  double imbalance() const {
    std::int64_t total = 0, most = 0;
    for (std::int64_t t : tokens) total += t, most = std::max(most, t);
    return total == 0 ? 0.0 : double(most) * double(tokens.size()) / double(total);
  }
};

struct GenerationStats {
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  std::int64_t graph_steps = 0;      // steps whose layers ran from a CUDA graph (on the leader)
  std::int64_t computed_tokens = 0;  // tokens the model ran (prompt and generated; cached ones are not run)
  // Prompt tokens looked up in the prefix cache when requests were admitted, and found there.
  std::int64_t prefix_cache_queries = 0, prefix_cache_hits = 0;
  // Mixture-of-experts models: each sparse layer's routed tokens in this call, by layer.
  std::vector<ExpertLoad> expert_load;
  double seconds = 0;
};

// A request submitted to a running engine (Engine::submit) is known by this id.
using RequestId = std::uint64_t;

// What a submitted request's stream receives: one output per sampled token (an end-of-sequence
// token adds no id) and a last one with `finished` set. Concatenated, the text deltas are the
// request's whole text.
struct RequestOutput {
  RequestId id = 0;
  std::vector<std::int32_t> token_ids;  // tokens this output adds
  std::string text;                     // text that became final with them
  bool finished = false;
  // On the last output: "stop" (EOS, a stop token or string), "length" (max_tokens, the context
  // or the cache), "abort" (aborted or shut down) or "error: ..." (refused, or the engine failed).
  std::string finish_reason;
  std::exception_ptr error;  // when the engine failed: what it threw
  // Usage, on the last output: prompt tokens, generated tokens (without EOS), and prompt tokens
  // found in the prefix cache; seconds between submission and first scheduling.
  std::int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  double queue_seconds = 0;
};

// Receives a submitted request's outputs, in order, on the engine's loop thread: it must be quick,
// must not block (hand the output to another thread) and must not throw (what it throws is
// dropped). It may call the engine's submit and abort.
using OutputCallback = std::function<void(const RequestOutput&)>;

// A running engine's state: gauges as of the last step, counters since the engine started.
struct EngineStatus {
  std::int64_t running = 0;                              // sequences being computed
  std::int64_t waiting = 0;                              // submitted and not yet running (preempted ones included)
  std::int64_t kv_blocks_used = 0, kv_blocks_total = 0;  // held by sequences (cached free blocks are free)
  std::int64_t prompt_tokens = 0;                        // prompt tokens of the requests scheduled
  std::int64_t generation_tokens = 0;                    // tokens sampled (end-of-sequence tokens included)
  std::int64_t computed_tokens = 0;                      // tokens the model ran
  std::int64_t prefix_cache_queries = 0, prefix_cache_hits = 0;  // in tokens, as GenerationStats
  std::int64_t preemptions = 0, steps = 0, graph_steps = 0;
  std::int64_t requests_finished = 0;
  std::int64_t unfinished = 0;  // submitted and not yet finished (in the inbox, waiting or running)
  bool accepting = true;        // false once shutdown() began
  std::string failure;          // the last failure of the engine's ranks (empty: none)
  // Mixture-of-experts models: tokens routed to each expert of each sparse layer since the engine
  // started, by layer. (GPU processes over NCCL with PP > 1: the first pipeline stage's only.)
  std::vector<ExpertLoad> expert_load;

  double kv_cache_usage() const { return kv_blocks_total ? double(kv_blocks_used) / double(kv_blocks_total) : 0.0; }
};

// How shutdown() ends the requests in flight: let them finish, or end them with "abort".
enum class ShutdownMode { drain, abort };

// Called on each new token: request index, token id (-1 for the end-of-sequence token), and
// the text that became final with it.
using TokenCallback = std::function<void(std::size_t, std::int32_t, std::string_view)>;

}  // namespace tpkit
