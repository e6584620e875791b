// tpkit/model/checkpoint.hpp: read-only access to a model's full tensors by name.
//
// Two formats, one naming scheme (Hugging Face's): a llama2.c `.bin` file, and a Hugging Face
// directory with config.json and model.safetensors or a sharded model.safetensors.index.json.
// Files are memory-mapped and every tensor is a RawTensorView into the map, so a rank that
// copies only its shard reads only its slices. Every inconsistency is a FormatError that names
// the file and what is wrong; nothing is read out of bounds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/core/checked_math.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/io/mapped_file.hpp"
#include "tpkit/model/config.hpp"

namespace tpkit {

class Checkpoint {
 public:
  const ModelConfig& config() const { return config_; }
  const std::string& source() const { return source_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  // The tensor `name`, which must have exactly `shape` and a floating dtype.
  RawTensorView tensor(const std::string& name, std::initializer_list<std::int64_t> shape) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) throw FormatError(source_ + ": tensor \"" + name + "\" is missing");
    const RawTensorView& t = it->second;
    const Layout expected(shape);
    bool same = t.rank() == expected.rank();
    for (int d = 0; same && d < t.rank(); ++d) same = t.size(d) == expected.size(d);
    if (!same)
      throw FormatError(source_ + ": tensor \"" + name + "\" has shape " + t.shape_string() + "; the config implies " +
                        expected.shape_string());
    if (!is_floating_dtype(t.dtype()))
      throw FormatError(source_ + ": tensor \"" + name + "\" has dtype " + dtype_name(t.dtype()) +
                        "; expected F32, F16, BF16 or F64");
    return t;
  }

  static std::string layer_name(std::int64_t layer, const char* suffix) {
    return "model.layers." + std::to_string(layer) + "." + suffix;
  }

  // Opens a llama2.c .bin file or a Hugging Face directory.
  static Checkpoint open(const std::string& path) {
    if (!path_exists(path)) throw FormatError("model path " + path + " does not exist");
    return is_directory(path) ? open_hf(path) : open_llama2c(path);
  }

  static Checkpoint open_llama2c(const std::string& path);
  static Checkpoint open_hf(const std::string& dir);

  // Weights the caller already holds in host memory (its own loader, or synthetic weights for
  // a benchmark), under the Hugging Face names. The caller keeps the memory alive as long as
  // the checkpoint; shapes are checked when a model asks for a tensor.
  static Checkpoint from_tensors(ModelConfig config, std::map<std::string, RawTensorView> tensors,
                                 std::string source = "in-memory checkpoint") {
    for (const auto& [name, t] : tensors)
      TPKIT_REQUIRE(t.memory() == MemoryKind::host, source, ": tensor \"", name, "\" must be in host memory");
    config.validate();
    Checkpoint c;
    c.config_ = std::move(config);
    c.source_ = std::move(source);
    c.tensors_ = std::move(tensors);
    return c;
  }

  // The tensors of a safetensors file held in memory (`data`, `size` bytes): views into `data`.
  // Every shape, dtype and offset is checked against the buffer (sizes cannot wrap, tensors
  // cannot overlap) before a view is made; `source` names the file in errors.
  static std::map<std::string, RawTensorView> parse_safetensors(const unsigned char* data, std::size_t size,
                                                                const std::string& source);

 private:
  void add_safetensors(const std::string& path);

  ModelConfig config_;
  std::string source_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::map<std::string, RawTensorView> tensors_;
};

