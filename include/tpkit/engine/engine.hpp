// tpkit/engine/engine.hpp: the example engine. Loads a checkpoint, shards it over a world of
// tp_size x pp_size ranks (tensor-parallel groups in pipeline stages) and generates with
// continuous batching, a paged KV cache and per-request sampling. EngineRank is one rank and
// works over any backend; Engine runs all ranks as threads over the mock backend.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/sampling.hpp"
#include "tpkit/engine/scheduler.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/transformer.hpp"
#include "tpkit/parallel/pipeline.hpp"
#include "tpkit/tokenizer/llama2c_tokenizer.hpp"

namespace tpkit {

struct EngineOptions {
  int tp_size = 1;
  int pp_size = 1;                             // pipeline stages; the world has tp_size x pp_size ranks
  std::vector<std::int64_t> layers_per_stage;  // empty: balanced split over pp_size stages
  int micro_batches = 0;                       // sequences' groups in flight in the pipeline; 0: pp_size
  DType dtype = DType::f32;                    // storage of weights and activations: f32, bf16 or f16
  std::string tokenizer;                       // a tokenizer.bin; empty: looked for beside the model
  std::int64_t max_num_seqs = 16;
  std::int64_t max_num_batched_tokens = 512;
  std::int64_t block_size = 16;
  std::int64_t num_kv_blocks = 0;  // 0: enough for max_num_seqs full-length sequences, within kv_cache_bytes
  std::int64_t kv_cache_bytes = std::int64_t(1) << 30;  // per rank, when num_kv_blocks is 0 (CPU)
  MockOptions comm;                                     // the threaded engine's mock backend
  // The GPU engine (tpkit/cuda/engine.cuh): which device, and the fraction of its memory that
  // weights and KV cache may use; with num_kv_blocks 0 the KV cache gets what is left.
  int gpu = 0;
  double gpu_memory_utilization = 0.9;
  // GPU engines: decode steps of a single-stage model replay CUDA graphs of their layers
  // (TransformerModel::enable_step_graphs) unless this is set, as with vLLM's enforce_eager.
  bool enforce_eager = false;

  ParallelLayout layout() const { return {tp_size, pp_size}; }
};

struct GenerationResult {
  std::vector<std::int32_t> prompt_ids, token_ids;  // token_ids: generated, without EOS
  std::string text;                                 // decoded generation (empty without a tokenizer)
  std::string finish_reason;                        // "stop", "length" or "error: ..."
};

struct GenerationStats {
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  std::int64_t graph_steps = 0;  // steps whose layers ran from a CUDA graph (on the leader)
  double seconds = 0;
};

// Called on each new token: request index, token id, and the text that became final with it.
using TokenCallback = std::function<void(std::size_t, std::int32_t, std::string_view)>;

namespace engine_detail {
template <class Backend>
class RankModel {
 public:
  virtual ~RankModel() = default;
  // Runs one step. On the last stage, the logits of the `rows` sampling rows stay with the model.
  virtual void forward(Communicator<Backend>& tp, const std::vector<StepSequence>& step, std::int64_t rows,
                       PipelineStage<Backend>* stage) = 0;
  // tokens[r] = the token sampled from row r of the last step's logits (last stage only).
  virtual void sample(const std::vector<SampleRequest>& requests, std::int32_t* tokens) = 0;
  virtual std::int64_t graph_steps() const = 0;  // TransformerModel::graph_steps
};
// The model of one rank with its Ops policy. The logits stay in the Ops' memory and are
// sampled there (on a GPU only the tokens come back to the host).
template <class T, class Backend, class Ops>
class TypedRankModel final : public RankModel<Backend> {
 public:
  // graph_rows: the largest decode step run from a graph (0: none).
  TypedRankModel(const Checkpoint& c, ShardSpec s, std::int64_t blocks, std::int64_t block_size, Range layers,
                 std::int64_t graph_rows)
      : model_(c, s, blocks, block_size, layers), vocab_(c.config().vocab_size) {
    model_.enable_step_graphs(graph_rows);
  }
  void forward(Communicator<Backend>& tp, const std::vector<StepSequence>& step, std::int64_t rows,
               PipelineStage<Backend>* stage) override {
    logits_.reserve_at_least(std::size_t(rows * vocab_));
    rows_ = rows;
    model_.forward(tp, step, TensorView<float>(logits_.data(), {rows, vocab_}, Ops::memory), stage);
  }
  void sample(const std::vector<SampleRequest>& requests, std::int32_t* tokens) override {
    TPKIT_REQUIRE(std::int64_t(requests.size()) == rows_, "sampling ", requests.size(), " rows of a step that has ",
                  rows_);
    Ops::sample(sampling_, logits_.data(), rows_, vocab_, requests.data(), tokens);
  }
  std::int64_t graph_steps() const override { return model_.graph_steps(); }

