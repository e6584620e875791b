// tpkit/model/transformer.hpp: a Llama / Mistral / Qwen2 / Qwen3 decoder assembled from tpkit
// layers, one instance per tensor-parallel rank.
//
// Per block: RMSNorm -> QKVParallelLinear (+ per-head q/k RMSNorm for Qwen3) -> RoPE -> write
// K/V to the paged cache -> paged attention over this rank's heads -> o_proj
// (RowParallelLinear, all-reduce) -> residual -> RMSNorm -> MergedGateUpLinear -> SiLU * up ->
// down_proj (RowParallelLinear, all-reduce) -> residual. Then the final RMSNorm and the
// ParallelLMHead. In a mixture-of-experts model (Mixtral, Qwen2-MoE, Qwen3-MoE) the sparse
// layers replace the MLP with a MoELayer, laid out over the TP group as MoEOptions says.
// Nothing here computes a shard offset: the layers, partition_heads and the expert placement do.
//
// Under pipeline parallelism an instance holds one stage: a range of layers (and their KV
// cache), plus the embedding on the first stage and the final norm and LM head on the last.
// The model runs on the Ops handle it is built with (HostOps: its threads; CudaOps: its CUDA
// context and stream); its layers keep copies of it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/layers/embedding.hpp"
#include "tpkit/layers/gate_up.hpp"
#include "tpkit/layers/linear.hpp"
#include "tpkit/layers/moe.hpp"
#include "tpkit/layers/qkv.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/rope.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/ops/ops_policy.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/pipeline.hpp"

namespace tpkit {

template <class T, class Ops = HostOps>
class TransformerModel {
  TPKIT_OPS_CHECK(Ops);

 public:
  using ops_type = Ops;
  using value_type = T;

