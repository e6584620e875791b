// tpkit/model/transformer.hpp: a Llama / Mistral / Qwen2 / Qwen3 decoder assembled from tpkit
// layers, one instance per tensor-parallel rank.
//
// Per block: RMSNorm -> QKVParallelLinear (+ per-head q/k RMSNorm for Qwen3) -> RoPE -> write
// K/V to the paged cache -> paged attention over this rank's heads -> o_proj
// (RowParallelLinear, all-reduce) -> residual -> RMSNorm -> MergedGateUpLinear -> SiLU * up ->
// down_proj (RowParallelLinear, all-reduce) -> residual. Then the final RMSNorm and the
// ParallelLMHead. Nothing here computes a shard offset: the layers and partition_heads do.
//
// Under pipeline parallelism an instance holds one stage: a range of layers (and their KV
// cache), plus the embedding on the first stage and the final norm and LM head on the last.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/layers/embedding.hpp"
#include "tpkit/layers/gate_up.hpp"
#include "tpkit/layers/linear.hpp"
#include "tpkit/layers/qkv.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/rope.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/pipeline.hpp"

namespace tpkit {

// The tokens one sequence contributes to a forward step: `count` tokens at positions
// start_position.. (a whole prompt, a prefill chunk, or one decode token).
struct StepSequence {
  const std::int32_t* tokens = nullptr;
  std::int64_t count = 0;
  std::int64_t start_position = 0;
  const std::vector<std::int32_t>* blocks = nullptr;  // covers every position up to the last
  bool want_logits = false;                           // logits for the last token of this step
};

template <class T, class Ops = HostOps>
class TransformerModel {
 public:
  // layers: the pipeline stage's layers (empty: all of them, a single stage).
  TransformerModel(const Checkpoint& ckpt, ShardSpec shard, std::int64_t num_kv_blocks, std::int64_t block_size = 16,
                   Range layers = {})
      : config_(ckpt.config()),
        layers_(layers.size() == 0 ? Range{0, config_.num_layers} : layers),
        inv_freq_(rope_inverse_frequencies(config_)),
        cache_(KVCacheShape{layers_.size(), num_kv_blocks, block_size,
                            partition_heads(config_.num_heads, config_.num_kv_heads, shard).local_kv_heads(),
                            config_.head_dim}) {
    config_.check_tp_size(shard.size);
    const ModelConfig& c = config_;
    TPKIT_REQUIRE(layers_.begin >= 0 && layers_.begin < layers_.end && layers_.end <= c.num_layers, "layers [",
                  layers_.begin, ", ", layers_.end, ") are not a non-empty range of the model's ", c.num_layers);
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    const RawTensorView embed = ckpt.tensor("model.embed_tokens.weight", {c.vocab_size, H});
    if (first_stage()) embedding_.emplace(embed, shard);
    if (last_stage()) {
      // A tied head on a stage without the embedding loads the same rows itself.
      if (c.tie_embeddings && embedding_)
        lm_head_.emplace(ParallelLMHead<T, Ops>::tied_to(*embedding_));
      else
        lm_head_.emplace(c.tie_embeddings ? embed : ckpt.tensor("lm_head.weight", {c.vocab_size, H}), shard);
      final_norm_ = load_vector(ckpt.tensor("model.norm.weight", {H}));
    }
    for (std::int64_t l = layers_.begin; l < layers_.end; ++l) {
      const auto name = [&](const char* suffix) { return Checkpoint::layer_name(l, suffix); };
      QKVWeights w{ckpt.tensor(name("self_attn.q_proj.weight"), {c.q_size(), H}),
                   ckpt.tensor(name("self_attn.k_proj.weight"), {c.kv_size(), H}),
                   ckpt.tensor(name("self_attn.v_proj.weight"), {c.kv_size(), H}),
                   {},
                   {},
                   {}};
      if (c.qkv_bias) {
        w.q_bias = ckpt.tensor(name("self_attn.q_proj.bias"), {c.q_size()});
        w.k_bias = ckpt.tensor(name("self_attn.k_proj.bias"), {c.kv_size()});
        w.v_bias = ckpt.tensor(name("self_attn.v_proj.bias"), {c.kv_size()});
      }
      RowParallelOptions o_options;
      o_options.granule = hd;  // o_proj's input is split by whole query heads, like the QKV layer
      Block block{load_vector(ckpt.tensor(name("input_layernorm.weight"), {H})),
                  load_vector(ckpt.tensor(name("post_attention_layernorm.weight"), {H})),
                  {},
                  {},
                  QKVParallelLinear<T, Ops>(w, {c.num_heads, c.num_kv_heads, hd}, shard),
                  RowParallelLinear<T, Ops>(
                      ckpt.tensor(name("self_attn.o_proj.weight"), {H, c.q_size()}),
                      c.o_bias ? ckpt.tensor(name("self_attn.o_proj.bias"), {H}) : RawTensorView{}, shard, o_options),
                  MergedGateUpLinear<T, Ops>(ckpt.tensor(name("mlp.gate_proj.weight"), {I, H}),
                                             ckpt.tensor(name("mlp.up_proj.weight"), {I, H}), shard),
                  RowParallelLinear<T, Ops>(ckpt.tensor(name("mlp.down_proj.weight"), {H, I}), {}, shard)};
      if (c.qk_norm) {
        block.q_norm = load_vector(ckpt.tensor(name("self_attn.q_norm.weight"), {hd}));
        block.k_norm = load_vector(ckpt.tensor(name("self_attn.k_norm.weight"), {hd}));
      }
      // The two splits must agree for attention output to feed o_proj without communication.
      const HeadPartition& heads = block.qkv.partition();
      TPKIT_REQUIRE(block.o_proj.input_range() == (Range{heads.q_heads.begin * hd, heads.q_heads.end * hd}),
                    "o_proj input split disagrees with the query-head split");
      blocks_.push_back(std::move(block));
    }
    heads_ = blocks_.empty() ? HeadPartition{} : blocks_.front().qkv.partition();
  }

