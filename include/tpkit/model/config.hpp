// tpkit/model/config.hpp: the hyper-parameters of a decoder-only transformer and which
// variant of each block it uses. Read from config.json or a llama2.c header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

// The dense families, and the mixture-of-experts families built on their attention: Mixtral on
// Mistral's, Qwen2-MoE on Qwen2's, Qwen3-MoE on Qwen3's.
enum class Architecture { llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe };

inline const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::llama:
      return "llama";
    case Architecture::mistral:
      return "mistral";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::qwen3:
      return "qwen3";
    case Architecture::mixtral:
      return "mixtral";
    case Architecture::qwen2_moe:
      return "qwen2_moe";
    case Architecture::qwen3_moe:
      return "qwen3_moe";
  }
  return "?";
}

// Which elements of a head RoPE rotates together: (i, i + d/2) in Hugging Face checkpoints,
// (2i, 2i + 1) in llama2.c checkpoints.
enum class RopeStyle { rotate_half, interleaved };

struct RopeScaling {
  bool llama3 = false;  // Llama-3.1 frequency-dependent scaling
  double factor = 1.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_position = 8192;
};

// The largest values tpkit accepts for a model's dimensions: above any released model's and far
// below what overflows the sizes computed from them, so a corrupt or hostile config is refused
// before anything is sized (a KV cache, RoPE tables, a loop over layers).
struct ModelLimits {
  static constexpr std::int64_t hidden_size = std::int64_t(1) << 17;
  static constexpr std::int64_t intermediate_size = std::int64_t(1) << 20;
  static constexpr std::int64_t num_layers = std::int64_t(1) << 12;
  static constexpr std::int64_t num_heads = std::int64_t(1) << 12;
  static constexpr std::int64_t head_dim = std::int64_t(1) << 12;
  static constexpr std::int64_t q_size = std::int64_t(1) << 20;  // num_heads * head_dim
  static constexpr std::int64_t vocab_size = std::int64_t(1) << 28;
  static constexpr std::int64_t max_position = std::int64_t(1) << 28;
  static constexpr std::int64_t num_experts = std::int64_t(1) << 12;
};

// The mixture-of-experts part of a model; num_experts 0 is a dense model. A sparse layer
// replaces the MLP with a router ([num_experts, hidden]) choosing experts_per_token experts
// per token, each a SwiGLU MLP of expert_intermediate_size, summed with the router's weights.
struct MoEConfig {
  int num_experts = 0;
  int experts_per_token = 0;
  std::int64_t expert_intermediate_size = 0;
  // Mixtral always divides the chosen experts' probabilities by their sum; Qwen only with
  // norm_topk_prob.
  bool normalize_topk = true;
  // Qwen2-MoE: an expert every token uses, scaled by sigmoid(shared_expert_gate(x)) (0: none).
  std::int64_t shared_expert_intermediate_size = 0;
  std::vector<bool> sparse_layers;  // one per layer; the others keep the dense MLP

  bool enabled() const { return num_experts > 0; }
};

struct ModelConfig {
  Architecture architecture = Architecture::llama;
  std::int64_t hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int num_heads = 0, num_kv_heads = 0;
  std::int64_t head_dim = 0, vocab_size = 0, max_position = 0;
  double rms_norm_eps = 1e-5, rope_theta = 10000.0;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::rotate_half;
  bool tie_embeddings = false;
  bool qkv_bias = false;            // Qwen2, and Llama/Qwen3 with attention_bias
  bool o_bias = false;              // Llama/Qwen3 with attention_bias: o_proj has a bias too
  bool qk_norm = false;             // Qwen3: RMSNorm over each q and k head before RoPE
  std::int64_t sliding_window = 0;  // attend to the last `sliding_window` positions (0: all)
  // Which layers use the window (empty: all of them). Qwen2/Qwen3 window only the layers from
  // max_window_layers on; newer configs list per-layer "layer_types".
  std::vector<bool> sliding_layers;
  int bos_token_id = 1;
  std::vector<int> eos_token_ids = {2};
  MoEConfig moe;

