// tpkit/engine/engine_base.hpp: what every engine holds (the checkpoint, the checked options,
// the tokenizer, the control its running loop takes requests from, the last generate()'s
// statistics), the checks a request gets before any rank runs it, the running engine's API
// (submit, abort, status), and generate() as a client of it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/engine/control.hpp"
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

// GenerationStats of one generate() call: the counters' change (exact when nothing else ran
// meanwhile) and the requests' own token counts.
inline GenerationStats stats_between(const EngineStatus& before, const EngineStatus& after,
                                     const std::vector<GenerationResult>& results, double seconds) {
  GenerationStats st;
  st.steps = after.steps - before.steps;
  st.graph_steps = after.graph_steps - before.graph_steps;
  st.computed_tokens = after.computed_tokens - before.computed_tokens;
  st.preemptions = after.preemptions - before.preemptions;
  st.prefix_cache_queries = after.prefix_cache_queries - before.prefix_cache_queries;
  st.prefix_cache_hits = after.prefix_cache_hits - before.prefix_cache_hits;
  for (ExpertLoad load : after.expert_load) {
    for (const ExpertLoad& old : before.expert_load)
      if (old.layer == load.layer && old.tokens.size() == load.tokens.size())
        for (std::size_t e = 0; e < load.tokens.size(); ++e) load.tokens[e] -= old.tokens[e];
    st.expert_load.push_back(std::move(load));
  }
  for (const GenerationResult& r : results) {
    st.prompt_tokens += std::int64_t(r.prompt_ids.size());
    st.generated_tokens += std::int64_t(r.token_ids.size());
  }
  st.seconds = seconds;
  return st;
}

// Builds generate()'s results from the outputs, and calls the TokenCallback as it always has: per
// token (-1 for an end-of-sequence token that released text) with the text that became final.
class ResultCollector {
 public:
  // `abort`, if set, ends a request: when on_token throws, the requests (ids given consecutively)
  // are aborted and generate() rethrows what it threw once they have ended.
  ResultCollector(const std::vector<std::vector<std::int32_t>>& prompts, TokenCallback on_token,
                  std::function<void(RequestId)> abort = {})
      : results_(prompts.size()), on_token_(std::move(on_token)), abort_(std::move(abort)), remaining_(prompts.size()) {
    for (std::size_t i = 0; i < prompts.size(); ++i) results_[i].prompt_ids = prompts[i];
  }

  void add(std::size_t i, const RequestOutput& out) {
    GenerationResult& r = results_[i];
    r.token_ids.insert(r.token_ids.end(), out.token_ids.begin(), out.token_ids.end());
    r.text += out.text;
    std::exception_ptr thrown;
    if (on_token_ && !callback_failed_) {
      try {
        for (std::size_t t = 0; t < out.token_ids.size(); ++t)
          on_token_(i, out.token_ids[t], t + 1 == out.token_ids.size() ? std::string_view(out.text) : "");
        if (out.token_ids.empty() && !out.text.empty()) on_token_(i, -1, out.text);
      } catch (...) {  // generate() rethrows it once its requests are done; the callback is not called again
        thrown = std::current_exception();
        callback_failed_ = true;
        if (abort_)
          for (std::size_t k = 0; k < results_.size(); ++k) abort_(out.id - i + k);
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (thrown && !error_) error_ = thrown;
    if (!out.finished) return;
    r.finish_reason = out.finish_reason;
    if (out.error && !error_) error_ = out.error;
    if (--remaining_ == 0) done_.notify_all();
  }

  // Waits for every request's last output; rethrows the engine's failure, if any.
  std::vector<GenerationResult> wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return remaining_ == 0; });
    if (error_) std::rethrow_exception(error_);
    return std::move(results_);
  }

 private:
  std::vector<GenerationResult> results_;
  TokenCallback on_token_;
  std::function<void(RequestId)> abort_;
  std::mutex mutex_;
  std::condition_variable done_;
  std::size_t remaining_;
  std::exception_ptr error_;
  bool callback_failed_ = false;  // (only the loop's thread calls add)
};

