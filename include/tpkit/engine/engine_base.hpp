// tpkit/engine/engine_base.hpp: what every engine holds (the checkpoint, the checked options,
// the tokenizer, the last run's statistics), the checks a request list gets before any rank
// runs it, and the text form of generate.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/engine/request.hpp"
#include "tpkit/engine/stop_checker.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/parallel/pipeline.hpp"
#include "tpkit/tokenizer/load.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit {
namespace engine_detail {

// Checks the requests and returns each one's sampling seed (drawn when not given). Call it once
// and hand the same seeds to every rank.
inline std::vector<std::uint64_t> check_requests(const ModelConfig& c, bool has_tokenizer,
                                                 const std::vector<std::vector<std::int32_t>>& prompts,
                                                 const std::vector<SamplingParams>& params) {
  TPKIT_REQUIRE(params.size() == prompts.size(), "got ", prompts.size(), " prompts but ", params.size(),
                " sets of sampling parameters");
  std::random_device entropy;
  std::vector<std::uint64_t> seeds;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    params[i].validate();
    TPKIT_REQUIRE(!prompts[i].empty(), "prompt ", i, " is empty");
    TPKIT_REQUIRE(std::int64_t(prompts[i].size()) < c.max_position, "prompt ", i, " has ", prompts[i].size(),
                  " tokens; the model's context is ", c.max_position);
    for (std::int32_t t : prompts[i])
      TPKIT_REQUIRE(t >= 0 && t < c.vocab_size, "prompt ", i, " contains token id ", t, " outside the vocabulary [0, ",
                    c.vocab_size, ")");
    TPKIT_REQUIRE(params[i].stop.empty() || has_tokenizer, "stop strings need a tokenizer");
    seeds.push_back(params[i].seed ? *params[i].seed : (std::uint64_t(entropy()) << 32) ^ entropy());
  }
  return seeds;
}

// The tokenizer at `path` (a tokenizer.json, a llama2.c tokenizer .bin or a directory holding
// one; empty: none), checked against the model's vocabulary: a llama2.c tokenizer has exactly
// the model's ids; a tokenizer.json may have fewer (models pad their vocabulary: Qwen3 has
// 151,669 tokens for 151,936 rows), never more.
inline std::unique_ptr<Tokenizer> load_checked_tokenizer(const std::string& path, const ModelConfig& c) {
  if (path.empty()) return nullptr;
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(path);
  const auto n = std::int64_t(tokenizer->vocab_size());
  const bool llama2c = dynamic_cast<const Llama2cTokenizer*>(tokenizer.get()) != nullptr;
  if (llama2c ? n != c.vocab_size : n > c.vocab_size)
    throw FormatError(path + ": tokenizer has " + std::to_string(n) + " tokens but the model's vocabulary has " +
                      std::to_string(c.vocab_size));
  return tokenizer;
}

// CRTP base of the engines: Derived provides generate(token-id prompts, params, callback).
template <class Derived>
class EngineBase {
 public:
  const ModelConfig& config() const { return checkpoint_.config(); }
  const EngineOptions& options() const { return options_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Tokenizer& tokenizer() const {
    TPKIT_REQUIRE(tokenizer_, "this engine has no tokenizer (EngineOptions::tokenizer); pass token ids instead");
    return *tokenizer_;
  }
  // Of the last generate() call (filled on the leader rank).
  const GenerationStats& last_stats() const { return stats_; }

  // Text prompts (encoded with the tokenizer's special tokens, such as a BOS; special-token text
  // typed in a prompt stays text), one set of sampling parameters for all.
  std::vector<GenerationResult> generate(const std::vector<std::string>& prompts, const SamplingParams& params,
                                         TokenCallback on_token = {}) {
    std::vector<std::vector<std::int32_t>> ids;
    EncodeOptions encode;
    encode.add_special_tokens = true;
    for (const auto& p : prompts) ids.push_back(tokenizer().encode(p, encode));
    return static_cast<Derived&>(*this).generate(ids, std::vector<SamplingParams>(prompts.size(), params),
                                                 std::move(on_token));
  }

 protected:
  EngineBase(const std::string& model_path, EngineOptions options)
      : checkpoint_(Checkpoint::open(model_path)),
        options_(resolve_options(checkpoint_.config(), std::move(options))),
        tokenizer_(load_checked_tokenizer(options_.tokenizer, checkpoint_.config())) {}

  // How the ranks turn tokens into text (null without a tokenizer); lives as long as the engine.
  const Tokenizer* decoder() const { return tokenizer_.get(); }

  // The engines whose ranks are threads of this process: run_ranks(fn) runs fn(world) on every
  // rank's thread (over the mock backend or its one-GPU form); ranks[r] is world rank r.
  template <class RunRanks, class Ranks>
  std::vector<GenerationResult> generate_on_threads(const std::vector<std::vector<std::int32_t>>& prompts,
                                                    const std::vector<SamplingParams>& params,
                                                    const TokenCallback& on_token, RunRanks&& run_ranks, Ranks& ranks) {
    const std::vector<std::uint64_t> seeds = check_requests(config(), tokenizer_ != nullptr, prompts, params);
    std::vector<GenerationResult> results;
    stats_ = {};
    const auto start = std::chrono::steady_clock::now();
    run_ranks([&](auto& world) {
      using Backend = typename std::decay_t<decltype(world)>::backend_type;
      ParallelGroups<Backend> groups(world, options_.layout());
      auto mine = ranks[std::size_t(world.rank())]->generate(groups, prompts, params, seeds, on_token, &stats_);
      if (groups.leader()) results = std::move(mine);
    });
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return results;
  }

  Checkpoint checkpoint_;
  EngineOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  GenerationStats stats_;
};

}  // namespace engine_detail
}  // namespace tpkit