 private:
  TransformerModel<T, Ops> model_;
  std::int64_t vocab_, rows_ = 0;
  typename Ops::template Buffer<float> logits_;
  typename Ops::SamplingState sampling_;
};

// Bytes of one KV-cache block on the rank that needs the most. A rank holds at most
// ceil(q_heads / group) + 1 KV heads (one more when its query heads straddle a group) and rank 0
// has the most query heads: its count + 1 bounds all. Its layers are those of the largest stage.
inline std::int64_t kv_block_bytes(const ModelConfig& c, const EngineOptions& o, const std::vector<Range>& stages) {
  std::int64_t layers = 0;
  for (const Range& r : stages) layers = std::max(layers, r.size());
  const std::int64_t kv_heads = partition_heads(c.num_heads, c.num_kv_heads, {0, o.tp_size}).local_kv_heads() + 1;
  return 2 * layers * o.block_size * kv_heads * c.head_dim * std::int64_t(dtype_size(o.dtype));
}

// Blocks that max_num_seqs sequences of the model's full length use: more would never be used.
inline std::int64_t blocks_for_full_sequences(const ModelConfig& c, const EngineOptions& o) {
  return o.max_num_seqs * ((c.max_position + o.block_size - 1) / o.block_size);
}

// Checks the options against the model and fills in num_kv_blocks and micro_batches.
inline EngineOptions resolve_options(const ModelConfig& c, EngineOptions o) {
  c.check_tp_size(o.tp_size);
  const std::vector<Range> stages = split_layers(c.num_layers, o.pp_size, o.layers_per_stage);
  TPKIT_REQUIRE(o.block_size >= 1, "block_size must be >= 1 (got ", o.block_size, ")");
  TPKIT_REQUIRE(o.max_num_seqs >= 1 && o.max_num_batched_tokens >= 1, "max_num_seqs (", o.max_num_seqs,
                ") and max_num_batched_tokens (", o.max_num_batched_tokens, ") must be >= 1");
  TPKIT_REQUIRE(o.num_kv_blocks >= 0 && o.kv_cache_bytes >= 1, "num_kv_blocks (", o.num_kv_blocks,
                ") must be >= 0 and kv_cache_bytes (", o.kv_cache_bytes, ") >= 1");
  TPKIT_REQUIRE(o.micro_batches >= 0, "micro_batches must be >= 0 (got ", o.micro_batches, ")");
  if (o.micro_batches == 0) o.micro_batches = o.pp_size;
  if (o.num_kv_blocks == 0)  // enough for max_num_seqs full-length sequences, within kv_cache_bytes per rank
    o.num_kv_blocks = std::max<std::int64_t>(
        o.micro_batches, std::min(blocks_for_full_sequences(c, o), o.kv_cache_bytes / kv_block_bytes(c, o, stages)));
  TPKIT_REQUIRE(o.num_kv_blocks >= o.micro_batches, "num_kv_blocks (", o.num_kv_blocks, ") must give each of the ",
                o.micro_batches, " micro-batches at least one block");
  TPKIT_REQUIRE(o.dtype == DType::f32 || o.dtype == DType::bf16 || o.dtype == DType::f16,
                "engine dtype must be f32, bf16 or f16 (got ", dtype_name(o.dtype), ")");
  return o;
}

// The tokenizer named in the options, else one found beside the model, else none (token ids only).
inline std::unique_ptr<Llama2cTokenizer> load_tokenizer(const std::string& model_path, std::string path,
                                                        const ModelConfig& c) {
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
  if (path.empty()) return nullptr;
  auto tokenizer = std::make_unique<Llama2cTokenizer>(path);
  if (std::int64_t(tokenizer->vocab_size()) != c.vocab_size)
    throw FormatError(path + ": tokenizer has " + std::to_string(tokenizer->vocab_size()) +
                      " tokens but the model's vocabulary has " + std::to_string(c.vocab_size));
  return tokenizer;
}

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
}  // namespace engine_detail

// One rank of the engine: its shard of its pipeline stage's layers, and the generation loop
// that every rank of a TP x PP world runs. Every rank runs the same deterministic schedulers;
// the leader (TP rank 0 of the last stage) samples and hands the tokens to every other rank, so
// all ranks extend the same sequences. Used by Engine (ranks as threads over the mock backend),
// one per process over MPI or NCCL (DistributedEngine), and on a GPU with Ops = CudaOps
// (CudaEngine).
template <class Backend, class Ops = HostOps>
class EngineRank {
 public:
  static constexpr int kTokenTag = 2;
  // How the tokens travel. Host backends buffer sends: the leader sends each rank the tokens as
  // soon as it has sampled them, and a rank receives them only when it needs them, so the
  // pipeline's stages overlap. A stream-ordered backend (NCCL: stream_ordered) cannot
  // promise that a send completes before its receive is posted, and a receive queued on a
  // stage's stream behind that stage's activation sends would then deadlock with the leader.
  // There every rank enters a world broadcast at the same point of its loop instead, which
  // keeps every rank's operations in one order; the stages then wait for each other's tokens.
  static constexpr bool kTokensByBroadcast = stream_ordered<Backend>::value;

