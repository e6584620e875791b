// Writes a tiny Hugging Face model directory (config.json, generation_config.json,
// model.safetensors) with a real model's vocabulary size and special ids, so tpkit-generate can
// run a real tokenizer and chat template end to end without committing large weights. The
// weights are a fixed pseudo-random pattern: what is generated means nothing; the prompt ids do.
//
//   make_tiny_model OUT_DIR qwen3|mistral VOCAB_SIZE BOS_ID EOS_ID [GENERATION_EOS_ID,...]
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace {

struct Tensor {
  std::string name;
  std::vector<std::int64_t> shape;
  bool ones;  // a norm's weight
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr,
                 "usage: make_tiny_model OUT_DIR qwen3|mistral VOCAB_SIZE BOS_ID EOS_ID [GENERATION_EOS_IDS]\n");
    return 2;
  }
  const std::string out = argv[1], family = argv[2];
  const std::int64_t vocab = std::stoll(argv[3]);
  const std::string bos = argv[4], eos = argv[5], generation_eos = argc > 6 ? argv[6] : argv[5];
  const std::int64_t hidden = 8, heads = 1, head_dim = 8, intermediate = 16;
  std::filesystem::create_directories(out);

  std::ofstream(out + "/config.json")
      << "{\"architectures\": [\"" << (family == "qwen3" ? "Qwen3ForCausalLM" : "MistralForCausalLM")
      << "\"], \"model_type\": \"" << family << "\", \"hidden_size\": " << hidden
      << ", \"intermediate_size\": " << intermediate << ", \"num_hidden_layers\": 1, \"num_attention_heads\": " << heads
      << ", \"num_key_value_heads\": " << heads << ", \"head_dim\": " << head_dim << ", \"vocab_size\": " << vocab
      << ", \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-06, \"rope_theta\": 10000.0, "
      << "\"tie_word_embeddings\": true, \"hidden_act\": \"silu\", \"bos_token_id\": " << bos
      << ", \"eos_token_id\": " << eos << "}\n";
  std::ofstream(out + "/generation_config.json")
      << "{\"bos_token_id\": " << bos << ", \"eos_token_id\": [" << generation_eos << "]}\n";

  std::vector<Tensor> tensors = {{"model.embed_tokens.weight", {vocab, hidden}, false},
                                 {"model.norm.weight", {hidden}, true},
                                 {"model.layers.0.input_layernorm.weight", {hidden}, true},
                                 {"model.layers.0.post_attention_layernorm.weight", {hidden}, true},
                                 {"model.layers.0.self_attn.q_proj.weight", {heads * head_dim, hidden}, false},
                                 {"model.layers.0.self_attn.k_proj.weight", {heads * head_dim, hidden}, false},
                                 {"model.layers.0.self_attn.v_proj.weight", {heads * head_dim, hidden}, false},
                                 {"model.layers.0.self_attn.o_proj.weight", {hidden, heads * head_dim}, false},
                                 {"model.layers.0.mlp.gate_proj.weight", {intermediate, hidden}, false},
                                 {"model.layers.0.mlp.up_proj.weight", {intermediate, hidden}, false},
                                 {"model.layers.0.mlp.down_proj.weight", {hidden, intermediate}, false}};
  if (family == "qwen3") {
    tensors.push_back({"model.layers.0.self_attn.q_norm.weight", {head_dim}, true});
    tensors.push_back({"model.layers.0.self_attn.k_norm.weight", {head_dim}, true});
  }
  std::string header = "{";
  std::int64_t offset = 0;
  for (const Tensor& t : tensors) {
    std::int64_t n = 1;
    std::string shape;
    for (std::int64_t d : t.shape) n *= d, shape += (shape.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") + std::string("\"") + t.name + "\":{\"dtype\":\"F32\",\"shape\":[" +
              shape + "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + 4 * n) + "]}";
    offset += 4 * n;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::ofstream f(out + "/model.safetensors", std::ios::binary);
  const std::uint64_t header_size = header.size();
  f.write(reinterpret_cast<const char*>(&header_size), 8);
  f << header;
  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  for (const Tensor& t : tensors) {
    std::int64_t n = 1;
    for (std::int64_t d : t.shape) n *= d;
    std::vector<float> values(std::size_t(n), 1.0f);
    if (!t.ones)
      for (float& v : values) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        v = (float(state >> 40) / float(1 << 24) - 0.5f) * 0.2f;
      }
    f.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(float)));
  }
  return f ? 0 : 1;
}
