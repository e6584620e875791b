// Corrupt checkpoints and tokenizers end in a FormatError (or InvalidArgument) that says what
// is wrong, never a crash: named bad-input cases, then truncated and bit-flipped copies of the
// real files fed to every loader.
#include <unistd.h>
#include <filesystem>
#include <fstream>

#include "catch.hpp"
#include "reference/checkpoint_writer.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;
namespace fs = std::filesystem;

namespace {
const std::string kModels = TPKIT_TEST_MODELS;

std::string scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("tpkit-loaders-" + std::to_string(::getpid())) / name;
  fs::create_directories(p.parent_path());
  return p.string();
}
std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}
// A copy of a Hugging Face directory whose files can be damaged.
std::string copy_hf(const std::string& name, const std::string& config, const std::string& weights) {
  const std::string dir = scratch(name);
  fs::create_directories(dir);
  write_all(dir + "/config.json", config);
  write_all(dir + "/model.safetensors", weights);
  return dir;
}
// Loads a checkpoint the whole way: shard it at TP 2 and run one token.
void load_and_run(const std::string& path) {
  const Checkpoint ckpt = Checkpoint::open(path);
  run_mock_ranks(2, [&](Communicator<MockBackend>& comm) {
    TransformerModel<float> model(ckpt, {comm.rank(), 2}, 1);
    const std::vector<std::int32_t> blocks = {0}, token = {1};
    std::vector<float> logits(static_cast<std::size_t>(ckpt.config().vocab_size));
    model.forward(comm, {StepSequence{token.data(), 1, 0, &blocks, true}},
                  TensorView<float>(logits.data(), {1, ckpt.config().vocab_size}));
  });
}
// The outcome of loading damaged input: ok, or a clear (typed, non-empty) error.
enum class Outcome { ok, clear_error };
template <class F>
Outcome outcome(F&& f) {
  try {
    f();
    return Outcome::ok;
  } catch (const FormatError& e) {
    if (std::string(e.what()).empty()) throw;
    return Outcome::clear_error;
  } catch (const InvalidArgument& e) {
    if (std::string(e.what()).empty()) throw;
    return Outcome::clear_error;
  }
}
}  // namespace