  std::int64_t q_size() const { return num_heads * head_dim; }
  // Whether `layer`'s MLP is a mixture of experts.
  bool sparse_layer(std::int64_t layer) const { return moe.enabled() && moe.sparse_layers[std::size_t(layer)]; }
  // Whether any layer keeps the dense MLP of intermediate_size.
  bool has_dense_layers() const {
    for (std::int64_t l = 0; l < num_layers; ++l)
      if (!sparse_layer(l)) return true;
    return false;
  }
  // The attention window of `layer` (0: the whole context).
  std::int64_t window(std::int64_t layer) const {
    return sliding_layers.empty() || sliding_layers[std::size_t(layer)] ? sliding_window : 0;
  }
  std::int64_t kv_size() const { return num_kv_heads * head_dim; }

  void validate() const {
    const auto within = [](std::int64_t v, std::int64_t limit, const char* name) {
      if (v <= 0 || v > limit)
        throw FormatError(std::string("model config: ") + name + " must be in [1, " + std::to_string(limit) +
                          "] (got " + std::to_string(v) + ")");
    };
    within(hidden_size, ModelLimits::hidden_size, "hidden_size");
    within(intermediate_size, ModelLimits::intermediate_size, "intermediate_size");
    within(num_layers, ModelLimits::num_layers, "num_layers");
    within(num_heads, ModelLimits::num_heads, "num_heads");
    within(num_kv_heads, ModelLimits::num_heads, "num_kv_heads");
    within(head_dim, ModelLimits::head_dim, "head_dim");
    within(vocab_size, ModelLimits::vocab_size, "vocab_size");
    within(max_position, ModelLimits::max_position, "max_position");
    within(q_size(), ModelLimits::q_size, "num_heads x head_dim");
    if (num_heads % num_kv_heads != 0)
      throw FormatError("model config: num_heads (" + std::to_string(num_heads) +
                        ") is not a multiple of num_kv_heads (" + std::to_string(num_kv_heads) + ")");
    if (head_dim % 2 != 0) throw FormatError("model config: head_dim must be even for RoPE");
    if (!(rms_norm_eps > 0 && rms_norm_eps < 1) || !std::isfinite(rope_theta) || !(rope_theta > 0))
      throw FormatError("model config: rms_norm_eps must be in (0, 1) and rope_theta positive and finite (got " +
                        std::to_string(rms_norm_eps) + " and " + std::to_string(rope_theta) + ")");
    if (rope_scaling.llama3) {
      const RopeScaling& r = rope_scaling;
      // As transformers validates llama3 scaling: factor >= 1, high_freq_factor > low_freq_factor.
      if (!std::isfinite(r.factor) || r.factor < 1 || !std::isfinite(r.low_freq_factor) || !(r.low_freq_factor > 0) ||
          !std::isfinite(r.high_freq_factor) || !(r.high_freq_factor > r.low_freq_factor) ||
          !std::isfinite(r.original_max_position) || !(r.original_max_position >= 1))
        throw FormatError(
            "model config: llama3 rope_scaling needs factor >= 1, 0 < low_freq_factor < "
            "high_freq_factor and original_max_position_embeddings >= 1 (got factor " +
            std::to_string(r.factor) + ", low_freq_factor " + std::to_string(r.low_freq_factor) +
            ", high_freq_factor " + std::to_string(r.high_freq_factor) + ", original " +
            std::to_string(r.original_max_position) + ")");
    }
    if (sliding_window < 0 || sliding_window > ModelLimits::max_position)
      throw FormatError("model config: sliding_window must be in [0, " + std::to_string(ModelLimits::max_position) +
                        "] (got " + std::to_string(sliding_window) + ")");
    if (!sliding_layers.empty() && std::int64_t(sliding_layers.size()) != num_layers)
      throw FormatError("model config: " + std::to_string(sliding_layers.size()) + " layer types for " +
                        std::to_string(num_layers) + " layers");
    if (moe.enabled()) {
      within(moe.num_experts, ModelLimits::num_experts, "num_experts");
      within(moe.experts_per_token, moe.num_experts, "num_experts_per_tok");
      within(moe.expert_intermediate_size, ModelLimits::intermediate_size, "moe_intermediate_size");
      if (moe.shared_expert_intermediate_size < 0 ||
          moe.shared_expert_intermediate_size > ModelLimits::intermediate_size)
        throw FormatError("model config: shared_expert_intermediate_size must be in [0, " +
                          std::to_string(ModelLimits::intermediate_size) + "] (got " +
                          std::to_string(moe.shared_expert_intermediate_size) + ")");
      if (std::int64_t(moe.sparse_layers.size()) != num_layers)
        throw FormatError("model config: " + std::to_string(moe.sparse_layers.size()) + " sparse-layer flags for " +
                          std::to_string(num_layers) + " layers");
    }
    for (int id : eos_token_ids)
      if (id < 0 || id >= vocab_size)
        throw FormatError("model config: eos_token_id " + std::to_string(id) + " is outside the vocabulary [0, " +
                          std::to_string(vocab_size) + ")");
  }

