// Writes small Hugging Face checkpoints (config.json + safetensors, single or sharded) with
// random weights for tests, and returns the same weights, as stored, for the float64 reference.
// Independent of tpkit's readers: it writes the format from its specification.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "reference/llama_reference.hpp"
#include "reference/reference.hpp"

namespace ref {

struct WriterOptions {
  std::string model_type = "llama";  // llama, mistral, qwen2, qwen3
  std::string dtype = "F32";         // F32, F16 or BF16 tensors
  bool tied = false;
  bool sharded = false;  // model.safetensors.index.json over two files
  bool llama3_scaling = false;
  int sliding_window = 0;
  std::string eos = "[2, 3]";  // eos_token_id as written to config.json
  int dim = 48, hidden = 80, layers = 2, heads = 6, kv_heads = 2, head_dim = 8, vocab = 97, max_position = 64;
  std::uint64_t seed = 1;
};

namespace writer_detail {
inline std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16(std::uint16_t b) {
  const std::uint32_t u = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Values here are in (-4, 4): normal binary16 numbers, so rounding is plain significand rounding.
inline std::uint16_t to_f16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
  if (abs < 0x38800000u) return std::uint16_t(sign);  // tiny values flush to zero: avoided by the generator
  const std::uint32_t r = abs - 0x38000000u;
  return std::uint16_t(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}
inline float from_f16(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return 0.0f;
  const std::uint32_t u = sign | ((e + 112u) << 23) | (m << 13);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace writer_detail

struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<double> values;  // as stored (after rounding to the file dtype)
};

// Writes the checkpoint to `dir` and returns the weights for LlamaReference (and, when asked,
// every tensor by its Hugging Face name).
inline LlamaWeights write_checkpoint(const std::string& dir, const WriterOptions& o,
                                     std::map<std::string, Tensor>* tensors_out = nullptr) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  Rng rng(o.seed);
  std::map<std::string, Tensor> tensors;
  const auto make = [&](const std::string& name, std::vector<std::int64_t> shape, double scale, double offset = 0) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    Tensor t{shape, {}};
    for (std::int64_t i = 0; i < n; ++i) {
      double v = offset + rng.uniform() * scale;
      if (std::fabs(v) < 1e-3) v = 1e-3;  // keep clear of 16-bit subnormals
      const float f = float(v);
      if (o.dtype == "BF16")
        v = writer_detail::from_bf16(writer_detail::to_bf16(f));
      else if (o.dtype == "F16")
        v = writer_detail::from_f16(writer_detail::to_f16(f));
      else
        v = double(f);
      t.values.push_back(v);
    }
    tensors[name] = t;
    return t.values;
  };
  LlamaWeights w;
  LlamaConfig& c = w.config;
  c.dim = o.dim, c.hidden = o.hidden, c.layers = o.layers, c.heads = o.heads, c.kv_heads = o.kv_heads;
  c.head_dim = o.head_dim, c.vocab = o.vocab, c.eps = 1e-6, c.theta = 10000.0, c.interleaved = false;
  c.qkv_bias = o.model_type == "qwen2";
  c.qk_norm = o.model_type == "qwen3";
  if (o.model_type == "mistral") c.sliding_window = o.sliding_window;
  if (o.llama3_scaling)
    c.llama3_scaling = true, c.factor = 8, c.low_freq_factor = 1, c.high_freq_factor = 4, c.original_max_position = 16;
  const int q = o.heads * o.head_dim, kv = o.kv_heads * o.head_dim, D = o.dim;
  w.embed = make("model.embed_tokens.weight", {o.vocab, D}, 1.0);
  w.layers.resize(std::size_t(o.layers));
  for (int l = 0; l < o.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayer& L = w.layers[std::size_t(l)];
    L.att_norm = make(p + "input_layernorm.weight", {D}, 0.2, 1.0);
    L.ffn_norm = make(p + "post_attention_layernorm.weight", {D}, 0.2, 1.0);
    L.wq = make(p + "self_attn.q_proj.weight", {q, D}, 1.5 / std::sqrt(D));
    L.wk = make(p + "self_attn.k_proj.weight", {kv, D}, 1.5 / std::sqrt(D));
    L.wv = make(p + "self_attn.v_proj.weight", {kv, D}, 1.5 / std::sqrt(D));
    L.wo = make(p + "self_attn.o_proj.weight", {D, q}, 1.5 / std::sqrt(q));
    L.w_gate = make(p + "mlp.gate_proj.weight", {o.hidden, D}, 1.5 / std::sqrt(D));
    L.w_up = make(p + "mlp.up_proj.weight", {o.hidden, D}, 1.5 / std::sqrt(D));
    L.w_down = make(p + "mlp.down_proj.weight", {D, o.hidden}, 1.5 / std::sqrt(o.hidden));
    if (c.qkv_bias) {
      L.bq = make(p + "self_attn.q_proj.bias", {q}, 0.5);
      L.bk = make(p + "self_attn.k_proj.bias", {kv}, 0.5);
      L.bv = make(p + "self_attn.v_proj.bias", {kv}, 0.5);
    }
    if (c.qk_norm) {
      L.q_norm = make(p + "self_attn.q_norm.weight", {o.head_dim}, 0.3, 1.0);
      L.k_norm = make(p + "self_attn.k_norm.weight", {o.head_dim}, 0.3, 1.0);
    }
  }
  w.final_norm = make("model.norm.weight", {D}, 0.2, 1.0);
  if (!o.tied) w.lm_head = make("lm_head.weight", {o.vocab, D}, 1.0);