  // layers: the pipeline stage's layers (empty: all of them, a single stage). Every tensor the
  // stage needs is checked against the config before anything is allocated.
  TransformerModel(const Ops& ops, const Checkpoint& ckpt, ShardSpec shard, std::int64_t num_kv_blocks,
                   std::int64_t block_size = 16, Range layers = {}, const MoEModelOptions& moe = {})
      : ops_(ops),
        config_(ckpt.config()),
        layers_(checked_stage(ckpt, shard, layers)),
        inv_freq_(rope_inverse_frequencies(config_)),
        cache_(KVCacheShape{layers_.size(), num_kv_blocks, block_size,
                            partition_heads(config_.num_heads, config_.num_kv_heads, shard).local_kv_heads(),
                            config_.head_dim}) {
    const ModelConfig& c = config_;
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    const RawTensorView embed = ckpt.tensor("model.embed_tokens.weight", {c.vocab_size, H});
    if (first_stage()) embedding_.emplace(ops_, embed, shard);
    if (last_stage()) {
      // A tied head on a stage without the embedding loads the same rows itself.
      if (c.tie_embeddings && embedding_)
        lm_head_.emplace(ParallelLMHead<T, Ops>::tied_to(*embedding_));
      else
        lm_head_.emplace(ops_, c.tie_embeddings ? embed : ckpt.tensor("lm_head.weight", {c.vocab_size, H}), shard);
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
                  QKVParallelLinear<T, Ops>(ops_, w, {c.num_heads, c.num_kv_heads, hd}, shard),
                  RowParallelLinear<T, Ops>(
                      ops_, ckpt.tensor(name("self_attn.o_proj.weight"), {H, c.q_size()}),
                      c.o_bias ? ckpt.tensor(name("self_attn.o_proj.bias"), {H}) : RawTensorView{}, shard, o_options),
                  {},
                  {},
                  {}};
      if (c.sparse_layer(l)) {
        block.moe.emplace(ops_, moe_weights(ckpt, l), MoERouting{c.moe.experts_per_token, c.moe.normalize_topk}, shard,
                          moe.for_layer(l));
      } else {
        block.gate_up.emplace(ops_, ckpt.tensor(name("mlp.gate_proj.weight"), {I, H}),
                              ckpt.tensor(name("mlp.up_proj.weight"), {I, H}), shard);
        block.down.emplace(ops_, ckpt.tensor(name("mlp.down_proj.weight"), {H, I}), RawTensorView{}, shard);
        dense_width_ = std::max(dense_width_, block.gate_up->output_width() / 2);
      }
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
  // On a default-constructed Ops (HostOps: the calling thread).
  TransformerModel(const Checkpoint& ckpt, ShardSpec shard, std::int64_t num_kv_blocks, std::int64_t block_size = 16,
                   Range layers = {})
      : TransformerModel(Ops(), ckpt, shard, num_kv_blocks, block_size, layers) {}

  const Ops& ops() const { return ops_; }
  const ModelConfig& config() const { return config_; }
  const HeadPartition& heads() const { return heads_; }
  Range layers() const { return layers_; }
  bool first_stage() const { return layers_.begin == 0; }
  bool last_stage() const { return layers_.end == config_.num_layers; }
  // fn(layer, layer's MoELayer) for every sparse layer of this stage (expert statistics).
  template <class F>
  void for_each_moe_layer(F&& fn) const {
    for (std::int64_t l = layers_.begin; l < layers_.end; ++l)
      if (const Block& b = blocks_[std::size_t(l - layers_.begin)]; b.moe) fn(l, *b.moe);
  }
  void reset_expert_statistics() {
    for (Block& b : blocks_)
      if (b.moe) b.moe->reset_statistics();
  }
  PagedKVCache<T, Ops>& cache() { return cache_; }
  const PagedKVCache<T, Ops>& cache() const { return cache_; }

  // fn(name, N, K, has_bias, float_output) for the local shape of every linear product this
  // rank runs (y[batch, N] = x[batch, K] W^T), so that a policy can check at load that it can
  // run each one (CudaOps::check_model).
  template <class F>
  void for_each_linear(F&& fn) const {
    for (std::int64_t l = layers_.begin; l < layers_.end; ++l) {
      const Block& b = blocks_[std::size_t(l - layers_.begin)];
      const std::string layer = "layer " + std::to_string(l) + " ";
      fn(layer + "qkv_proj", b.qkv.output_width(), b.qkv.hidden_size(), config_.qkv_bias, false);
      fn(layer + "o_proj", b.o_proj.out_features(), b.o_proj.input_width(), false, false);
      if (b.moe) {
        b.moe->for_each_linear(layer, fn);
        continue;
      }
      fn(layer + "gate_up_proj", b.gate_up->output_width(), b.gate_up->hidden_size(), false, false);
      fn(layer + "down_proj", b.down->out_features(), b.down->input_width(), false, false);
    }
    if (lm_head_ && lm_head_->partition().local_real_rows() > 0)  // a rank may hold only padding rows
      fn("lm_head", lm_head_->partition().local_real_rows(), lm_head_->hidden_size(), false, true);
  }

  // How forward() runs the decoder layers by default: body() on the spot. A step runner may
  // pass its own, which runs body() inside a graph capture or replays it (engine/step_runner.hpp);
  // `addresses` then lists every buffer body() reads, so that a graph is recaptured when one
  // has moved.
  struct RunEagerly {
    template <class Body>
    void operator()(const std::vector<const void*>&, Body&& body) const {
      body();
    }
  };

  // Runs one step over `sequences`, writing their K/V into the cache, and fills `logits`
  // ([number of sequences with want_logits, vocab_size], float) in order. `comm` is the TP
  // group. With a pipeline `stage`, a stage after the first receives the hidden state from the
  // previous one instead of embedding, and a stage before the last sends it on instead of
  // computing logits (its `logits` is ignored). table_width > 0 pads every block table to that
  // many blocks and plans attention for as many positions (a fixed step shape; padding rows are
  // StepSequences marked `padding`). run_layers(addresses, body) runs the decoder layers.
  template <class Backend, class RunLayers = RunEagerly>
  void forward(Communicator<Backend>& comm, const std::vector<StepSequence>& sequences, TensorView<float> logits,
               PipelineStage<Backend>* stage = nullptr, std::int64_t table_width = 0,
               RunLayers&& run_layers = RunLayers()) {
    TPKIT_REQUIRE(
        (stage == nullptr && first_stage() && last_stage()) || (stage != nullptr && stage->layers() == layers_),
        "this model holds layers [", layers_.begin, ", ", layers_.end,
        ") and must be run with the pipeline stage that owns them");
    const ModelConfig& c = config_;
    const std::int64_t H = c.hidden_size, hd = c.head_dim;
    // Flatten the step's tokens.
    tokens_.clear(), positions_.clear(), logit_rows_.clear(), layout_.clear(), counted_.clear();
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
        layout_.slots.push_back(s.padding ? -1 : cache_.slot_unchecked(*s.blocks, s.start_position + i));
        counted_.push_back(s.padding ? 0 : 1);
      }
      if (s.want_logits) logit_rows_.push_back(std::int64_t(tokens_.size()) - 1);
    }
    TPKIT_REQUIRE(table_width >= 0, "table_width must be >= 0 (got ", table_width, ")");
    layout_.table_width = table_width;
    layout_.q_heads = heads_.local_q_heads();
    const std::int64_t n = std::int64_t(tokens_.size());
    TPKIT_REQUIRE(!last_stage() || (logits.rank() == 2 && logits.size(0) == std::int64_t(logit_rows_.size()) &&
                                    logits.size(1) == c.vocab_size),
                  "logits must have shape [", logit_rows_.size(), ", ", c.vocab_size, "] but has shape ",
                  logits.shape_string());
    const std::int64_t q_width = heads_.local_q_heads() * hd, kv_width = heads_.local_kv_heads() * hd;
    const std::int64_t qkv_width = q_width + 2 * kv_width, li = dense_width_;
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
    ops_.upload(cos_host_.data(), cos_.data(), cos_host_.size());
    ops_.upload(sin_host_.data(), sin_.data(), sin_host_.size());
    ops_.prepare_step(step_, layout_, cache_.shape());