// llama2.c: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a
// negative vocab_size means a separate classifier follows), then float32 tensors in a fixed
// order, each stacked over layers.
inline Checkpoint Checkpoint::open_llama2c(const std::string& path) {
  Checkpoint c;
  c.source_ = path;
  auto file = std::make_shared<MappedFile>(path);
  if (file->size() < 28)
    throw FormatError(path + ": truncated llama2.c header (" + std::to_string(file->size()) + " bytes)");
  std::int32_t h[7];
  std::memcpy(h, file->data(), sizeof h);
  const bool shared_classifier = h[5] > 0;
  ModelConfig& m = c.config_;
  m.hidden_size = h[0], m.intermediate_size = h[1], m.num_layers = h[2];
  m.num_heads = h[3], m.num_kv_heads = h[4], m.vocab_size = shared_classifier ? h[5] : -std::int64_t(h[5]);
  m.max_position = h[6];
  for (int i = 0; i < 7; ++i)
    if (h[i] == 0 || (i != 5 && h[i] < 0) || h[i] > (1 << 24))
      throw FormatError(path + ": implausible llama2.c header field " + std::to_string(i) + " = " +
                        std::to_string(h[i]));
  if (m.num_heads <= 0 || m.hidden_size % m.num_heads != 0)
    throw FormatError(path + ": dim " + std::to_string(m.hidden_size) + " is not a multiple of n_heads " +
                      std::to_string(m.num_heads));
  m.head_dim = m.hidden_size / m.num_heads;
  m.tie_embeddings = shared_classifier;
  m.rope_style = RopeStyle::interleaved;
  m.rms_norm_eps = 1e-5;
  m.bos_token_id = 1;
  m.eos_token_ids = {2};
  m.validate();

  const std::int64_t H = m.hidden_size, I = m.intermediate_size, L = m.num_layers, V = m.vocab_size;
  const std::int64_t Q = m.q_size(), KV = m.kv_size(), hd = m.head_dim, S = m.max_position;
  // In double: header fields up to 2^24 would overflow an int64 product; real files are far
  // below 2^53 bytes, where double is exact.
  const double floats = double(V) * H + double(L) * H + double(L) * Q * H + 2.0 * L * KV * H + double(L) * H * Q +
                        double(L) * H + 3.0 * L * I * H + double(H) + double(S) * hd +
                        (shared_classifier ? 0.0 : double(V) * H);
  const double expected = 28.0 + floats * 4.0;
  if (double(file->size()) != expected)
    throw FormatError(path + ": llama2.c file is " + std::to_string(file->size()) + " bytes; its header implies " +
                      std::to_string(std::uint64_t(std::min(expected, 1e19))) +
                      (double(file->size()) < expected ? " (truncated)" : " (trailing data)"));
  const auto* base = reinterpret_cast<const float*>(file->data() + 28);  // memcpy-read only
  std::int64_t at = 0;
  const auto take = [&](std::int64_t count) {
    const float* p = base + at;
    at += count;
    return p;
  };
  const auto stacked = [&](const char* suffix, std::int64_t rows, std::int64_t cols) {
    const float* p = take(L * rows * cols);
    for (std::int64_t l = 0; l < L; ++l) {
      const float* q = p + l * rows * cols;
      c.tensors_[layer_name(l, suffix)] =
          cols == 1 ? RawTensorView(q, DType::f32, {rows}) : RawTensorView(q, DType::f32, {rows, cols});
    }
  };
  c.tensors_["model.embed_tokens.weight"] = RawTensorView(take(V * H), DType::f32, {V, H});
  stacked("input_layernorm.weight", H, 1);
  stacked("self_attn.q_proj.weight", Q, H);
  stacked("self_attn.k_proj.weight", KV, H);
  stacked("self_attn.v_proj.weight", KV, H);
  stacked("self_attn.o_proj.weight", H, Q);
  stacked("post_attention_layernorm.weight", H, 1);
  stacked("mlp.gate_proj.weight", I, H);  // w1
  stacked("mlp.down_proj.weight", H, I);  // w2
  stacked("mlp.up_proj.weight", I, H);    // w3
  c.tensors_["model.norm.weight"] = RawTensorView(take(H), DType::f32, {H});
  take(S * hd);  // precomputed RoPE tables: tpkit computes its own
  if (!shared_classifier) c.tensors_["lm_head.weight"] = RawTensorView(take(V * H), DType::f32, {V, H});
  c.files_.push_back(std::move(file));
  return c;
}