  const ModelConfig& config() const { return config_; }
  const HeadPartition& heads() const { return heads_; }
  Range layers() const { return layers_; }
  bool first_stage() const { return layers_.begin == 0; }
  bool last_stage() const { return layers_.end == config_.num_layers; }
  PagedKVCache<T, Ops>& cache() { return cache_; }

  // Decode steps of up to `max_rows` sequences run their layers from captured graphs, one per
  // step shape, when Ops can capture them (CudaOps), the model is a single stage and the TP
  // group's collectives are capturable (a group of one, or NCCL); 0 (the default) never does.
  // A step is padded to its shape: the rows to the next power of two (at most max_rows), the
  // block tables to the next power of two of blocks. The padding rows attend to position 0 of
  // block 0 and write no K/V, and nothing reads their outputs. The embedding runs before the
  // graph and the final norm and LM head after it, so that their host inputs and outputs stay
  // out of it.
  void enable_step_graphs(std::int64_t max_rows) { graph_max_rows_ = max_rows; }
  // The Ops' graph cache (CudaOps: captures and replays), for diagnostics and tests.
  const typename step_graphs<Ops>::type& step_graph_cache() const { return graphs_; }
  // Steps whose layers ran from a graph so far.
  std::int64_t graph_steps() const {
    if constexpr (step_graphs<Ops>::supported)
      return graphs_.replays;
    else
      return 0;
  }