  // `options` as returned by engine_detail::resolve_options; `tokenizer` may be null.
  EngineRank(const Checkpoint& checkpoint, const EngineOptions& options, const Llama2cTokenizer* tokenizer,
             int world_rank)
      : config_(checkpoint.config()), options_(options), tokenizer_(tokenizer) {
    const ParallelLayout layout = options.layout();
    const ShardSpec shard{layout.tp_rank(world_rank), options.tp_size};
    const Range layers = split_layers(config_.num_layers, options.pp_size,
                                      options.layers_per_stage)[std::size_t(layout.pp_rank(world_rank))];
    switch (options.dtype) {
      case DType::bf16:
        model_ = make<bfloat16>(checkpoint, shard, layers);
        break;
      case DType::f16:
        model_ = make<half>(checkpoint, shard, layers);
        break;
      default:
        model_ = make<float>(checkpoint, shard, layers);
    }
    layers_ = layers;
  }

  // Generates for every request. Every rank returns the same results; `on_token` is called and
  // `stats` filled on the leader only.
  std::vector<GenerationResult> generate(ParallelGroups<Backend>& groups,
                                         const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params,
                                         const std::vector<std::uint64_t>& seeds, const TokenCallback& on_token,
                                         GenerationStats* stats = nullptr) {
    const bool leader = groups.leader();
    PipelineStage<Backend> stage(groups.pp(), layers_);
    // One scheduler per micro-batch, each with its own share of the KV blocks; requests are dealt
    // round-robin. While micro-batch k's step runs through the later stages, the earlier stages
    // work on micro-batch k + 1.
    const int mbs = options_.micro_batches;
    const std::int64_t blocks_each = options_.num_kv_blocks / mbs;
    std::vector<Scheduler> schedulers;
    for (int k = 0; k < mbs; ++k)
      schedulers.emplace_back(SchedulerOptions{(options_.max_num_seqs + mbs - 1) / mbs, options_.max_num_batched_tokens,
                                               options_.block_size, blocks_each, std::int32_t(k * blocks_each)});
    std::vector<Sequence> sequences(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      Sequence& s = sequences[i];
      s.index = i;
      s.tokens = prompts[i];
      s.prompt_length = std::int64_t(prompts[i].size());
      s.params = params[i];
      s.rng.seed(seeds[i]);
      schedulers[i % std::size_t(mbs)].add(&s);
    }
    struct InFlight {
      std::vector<ScheduledChunk> step;
      std::vector<std::int32_t> tokens;  // the step's sampled tokens, once known
      bool pending = false;              // sampled tokens not yet accepted
    };
    std::vector<InFlight> flights(static_cast<std::size_t>(mbs));
    std::vector<SampleRequest> requests;
    std::vector<StepSequence> step_sequences;
    std::int64_t steps = 0;
    const std::int64_t graph_steps_before = model_->graph_steps();
    const TokenCallback* callback = leader ? &on_token : nullptr;
    for (bool active = true; active;) {
      active = false;
      for (int k = 0; k < mbs; ++k) {
        InFlight& f = flights[std::size_t(k)];
        Scheduler& scheduler = schedulers[std::size_t(k)];
        if (!f.pending && scheduler.done()) continue;
        active = true;
        if (f.pending) {  // the tokens of this micro-batch's previous step
          if (kTokensByBroadcast)
            groups.world().broadcast(f.tokens.data(), f.tokens.size(), groups.layout().leader());
          else if (!leader)
            groups.world().recv(f.tokens.data(), f.tokens.size(), groups.layout().leader(), kTokenTag);
          std::size_t row = 0;
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) accept(*ch.sequence, f.tokens[row++], scheduler, callback);
          f.pending = false;
        }
        if (scheduler.done()) continue;
        scheduler.schedule(f.step);
        if (f.step.empty()) continue;  // the scheduler finished requests that cannot run
        step_sequences.clear();
        std::int64_t rows = 0;
        for (const ScheduledChunk& ch : f.step) {
          step_sequences.push_back(
              {ch.sequence->tokens.data() + ch.start, ch.count, ch.start, &ch.sequence->blocks, ch.samples});
          rows += ch.samples ? 1 : 0;
        }
        model_->forward(groups.tp(), step_sequences, stage.last() ? rows : 0, &stage);
        scheduler.complete(f.step);
        ++steps;
        if (rows == 0) continue;
        f.tokens.assign(std::size_t(rows), 0);
        if (leader) {
          requests.clear();
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) requests.push_back({&ch.sequence->params, &ch.sequence->rng});
          model_->sample(requests, f.tokens.data());
          for (int r = 0; !kTokensByBroadcast && r < groups.world().size(); ++r)
            if (r != groups.world().rank()) groups.world().send(f.tokens.data(), f.tokens.size(), r, kTokenTag);
        }
        f.pending = true;
      }
    }
    std::vector<GenerationResult> results(prompts.size());
    GenerationStats st;
    st.steps = steps;
    st.graph_steps = model_->graph_steps() - graph_steps_before;
    for (const Scheduler& sc : schedulers) st.preemptions += sc.preemptions();
    for (Sequence& s : sequences) {
      GenerationResult& r = results[s.index];
      r.prompt_ids.assign(s.tokens.begin(), s.tokens.begin() + s.prompt_length);
      r.token_ids.assign(s.tokens.begin() + s.prompt_length, s.tokens.end());
      r.text = s.text;
      r.finish_reason = s.finish_reason;
      st.prompt_tokens += s.prompt_length;
      st.generated_tokens += s.generated();
    }
    if (leader && stats) *stats = st;
    return results;
  }

 private:
  template <class T>
  std::unique_ptr<engine_detail::RankModel<Backend>> make(const Checkpoint& checkpoint, ShardSpec shard, Range layers) {
    return std::make_unique<engine_detail::TypedRankModel<T, Backend, Ops>>(
        checkpoint, shard, options_.num_kv_blocks, options_.block_size, layers,
        options_.enforce_eager ? 0 : options_.max_num_seqs);
  }

  // Appends a sampled token, applies the stop rules and streams what became final.
  void accept(Sequence& s, std::int32_t token, Scheduler& scheduler, const TokenCallback* on_token) {
    const ModelConfig& c = config_;
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

  ModelConfig config_;
  EngineOptions options_;
  const Llama2cTokenizer* tokenizer_;
  Range layers_;
  std::unique_ptr<engine_detail::RankModel<Backend>> model_;
};