  // Throws InvalidArgument when the model cannot be sharded over tp_size ranks; every TP size
  // up to the number of query heads works, whether or not it divides the head counts. (How the
  // experts of a MoE model split is the MoE layer's to check: it depends on the layout.)
  void check_tp_size(int tp_size) const {
    TPKIT_REQUIRE(tp_size >= 1, "tp_size must be at least 1 (got ", tp_size, ")");
    TPKIT_REQUIRE(tp_size <= num_heads, "tp_size (", tp_size, ") exceeds num_heads (", num_heads,
                  ") of this model; the largest TP size it can take is ", num_heads);
    TPKIT_REQUIRE(!has_dense_layers() || tp_size <= intermediate_size, "tp_size (", tp_size,
                  ") exceeds intermediate_size (", intermediate_size, ")");
  }
};

namespace hf_detail {
// config.json's integer `key` in [0, limit], or `fallback` when absent or null (a negative
// fallback: the key is required). Every integer is range-checked against tpkit's limits before
// it is narrowed or used.
inline std::int64_t config_integer(const Json& j, const char* key, std::int64_t fallback, std::int64_t limit) {
  const Json* v = j.find(key);
  if (!v || v->is_null()) {
    if (fallback < 0) throw FormatError(std::string("config.json: missing \"") + key + "\"");
    return fallback;
  }
  try {
    return v->integer(0, limit);
  } catch (const FormatError& e) {
    throw FormatError(std::string("config.json: \"") + key + "\": " + e.what());
  }
}

// Which layers attend through a sliding window, as transformers decides it. Mistral windows
// every layer when sliding_window is a number (null: none). Qwen2/Qwen3 window only when
// use_sliding_window is set, then the layers >= max_window_layers, or those an explicit
// "layer_types" list marks sliding_attention. Llama has no window.
inline void read_sliding_window(const Json& j, ModelConfig& c) {
  const Json* use = j.find("use_sliding_window");
  const bool mistral_like = c.architecture == Architecture::mistral || c.architecture == Architecture::mixtral;
  const bool use_flag = use && use->type() == Json::Type::boolean && use->boolean();
  // transformers' Qwen2-MoE windows layers only under flash attention (its other attention
  // implementations window every layer or none), so there is no one behaviour to match.
  if (c.architecture == Architecture::qwen2_moe && use_flag)
    throw FormatError("config.json: use_sliding_window is not supported for qwen2_moe");
  const bool enabled =
      mistral_like || ((c.architecture == Architecture::qwen2 || c.architecture == Architecture::qwen3 ||
                        c.architecture == Architecture::qwen3_moe) &&
                       use_flag);
  const Json* w = j.find("sliding_window");
  if (!enabled || (mistral_like && (!w || w->is_null()))) return;
  if (!w || !w->is_number() || w->number() < 1)
    throw FormatError(
        "config.json: sliding-window attention is enabled but \"sliding_window\" is not a positive number");
  c.sliding_window = w->integer(1, ModelLimits::max_position);
  std::vector<bool> sliding(static_cast<std::size_t>(c.num_layers), true);
  if (c.architecture == Architecture::qwen3_moe) {
    // Qwen3-MoE windows every layer; it has neither max_window_layers nor layer_types.
  } else if (const Json* types = j.find("layer_types"); types && !types->is_null()) {
    if (!types->is_array() || std::int64_t(types->array().size()) != c.num_layers)
      throw FormatError("config.json: \"layer_types\" must list one type per layer (" + std::to_string(c.num_layers) +
                        ")");
    for (std::size_t l = 0; l < sliding.size(); ++l) {
      const Json& t = types->array()[l];
      const std::string type = t.is_string() ? t.string() : "?";
      if (type != "full_attention" && type != "sliding_attention")
        throw FormatError("config.json: layer " + std::to_string(l) + " has layer type \"" + type +
                          "\"; tpkit implements full_attention and sliding_attention");
      sliding[l] = type == "sliding_attention";
    }
  } else if (!mistral_like) {
    const Json* first = j.find("max_window_layers");
    const std::int64_t from = first && first->is_number() ? first->integer(0, ModelLimits::num_layers) : 0;
    for (std::size_t l = 0; l < sliding.size(); ++l) sliding[l] = std::int64_t(l) >= from;
  }
  if (std::find(sliding.begin(), sliding.end(), false) != sliding.end()) c.sliding_layers = sliding;
}

// Keys whose non-default values change the computation in ways tpkit does not implement: they
// are refused rather than ignored, so a model is never run with part of its definition dropped.
inline void refuse_unimplemented(const Json& j) {
  if (const Json* act = j.find("hidden_act"); act && !(act->is_string() && act->string() == "silu"))
    throw FormatError("config.json: hidden_act \"" + (act->is_string() ? act->string() : std::string("?")) +
                      "\" is not supported; tpkit implements silu");
  if (const Json* b = j.find("mlp_bias"); b && b->type() == Json::Type::boolean && b->boolean())
    throw FormatError("config.json: mlp_bias is not supported");
  if (const Json* f = j.find("partial_rotary_factor"); f && f->is_number() && f->number() != 1.0)
    throw FormatError("config.json: partial_rotary_factor " + std::to_string(f->number()) +
                      " is not supported; tpkit rotates the whole head");
  if (const Json* f = j.find("logits_scaling"); f && f->is_number() && f->number() != 1.0)
    throw FormatError("config.json: logits_scaling is not supported");
  // Routing schemes of other MoE families (DeepSeek's grouped top-k, sigmoid scores, scaled
  // weights, dense first layers): refused by name rather than routed the Mixtral/Qwen way.
  if (const Json* f = j.find("scoring_func"); f && !(f->is_string() && f->string() == "softmax"))
    throw FormatError("config.json: scoring_func \"" + (f->is_string() ? f->string() : std::string("?")) +
                      "\" is not supported; tpkit routes by softmax");
  if (const Json* f = j.find("topk_method"); f && !(f->is_string() && f->string() == "greedy"))
    throw FormatError("config.json: topk_method \"" + (f->is_string() ? f->string() : std::string("?")) +
                      "\" is not supported; tpkit routes by greedy top-k");
  for (const char* key : {"n_group", "topk_group"})
    if (const Json* f = j.find(key); f && f->is_number() && f->number() > 1)
      throw FormatError(std::string("config.json: ") + key + " " + std::to_string(f->number()) +
                        " (grouped expert routing) is not supported");
  if (const Json* f = j.find("routed_scaling_factor"); f && f->is_number() && f->number() != 1.0)
    throw FormatError("config.json: routed_scaling_factor " + std::to_string(f->number()) + " is not supported");
  for (const char* key : {"first_k_dense_replace", "n_shared_experts", "moe_layer_freq"})
    if (const Json* f = j.find(key); f && !f->is_null())
      throw FormatError(std::string("config.json: ") + key + " is not supported");
}

// The mixture-of-experts keys of Mixtral, Qwen2-MoE and Qwen3-MoE, with transformers' defaults.
inline void read_moe(const Json& j, ModelConfig& c) {
  const auto integer = [&](const char* key, std::int64_t fallback, std::int64_t limit) {
    return config_integer(j, key, fallback, limit);
  };
  MoEConfig& m = c.moe;
  std::int64_t sparse_step = 1;
  std::vector<std::int64_t> mlp_only;
  if (c.architecture == Architecture::mixtral) {
    m.num_experts = int(integer("num_local_experts", 8, ModelLimits::num_experts));
    m.experts_per_token = int(integer("num_experts_per_tok", 2, ModelLimits::num_experts));
    m.expert_intermediate_size = c.intermediate_size;
    m.normalize_topk = true;
  } else {
    const bool qwen2 = c.architecture == Architecture::qwen2_moe;
    m.num_experts = int(integer("num_experts", qwen2 ? 60 : 128, ModelLimits::num_experts));
    m.experts_per_token = int(integer("num_experts_per_tok", qwen2 ? 4 : 8, ModelLimits::num_experts));
    m.expert_intermediate_size = integer("moe_intermediate_size", qwen2 ? 1408 : 768, ModelLimits::intermediate_size);
    const Json* norm = j.find("norm_topk_prob");
    if (norm && !norm->is_null() && norm->type() != Json::Type::boolean)
      throw FormatError("config.json: \"norm_topk_prob\" must be true or false");
    m.normalize_topk = norm && norm->type() == Json::Type::boolean && norm->boolean();
    if (qwen2)
      m.shared_expert_intermediate_size =
          integer("shared_expert_intermediate_size", 5632, ModelLimits::intermediate_size);
    sparse_step = integer("decoder_sparse_step", 1, ModelLimits::num_layers);
    if (sparse_step < 1) throw FormatError("config.json: \"decoder_sparse_step\" must be at least 1");
    if (const Json* only = j.find("mlp_only_layers"); only && !only->is_null()) {
      if (!only->is_array()) throw FormatError("config.json: \"mlp_only_layers\" must be a list of layer indices");
      for (const Json& x : only->array()) {
        if (!x.is_number()) throw FormatError("config.json: \"mlp_only_layers\" must be a list of layer indices");
        mlp_only.push_back(x.integer(0, ModelLimits::num_layers));
      }
    }
  }
  if (m.num_experts == 0) return;  // Qwen's num_experts 0: every layer dense, as transformers builds it
  m.sparse_layers.assign(std::size_t(c.num_layers), false);
  for (std::int64_t l = 0; l < c.num_layers; ++l)
    m.sparse_layers[std::size_t(l)] =
        std::find(mlp_only.begin(), mlp_only.end(), l) == mlp_only.end() && (l + 1) % sparse_step == 0;
}
}  // namespace hf_detail