    if (first_stage())
      embedding_->forward(comm, tokens_.data(), n, TensorView<T>(hidden_.data(), {n, H}, Ops::memory));
    else
      stage->receive_activations(hidden_.data(), std::size_t(n * H));
    addresses_.clear();
    for (const void* p : {static_cast<const void*>(hidden_.data()), static_cast<const void*>(normed_.data()),
                          static_cast<const void*>(delta_.data()), static_cast<const void*>(qkv_.data()),
                          static_cast<const void*>(attn_.data()), static_cast<const void*>(gate_up_.data()),
                          static_cast<const void*>(act_.data()), static_cast<const void*>(cos_.data()),
                          static_cast<const void*>(sin_.data())})
      addresses_.push_back(p);
    if constexpr (step_graphs<Ops>::supported) step_.append_addresses(addresses_);
    run_layers(addresses_, [&] { run_decoder_layers(comm, n); });
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
      ops_.rms_norm(hidden_.data() + logit_rows_[std::size_t(r)] * H, H, consecutive ? rows : 1, H, final_norm_.data(),
                    eps, normed_.data() + r * H, H);
    lm_head_->forward(comm, TensorView<const T>(normed_.data(), {rows, H}, Ops::memory), logits);
  }

 private:
  // The stage's layer range, once the shard fits the model and every tensor the stage reads
  // has its expected shape (so a corrupt or mismatched checkpoint fails before the KV cache and
  // the weights are allocated).
  static Range checked_stage(const Checkpoint& ckpt, ShardSpec shard, Range layers) {
    const ModelConfig& c = ckpt.config();
    c.check_tp_size(shard.size);
    const Range r = layers.size() == 0 ? Range{0, c.num_layers} : layers;
    TPKIT_REQUIRE(r.begin >= 0 && r.begin < r.end && r.end <= c.num_layers, "layers [", r.begin, ", ", r.end,
                  ") are not a non-empty range of the model's ", c.num_layers);
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    ckpt.tensor("model.embed_tokens.weight", {c.vocab_size, H});
    if (r.end == c.num_layers) {
      if (!c.tie_embeddings) ckpt.tensor("lm_head.weight", {c.vocab_size, H});
      ckpt.tensor("model.norm.weight", {H});
    }
    for (std::int64_t l = r.begin; l < r.end; ++l) {
      const auto name = [&](const char* suffix) { return Checkpoint::layer_name(l, suffix); };
      ckpt.tensor(name("input_layernorm.weight"), {H});
      ckpt.tensor(name("post_attention_layernorm.weight"), {H});
      ckpt.tensor(name("self_attn.q_proj.weight"), {c.q_size(), H});
      ckpt.tensor(name("self_attn.k_proj.weight"), {c.kv_size(), H});
      ckpt.tensor(name("self_attn.v_proj.weight"), {c.kv_size(), H});
      ckpt.tensor(name("self_attn.o_proj.weight"), {H, c.q_size()});
      if (c.sparse_layer(l)) {
        moe_weights(ckpt, l);
      } else {
        ckpt.tensor(name("mlp.gate_proj.weight"), {I, H});
        ckpt.tensor(name("mlp.up_proj.weight"), {I, H});
        ckpt.tensor(name("mlp.down_proj.weight"), {H, I});
      }
      if (c.qkv_bias) {
        ckpt.tensor(name("self_attn.q_proj.bias"), {c.q_size()});
        ckpt.tensor(name("self_attn.k_proj.bias"), {c.kv_size()});
        ckpt.tensor(name("self_attn.v_proj.bias"), {c.kv_size()});
      }
      if (c.o_bias) ckpt.tensor(name("self_attn.o_proj.bias"), {H});
      if (c.qk_norm) {
        ckpt.tensor(name("self_attn.q_norm.weight"), {hd});
        ckpt.tensor(name("self_attn.k_norm.weight"), {hd});
      }
    }
    return r;
  }

