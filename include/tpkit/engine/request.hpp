// tpkit/engine/request.hpp: what a caller asks of the engine and gets back. SamplingParams are
// the sampling rule (tpkit/sampling/sampler.hpp) plus what only the engine acts on: the seed of
// the request's generator, max_tokens, stop strings and tokens, ignore_eos and how the text is
// decoded.
#pragma once

#include <cstdint>
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

struct GenerationStats {
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  std::int64_t graph_steps = 0;      // steps whose layers ran from a CUDA graph (on the leader)
  std::int64_t computed_tokens = 0;  // tokens the model ran (prompt and generated; cached ones are not run)
  // Prompt tokens looked up in the prefix cache when requests were admitted, and found there.
  std::int64_t prefix_cache_queries = 0, prefix_cache_hits = 0;
  double seconds = 0;
};

// Called on each new token: request index, token id (-1 for the end-of-sequence token), and
// the text that became final with it.
using TokenCallback = std::function<void(std::size_t, std::int32_t, std::string_view)>;

}  // namespace tpkit