// config.json of a Hugging Face Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2-MoE or Qwen3-MoE
// checkpoint.
inline ModelConfig config_from_hf(const Json& j) {
  ModelConfig c;
  std::string type = j.find("model_type") && j.at("model_type").is_string() ? j.at("model_type").string() : "";
  if (type.empty() && j.find("architectures") && !j.at("architectures").array().empty()) {
    const std::string a = j.at("architectures").array()[0].string();
    type = a.rfind("Llama", 0) == 0      ? "llama"
           : a.rfind("Mistral", 0) == 0  ? "mistral"
           : a.rfind("Mixtral", 0) == 0  ? "mixtral"
           : a.rfind("Qwen3Moe", 0) == 0 ? "qwen3_moe"
           : a.rfind("Qwen2Moe", 0) == 0 ? "qwen2_moe"
           : a.rfind("Qwen3", 0) == 0    ? "qwen3"
           : a.rfind("Qwen2", 0) == 0    ? "qwen2"
                                         : a;
  }
  if (type == "llama")
    c.architecture = Architecture::llama;
  else if (type == "mistral")
    c.architecture = Architecture::mistral;
  else if (type == "qwen2")
    c.architecture = Architecture::qwen2;
  else if (type == "qwen3")
    c.architecture = Architecture::qwen3;
  else if (type == "mixtral")
    c.architecture = Architecture::mixtral;
  else if (type == "qwen2_moe")
    c.architecture = Architecture::qwen2_moe;
  else if (type == "qwen3_moe")
    c.architecture = Architecture::qwen3_moe;
  else
    throw FormatError("unknown architecture \"" + type +
                      "\"; supported: llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe");

  const auto integer = [&](const char* key, std::int64_t fallback, std::int64_t limit) {
    return hf_detail::config_integer(j, key, fallback, limit);
  };
  const auto real = [&](const char* key, double fallback) {
    const Json* v = j.find(key);
    if (v && !v->is_null() && !v->is_number())
      throw FormatError(std::string("config.json: \"") + key + "\" must be a number");
    return v && v->is_number() ? v->number() : fallback;
  };
  const auto flag = [&](const char* key, bool fallback) {
    const Json* v = j.find(key);
    return v && v->type() == Json::Type::boolean ? v->boolean() : fallback;
  };
  c.hidden_size = integer("hidden_size", -1, ModelLimits::hidden_size);
  c.intermediate_size = integer("intermediate_size", -1, ModelLimits::intermediate_size);
  c.num_layers = integer("num_hidden_layers", -1, ModelLimits::num_layers);
  c.num_heads = int(integer("num_attention_heads", -1, ModelLimits::num_heads));
  c.num_kv_heads = int(integer("num_key_value_heads", c.num_heads, ModelLimits::num_heads));
  c.head_dim = integer("head_dim", c.num_heads ? c.hidden_size / c.num_heads : 0, ModelLimits::head_dim);
  c.vocab_size = integer("vocab_size", -1, ModelLimits::vocab_size);
  c.max_position = integer("max_position_embeddings", 4096, ModelLimits::max_position);
  const bool mixtral = c.architecture == Architecture::mixtral;  // MixtralConfig's own defaults
  c.rms_norm_eps = real("rms_norm_eps", mixtral ? 1e-5 : 1e-6);
  c.rope_theta = real("rope_theta", mixtral ? 1e6 : 10000.0);
  c.tie_embeddings = flag("tie_word_embeddings", false);
  // Qwen2 always has q/k/v biases and never an o_proj bias; Qwen2-MoE has them when qkv_bias is
  // true or absent (null means none, as nn.Linear(bias=None)); Llama, Mistral, Qwen3 and
  // Qwen3-MoE have both exactly when attention_bias is set; Mixtral never has them.
  const bool qwen2_family = c.architecture == Architecture::qwen2 || c.architecture == Architecture::qwen2_moe;
  const bool attention_bias = !qwen2_family && c.architecture != Architecture::mixtral && flag("attention_bias", false);
  const Json* qkv_bias = j.find("qkv_bias");
  const bool qwen2_moe_bias = !qkv_bias || (qkv_bias->type() == Json::Type::boolean && qkv_bias->boolean());
  c.qkv_bias = c.architecture == Architecture::qwen2 || (c.architecture == Architecture::qwen2_moe && qwen2_moe_bias) ||
               attention_bias;
  c.o_bias = attention_bias;
  c.qk_norm = c.architecture == Architecture::qwen3 || c.architecture == Architecture::qwen3_moe;
  c.rope_style = RopeStyle::rotate_half;
  hf_detail::read_sliding_window(j, c);
  hf_detail::refuse_unimplemented(j);
  if (c.architecture == Architecture::mixtral || c.architecture == Architecture::qwen2_moe ||
      c.architecture == Architecture::qwen3_moe)
    hf_detail::read_moe(j, c);
  if (const Json* s = j.find("rope_scaling"); s && s->is_object()) {
    const Json* kind = s->find("rope_type");
    if (!kind) kind = s->find("type");
    const std::string k = kind && kind->is_string() ? kind->string() : "";
    if (k == "llama3") {
      c.rope_scaling.llama3 = true;
      try {
        c.rope_scaling.factor = s->at("factor").number();
        c.rope_scaling.low_freq_factor = s->at("low_freq_factor").number();
        c.rope_scaling.high_freq_factor = s->at("high_freq_factor").number();
        c.rope_scaling.original_max_position = s->at("original_max_position_embeddings").number();
      } catch (const FormatError& e) {
        throw FormatError(std::string("config.json: rope_scaling: ") + e.what());
      }
    } else if (k != "default") {
      throw FormatError("config.json: unsupported rope_scaling type \"" + k +
                        "\"; tpkit implements default and llama3");
    }
  }
  const std::int64_t id_limit = std::int64_t(1) << 30;
  if (const Json* b = j.find("bos_token_id"); b && b->is_number()) c.bos_token_id = int(b->integer(0, id_limit));
  if (const Json* e = j.find("eos_token_id")) {
    c.eos_token_ids.clear();
    if (e->is_number())
      c.eos_token_ids.push_back(int(e->integer(0, id_limit)));
    else if (e->is_array())
      for (const Json& x : e->array()) c.eos_token_ids.push_back(int(x.integer(0, id_limit)));
  }
  c.validate();
  return c;
}

// Adds generation_config.json's eos_token_id (a number or a list) to the config's end-of-sequence
// ids: chat models list their end-of-turn tokens there (Qwen3: <|im_end|> and <|endoftext|>;
// Llama 3.1: <|end_of_text|>, <|eom_id|>, <|eot_id|>), as transformers' generate() uses them.
inline void add_generation_eos(ModelConfig& c, const Json& generation_config) {
  const Json* e = generation_config.find("eos_token_id");
  if (!e || e->is_null()) return;
  std::vector<int> ids;
  if (e->is_number())
    ids.push_back(int(e->integer(0, c.vocab_size - 1)));
  else if (e->is_array())
    for (const Json& x : e->array()) ids.push_back(int(x.integer(0, c.vocab_size - 1)));
  else
    throw FormatError("generation_config.json: eos_token_id must be a number or a list of numbers");
  for (int id : ids)
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
}

}  // namespace tpkit
