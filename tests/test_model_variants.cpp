// Each architecture option on a small generated checkpoint against the float64 reference:
// Qwen2 QKV bias, Qwen3 per-head q/k norm (with head_dim != hidden / heads), Llama-3 RoPE
// scaling, tied and untied heads, F32/F16/BF16 tensors, a sharded safetensors index, and a TP
// size that splits heads unevenly (6 query heads, 2 KV heads at TP 4).
#include <unistd.h>
#include <algorithm>
#include <filesystem>

#include "catch.hpp"
#include "reference/checkpoint_writer.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;

namespace {
struct Variant {
  const char* name;
  ref::WriterOptions options;
};
std::vector<Variant> variants() {
  std::vector<Variant> v;
  ref::WriterOptions o;
  v.push_back({"llama untied f32", o});
  o = {};
  o.tied = true, o.dtype = "BF16", o.sharded = true;
  v.push_back({"llama tied bf16 sharded", o});
  o = {};
  o.model_type = "qwen2", o.dtype = "F16";
  v.push_back({"qwen2 qkv bias f16", o});
  o = {};
  o.model_type = "qwen3", o.head_dim = 16;
  v.push_back({"qwen3 qk norm, head_dim 16", o});
  o = {};
  o.llama3_scaling = true;
  v.push_back({"llama3 rope scaling", o});
  o = {};
  o.model_type = "mistral", o.tied = true, o.sliding_window = 5;
  v.push_back({"mistral tied, sliding window 5", o});
  return v;
}
std::string temp_dir(const std::string& name) {
  std::string clean;
  for (char ch : name) clean += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  return (std::filesystem::temp_directory_path() / ("tpkit-test-" + std::to_string(::getpid()) + "-" + clean)).string();
}
}  // namespace

TEST_CASE("architecture variants equal the float64 reference at TP 1, 2 and 4", "[engine][variants]") {
  for (const Variant& v : variants()) {
    const std::string dir = temp_dir(v.name);
    const ref::LlamaWeights weights = ref::write_checkpoint(dir, v.options);
    const std::vector<int> prompt = {1, 17, 42, 5, 88, 60};
    std::vector<std::vector<double>> ref_logits;
    const std::vector<int> expected = ref::greedy(weights, prompt, 16, &ref_logits);
    const Checkpoint ckpt = Checkpoint::open(dir);
    for (int tp : {1, 2, 4}) {
      INFO(v.name << " at tp " << tp);
      // Logits of every step, model driven directly (the bound is argued in test_engine_stories).
      const std::int64_t V = ckpt.config().vocab_size;
      std::vector<double> worst(static_cast<std::size_t>(tp), 0.0);
      run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
        TransformerModel<float> model(ckpt, {comm.rank(), tp}, 4);
        std::vector<std::int32_t> blocks = {0, 1, 2, 3};
        std::vector<std::int32_t> tokens(prompt.begin(), prompt.end());
        for (int t : expected) tokens.push_back(t);
        std::vector<float> logits(static_cast<std::size_t>(V));
        std::int64_t start = 0;
        for (std::size_t step = 0; step < expected.size(); ++step) {
          const std::int64_t end = std::int64_t(prompt.size() + step);
          model.forward(comm, {StepSequence{tokens.data() + start, end - start, start, &blocks, true}},
                        TensorView<float>(logits.data(), {1, V}));
          start = end;
          for (std::int64_t i = 0; i < V; ++i) {
            const double want = ref_logits[step][std::size_t(i)];
            worst[std::size_t(comm.rank())] =
                std::max(worst[std::size_t(comm.rank())],
                         std::fabs(logits[std::size_t(i)] - want) / (5e-4 * std::max(1.0, std::fabs(want))));
          }
        }
      });
      INFO("worst logit error / bound " << worst[0]);
      for (double w : worst) REQUIRE(w <= 1.0);
      // Greedy tokens through the engine.
      EngineOptions options;
      options.tp_size = tp;
      Engine engine(dir, options);
      SamplingParams greedy;
      greedy.temperature = 0;
      greedy.max_tokens = 16;
      greedy.ignore_eos = true;
      const auto r = engine.generate(std::vector<std::vector<std::int32_t>>{{prompt.begin(), prompt.end()}}, {greedy});
      REQUIRE(std::vector<int>(r[0].token_ids.begin(), r[0].token_ids.end()) == expected);
    }
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("config.json options are read as written", "[engine][variants]") {
  ref::WriterOptions o;
  o.model_type = "qwen3", o.head_dim = 16, o.llama3_scaling = true, o.tied = true;
  const std::string dir = temp_dir("config");
  ref::write_checkpoint(dir, o);
  const ModelConfig c = Checkpoint::open(dir).config();
  CHECK(c.architecture == Architecture::qwen3);
  CHECK(c.qk_norm);
  CHECK(c.head_dim == 16);
  CHECK(c.rope_scaling.llama3);
  CHECK(c.rope_scaling.original_max_position == 16);
  CHECK(c.tie_embeddings);
  CHECK(c.eos_token_ids == std::vector<int>{2, 3});
  CHECK(c.rope_style == RopeStyle::rotate_half);
  std::filesystem::remove_all(dir);
}

TEST_CASE("generation stops at any of the model's EOS tokens unless told to ignore them", "[engine][stops]") {
  ref::WriterOptions o;
  const std::string probe = temp_dir("eos-probe");
  const ref::LlamaWeights w = ref::write_checkpoint(probe, o);
  const std::vector<int> prompt = {1, 17, 42};
  const std::vector<int> expected = ref::greedy(w, prompt, 12);
  // Declare the reference's 6th greedy token an EOS token (second in the list): generation
  // must end just before it with finish_reason "stop", and run on when EOS is ignored.
  int first = 5;
  while (std::find(expected.begin(), expected.begin() + first, expected[std::size_t(first)]) !=
         expected.begin() + first)
    ++first;
  o.eos = "[" + std::to_string(expected[std::size_t(first)] == 0 ? 1 : 0) + ", " +
          std::to_string(expected[std::size_t(first)]) + "]";
  const std::string dir = temp_dir("eos");
  ref::write_checkpoint(dir, o);
  Engine engine(dir);
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 12;
  const std::vector<std::vector<std::int32_t>> prompts = {{prompt.begin(), prompt.end()}};
  const auto stopped = engine.generate(prompts, {p})[0];
  REQUIRE(stopped.finish_reason == "stop");
  REQUIRE(std::vector<int>(stopped.token_ids.begin(), stopped.token_ids.end()) ==
          std::vector<int>(expected.begin(), expected.begin() + first));
  p.ignore_eos = true;
  const auto ignored = engine.generate(prompts, {p})[0];
  REQUIRE(ignored.finish_reason == "length");
  REQUIRE(std::vector<int>(ignored.token_ids.begin(), ignored.token_ids.end()) == expected);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(probe);
}