inline std::map<std::string, RawTensorView> Checkpoint::parse_safetensors(const unsigned char* data, std::size_t size,
                                                                          const std::string& source) {
  if (size < 8) throw FormatError(source + ": truncated safetensors file (" + std::to_string(size) + " bytes)");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];  // little endian
  if (header_len > size - 8 || header_len > (std::uint64_t(100) << 20))
    throw FormatError(source + ": safetensors header length " + std::to_string(header_len) + " exceeds the file (" +
                      std::to_string(size) + " bytes)");
  const Json header =
      Json::parse(std::string_view(reinterpret_cast<const char*>(data + 8), header_len), source + " header");
  if (!header.is_object()) throw FormatError(source + ": safetensors header is not a JSON object");
  const unsigned char* bytes = data + 8 + header_len;
  const std::uint64_t data_size = size - 8 - header_len;
  std::map<std::string, RawTensorView> tensors;
  struct Extent {
    std::uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Extent> extents;
  for (const auto& [name, info] : header.object()) {
    if (name == "__metadata__") continue;
    try {
      if (tensors.count(name)) throw FormatError("appears twice in the header");
      const std::string& dt = info.at("dtype").string();
      DType dtype;
      if (dt == "F32")
        dtype = DType::f32;
      else if (dt == "F16")
        dtype = DType::f16;
      else if (dt == "BF16")
        dtype = DType::bf16;
      else if (dt == "F64")
        dtype = DType::f64;
      else if (dt == "I32")
        dtype = DType::i32;
      else if (dt == "I64")
        dtype = DType::i64;
      else if (dt == "U8")
        dtype = DType::u8;
      else
        throw FormatError("unsupported dtype " + dt);
      const auto& shape_json = info.at("shape").array();
      if (shape_json.size() > 2 || shape_json.empty()) throw FormatError("only 1-D and 2-D tensors are supported");
      // Each extent below 2^40 and the byte count below 2^62, so neither the products here nor
      // any view's offsets can wrap.
      std::int64_t dims[2] = {1, 1};
      std::uint64_t bytes_needed = dtype_size(dtype);
      for (std::size_t d = 0; d < shape_json.size(); ++d) {
        dims[d] = shape_json[d].integer(0, std::int64_t(1) << 40);
        if (__builtin_mul_overflow(bytes_needed, std::uint64_t(dims[d]), &bytes_needed) ||
            bytes_needed > (std::uint64_t(1) << 62))
          throw FormatError("shape " + std::to_string(dims[0]) + (d ? " x " + std::to_string(dims[1]) : "") +
                            " holds more bytes than any file can");
      }
      const auto& offsets = info.at("data_offsets").array();
      if (offsets.size() != 2) throw FormatError("data_offsets must have two entries");
      const std::uint64_t begin = std::uint64_t(offsets[0].integer(0)), end = std::uint64_t(offsets[1].integer(0));
      if (end > data_size)
        throw FormatError("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                          "] reach beyond the end of the file (truncated?): its data section holds " +
                          std::to_string(data_size) + " bytes");
      if (end < begin || end - begin != bytes_needed)
        throw FormatError("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] do not hold " +
                          (shape_json.size() == 1 ? std::to_string(dims[0])
                                                  : std::to_string(dims[0]) + " x " + std::to_string(dims[1])) +
                          " elements of " + dt);
      auto inserted =
          tensors.emplace(name, shape_json.size() == 1 ? RawTensorView(bytes + begin, dtype, {dims[0]})
                                                       : RawTensorView(bytes + begin, dtype, {dims[0], dims[1]}));
      if (begin != end) extents.push_back({begin, end, &inserted.first->first});
    } catch (const FormatError& e) {
      throw FormatError(source + ": tensor \"" + name + "\": " + e.what());
    } catch (const InvalidArgument& e) {
      throw FormatError(source + ": tensor \"" + name + "\": " + e.what());
    }
  }
  // Two tensors must not share bytes (the format forbids it; a writer that did is corrupt).
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < extents.size(); ++i)
    if (extents[i].begin < extents[i - 1].end)
      throw FormatError(source + ": tensors \"" + *extents[i - 1].name + "\" and \"" + *extents[i].name +
                        "\" overlap (data_offsets [" + std::to_string(extents[i - 1].begin) + ", " +
                        std::to_string(extents[i - 1].end) + "] and [" + std::to_string(extents[i].begin) + ", " +
                        std::to_string(extents[i].end) + "])");
  return tensors;
}

inline void Checkpoint::add_safetensors(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  for (auto& [name, view] : parse_safetensors(file->data(), file->size(), path)) {
    if (tensors_.count(name)) throw FormatError(path + ": tensor \"" + name + "\" is also in another shard");
    tensors_.emplace(name, view);
  }
  files_.push_back(std::move(file));
}

inline Checkpoint Checkpoint::open_hf(const std::string& dir) {
  Checkpoint c;
  c.source_ = dir;
  {
    MappedFile config(dir + "/config.json");
    c.config_ = config_from_hf(Json::parse(
        std::string_view(reinterpret_cast<const char*>(config.data()), config.size()), dir + "/config.json"));
  }
  if (const std::string generation = dir + "/generation_config.json"; is_regular_file(generation)) {
    MappedFile g(generation);
    try {
      add_generation_eos(c.config_,
                         Json::parse(std::string_view(reinterpret_cast<const char*>(g.data()), g.size()), generation));
    } catch (const FormatError& e) {
      throw FormatError(generation + ": " + e.what());
    }
  }
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  if (is_regular_file(single)) {
    c.add_safetensors(single);
  } else if (is_regular_file(index)) {
    MappedFile f(index);
    const Json j = Json::parse(std::string_view(reinterpret_cast<const char*>(f.data()), f.size()), index);
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& [name, file] : j.at("weight_map").object()) by_file[file.string()].push_back(name);
    for (const auto& [file, names] : by_file) {
      if (file.find('/') != std::string::npos)
        throw FormatError(index + ": shard name \"" + file + "\" is not a plain file name");
      c.add_safetensors(dir + "/" + file);
      for (const auto& n : names)
        if (!c.has(n))
          throw FormatError(index + ": \"" + n + "\" is mapped to " + file + ", which does not contain it");
    }
  } else {
    throw FormatError(dir + ": neither model.safetensors nor model.safetensors.index.json exists");
  }
  return c;
}

}  // namespace tpkit
