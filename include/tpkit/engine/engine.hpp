// tpkit/engine/engine.hpp: the example engine. Loads a checkpoint once, shards it over
// tensor-parallel ranks (threads over the mock backend) and generates with continuous
// batching, a paged KV cache and per-request sampling.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/sampling.hpp"
#include "tpkit/engine/scheduler.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/transformer.hpp"
#include "tpkit/tokenizer/llama2c_tokenizer.hpp"

namespace tpkit {

struct EngineOptions {
  int tp_size = 1;
  DType dtype = DType::f32;  // storage of weights and activations: f32, bf16 or f16
  std::string tokenizer;     // a tokenizer.bin; empty: looked for beside the model
  std::int64_t max_num_seqs = 16;
  std::int64_t max_num_batched_tokens = 512;
  std::int64_t block_size = 16;
  std::int64_t num_kv_blocks = 0;  // 0: enough for max_num_seqs full-length sequences, within kv_cache_bytes
  std::int64_t kv_cache_bytes = std::int64_t(1) << 30;  // per rank, when num_kv_blocks is 0
  MockOptions comm;
};

struct GenerationResult {
  std::vector<std::int32_t> prompt_ids, token_ids;  // token_ids: generated, without EOS
  std::string text;                                 // decoded generation (empty without a tokenizer)
  std::string finish_reason;                        // "stop", "length" or "error: ..."
};

struct GenerationStats {
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  double seconds = 0;
};

// Called on each new token: request index, token id, and the text that became final with it.
using TokenCallback = std::function<void(std::size_t, std::int32_t, std::string_view)>;

namespace engine_detail {
class RankModel {
 public:
  virtual ~RankModel() = default;
  virtual void forward(Communicator<MockBackend>& comm, const std::vector<StepSequence>& step,
                       TensorView<float> logits) = 0;
};
template <class T>
class TypedRankModel final : public RankModel {
 public:
  TypedRankModel(const Checkpoint& c, ShardSpec s, std::int64_t blocks, std::int64_t block_size)
      : model_(c, s, blocks, block_size) {}
  void forward(Communicator<MockBackend>& comm, const std::vector<StepSequence>& step,
               TensorView<float> logits) override {
    model_.forward(comm, step, logits);
  }

 private:
  TransformerModel<T> model_;
};

}  // namespace engine_detail

class Engine {
 public:
  explicit Engine(const std::string& model_path, EngineOptions options = {})
      : options_(std::move(options)), checkpoint_(Checkpoint::open(model_path)) {
    const ModelConfig& c = checkpoint_.config();
    c.check_tp_size(options_.tp_size);
    TPKIT_REQUIRE(options_.block_size >= 1, "block_size must be >= 1 (got ", options_.block_size, ")");
    TPKIT_REQUIRE(options_.max_num_seqs >= 1 && options_.max_num_batched_tokens >= 1, "max_num_seqs (",
                  options_.max_num_seqs, ") and max_num_batched_tokens (", options_.max_num_batched_tokens,
                  ") must be >= 1");
    TPKIT_REQUIRE(options_.num_kv_blocks >= 0 && options_.kv_cache_bytes >= 1, "num_kv_blocks (",
                  options_.num_kv_blocks, ") must be >= 0 and kv_cache_bytes (", options_.kv_cache_bytes, ") >= 1");
    if (options_.num_kv_blocks == 0) {
      // Enough blocks for max_num_seqs full-length sequences, but no more than kv_cache_bytes per
      // rank. A rank holds at most ceil(q_heads / group) + 1 KV heads (one more when its query
      // heads straddle a group) and rank 0 has the most query heads: its count + 1 bounds all.
      const std::int64_t wanted =
          options_.max_num_seqs * ((c.max_position + options_.block_size - 1) / options_.block_size);
      const std::int64_t kv_heads =
          partition_heads(c.num_heads, c.num_kv_heads, {0, options_.tp_size}).local_kv_heads() + 1;
      const std::int64_t block_bytes =
          2 * c.num_layers * options_.block_size * kv_heads * c.head_dim * std::int64_t(dtype_size(options_.dtype));
      options_.num_kv_blocks = std::max<std::int64_t>(1, std::min(wanted, options_.kv_cache_bytes / block_bytes));
    }
    load_tokenizer(model_path);
    models_.resize(std::size_t(options_.tp_size));
    run_mock_ranks(
        options_.tp_size,
        [&](Communicator<MockBackend>& comm) {  // each rank reads only its own slices, in parallel
          const ShardSpec shard{comm.rank(), comm.size()};
          auto& slot = models_[std::size_t(comm.rank())];
          switch (options_.dtype) {
            case DType::f32:
              slot = make<float>(shard);
              break;
            case DType::bf16:
              slot = make<bfloat16>(shard);
              break;
            case DType::f16:
              slot = make<half>(shard);
              break;
            default:
              TPKIT_THROW(InvalidArgument, "engine dtype must be f32, bf16 or f16 (got ", dtype_name(options_.dtype),
                          ")");
          }
        },
        options_.comm);
  }