  // config.json
  std::string arch = o.model_type == "qwen2"     ? "Qwen2ForCausalLM"
                     : o.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                     : o.model_type == "mistral" ? "MistralForCausalLM"
                                                 : "LlamaForCausalLM";
  std::string cfg =
      "{\"architectures\": [\"" + arch + "\"], \"model_type\": \"" + o.model_type +
      "\", \"hidden_size\": " + std::to_string(D) + ", \"intermediate_size\": " + std::to_string(o.hidden) +
      ", \"num_hidden_layers\": " + std::to_string(o.layers) + ", \"num_attention_heads\": " + std::to_string(o.heads) +
      ", \"num_key_value_heads\": " + std::to_string(o.kv_heads) + ", \"head_dim\": " + std::to_string(o.head_dim) +
      ", \"vocab_size\": " + std::to_string(o.vocab) +
      ", \"max_position_embeddings\": " + std::to_string(o.max_position) +
      ", \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, \"tie_word_embeddings\": " + (o.tied ? "true" : "false") +
      ", \"bos_token_id\": 1, \"eos_token_id\": " + o.eos;
  if (o.sliding_window > 0) cfg += ", \"sliding_window\": " + std::to_string(o.sliding_window);
  if (o.llama3_scaling)
    cfg +=
        ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
        "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}";
  cfg += ", \"torch_dtype\": \"float32\"}";
  std::FILE* f = std::fopen((dir + "/config.json").c_str(), "wb");
  std::fwrite(cfg.data(), 1, cfg.size(), f);
  std::fclose(f);

  // safetensors: 8-byte little-endian header length, JSON header, packed data.
  const std::size_t element = o.dtype == "F32" ? 4 : 2;
  const auto write_file = [&](const std::string& path, const std::vector<std::string>& names) {
    std::string header = "{\"__metadata__\": {\"format\": \"pt\"}";
    std::string data;
    for (const auto& name : names) {
      const Tensor& t = tensors.at(name);
      std::string shape;
      for (std::size_t i = 0; i < t.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t.shape[i]);
      const std::size_t begin = data.size();
      for (double v : t.values) {
        if (element == 4) {
          const float x = float(v);
          data.append(reinterpret_cast<const char*>(&x), 4);
        } else {
          const std::uint16_t x =
              o.dtype == "BF16" ? writer_detail::to_bf16(float(v)) : writer_detail::to_f16(float(v));
          data.append(reinterpret_cast<const char*>(&x), 2);
        }
      }
      header += ", \"" + name + "\": {\"dtype\": \"" + o.dtype + "\", \"shape\": [" + shape + "], \"data_offsets\": [" +
                std::to_string(begin) + ", " + std::to_string(data.size()) + "]}";
    }
    header += "}";
    const std::uint64_t n = header.size();
    std::FILE* out = std::fopen(path.c_str(), "wb");
    for (int i = 0; i < 8; ++i) std::fputc(int((n >> (8 * i)) & 0xff), out);
    std::fwrite(header.data(), 1, header.size(), out);
    std::fwrite(data.data(), 1, data.size(), out);
    std::fclose(out);
  };
  std::vector<std::string> names;
  for (const auto& kv_pair : tensors) names.push_back(kv_pair.first);
  if (!o.sharded) {
    write_file(dir + "/model.safetensors", names);
  } else {
    const std::size_t half = names.size() / 2;
    const std::vector<std::string> a(names.begin(), names.begin() + std::ptrdiff_t(half)),
        b(names.begin() + std::ptrdiff_t(half), names.end());
    write_file(dir + "/model-00001-of-00002.safetensors", a);
    write_file(dir + "/model-00002-of-00002.safetensors", b);
    std::string index = "{\"metadata\": {}, \"weight_map\": {";
    for (std::size_t i = 0; i < names.size(); ++i)
      index += (i ? ", \"" : "\"") + names[i] + "\": \"" +
               (i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors") + "\"";
    index += "}}";
    std::FILE* out = std::fopen((dir + "/model.safetensors.index.json").c_str(), "wb");
    std::fwrite(index.data(), 1, index.size(), out);
    std::fclose(out);
  }
  if (tensors_out) *tensors_out = tensors;
  return w;
}

}  // namespace ref