// Runs the ranks of a threaded engine on a thread of their own for as long as the engine lives:
// started when the first request arrives, parked when idle, started again after a failure
// (whose requests end with it). Declare it after the ranks, so it stops before they go.
class RankRunner {
 public:
  RankRunner() = default;
  RankRunner(const RankRunner&) = delete;
  RankRunner& operator=(const RankRunner&) = delete;
  ~RankRunner() { stop(ShutdownMode::abort); }

  // `run_ranks()` runs every rank's loop until it exits, and throws what failed.
  void start(EngineControl& control, std::function<void()> run_ranks) {
    control_ = &control;
    thread_ = std::thread([&control, run = std::move(run_ranks)] {
      while (control.wait_for_work()) {
        try {
          run();
        } catch (...) {
          control.fail_all(std::current_exception(), /*accept_more=*/true);  // the next request starts them again
        }
      }
    });
  }
  // Stops accepting, ends the requests in flight as `mode` says, and waits for the ranks.
  void stop(ShutdownMode mode) {
    if (!control_) return;
    control_->begin_shutdown(mode);
    if (thread_.joinable()) thread_.join();
  }

 private:
  EngineControl* control_ = nullptr;
  std::thread thread_;
};

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
  // Of the last generate() call.
  const GenerationStats& last_stats() const { return stats_; }

  // Text prompts (encoded with the tokenizer's special tokens, such as a BOS; special-token text
  // typed in a prompt stays text), one set of sampling parameters for all.
  std::vector<GenerationResult> generate(const std::vector<std::string>& prompts, const SamplingParams& params,
                                         TokenCallback on_token = {}) {
    std::vector<std::vector<std::int32_t>> ids;
    for (const auto& p : prompts) ids.push_back(encode_prompt(p));
    return static_cast<Derived&>(*this).generate(ids, std::vector<SamplingParams>(prompts.size(), params),
                                                 std::move(on_token));
  }

  // ---- the running engine (on a distributed engine: world rank 0 only) ----

  // Submits a request while the engine runs; `on_output` receives its outputs on the engine's
  // thread. Throws InvalidArgument for a request that can never run (checked as generate()
  // checks), Unavailable once shutdown began, Overloaded when `max_waiting` (>= 0) requests
  // already wait. A request without a seed gets one.
  RequestId submit(std::vector<std::int32_t> prompt, SamplingParams params, OutputCallback on_output,
                   std::int64_t max_waiting = -1) {
    return resume(std::move(prompt), {}, std::move(params), std::move(on_output), max_waiting);
  }
  // Continues a request that generated `generated` elsewhere (a replica that failed, say): with
  // the same prompt, parameters and seed it produces exactly the outputs the whole request would
  // have produced after those tokens. The ranks prefill prompt + generated, replay the stop rules
  // over `generated` (the text held back for a stop string stays held back) and advance the
  // sampling generator past the draws those tokens took; only later tokens are output, and the
  // usage counts all of them. A request with a drawn seed cannot be resumed.
  RequestId resume(std::vector<std::int32_t> prompt, std::vector<std::int32_t> generated, SamplingParams params,
                   OutputCallback on_output, std::int64_t max_waiting = -1) {
    require_controller();
    std::vector<std::int32_t> whole = prompt;
    whole.insert(whole.end(), generated.begin(), generated.end());
    params.seed = check_requests(config(), has_tokenizer(), {whole}, {params})[0];
    TPKIT_REQUIRE(std::int64_t(generated.size()) < params.max_tokens, "a resumed request has ", generated.size(),
                  " tokens already, max_tokens is ", params.max_tokens);
    std::vector<NewRequest> one(1);
    one[0].prompt = std::move(prompt), one[0].params = std::move(params), one[0].generated = std::move(generated);
    return control_.submit(
        std::move(one),
        [cb = std::move(on_output)](std::size_t, const RequestOutput& out) {
          if (cb) cb(out);
        },
        max_waiting)[0];
  }
  RequestId submit(const std::string& prompt, SamplingParams params, OutputCallback on_output,
                   std::int64_t max_waiting = -1) {
    return submit(encode_prompt(prompt), std::move(params), std::move(on_output), max_waiting);
  }
  // Ends a submitted request with finish reason "abort" and frees its KV blocks; false when it is
  // unknown or already finished.
  bool abort(RequestId id) {
    require_controller();
    return control_.abort(id);
  }
  // Stops taking requests (submit throws Unavailable) and ends the ones in flight as `mode` says;
  // returns at once. The ranks' loop ends once nothing is left (a threaded engine's shutdown()
  // waits for that; a distributed engine's serve() returns).
  void begin_shutdown(ShutdownMode mode = ShutdownMode::drain) {
    require_controller();
    control_.begin_shutdown(mode);
  }
  // Requests running and waiting, KV-cache usage, and counters since the engine started.
  EngineStatus status() const {
    require_controller();
    return control_.status();
  }

 protected:
  EngineBase(const std::string& model_path, EngineOptions options)
      : checkpoint_(Checkpoint::open(model_path)),
        options_(resolve_options(checkpoint_.config(), std::move(options))),
        tokenizer_(load_checked_tokenizer(options_.tokenizer, checkpoint_.config())) {}

  // How the ranks turn tokens into text (null without a tokenizer); lives as long as the engine.
  const Tokenizer* decoder() const { return tokenizer_.get(); }

  std::vector<std::int32_t> encode_prompt(const std::string& prompt) const {
    EncodeOptions encode;
    encode.add_special_tokens = true;
    return tokenizer().encode(prompt, encode);
  }

  void require_controller() const {
    if (!controller_) throw Unavailable("only world rank 0 of a distributed engine takes requests");
  }

  // generate() of the engines whose ranks are threads of this process: a client of the running loop.
  std::vector<GenerationResult> generate_on_loop(const std::vector<std::vector<std::int32_t>>& prompts,
                                                 const std::vector<SamplingParams>& params,
                                                 const TokenCallback& on_token) {
    const std::vector<std::uint64_t> seeds = check_requests(config(), tokenizer_ != nullptr, prompts, params);
    const auto start = std::chrono::steady_clock::now();
    const EngineStatus before = control_.status();
    std::vector<NewRequest> requests(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      requests[i].prompt = prompts[i], requests[i].params = params[i];
      requests[i].params.seed = seeds[i];
    }
    auto collector = std::make_shared<ResultCollector>(prompts, on_token, [this](RequestId id) { control_.abort(id); });
    control_.submit(std::move(requests),
                    [collector](std::size_t i, const RequestOutput& out) { collector->add(i, out); });
    std::vector<GenerationResult> results = collector->wait();
    stats_ = stats_between(before, control_.status(), results,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return results;
  }

  // Starts the threaded engine's rank loop; `run_ranks(fn)` runs fn(world) on every rank's thread
  // (over the mock backend or its one-GPU form); ranks[r] is world rank r.
  template <class RunRanks, class Ranks>
  void start_on_threads(RankRunner& runner, RunRanks run_ranks, Ranks& ranks) {
    runner.start(control_, [this, run_ranks, &ranks] {
      run_ranks([&](auto& world) {
        using Backend = typename std::decay_t<decltype(world)>::backend_type;
        ParallelGroups<Backend> groups(world, options_.layout());
        ranks[std::size_t(world.rank())]->serve(groups, &control_, IdleMode::park, options_.idle_heartbeat);
      });
    });
  }

  Checkpoint checkpoint_;
  EngineOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  GenerationStats stats_;
  EngineControl control_;
  bool controller_ = true;  // this process takes requests (a distributed engine's world rank 0)
};

}  // namespace engine_detail
}  // namespace tpkit