  // Views of a sparse layer's weights, shapes checked (nothing is read): Mixtral names them
  // block_sparse_moe.{gate, experts.E.w1 (gate), w3 (up), w2 (down)}, Qwen2/3-MoE
  // mlp.{gate, experts.E.gate_proj, up_proj, down_proj}, and Qwen2-MoE's shared expert
  // mlp.shared_expert.* and mlp.shared_expert_gate.
  static MoEWeights moe_weights(const Checkpoint& ckpt, std::int64_t l) {
    const ModelConfig& c = ckpt.config();
    const std::int64_t H = c.hidden_size, I = c.moe.expert_intermediate_size, S = c.moe.shared_expert_intermediate_size;
    const bool mixtral = c.architecture == Architecture::mixtral;
    const std::string block = Checkpoint::layer_name(l, mixtral ? "block_sparse_moe." : "mlp.");
    MoEWeights w;
    w.router = ckpt.tensor(block + "gate.weight", {c.moe.num_experts, H});
    for (int e = 0; e < c.moe.num_experts; ++e) {
      const std::string expert = block + "experts." + std::to_string(e) + ".";
      w.experts.push_back({ckpt.tensor(expert + (mixtral ? "w1.weight" : "gate_proj.weight"), {I, H}),
                           ckpt.tensor(expert + (mixtral ? "w3.weight" : "up_proj.weight"), {I, H}),
                           ckpt.tensor(expert + (mixtral ? "w2.weight" : "down_proj.weight"), {H, I})});
    }
    if (S > 0) {
      w.shared = {ckpt.tensor(block + "shared_expert.gate_proj.weight", {S, H}),
                  ckpt.tensor(block + "shared_expert.up_proj.weight", {S, H}),
                  ckpt.tensor(block + "shared_expert.down_proj.weight", {H, S})};
      w.shared_gate = ckpt.tensor(block + "shared_expert_gate.weight", {1, H});
    }
    return w;
  }