  const ModelConfig& config() const { return checkpoint_.config(); }
  const EngineOptions& options() const { return options_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Llama2cTokenizer& tokenizer() const {
    TPKIT_REQUIRE(tokenizer_, "this engine has no tokenizer; pass token ids instead");
    return *tokenizer_;
  }
  const GenerationStats& last_stats() const { return stats_; }

  // Text prompts (BOS + encoded text), one set of sampling parameters for all.
  std::vector<GenerationResult> generate(const std::vector<std::string>& prompts, const SamplingParams& params,
                                         TokenCallback on_token = {}) {
    std::vector<std::vector<std::int32_t>> ids;
    for (const auto& p : prompts) ids.push_back(tokenizer().encode(p, true, false));
    return generate(ids, std::vector<SamplingParams>(prompts.size(), params), std::move(on_token));
  }

  // Token-id prompts with per-request parameters.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    const ModelConfig& c = config();
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
        TPKIT_REQUIRE(t >= 0 && t < c.vocab_size, "prompt ", i, " contains token id ", t,
                      " outside the vocabulary [0, ", c.vocab_size, ")");
      TPKIT_REQUIRE(params[i].stop.empty() || tokenizer_, "stop strings need a tokenizer");
      seeds.push_back(params[i].seed ? *params[i].seed : (std::uint64_t(entropy()) << 32) ^ entropy());
    }
    std::vector<GenerationResult> results(prompts.size());
    stats_ = {};
    const auto start = std::chrono::steady_clock::now();
    run_mock_ranks(
        options_.tp_size,
        [&](Communicator<MockBackend>& comm) { run_rank(comm, prompts, params, seeds, on_token, results); },
        options_.comm);
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return results;
  }

 private:
  template <class T>
  std::unique_ptr<engine_detail::RankModel> make(ShardSpec shard) {
    return std::make_unique<engine_detail::TypedRankModel<T>>(checkpoint_, shard, options_.num_kv_blocks,
                                                              options_.block_size);
  }

  void load_tokenizer(const std::string& model_path) {
    std::string path = options_.tokenizer;
    if (path.empty()) {
      const bool dir = is_directory(model_path);
      const std::string folder = dir ? model_path : model_path.substr(0, model_path.find_last_of('/') + 1);
      const std::string base = folder.empty() || folder.back() == '/' ? folder : folder + "/";
      for (const char* name : {"tokenizer.bin", "tok512.bin", "tok32000.bin"})
        if (is_regular_file(base + name)) {
          path = base + name;
          break;
        }
    }
    if (path.empty()) return;  // token ids only
    tokenizer_ = std::make_unique<Llama2cTokenizer>(path);
    if (std::int64_t(tokenizer_->vocab_size()) != config().vocab_size)
      throw FormatError(path + ": tokenizer has " + std::to_string(tokenizer_->vocab_size()) +
                        " tokens but the model's vocabulary has " + std::to_string(config().vocab_size));
  }

