// Crafted inputs, one per class of defect an independent fuzzing run found in the safetensors,
// config.json, JSON and llama2.c tokenizer paths: each must end in a clear error (or a correct
// answer), never a crash, an overflow, a huge allocation or a silently wrong model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/model/config.hpp"
#include "tpkit/tokenizer/llama2c_tokenizer.hpp"

using namespace tpkit;

namespace {
// A safetensors file: the 8-byte little-endian header length, the header, then `data_bytes`
// zero bytes of data.
std::vector<unsigned char> safetensors(const std::string& header, std::size_t data_bytes) {
  std::vector<unsigned char> out(8);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<unsigned char>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}
std::string parse_error(const std::vector<unsigned char>& file) {
  try {
    Checkpoint::parse_safetensors(file.data(), file.size(), "crafted.safetensors");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// A small valid Llama config.json with one key replaced (raw JSON text).
std::string config_with(const std::string& key, const std::string& value) {
  std::string c =
      R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
          "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
          "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_theta": 10000.0})";
  const std::string quoted = "\"" + key + "\": ";
  const std::size_t at = c.find(quoted);
  if (at == std::string::npos) return c.substr(0, c.size() - 1) + ", " + quoted + value + "}";
  const std::size_t end = c.find_first_of(",}", at);
  return c.substr(0, at + quoted.size()) + value + c.substr(end);
}
std::string config_error(const std::string& json) {
  try {
    config_from_hf(Json::parse(json, "config.json"));
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

// The llama2.c merge loop as it was (rescan every adjacent pair per merge), as the reference for
// the queue-based one.
std::vector<std::int32_t> quadratic_merge(const std::vector<std::string>& pieces, const std::vector<float>& scores,
                                          std::vector<std::int32_t> ids) {
  for (;;) {
    float best = -1e30f;
    int best_id = -1;
    std::size_t best_at = 0;
    for (std::size_t k = 1; k + 1 < ids.size(); ++k) {
      const std::string joined = pieces[std::size_t(ids[k])] + pieces[std::size_t(ids[k + 1])];
      for (std::size_t t = 0; t < pieces.size(); ++t)
        if (pieces[t] == joined) {
          if (scores[t] > best) best = scores[t], best_id = int(t), best_at = k;
          break;  // the first token with this text, as the tokenizer's lookup keeps
        }
    }
    if (best_id < 0) return ids;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + std::ptrdiff_t(best_at) + 1);
  }
}
}  // namespace

TEST_CASE("safetensors: a shape whose byte count wraps 2^64 is refused, not overrun", "[hardening]") {
  // [2^32, 2^30] F32 is 2^64 bytes: 0 after wrapping, which the offsets [0, 0] would match.
  const auto file =
      safetensors(R"({"w": {"dtype": "F32", "shape": [4294967296, 1073741824], "data_offsets": [0, 0]}})", 16);
  REQUIRE_THAT(parse_error(file), Catch::Contains("tensor \"w\"") && Catch::Contains("more bytes than any file"));
  const auto big =
      safetensors(R"({"w": {"dtype": "F64", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 8]}})", 16);
  REQUIRE_THAT(parse_error(big), Catch::Contains("more bytes than any file"));
}

TEST_CASE("safetensors: overlapping tensors and duplicates are refused", "[hardening]") {
  const auto overlap = safetensors(
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
      16);
  REQUIRE_THAT(parse_error(overlap), Catch::Contains("\"a\" and \"b\" overlap"));
  const auto disjoint = safetensors(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
      16);
  REQUIRE(parse_error(disjoint).empty());
  const auto twice = safetensors(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
      16);
  REQUIRE_THAT(parse_error(twice), Catch::Contains("appears twice"));
}

TEST_CASE("JSON: integers are range-checked before conversion, numbers ignore the locale", "[hardening]") {
  for (const char* text : {"9223372036854775808", "1e30", "-1e300", "18446744073709551616"})
    REQUIRE_THROWS_AS(Json::parse(text).integer(), FormatError);
  REQUIRE_THROWS_AS(Json::parse("2.5").integer(), FormatError);
  REQUIRE(Json::parse("4294967304").integer() == 4294967304);
  REQUIRE_THROWS_WITH(Json::parse("1e400"), Catch::Contains("out of range"));
  REQUIRE(Json::parse("0.02").number() == 0.02);
  REQUIRE(Json::parse("-1.5e-3").number() == -1.5e-3);
  REQUIRE_THROWS_AS(Json::parse("0x10"), FormatError);
}

TEST_CASE("config.json: values past tpkit's limits are refused before anything is sized", "[hardening]") {
  REQUIRE(config_error(config_with("hidden_size", "64")).empty());
  // 2^40 layers or head_dim would overflow size products or loop for hours.
  REQUIRE_THAT(config_error(config_with("num_hidden_layers", "1099511627776")),
               Catch::Contains("num_hidden_layers") && Catch::Contains("expected an integer in [0, 4096]"));
  REQUIRE_THAT(config_error(config_with("head_dim", "1099511627776")), Catch::Contains("head_dim"));
  // 2^32 + 8 heads used to narrow to 8 and run.
  REQUIRE_THAT(config_error(config_with("num_attention_heads", "4294967304")), Catch::Contains("num_attention_heads"));
  REQUIRE_THAT(config_error(config_with("vocab_size", "9223372036854775808")), Catch::Contains("vocab_size"));
  // Within each limit but not a plausible model together: 4096 heads of 4096.
  std::string wide = config_with("head_dim", "4096");
  const std::string eight_heads = "\"num_attention_heads\": 8";
  wide.replace(wide.find(eight_heads), eight_heads.size(), "\"num_attention_heads\": 4096");
  REQUIRE_THAT(config_error(wide), Catch::Contains("num_heads x head_dim"));
  REQUIRE_THAT(config_error(config_with("eos_token_id", "512")), Catch::Contains("eos_token_id 512"));
}

TEST_CASE("config.json: non-finite RoPE settings and a llama3 factor of 0 are refused", "[hardening]") {
  REQUIRE_THAT(config_error(config_with("rope_theta", "1e400")), Catch::Contains("out of range"));
  REQUIRE_THAT(config_error(config_with("rope_theta", "0")), Catch::Contains("rope_theta"));
  REQUIRE_THAT(config_error(config_with("rms_norm_eps", "-1")), Catch::Contains("rms_norm_eps"));
  const std::string llama3 =
      R"({"rope_type": "llama3", "factor": FACTOR, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192})";
  const auto scaling = [&](const char* factor) {
    std::string s = llama3;
    s.replace(s.find("FACTOR"), 6, factor);
    return config_error(config_with("rope_scaling", s));
  };
  REQUIRE(scaling("8.0").empty());
  REQUIRE_THAT(scaling("0"), Catch::Contains("rope_scaling needs factor >= 1"));
  REQUIRE_THAT(scaling("0.5"), Catch::Contains("factor"));
}

TEST_CASE("sizes derived from options cannot wrap", "[hardening]") {
  REQUIRE_THROWS_AS(HostBuffer<float>(std::numeric_limits<std::size_t>::max() / 2), InvalidArgument);
  REQUIRE_THROWS_AS(checked_mul<std::int64_t>(std::int64_t(1) << 40, std::int64_t(1) << 40, "x"), InvalidArgument);
  REQUIRE_THROWS_AS(Layout({std::int64_t(1) << 40, std::int64_t(1) << 40}), InvalidArgument);
  ModelConfig c;
  c.hidden_size = 64, c.intermediate_size = 172, c.num_layers = 5, c.num_heads = 8, c.num_kv_heads = 4;
  c.head_dim = 8, c.vocab_size = 512, c.max_position = 512;
  EngineOptions o;
  o.block_size = std::int64_t(1) << 40;
  REQUIRE_THROWS_WITH(resolve_options(c, o), Catch::Contains("block_size"));
  o.block_size = 16, o.max_num_seqs = std::int64_t(1) << 40;
  REQUIRE_THROWS_WITH(resolve_options(c, o), Catch::Contains("max_num_seqs"));
}

TEST_CASE("llama2.c tokenizer: the queue-based merges equal the rescanning ones, and are fast", "[hardening]") {
  // A vocabulary: specials, 256 byte tokens, single letters, and merged pieces with scores
  // chosen so that ties and competing overlaps occur.
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    pieces.push_back(hex), scores.push_back(0);
  }
  for (const char* p : {" ", "a", "b", "c", "d", "ab", "bc", "cd", "abc", "bcd", " a", " ab", "aa", "aaa", "dd", "abcd",
                        " abc", "ca", "cab"}) {
    pieces.push_back(p);
    scores.push_back(float(std::string(p).size() % 3) - float(pieces.size() % 4));  // many ties
  }
  std::string file(4, '\0');
  const std::int32_t max_len = 16;
  std::memcpy(file.data(), &max_len, 4);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const std::int32_t len = std::int32_t(pieces[i].size());
    file.append(reinterpret_cast<const char*>(&scores[i]), 4);
    file.append(reinterpret_cast<const char*>(&len), 4);
    file += pieces[i];
  }
  const auto tokenizer = Llama2cTokenizer::from_bytes(reinterpret_cast<const unsigned char*>(file.data()), file.size(),
                                                      "crafted tokenizer");
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int length = int(rng() % 40);
    for (int i = 0; i < length; ++i) text += "abcd  e"[rng() % 7];
    const std::vector<std::int32_t> got = tokenizer.encode(text, true, false);
    // The merges start from the unmerged symbols: BOS, " ", then each character's token.
    std::vector<std::int32_t> start = {1};
    if (!text.empty()) start.push_back(std::int32_t(259));  // " "
    for (char ch : text) {
      const auto it = std::find(pieces.begin(), pieces.end(), std::string(1, ch));
      start.push_back(it == pieces.end() ? std::int32_t(static_cast<unsigned char>(ch)) + 3
                                         : std::int32_t(it - pieces.begin()));
    }
    INFO("text \"" << text << "\"");
    REQUIRE(got == quadratic_merge(pieces, scores, start));
  }
  // 100k characters: a rescan per merge took seconds; this must be well under one.
  const std::string long_text(100000, 'a');
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tokenizer.encode(long_text, true, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(ids.size() > 30000);
  REQUIRE(seconds < 2.0);  // measured ~0.05 s; a quadratic loop needs minutes on this input
}