  // Runs one step over `sequences`, writing their K/V into the cache, and fills `logits`
  // ([number of sequences with want_logits, vocab_size], float) in order. `comm` is the TP
  // group. With a pipeline `stage`, a stage after the first receives the hidden state from the
  // previous one instead of embedding, and a stage before the last sends it on instead of
  // computing logits (its `logits` is ignored).
  template <class Backend>
  void forward(Communicator<Backend>& comm, const std::vector<StepSequence>& sequences, TensorView<float> logits,
               PipelineStage<Backend>* stage = nullptr) {
    TPKIT_REQUIRE(
        (stage == nullptr && first_stage() && last_stage()) || (stage != nullptr && stage->layers() == layers_),
        "this model holds layers [", layers_.begin, ", ", layers_.end,
        ") and must be run with the pipeline stage that owns them");
    const ModelConfig& c = config_;
    const std::int64_t H = c.hidden_size, hd = c.head_dim;
    const GraphShape graph = graph_shape(comm, sequences);  // rows 0: no graph
    // Flatten the step's tokens.
    tokens_.clear(), positions_.clear(), logit_rows_.clear(), layout_.clear();
    for (const StepSequence& s : sequences) {
      TPKIT_REQUIRE(s.count >= 1, "a step sequence needs at least one token");
      TPKIT_REQUIRE(s.start_position + s.count <= c.max_position, "position ", s.start_position + s.count - 1,
                    " exceeds the model's max_position ", c.max_position);
      TPKIT_REQUIRE(s.blocks != nullptr, "a step sequence needs a block table");
      cache_.slot(*s.blocks, s.start_position + s.count - 1);  // the table covers the step's positions
      layout_.sequences.push_back({s.blocks, std::int64_t(tokens_.size()), s.count, s.start_position});
      for (std::int64_t i = 0; i < s.count; ++i) {
        tokens_.push_back(s.tokens[i]);
        positions_.push_back(s.start_position + i);
        layout_.queries.push_back({s.start_position + i, s.blocks});
        layout_.slots.push_back(cache_.slot_unchecked(*s.blocks, s.start_position + i));
      }
      if (s.want_logits) logit_rows_.push_back(std::int64_t(tokens_.size()) - 1);
    }
    for (std::int64_t r = std::int64_t(sequences.size()); r < graph.rows; ++r) {  // padding rows
      layout_.sequences.push_back({&padding_table_, std::int64_t(tokens_.size()), 1, 0});
      layout_.queries.push_back({0, &padding_table_});
      layout_.slots.push_back(-1);
      tokens_.push_back(0);
      positions_.push_back(0);
    }
    layout_.table_width = graph.table_width;
    const std::int64_t n = std::int64_t(tokens_.size());
    TPKIT_REQUIRE(!last_stage() || (logits.rank() == 2 && logits.size(0) == std::int64_t(logit_rows_.size()) &&
                                    logits.size(1) == c.vocab_size),
                  "logits must have shape [", logit_rows_.size(), ", ", c.vocab_size, "] but has shape ",
                  logits.shape_string());
    const std::int64_t q_width = heads_.local_q_heads() * hd, kv_width = heads_.local_kv_heads() * hd;
    const std::int64_t qkv_width = q_width + 2 * kv_width,
                       li = blocks_.empty() ? 0 : blocks_[0].gate_up.output_width() / 2;
    hidden_.reserve_at_least(std::size_t(n * H));
    normed_.reserve_at_least(std::size_t(n * H));
    delta_.reserve_at_least(std::size_t(n * H));
    qkv_.reserve_at_least(std::size_t(n * qkv_width));
    attn_.reserve_at_least(std::size_t(n * q_width));
    gate_up_.reserve_at_least(std::size_t(n * 2 * li));
    act_.reserve_at_least(std::size_t(n * li));
    cos_.reserve_at_least(std::size_t(n * hd / 2));
    sin_.reserve_at_least(std::size_t(n * hd / 2));
    cos_host_.resize(std::size_t(n * hd / 2));
    sin_host_.resize(std::size_t(n * hd / 2));
    rope_angles(inv_freq_, positions_.data(), n, cos_host_.data(), sin_host_.data());
    Ops::upload(cos_host_.data(), cos_.data(), cos_host_.size());
    Ops::upload(sin_host_.data(), sin_.data(), sin_host_.size());
    Ops::prepare_step(step_, layout_, cache_.shape());

    if (first_stage())
      embedding_->forward(comm, tokens_.data(), n, TensorView<T>(hidden_.data(), {n, H}, Ops::memory));
    else
      stage->receive_activations(hidden_.data(), std::size_t(n * H));
    if constexpr (step_graphs<Ops>::supported) {
      if (graph.rows > 0) {
        addresses_.clear();
        for (const void* p : {static_cast<const void*>(hidden_.data()), static_cast<const void*>(normed_.data()),
                              static_cast<const void*>(delta_.data()), static_cast<const void*>(qkv_.data()),
                              static_cast<const void*>(attn_.data()), static_cast<const void*>(gate_up_.data()),
                              static_cast<const void*>(act_.data()), static_cast<const void*>(cos_.data()),
                              static_cast<const void*>(sin_.data())})
          addresses_.push_back(p);
        step_.append_addresses(addresses_);
        Ops::run_graph(graphs_, graph.rows << 32 | graph.table_width, addresses_, [&] { run_layers(comm, n); });
      }
    }
    if (graph.rows == 0) run_layers(comm, n);
    if (!last_stage()) {
      stage->send_activations(hidden_.data(), std::size_t(n * H));
      return;
    }
    const std::int64_t rows = std::int64_t(logit_rows_.size());
    if (rows == 0) return;
    const float eps = float(c.rms_norm_eps);
    // Decode steps sample every row in order: one launch.
    const bool consecutive = logit_rows_.back() - logit_rows_.front() == rows - 1;
    for (std::int64_t r = 0; r < rows; r += consecutive ? rows : 1)
      Ops::rms_norm(hidden_.data() + logit_rows_[std::size_t(r)] * H, H, consecutive ? rows : 1, H, final_norm_.data(),
                    eps, normed_.data() + r * H, H);
    lm_head_->forward(comm, TensorView<const T>(normed_.data(), {rows, H}, Ops::memory), logits);
  }