namespace engine_detail {
// What both engines hold (the checkpoint, the checked options, the tokenizer, the last run's
// statistics) and the text form of generate, which encodes and calls Derived's token-id form.
template <class Derived>
class EngineBase {
 public:
  const ModelConfig& config() const { return checkpoint_.config(); }
  const EngineOptions& options() const { return options_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const Llama2cTokenizer& tokenizer() const {
    TPKIT_REQUIRE(tokenizer_, "this engine has no tokenizer; pass token ids instead");
    return *tokenizer_;
  }
  // Of the last generate() call (filled on the leader rank).
  const GenerationStats& last_stats() const { return stats_; }

  // Text prompts (BOS + encoded text), one set of sampling parameters for all.
  std::vector<GenerationResult> generate(const std::vector<std::string>& prompts, const SamplingParams& params,
                                         TokenCallback on_token = {}) {
    std::vector<std::vector<std::int32_t>> ids;
    for (const auto& p : prompts) ids.push_back(tokenizer().encode(p, true, false));
    return static_cast<Derived&>(*this).generate(ids, std::vector<SamplingParams>(prompts.size(), params),
                                                 std::move(on_token));
  }

 protected:
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

  EngineBase(const std::string& model_path, EngineOptions options)
      : checkpoint_(Checkpoint::open(model_path)),
        options_(resolve_options(checkpoint_.config(), std::move(options))),
        tokenizer_(load_tokenizer(model_path, options_.tokenizer, checkpoint_.config())) {}

  Checkpoint checkpoint_;
  EngineOptions options_;
  std::unique_ptr<Llama2cTokenizer> tokenizer_;
  GenerationStats stats_;
};
}  // namespace engine_detail

// The engine in one process: loads a checkpoint once and runs tp_size x pp_size ranks as
// threads over the mock backend.
class Engine : public engine_detail::EngineBase<Engine> {
 public:
  explicit Engine(const std::string& model_path, EngineOptions options = {})
      : EngineBase(model_path, std::move(options)) {
    ranks_.resize(std::size_t(options_.layout().world_size()));
    run_mock_ranks(
        options_.layout().world_size(),
        [&](Communicator<MockBackend>& comm) {  // each rank reads only its own slices, in parallel
          ranks_[std::size_t(comm.rank())] =
              std::make_unique<EngineRank<MockBackend>>(checkpoint_, options_, tokenizer_.get(), comm.rank());
        },
        options_.comm);
  }