  // The decoder layers over the step's n rows: hidden_ in, hidden_ out, K/V into the cache.
  template <class Backend>
  void run_decoder_layers(Communicator<Backend>& comm, std::int64_t n) {
    const ModelConfig& c = config_;
    const std::int64_t H = c.hidden_size, hd = c.head_dim;
    const HeadPartition& heads = heads_;
    const std::int64_t q_width = heads.local_q_heads() * hd, kv_width = heads.local_kv_heads() * hd;
    const std::int64_t qkv_width = q_width + 2 * kv_width;
    const TensorView<T> normed(normed_.data(), {n, H}, Ops::memory), delta(delta_.data(), {n, H}, Ops::memory);
    const float eps = float(c.rms_norm_eps), scale = 1.0f / std::sqrt(float(hd));
    const bool interleaved = c.rope_style == RopeStyle::interleaved;
    for (std::int64_t l = layers_.begin; l < layers_.end; ++l) {
      Block& b = blocks_[std::size_t(l - layers_.begin)];
      const std::int64_t cache_layer = l - layers_.begin;
      ops_.rms_norm(hidden_.data(), H, n, H, b.input_norm.data(), eps, normed_.data(), H);
      b.qkv.forward(comm, normed, TensorView<T>(qkv_.data(), {n, qkv_width}, Ops::memory));
      T* q = qkv_.data();
      T* k = q + q_width;
      T* v = k + kv_width;
      if (c.qk_norm) {
        for (std::int64_t t = 0; t < n; ++t) {
          ops_.rms_norm(q + t * qkv_width, hd, heads.local_q_heads(), hd, b.q_norm.data(), eps, q + t * qkv_width, hd);
          ops_.rms_norm(k + t * qkv_width, hd, heads.local_kv_heads(), hd, b.k_norm.data(), eps, k + t * qkv_width, hd);
        }
      }
      ops_.rope(q, qkv_width, n, heads.local_q_heads(), hd, cos_.data(), sin_.data(), interleaved);
      ops_.rope(k, qkv_width, n, heads.local_kv_heads(), hd, cos_.data(), sin_.data(), interleaved);
      ops_.write_kv(cache_, cache_layer, step_, k, v, qkv_width);
      ops_.paged_attention(cache_, cache_layer, heads, q, qkv_width, step_, scale, c.window(l), attn_.data(), q_width);
      b.o_proj.forward(comm, TensorView<const T>(attn_.data(), {n, q_width}, Ops::memory), delta);
      ops_.add(hidden_.data(), delta_.data(), n * H);
      ops_.rms_norm(hidden_.data(), H, n, H, b.post_norm.data(), eps, normed_.data(), H);
      if (b.moe) {
        b.moe->forward(comm, normed, delta, positions_.data(), counted_.data());
      } else {
        const std::int64_t width = b.gate_up->output_width() / 2;
        b.gate_up->forward(comm, normed, TensorView<T>(gate_up_.data(), {n, 2 * width}, Ops::memory));
        ops_.silu_and_mul(gate_up_.data(), n, width, act_.data());
        b.down->forward(comm, TensorView<const T>(act_.data(), {n, width}, Ops::memory), delta);
      }
      ops_.add(hidden_.data(), delta_.data(), n * H);
    }
  }

  struct Block {
    typename Ops::template Buffer<float> input_norm, post_norm, q_norm, k_norm;
    QKVParallelLinear<T, Ops> qkv;
    RowParallelLinear<T, Ops> o_proj;
    std::optional<MergedGateUpLinear<T, Ops>> gate_up;  // dense layers
    std::optional<RowParallelLinear<T, Ops>> down;
    std::optional<MoELayer<T, Ops>> moe;  // sparse layers
  };

  typename Ops::template Buffer<float> load_vector(const RawTensorView& v) const {
    typename Ops::template Buffer<float> out(std::size_t(v.size(0)));
    ops_.load_block(v, Range{0, v.size(0)}, Range{0, 1}, out.data(), 1);
    return out;
  }

  Ops ops_;
  ModelConfig config_;
  Range layers_;
  std::vector<double> inv_freq_;
  std::optional<VocabParallelEmbedding<T, Ops>> embedding_;  // first stage
  std::optional<ParallelLMHead<T, Ops>> lm_head_;            // last stage
  typename Ops::template Buffer<float> final_norm_;
  std::vector<Block> blocks_;
  std::int64_t dense_width_ = 0;  // the widest local intermediate slice of a dense MLP
  HeadPartition heads_;
  PagedKVCache<T, Ops> cache_;
  // Step workspaces: grow to the largest step, then are reused.
  std::vector<std::int32_t> tokens_;
  std::vector<std::int64_t> positions_, logit_rows_;
  std::vector<std::uint8_t> counted_;  // per row: not a padding row (counts in the expert statistics)
  std::vector<float> cos_host_, sin_host_;
  StepLayout layout_;
  typename Ops::StepState step_;
  typename Ops::template Buffer<T> hidden_, normed_, delta_, qkv_, attn_, gate_up_, act_;
  typename Ops::template Buffer<float> cos_, sin_;
  std::vector<const void*> addresses_;  // the buffers the layers read (for graph replays)
};

}  // namespace tpkit