 private:
  struct GraphShape {
    std::int64_t rows = 0, table_width = 0;
  };

  static std::int64_t next_power_of_two(std::int64_t x) {
    std::int64_t p = 1;
    while (p < x) p *= 2;
    return p;
  }

  // The padded shape of a step that runs from a graph, or rows 0.
  template <class Backend>
  GraphShape graph_shape(const Communicator<Backend>& comm, const std::vector<StepSequence>& sequences) const {
    GraphShape g;
    if constexpr (step_graphs<Ops>::supported) {
      const std::int64_t count = std::int64_t(sequences.size());
      if (graph_max_rows_ <= 0 || count == 0 || count > graph_max_rows_ || !first_stage() || !last_stage()) return g;
      if (comm.size() > 1 && !stream_ordered<Backend>::value) return g;  // a host rendezvous
      std::int64_t blocks = 1;
      for (const StepSequence& s : sequences) {
        if (s.count != 1 || s.blocks == nullptr) return g;  // decode steps only
        blocks = std::max(blocks, std::int64_t(s.blocks->size()));
      }
      const std::int64_t block_size = cache_.shape().block_size;
      const std::int64_t full = (config_.max_position + block_size - 1) / block_size;
      g.rows = std::min(next_power_of_two(count), graph_max_rows_);
      g.table_width = std::max(blocks, std::min(next_power_of_two(blocks), full));
    }
    return g;
  }