TEST_CASE("named bad inputs give errors that say what is wrong", "[loaders][errors]") {
  const std::string config = read_all(kModels + "/stories260K_hf/config.json");
  const std::string weights = read_all(kModels + "/stories260K_hf/model.safetensors");
  const std::string bin = read_all(kModels + "/stories260K/stories260K.bin");

  SECTION("truncated files") {
    const std::string dir = copy_hf("truncated", config, weights.substr(0, weights.size() - 100));
    REQUIRE_THROWS_WITH(Checkpoint::open(dir), Catch::Contains("beyond the end of the file (truncated?)"));
    write_all(scratch("short.bin"), bin.substr(0, bin.size() - 4));
    REQUIRE_THROWS_WITH(Checkpoint::open(scratch("short.bin")), Catch::Contains("(truncated)"));
    write_all(scratch("tiny.bin"), bin.substr(0, 10));
    REQUIRE_THROWS_WITH(Checkpoint::open(scratch("tiny.bin")), Catch::Contains("truncated llama2.c header"));
    const std::string tok = read_all(kModels + "/stories260K/tok512.bin");
    write_all(scratch("tok.bin"), tok.substr(0, tok.size() / 2));
    REQUIRE_THROWS_WITH(Llama2cTokenizer(scratch("tok.bin")), Catch::Contains("truncated tokenizer file"));
  }
  SECTION("bad headers") {
    std::string broken = weights;
    broken[0] = char(0xff), broken[5] = char(0x7f);  // header length far beyond the file
    REQUIRE_THROWS_WITH(Checkpoint::open(copy_hf("len", config, broken)), Catch::Contains("header length"));
    broken = weights;
    broken[8] = '[';
    REQUIRE_THROWS_WITH(Checkpoint::open(copy_hf("json", config, broken)),
                        Catch::Contains("invalid JSON") || Catch::Contains("not a JSON object"));
    std::string bad_bin = bin;
    bad_bin[0] = 7;  // dim 7 with 8 heads
    write_all(scratch("dim.bin"), bad_bin);
    REQUIRE_THROWS_AS(Checkpoint::open(scratch("dim.bin")), FormatError);
  }
  SECTION("missing tensors, wrong shapes and dtypes") {
    ref::WriterOptions o;
    const std::string dir = scratch("variant");
    ref::write_checkpoint(dir, o);
    std::string st = read_all(dir + "/model.safetensors");
    const std::string good = st;
    // Rename a tensor: the model then misses it.
    st.replace(st.find("model.norm.weight"), 17, "model.norX.weight");
    write_all(dir + "/model.safetensors", st);
    REQUIRE_THROWS_WITH(load_and_run(dir), Catch::Contains("tensor \"model.norm.weight\" is missing"));
    // Declare a shape the config does not imply (the byte count still matches).
    st = good;
    const std::string shape = "\"shape\": [48]", other = "\"shape\": [1,48]";
    const auto at = st.find("\"model.norm.weight\"");
    st.replace(st.find(shape, at), shape.size(), other);
    const std::uint64_t n = *reinterpret_cast<const std::uint64_t*>(good.data()) + 2;
    std::memcpy(st.data(), &n, 8);
    write_all(dir + "/model.safetensors", st);
    REQUIRE_THROWS_WITH(load_and_run(dir), Catch::Contains("has shape [1, 48]; the config implies [48]"));
    // An integer dtype where weights are expected.
    st = good;
    st.replace(st.find("F32", st.find("\"model.norm.weight\"")), 3, "I32");
    write_all(dir + "/model.safetensors", st);
    REQUIRE_THROWS_WITH(load_and_run(dir), Catch::Contains("has dtype i32"));
  }
  SECTION("unknown architecture and impossible TP sizes") {
    std::string cfg = config;
    cfg.replace(cfg.find("\"llama\""), 7, "\"gpt2\"");
    cfg.replace(cfg.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel0");
    REQUIRE_THROWS_WITH(Checkpoint::open(copy_hf("arch", cfg, weights)),
                        Catch::Contains("unknown architecture \"gpt2\""));
    EngineOptions options;
    options.tp_size = 16;
    REQUIRE_THROWS_WITH(Engine(kModels + "/stories260K_hf", options),
                        Catch::Contains("tp_size (16) exceeds num_heads (8)"));
    REQUIRE_THROWS_WITH(Checkpoint::open(scratch("absent")), Catch::Contains("does not exist"));
  }
}

TEST_CASE("truncated and bit-flipped files never crash a loader", "[loaders][fuzz]") {
  const std::string config = read_all(kModels + "/stories260K_hf/config.json");
  const std::string weights = read_all(kModels + "/stories260K_hf/model.safetensors");
  const std::string bin = read_all(kModels + "/stories260K/stories260K.bin");
  const std::string tok = read_all(kModels + "/stories260K/tok512.bin");
  ref::Rng rng(2024);
  int errors = 0, loaded = 0;
  const auto count = [&](Outcome o) { (o == Outcome::ok ? loaded : errors) += 1; };
  const std::uint64_t header_end = 8 + *reinterpret_cast<const std::uint64_t*>(weights.data());
  for (int trial = 0; trial < 120; ++trial) {
    // Truncations anywhere, biased to the headers where the structure lives.
    const std::size_t cut_st = trial % 2 ? rng.next() % weights.size() : rng.next() % header_end;
    count(outcome([&] { load_and_run(copy_hf("fuzz", config, weights.substr(0, cut_st))); }));
    write_all(scratch("fuzz.bin"), bin.substr(0, trial % 2 ? rng.next() % bin.size() : rng.next() % 64));
    count(outcome([&] { load_and_run(scratch("fuzz.bin")); }));
    write_all(scratch("fuzz_tok.bin"), tok.substr(0, rng.next() % tok.size()));
    count(outcome([&] { Llama2cTokenizer(scratch("fuzz_tok.bin")).encode("Once upon a time"); }));
    count(outcome([&] { load_and_run(copy_hf("fuzz_cfg", config.substr(0, rng.next() % config.size()), weights)); }));
    // Bit flips: in the safetensors header, the llama2.c header, the tokenizer, config.json.
    std::string st = weights, b = bin, t = tok, c = config;
    for (int k = 0; k < 1 + trial % 4; ++k) {
      st[rng.next() % header_end] ^= char(1 << (rng.next() % 8));
      b[rng.next() % 28] ^= char(1 << (rng.next() % 8));
      t[rng.next() % t.size()] ^= char(1 << (rng.next() % 8));
      c[rng.next() % c.size()] ^= char(1 << (rng.next() % 8));
    }
    count(outcome([&] { load_and_run(copy_hf("fuzz_flip", config, st)); }));
    write_all(scratch("flip.bin"), b);
    count(outcome([&] { load_and_run(scratch("flip.bin")); }));
    write_all(scratch("flip_tok.bin"), t);
    count(outcome([&] {
      Llama2cTokenizer tk(scratch("flip_tok.bin"));
      tk.decode(tk.encode("Lily and Tom"));
    }));
    count(outcome([&] { load_and_run(copy_hf("fuzz_cfg_flip", c, weights)); }));
  }
  INFO(loaded << " damaged inputs still loaded, " << errors << " were refused with a clear error");
  REQUIRE(errors > 500);  // most damage is detected
  fs::remove_all(fs::path(scratch("x")).parent_path());
}

TEST_CASE("a checkpoint from tensors in memory gives the file's model, and refuses bad input", "[loaders]") {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("tpkit_from_tensors_" + std::to_string(getpid()))).string();
  ref::WriterOptions o;
  o.model_type = "qwen2";  // biases too
  std::map<std::string, ref::Tensor> written;
  ref::write_checkpoint(dir, o, &written);
  const Checkpoint file = Checkpoint::open(dir);
  std::map<std::string, std::vector<float>> storage;
  std::map<std::string, RawTensorView> views;
  for (const auto& [name, t] : written) {
    std::vector<float>& v = storage[name];
    for (double x : t.values) v.push_back(float(x));
    Layout layout(t.shape.size() == 1 ? Layout({t.shape[0]}) : Layout({t.shape[0], t.shape[1]}));
    views[name] = RawTensorView(v.data(), DType::f32, layout, MemoryKind::host);
  }
  const Checkpoint memory = Checkpoint::from_tensors(file.config(), views);
  // Both models at TP 2 give bitwise the same logits for a 5-token prompt.
  const std::int64_t V = file.config().vocab_size;
  std::vector<std::vector<float>> logits(2, std::vector<float>(static_cast<std::size_t>(V)));
  run_mock_ranks(2, [&](Communicator<MockBackend>& comm) {
    for (int which = 0; which < 2; ++which) {
      TransformerModel<float> model(which == 0 ? file : memory, {comm.rank(), 2}, 1);
      std::vector<std::int32_t> blocks = {0}, tokens = {1, 5, 9, 33, 70};
      std::vector<float> out(static_cast<std::size_t>(V));
      model.forward(comm, {{tokens.data(), 5, 0, &blocks, true}}, TensorView<float>(out.data(), {1, V}));
      if (comm.rank() == 0) logits[std::size_t(which)] = out;
    }
  });
  REQUIRE(logits[0] == logits[1]);
  REQUIRE(std::isfinite(logits[0][0]));

  // A missing tensor is named when a model asks for it; a device view and a bad config are refused.
  std::map<std::string, RawTensorView> partial = views;
  partial.erase("model.layers.1.mlp.up_proj.weight");
  const Checkpoint incomplete = Checkpoint::from_tensors(file.config(), partial, "my loader");
  REQUIRE_THROWS_WITH((TransformerModel<float>(incomplete, {0, 1}, 1)),
                      Catch::Contains("my loader: tensor \"model.layers.1.mlp.up_proj.weight\" is missing"));
  std::map<std::string, RawTensorView> on_device = views;
  on_device["model.norm.weight"] =
      RawTensorView(storage["model.norm.weight"].data(), DType::f32, Layout({o.dim}), MemoryKind::device);
  REQUIRE_THROWS_WITH(Checkpoint::from_tensors(file.config(), on_device),
                      Catch::Contains("\"model.norm.weight\" must be in host memory"));
  ModelConfig bad = file.config();
  bad.num_kv_heads = 4;  // 6 heads are not a multiple of 4
  REQUIRE_THROWS_AS(Checkpoint::from_tensors(bad, views), FormatError);
  std::filesystem::remove_all(dir);
}
