// CPU decode throughput of a mixture-of-experts model in each MoE layout, next to a dense model
// with the same active parameters. Both are random Hugging Face checkpoints written here: a
// Qwen3-MoE with Qwen3-30B-A3B's proportions scaled down (hidden 512, 8 layers, 8 query / 2 KV
// heads of 64, 32 experts of width 192, top 4, norm_topk_prob) and a Qwen3 whose dense MLP is
// as wide as the 4 chosen experts together (768): per token both read the same weights.
// Rows: TP 2 with the tp, ep and ep-dispatch layouts, and the dense model at TP 2, at batch 1
// and 16, one thread per rank. Each row is the median of `repeats` runs taken in turns.
//   bench_moe WORK_DIR [decode_tokens] [repeats]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <tpkit/engine/engine.hpp>

namespace {
constexpr int kHidden = 512, kLayers = 8, kHeads = 8, kKvHeads = 2, kHeadDim = 64, kVocab = 4096;
constexpr int kExperts = 32, kTopK = 4, kExpertWidth = 192, kDenseWidth = kTopK * kExpertWidth;

// A model directory: config.json and model.safetensors (F32, random weights scaled like a
// trained model's, so routing spreads over the experts).
void write_model(const std::string& dir, bool moe) {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes;
  const auto add = [&](const std::string& name, std::vector<std::int64_t> shape) { shapes.push_back({name, shape}); };
  add("model.embed_tokens.weight", {kVocab, kHidden});
  add("lm_head.weight", {kVocab, kHidden});
  add("model.norm.weight", {kHidden});
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {kHidden});
    add(p + "post_attention_layernorm.weight", {kHidden});
    add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden});
    add(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden});
    add(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden});
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim});
    add(p + "self_attn.q_norm.weight", {kHeadDim});
    add(p + "self_attn.k_norm.weight", {kHeadDim});
    if (moe) {
      add(p + "mlp.gate.weight", {kExperts, kHidden});
      for (int e = 0; e < kExperts; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        add(x + "gate_proj.weight", {kExpertWidth, kHidden});
        add(x + "up_proj.weight", {kExpertWidth, kHidden});
        add(x + "down_proj.weight", {kHidden, kExpertWidth});
      }
    } else {
      add(p + "mlp.gate_proj.weight", {kDenseWidth, kHidden});
      add(p + "mlp.up_proj.weight", {kDenseWidth, kHidden});
      add(p + "mlp.down_proj.weight", {kHidden, kDenseWidth});
    }
  }
  std::string header = "{";
  std::int64_t offset = 0;
  for (const auto& [name, shape] : shapes) {
    std::int64_t n = 1;
    std::string dims;
    for (std::int64_t d : shape) n *= d, dims += (dims.empty() ? "" : ",") + std::to_string(d);
    header += (header.size() > 1 ? "," : "") +
              ("\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" + dims + "],\"data_offsets\":[" +
               std::to_string(offset) + "," + std::to_string(offset + 4 * n) + "]}");
    offset += 4 * n;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::ofstream f(dir + "/model.safetensors", std::ios::binary);
  const std::uint64_t length = header.size();
  f.write(reinterpret_cast<const char*>(&length), 8);
  f << header;
  std::uint64_t state = 7;
  std::vector<float> values;
  for (const auto& [name, shape] : shapes) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    const bool norm = name.find("norm") != std::string::npos;
    const double scale = norm ? 0.0 : 1.7 / std::sqrt(double(shape.back()));  // unit-variance outputs
    values.resize(std::size_t(n));
    for (float& v : values) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      v = norm ? 1.0f : float((double(state >> 11) * 0x1p-53 * 2 - 1) * scale);
    }
    f.write(reinterpret_cast<const char*>(values.data()), std::streamsize(4 * n));
  }
  std::ofstream c(dir + "/config.json");
  c << "{\"model_type\": \"" << (moe ? "qwen3_moe" : "qwen3") << "\", \"hidden_size\": " << kHidden
    << ", \"intermediate_size\": " << kDenseWidth << ", \"num_hidden_layers\": " << kLayers
    << ", \"num_attention_heads\": " << kHeads << ", \"num_key_value_heads\": " << kKvHeads
    << ", \"head_dim\": " << kHeadDim << ", \"vocab_size\": " << kVocab
    << ", \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0"
    << ", \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2";
  if (moe)
    c << ", \"num_experts\": " << kExperts << ", \"num_experts_per_tok\": " << kTopK
      << ", \"moe_intermediate_size\": " << kExpertWidth << ", \"norm_topk_prob\": true";
  c << "}\n";
}

struct Config {
  std::string name, model;
  tpkit::MoELayout layout;
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_moe WORK_DIR [decode_tokens] [repeats]\n");
    return 2;
  }
  const std::string work = argv[1];
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 32, repeats = argc > 3 ? std::atoi(argv[3]) : 5;
  write_model(work + "/moe", true);
  write_model(work + "/dense", false);
  const double active = double(kLayers) * (2.0 * kHidden * kHeads * kHeadDim + 2.0 * kHidden * kKvHeads * kHeadDim +
                                           3.0 * kHidden * kDenseWidth) +
                        double(kVocab) * kHidden;
  std::printf("MoE: hidden %d, %d layers, %d experts of %d, top %d; dense: MLP %d. %.1f M parameters read per token\n",
              kHidden, kLayers, kExperts, kExpertWidth, kTopK, kDenseWidth, active / 1e6);
  const std::vector<Config> configs = {{"MoE, TP 2 (experts split)", work + "/moe", tpkit::MoELayout::tensor_parallel},
                                       {"MoE, EP 2", work + "/moe", tpkit::MoELayout::expert_parallel},
                                       {"MoE, EP 2 + dispatch", work + "/moe", tpkit::MoELayout::expert_dispatch},
                                       {"dense, TP 2", work + "/dense", tpkit::MoELayout::tensor_parallel}};
  for (int batch : {1, 16}) {
    std::vector<std::unique_ptr<tpkit::Engine>> engines;
    for (const Config& c : configs) {
      tpkit::EngineOptions o;
      o.tp_size = 2, o.threads_per_rank = 1, o.moe_layout = c.layout;
      o.max_num_seqs = batch;
      o.kv_cache_bytes = std::int64_t(256) << 20;
      engines.push_back(std::make_unique<tpkit::Engine>(c.model, o));
    }
    std::vector<std::vector<std::int32_t>> prompts;
    for (int b = 0; b < batch; ++b) prompts.push_back({5, std::int32_t(17 + b), 99, std::int32_t(3 + 7 * b)});
    tpkit::SamplingParams p;
    p.temperature = 0, p.max_tokens = tokens, p.ignore_eos = true;
    std::vector<std::vector<double>> rates(configs.size());
    for (int rep = 0; rep < repeats; ++rep)
      for (std::size_t i = 0; i < configs.size(); ++i) {
        engines[i]->generate(prompts, std::vector<tpkit::SamplingParams>(prompts.size(), p));
        const tpkit::GenerationStats& s = engines[i]->last_stats();
        rates[i].push_back(double(s.generated_tokens) / s.seconds);
      }
    for (std::size_t i = 0; i < configs.size(); ++i) {
      std::sort(rates[i].begin(), rates[i].end());
      std::printf("batch %2d  %-28s %8.1f tok/s\n", batch, configs[i].name.c_str(), rates[i][rates[i].size() / 2]);
    }
  }
}