  // The decoder layers over the step's n rows: hidden_ in, hidden_ out, K/V into the cache.
  template <class Backend>
  void run_layers(Communicator<Backend>& comm, std::int64_t n) {
    const ModelConfig& c = config_;
    const std::int64_t H = c.hidden_size, hd = c.head_dim;
    const HeadPartition& heads = heads_;
    const std::int64_t q_width = heads.local_q_heads() * hd, kv_width = heads.local_kv_heads() * hd;
    const std::int64_t qkv_width = q_width + 2 * kv_width,
                       li = blocks_.empty() ? 0 : blocks_[0].gate_up.output_width() / 2;
    const TensorView<T> normed(normed_.data(), {n, H}, Ops::memory), delta(delta_.data(), {n, H}, Ops::memory);
    const float eps = float(c.rms_norm_eps), scale = 1.0f / std::sqrt(float(hd));
    const bool interleaved = c.rope_style == RopeStyle::interleaved;
    for (std::int64_t l = layers_.begin; l < layers_.end; ++l) {
      Block& b = blocks_[std::size_t(l - layers_.begin)];
      const std::int64_t cache_layer = l - layers_.begin;
      Ops::rms_norm(hidden_.data(), H, n, H, b.input_norm.data(), eps, normed_.data(), H);
      b.qkv.forward(comm, normed, TensorView<T>(qkv_.data(), {n, qkv_width}, Ops::memory));
      T* q = qkv_.data();
      T* k = q + q_width;
      T* v = k + kv_width;
      if (c.qk_norm) {
        for (std::int64_t t = 0; t < n; ++t) {
          Ops::rms_norm(q + t * qkv_width, hd, heads.local_q_heads(), hd, b.q_norm.data(), eps, q + t * qkv_width, hd);
          Ops::rms_norm(k + t * qkv_width, hd, heads.local_kv_heads(), hd, b.k_norm.data(), eps, k + t * qkv_width, hd);
        }
      }
      Ops::rope(q, qkv_width, n, heads.local_q_heads(), hd, cos_.data(), sin_.data(), interleaved);
      Ops::rope(k, qkv_width, n, heads.local_kv_heads(), hd, cos_.data(), sin_.data(), interleaved);
      Ops::write_kv(cache_, cache_layer, step_, k, v, qkv_width);
      Ops::paged_attention(cache_, cache_layer, heads, q, qkv_width, step_, scale, c.window(l), attn_.data(), q_width);
      b.o_proj.forward(comm, TensorView<const T>(attn_.data(), {n, q_width}, Ops::memory), delta);
      Ops::add(hidden_.data(), delta_.data(), n * H);
      Ops::rms_norm(hidden_.data(), H, n, H, b.post_norm.data(), eps, normed_.data(), H);
      b.gate_up.forward(comm, normed, TensorView<T>(gate_up_.data(), {n, 2 * li}, Ops::memory));
      Ops::silu_and_mul(gate_up_.data(), n, li, act_.data());
      b.down.forward(comm, TensorView<const T>(act_.data(), {n, li}, Ops::memory), delta);
      Ops::add(hidden_.data(), delta_.data(), n * H);
    }
  }

  struct Block {
    typename Ops::template Buffer<float> input_norm, post_norm, q_norm, k_norm;
    QKVParallelLinear<T, Ops> qkv;
    RowParallelLinear<T, Ops> o_proj;
    MergedGateUpLinear<T, Ops> gate_up;
    RowParallelLinear<T, Ops> down;
  };

  static typename Ops::template Buffer<float> load_vector(const RawTensorView& v) {
    typename Ops::template Buffer<float> out(std::size_t(v.size(0)));
    Ops::load_block(v, Range{0, v.size(0)}, Range{0, 1}, out.data(), 1);
    return out;
  }

  ModelConfig config_;
  Range layers_;
  std::vector<double> inv_freq_;
  std::optional<VocabParallelEmbedding<T, Ops>> embedding_;  // first stage
  std::optional<ParallelLMHead<T, Ops>> lm_head_;            // last stage
  typename Ops::template Buffer<float> final_norm_;
  std::vector<Block> blocks_;
  HeadPartition heads_;
  PagedKVCache<T, Ops> cache_;
  // Step workspaces: grow to the largest step, then are reused.
  std::vector<std::int32_t> tokens_;
  std::vector<std::int64_t> positions_, logit_rows_;
  std::vector<float> cos_host_, sin_host_;
  StepLayout layout_;
  typename Ops::StepState step_;
  typename Ops::template Buffer<T> hidden_, normed_, delta_, qkv_, attn_, gate_up_, act_;
  typename Ops::template Buffer<float> cos_, sin_;
  // Decode-step graphs: the largest step captured, the graphs, and the buffers they read.
  std::int64_t graph_max_rows_ = 0;
  typename step_graphs<Ops>::type graphs_;
  std::vector<const void*> addresses_;
  std::vector<std::int32_t> padding_table_{0};  // the padding rows' block table: block 0
};

}  // namespace tpkit