  using EngineBase::generate;  // text prompts

  // Token-id prompts with per-request parameters.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    return generate_on_threads(
        prompts, params, on_token,
        [&](auto&& fn) { run_mock_ranks(options_.layout().world_size(), fn, options_.comm); }, ranks_);
  }

 private:
  std::vector<std::unique_ptr<EngineRank<MockBackend>>> ranks_;
};

namespace engine_detail {
// FNV-1a over the bytes of what every rank must agree on.
struct Fingerprint {
  std::uint64_t value = 1469598103934665603ull;
  void add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) value = (value ^ p[i]) * 1099511628211ull;
  }
  template <class T>
  void add(const T& v) {
    static_assert(std::is_arithmetic_v<T>);
    add(&v, sizeof v);
  }
  void add(const std::string& s) {
    add(s.size());
    add(s.data(), s.size());
  }
};

// Throws InvalidArgument on every rank, naming the ranks whose fingerprint differs from rank 0's.
template <class Backend>
void require_agreement(Communicator<Backend>& world, const Fingerprint& mine, const char* what) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(world.size()));
  const std::int64_t v = std::int64_t(mine.value);
  world.all_gather(&v, 1, all.data());
  std::string differ;
  for (int r = 1; r < world.size(); ++r)
    if (all[std::size_t(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  TPKIT_REQUIRE(differ.empty(), "ranks disagree on ", what, ": world rank(s) ", differ, " differ from world rank 0");
}
}  // namespace engine_detail

// The engine with one rank per process (MPI, NCCL, or any backend whose world spans processes):
// each process loads the checkpoint (memory-mapped: it reads only its own slices) and runs its
// rank. Every process must pass the same model, options and requests; that is checked, and a
// disagreement is an error on every rank rather than a hang or wrong tokens.
//
// With Ops = CudaOps (one GPU per process, tpkit/cuda/engine.cuh has the helpers) the calling
// thread must have a CudaContext bound, and the backend must enqueue on that context's stream.
template <class Backend, class Ops = HostOps>
class DistributedEngine : public engine_detail::EngineBase<DistributedEngine<Backend, Ops>> {
  using Base = engine_detail::EngineBase<DistributedEngine<Backend, Ops>>;
  using Base::checkpoint_, Base::options_, Base::tokenizer_, Base::stats_;

 public:
  DistributedEngine(Communicator<Backend>& world, const std::string& model_path, EngineOptions options)
      : Base(model_path, std::move(options)),
        world_(world),
        groups_((check_setup(), world), options_.layout()),
        rank_(checkpoint_, options_, tokenizer_.get(), world.rank()) {}

  bool leader() const { return world_.rank() == options_.layout().leader(); }
  using Base::config, Base::has_tokenizer, Base::generate;

  // Collective over the world. Seeds drawn for unseeded requests are world rank 0's.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    std::vector<std::uint64_t> seeds = engine_detail::check_requests(config(), has_tokenizer(), prompts, params);
    engine_detail::Fingerprint f;
    f.add(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      f.add(prompts[i].data(), prompts[i].size() * sizeof(std::int32_t));
      const SamplingParams& p = params[i];
      f.add(p.temperature), f.add(p.top_k), f.add(p.top_p), f.add(p.min_p), f.add(p.max_tokens), f.add(p.ignore_eos);
      f.add(p.seed.has_value()), f.add(p.seed.value_or(0));
      for (const auto& stop : p.stop) f.add(stop);
    }
    engine_detail::require_agreement(world_, f, "the requests");
    // (Signed and unsigned views of the same integers may alias.)
    if (!seeds.empty()) world_.broadcast(reinterpret_cast<std::int64_t*>(seeds.data()), seeds.size(), 0);
    stats_ = {};
    const auto start = std::chrono::steady_clock::now();
    auto results = rank_.generate(groups_, prompts, params, seeds, on_token, &stats_);
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return results;
  }

 private:
  void check_setup() {
    const EngineOptions& o = options_;
    const ModelConfig& c = checkpoint_.config();
    engine_detail::Fingerprint f;
    f.add(o.tp_size), f.add(o.pp_size), f.add(o.micro_batches), f.add(int(o.dtype)), f.add(o.max_num_seqs);
    f.add(o.max_num_batched_tokens), f.add(o.block_size), f.add(o.num_kv_blocks);
    for (std::int64_t n : o.layers_per_stage) f.add(n);
    f.add(c.hidden_size), f.add(c.num_layers), f.add(c.num_heads), f.add(c.num_kv_heads), f.add(c.vocab_size);
    f.add(tokenizer_ != nullptr);
    engine_detail::require_agreement(world_, f, "the model or the engine options");
  }

  Communicator<Backend>& world_;
  ParallelGroups<Backend> groups_;
  EngineRank<Backend, Ops> rank_;
};

}  // namespace tpkit