  // The generation loop of one rank. Every rank runs the same deterministic scheduler; rank 0
  // samples and broadcasts the tokens, so all ranks extend the same sequences.
  void run_rank(Communicator<MockBackend>& comm, const std::vector<std::vector<std::int32_t>>& prompts,
                const std::vector<SamplingParams>& params, const std::vector<std::uint64_t>& seeds,
                const TokenCallback& on_token, std::vector<GenerationResult>& results) {
    const ModelConfig& c = config();
    const bool leader = comm.rank() == 0;
    std::vector<Sequence> sequences(prompts.size());
    Scheduler scheduler(
        {options_.max_num_seqs, options_.max_num_batched_tokens, options_.block_size, options_.num_kv_blocks});
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      Sequence& s = sequences[i];
      s.index = i;
      s.tokens = prompts[i];
      s.prompt_length = std::int64_t(prompts[i].size());
      s.params = params[i];
      s.rng.seed(seeds[i]);
      scheduler.add(&s);
    }
    engine_detail::RankModel& model = *models_[std::size_t(comm.rank())];
    Sampler sampler;
    std::vector<StepSequence> step_sequences;
    std::vector<float> logits;
    std::vector<std::int32_t> sampled;
    std::vector<ScheduledChunk> step;
    std::int64_t steps = 0;
    while (!scheduler.done()) {
      scheduler.schedule(step);
      if (step.empty()) continue;  // the scheduler finished requests that cannot run
      step_sequences.clear();
      std::int64_t rows = 0;
      for (const ScheduledChunk& ch : step) {
        step_sequences.push_back(
            {ch.sequence->tokens.data() + ch.start, ch.count, ch.start, &ch.sequence->blocks, ch.samples});
        rows += ch.samples ? 1 : 0;
      }
      logits.resize(std::size_t(rows * c.vocab_size));
      model.forward(comm, step_sequences, TensorView<float>(logits.data(), {rows, c.vocab_size}));
      scheduler.complete(step);
      ++steps;
      sampled.assign(std::size_t(rows), 0);
      std::int64_t row = 0;
      if (leader)
        for (const ScheduledChunk& ch : step)
          if (ch.samples) {
            sampled[std::size_t(row)] =
                sampler.sample(logits.data() + row * c.vocab_size, c.vocab_size, ch.sequence->params, ch.sequence->rng);
            ++row;
          }
      if (comm.size() > 1) comm.broadcast(sampled.data(), sampled.size(), 0);
      row = 0;
      for (const ScheduledChunk& ch : step)
        if (ch.samples) accept(*ch.sequence, sampled[std::size_t(row++)], scheduler, leader ? &on_token : nullptr);
    }
    if (!leader) return;
    stats_.steps = steps;
    stats_.preemptions = scheduler.preemptions();
    for (Sequence& s : sequences) {
      GenerationResult& r = results[s.index];
      r.prompt_ids.assign(s.tokens.begin(), s.tokens.begin() + s.prompt_length);
      r.token_ids.assign(s.tokens.begin() + s.prompt_length, s.tokens.end());
      r.text = s.text;
      r.finish_reason = s.finish_reason;
      stats_.prompt_tokens += s.prompt_length;
      stats_.generated_tokens += s.generated();
    }
  }

  // Appends a sampled token, applies the stop rules and streams what became final.
  void accept(Sequence& s, std::int32_t token, Scheduler& scheduler, const TokenCallback* on_token) {
    const ModelConfig& c = config();
    const bool eos = !s.params.ignore_eos &&
                     std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) != c.eos_token_ids.end();
    std::string reason;
    if (eos) {
      reason = "stop";
    } else {
      if (tokenizer_) s.text += tokenizer_->decode(s.tokens.back(), token);
      s.tokens.push_back(token);
      if (!s.params.stop.empty()) {
        std::size_t cut = std::string::npos;
        for (const auto& stop : s.params.stop)
          cut = std::min(cut, s.text.find(stop, s.streamed > stop.size() ? s.streamed - stop.size() : 0));
        if (cut != std::string::npos) {
          s.text.resize(cut);
          reason = "stop";
        }
      }
      if (reason.empty() && (s.generated() >= s.params.max_tokens || std::int64_t(s.tokens.size()) >= c.max_position))
        reason = "length";
    }
    // Hold back a tail that could still become a stop string.
    std::size_t final_end = s.text.size();
    if (reason.empty())
      for (const auto& stop : s.params.stop)
        for (std::size_t k = std::min(stop.size() - 1, s.text.size()); k > 0; --k)
          if (s.text.compare(s.text.size() - k, k, stop, 0, k) == 0) {
            final_end = std::min(final_end, s.text.size() - k);
            break;
          }
    if (on_token && *on_token && (!eos || final_end > s.streamed)) {
      const std::string_view piece =
          std::string_view(s.text).substr(s.streamed, final_end - std::min(final_end, s.streamed));
      (*on_token)(s.index, eos ? -1 : token, piece);
    }
    s.streamed = std::max(s.streamed, final_end);
    if (!reason.empty()) scheduler.finish(&s, reason);
  }

  EngineOptions options_;
  Checkpoint checkpoint_;
  std::unique_ptr<Llama2cTokenizer> tokenizer_;
  std::vector<std::unique_ptr<engine_detail::RankModel>> models_;
  GenerationStats stats_;
};

}  // namespace tpkit
