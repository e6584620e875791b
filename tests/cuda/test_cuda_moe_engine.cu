// Mixture-of-experts models on the GPU: the engine (tpkit/engine/cuda_engine.cuh, so
// TransformerModel<float, CudaOps> with its MoE layers, CudaOps::check_model at load) on the
// transformers fixtures of tests/data/hf (tools/make_hf_fixtures.py): Qwen3-MoE, Qwen3-MoE with
// decoder_sparse_step 2 and an mlp_only_layers entry (dense and sparse layers mixed), Qwen2-MoE
// with a shared expert, and Mixtral, float32 weights. At 1 and 2 ranks on one GPU (the device
// mock) in every MoE layout (tp, ep, ep-dispatch), the greedy tokens of both prompts must be
// transformers' own, and the expert statistics those of the host engine in the same layout.
//
// Why the tokens must be identical (the argument of tests/test_hf_fixtures.cpp, which holds
// for any float32 summation order, cuBLASLt's included): the GPU's float32 logits are within
// 5e-4 x max(1, |logit|) of transformers', and every continuation token leads the runner-up by
// at least 0.02 in the reference, so no greedy choice can flip; the fixtures also route
// decisively (at every layer and position the last chosen expert's probability leads the next
// by at least 1e-3, about a thousand times the error these logits allow), so every layout
// routes every token as transformers does, and the host engine's statistics are the GPU's.
//
// The fixtures are found at TPKIT_TEST_DATA (the environment, then the path compiled in), or
// at tests/data/hf below the working directory (scripts/gpu-check.sh runs from the repository
// root). Skipped (exit 77) without a GPU.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_test_support.hpp"
#include "tpkit/engine/cuda_engine.cuh"
#include "tpkit/engine/engine.hpp"
#include "tpkit/io/json.hpp"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;

namespace {

constexpr int kPrompts = 2;  // per fixture, as the script writes them

std::string data_dir() {
  const char* const candidates[] = {std::getenv("TPKIT_TEST_DATA"), TPKIT_TEST_DATA, "tests/data/hf"};
  for (const char* dir : candidates)
    if (dir && std::ifstream(std::string(dir) + "/manifest.json")) return dir;
  throw Error("the transformers fixtures (tests/data/hf) are not found: set TPKIT_TEST_DATA");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The script's reference.safetensors, its I32 tensors only (the prompts and greedy tokens),
// read from the format's specification: an 8-byte header length, a JSON header, the data.
std::map<std::string, std::vector<std::int32_t>> read_token_ids(const std::string& path) {
  const std::string bytes = read_file(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const Json header = Json::parse(std::string_view(bytes).substr(8, header_len), path);
  const char* data = bytes.data() + 8 + header_len;
  std::map<std::string, std::vector<std::int32_t>> out;
  for (const auto& [name, info] : header.object()) {
    if (name == "__metadata__" || info.at("dtype").string() != "I32") continue;
    const std::int64_t begin = info.at("data_offsets").array()[0].integer();
    const std::int64_t end = info.at("data_offsets").array()[1].integer();
    std::vector<std::int32_t>& v = out[name];
    v.resize(std::size_t(end - begin) / 4);
    std::memcpy(v.data(), data + begin, v.size() * 4);
  }
  return out;
}

struct Run {
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<ExpertLoad> load;
};

template <class Eng>
Run generate(Eng& engine, const std::vector<std::vector<std::int32_t>>& prompts, int max_tokens) {
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = max_tokens;
  greedy.ignore_eos = true;  // transformers generated with eos_token_id=None
  Run r;
  for (const GenerationResult& g : engine.generate(prompts, std::vector<SamplingParams>(prompts.size(), greedy)))
    r.tokens.push_back(g.token_ids);
  r.load = engine.last_stats().expert_load;
  return r;
}

bool same_load(const std::vector<ExpertLoad>& a, const std::vector<ExpertLoad>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].layer != b[i].layer || a[i].tokens != b[i].tokens) return false;
  return true;
}

void fixture(const std::string& data, const std::string& name) {
  const std::string dir = data + "/" + name + "/f32";
  const auto reference = read_token_ids(data + "/" + name + "/reference.safetensors");
  std::vector<std::vector<std::int32_t>> prompts, want;
  for (int k = 0; k < kPrompts; ++k) {
    prompts.push_back(reference.at("prompt." + std::to_string(k)));
    want.push_back(reference.at("f32.tokens." + std::to_string(k)));
  }
  const int max_tokens = int(want[0].size());
  for (MoELayout layout : {MoELayout::tensor_parallel, MoELayout::expert_parallel, MoELayout::expert_dispatch})
    for (int tp : {1, 2}) {
      const std::string what = name + " f32, " + moe_layout_name(layout) + " at " + std::to_string(tp) + " ranks";
      EngineOptions o;
      o.tp_size = tp;
      o.moe_layout = layout;
      o.num_kv_blocks = 8;  // 2 sequences of 7 or 13 + 32 positions in 16-slot blocks need 6
      GpuOptions gpu;
      gpu.gpu_memory_utilization = 0.5;
      Run got, host;
      try {
        CudaEngine engine(dir, o, gpu);
        got = generate(engine, prompts, max_tokens);
        Engine reference_engine(dir, o);
        host = generate(reference_engine, prompts, max_tokens);
      } catch (const std::exception& e) {
        expect(false, what + ": " + e.what());
        continue;
      }
      expect(got.tokens == want, what + ": greedy tokens differ from transformers'");
      expect(!got.load.empty() && same_load(got.load, host.load),
             what + ": expert statistics differ from the host engine's");
    }
}

}  // namespace

int main() {
  if (!have_gpu()) return 77;
  try {
    const std::string data = data_dir();
    for (const char* name : {"qwen3_moe", "qwen3_moe_sparse_step", "qwen2_moe", "mixtral"}) fixture(data, name);
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    ++failures;
  }
  std::printf("CUDA MoE engine: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
