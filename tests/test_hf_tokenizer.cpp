// Hugging Face tokenizer.json against Hugging Face tokenizers 0.22.1: the public goldens of the
// real Qwen3, Mistral and cl100k tokenizers in ../shared/models/tokenizers, the fixtures
// tools/make_tokenizer_fixtures.py wrote (thousands of hard strings per tokenizer, random id
// sequences to decode, small trained tokenizers covering every supported component, regex
// splits, NFC), the streaming decoder, and bad input.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "catch.hpp"
#include "data_files.hpp"
#include "reference/reference.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/tokenizer/hf_tokenizer.hpp"

namespace {

using test_data::read_file;
using test_data::read_jsonl;

namespace fs = std::filesystem;
using tpkit::HfTokenizer;
using tpkit::Json;

const std::string kData = TPKIT_TEST_DATA;  // tests/data/tokenizers
const std::string kShared = TPKIT_TEST_MODELS "/tokenizers";

std::vector<std::int32_t> ids_of(const Json& j) {
  std::vector<std::int32_t> ids;
  for (const Json& v : j.array()) ids.push_back(std::int32_t(v.integer()));
  return ids;
}

// Real tokenizers, loaded once (qwen3's file is 11 MB).
const HfTokenizer& real(const std::string& name) {
  static std::map<std::string, std::unique_ptr<HfTokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<HfTokenizer>(kShared + "/" + name + "/tokenizer.json");
  return *slot;
}

bool have_shared() { return fs::exists(kShared + "/qwen3/tokenizer.json"); }

// Decodes `ids` as a stream: every piece is complete UTF-8 and the pieces make `want`.
void check_stream(const tpkit::Tokenizer& t, const std::vector<std::int32_t>& ids, bool skip, const std::string& want) {
  const auto stream = t.decode_stream(skip);
  std::string text;
  for (std::int32_t id : ids) {
    const std::string piece = stream->push(id);
    REQUIRE(tpkit::unicode::is_valid_utf8(piece));
    text += piece;
    REQUIRE(want.compare(0, text.size(), text) == 0);  // nothing emitted is ever taken back
  }
  text += stream->finish();
  REQUIRE(text == want);
}

void check_golden(const tpkit::Tokenizer& t, const Json& g) {
  const std::string& text = g.at("text").string();
  INFO("text: " << text);
  tpkit::EncodeOptions options;
  options.add_special_tokens = g.at("add_special_tokens").boolean();
  options.parse_special = true;  // tokenizers' default
  const std::vector<std::int32_t> want = ids_of(g.at("ids"));
  CHECK(t.encode(text, options) == want);
  if (const Json* tokens = g.find("tokens"))
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(t.token(want[i]) == tokens->array()[i].string());
  check_stream(t, want, false, g.at("decoded").string());
  check_stream(t, want, true, g.at("decoded_skip_special").string());
}

void check_decode(const tpkit::Tokenizer& t, const Json& d) {
  const std::vector<std::int32_t> ids = ids_of(d.at("ids"));
  check_stream(t, ids, false, d.at("decoded").string());
  check_stream(t, ids, true, d.at("decoded_skip_special").string());
}

}  // namespace

TEST_CASE("the public goldens of the real tokenizers", "[tokenizer][hf]") {
  if (!have_shared()) {
    WARN("no ../shared/models/tokenizers: skipped");
    return;
  }
  std::size_t n = 0;
  for (const Json& g : read_jsonl(kShared + "/golden_public.jsonl")) {
    INFO(g.at("id").string());
    check_golden(real(g.at("tokenizer").string()), g);
    ++n;
  }
  REQUIRE(n == 210);
}

TEST_CASE("generated goldens of the real tokenizers", "[tokenizer][hf]") {
  if (!have_shared()) {
    WARN("no ../shared/models/tokenizers: skipped");
    return;
  }
  const std::string name = GENERATE(as<std::string>{}, "qwen3", "mistral-v1", "mistral-v1-metaspace", "cl100k");
  INFO(name);
  const auto& t = real(name);
  const auto golden = read_jsonl(kData + "/golden_" + name + ".jsonl");
  REQUIRE(golden.size() == 1500);
  for (const Json& g : golden) check_golden(t, g);
  for (const Json& d : read_jsonl(kData + "/decode_" + name + ".jsonl")) check_decode(t, d);
}

TEST_CASE("small tokenizers covering every supported component", "[tokenizer][hf]") {
  const std::string name =
      GENERATE(as<std::string>{}, "bytelevel-prefix-template", "metaspace-always-split-unk",
               "metaspace-never-bytefallback", "split-behaviours", "prefix-suffix-ignore-merges", "no-decoder-unk");
  INFO(name);
  const std::string dir = kData + "/synthetic/" + name;
  const HfTokenizer t(dir + "/tokenizer.json");
  for (const Json& g : read_jsonl(dir + "/golden.jsonl")) check_golden(t, g);
  for (const Json& d : read_jsonl(dir + "/decode.jsonl")) check_decode(t, d);
}

TEST_CASE("one tokenizer serves many threads at once", "[tokenizer][hf]") {
  const HfTokenizer t(kData + "/synthetic/bytelevel-prefix-template/tokenizer.json");
  const auto golden = read_jsonl(kData + "/synthetic/bytelevel-prefix-template/golden.jsonl");
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (std::size_t i = std::size_t(k); i < golden.size() * 3; i += 4) {  // each word's first tokenization races
        const Json& g = golden[i % golden.size()];
        const auto ids = t.encode(g.at("text").string(), {g.at("add_special_tokens").boolean(), true});
        if (ids != ids_of(g.at("ids")) || t.decode(ids) != g.at("decoded").string()) ++wrong;
      }
    });
  for (auto& th : threads) th.join();
  REQUIRE(wrong == 0);
}

TEST_CASE("regex splits as tokenizers' Oniguruma makes them", "[tokenizer][regex]") {
  std::map<std::string, std::unique_ptr<tpkit::hf::Split>> splits;
  std::size_t checked = 0;
  for (const Json& r : read_jsonl(kData + "/regex.jsonl")) {
    const std::string& pattern = r.at("pattern").string();
    INFO("pattern /" << pattern << "/ text: " << r.at("text").string());
    if (pattern == "[[:alpha:]]+") {  // POSIX brackets are refused, by name
      REQUIRE_THROWS_WITH(tpkit::Regex(pattern), Catch::Contains("nested character classes"));
      continue;
    }
    auto& split = splits[pattern];
    if (!split)
      split = std::make_unique<tpkit::hf::Split>(tpkit::hf::Pattern::regex(pattern), tpkit::hf::SplitBehavior::isolated,
                                                 false);
    tpkit::hf::Pieces pieces{{r.at("text").string(), true}};
    split->pre_tokenize(pieces);
    std::vector<std::string> got, want;
    for (const auto& p : pieces) got.push_back(p.text);
    for (const Json& p : r.at("pieces").array()) want.push_back(p.string());
    CHECK(got == want);
    ++checked;
  }
  REQUIRE(checked > 1000);
}

TEST_CASE("NFC as tokenizers' normaliser gives it", "[tokenizer][unicode]") {
  std::size_t changed = 0;
  for (const Json& r : read_jsonl(kData + "/nfc.jsonl")) {
    const std::string& text = r.at("text").string();
    INFO("text: " << text);
    CHECK(tpkit::unicode::nfc(text) == r.at("nfc").string());
    changed += text != r.at("nfc").string();
  }
  REQUIRE(changed > 500);  // the fixture exercises composition and reordering, not just identity
}

TEST_CASE("UTF-8: maximal invalid subparts become one U+FFFD each", "[tokenizer][unicode]") {
  using tpkit::unicode::to_valid_utf8;
  const std::string r = "\xEF\xBF\xBD";
  CHECK(to_valid_utf8("\xE4\xBD") == r);              // a truncated sequence: one
  CHECK(to_valid_utf8("\xED\xA0\x80") == r + r + r);  // a surrogate: each byte
  CHECK(to_valid_utf8("\xC0\xAF") == r + r);
  CHECK(to_valid_utf8("\xF4\x90\x80\x80") == r + r + r + r);  // above U+10FFFF
  CHECK(to_valid_utf8("a\xF0\x9F\x98z") == "a" + r + "z");
  CHECK(to_valid_utf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
  tpkit::unicode::Utf8Stream s;
  CHECK(s.push("a\xF0\x9F") == "a");
  CHECK(s.push("\x98") == "");
  CHECK(s.push("\x80!") == "\xF0\x9F\x98\x80!");
  CHECK(s.push("\xE4\xBD") == "");
  CHECK(s.push("x") == r + "x");
  CHECK(s.push("\xE4") == "");
  CHECK(s.finish() == r);
}

TEST_CASE("bad text, bad ids and bad files give clear errors", "[tokenizer][hf]") {
  const std::string dir = kData + "/synthetic/bytelevel-prefix-template";
  const HfTokenizer t(dir + "/tokenizer.json");
  SECTION("random bytes encode to ids that decode to valid UTF-8") {
    ref::Rng rng(5);
    for (int i = 0; i < 300; ++i) {
      std::string bytes(rng.next() % 64, '\0');
      for (char& c : bytes) c = char(rng.next() & 0xFF);
      const auto ids = t.encode(bytes, {true, true});
      const std::string text = t.decode(ids);
      REQUIRE(tpkit::unicode::is_valid_utf8(text));
      // Invalid bytes read as U+FFFD: the same ids as the repaired text.
      REQUIRE(ids == t.encode(tpkit::unicode::to_valid_utf8(bytes), {true, true}));
    }
  }
  SECTION("ids outside the tokenizer") {
    REQUIRE_THROWS_WITH(t.decode({1, std::int32_t(t.vocab_size())}), Catch::Contains("outside the tokenizer's ids"));
    REQUIRE_THROWS_AS(t.decode({-1}), tpkit::InvalidArgument);
  }
  SECTION("malformed files") {
    // JSON strings are valid UTF-8, whole characters in \u escapes included.
    REQUIRE_THROWS_WITH(Json::parse("\"\\udc00\""), Catch::Contains("unpaired surrogate"));
    REQUIRE_THROWS_WITH(Json::parse("\"a\xff\""), Catch::Contains("invalid UTF-8"));
    REQUIRE_THROWS_WITH(Json::parse("\"\xed\xa0\x80\""), Catch::Contains("invalid UTF-8"));
    REQUIRE(Json::parse("\"\\ud83d\\ude00\xc3\xa9\"").string() == "\xf0\x9f\x98\x80\xc3\xa9");
    const std::string good = read_file(dir + "/tokenizer.json");
    // Every truncation is a FormatError, never a crash.
    for (std::size_t cut = 0; cut < good.size(); cut += 97)
      REQUIRE_THROWS_AS(HfTokenizer::from_json(good.substr(0, cut), "cut"), tpkit::FormatError);
    const auto with = [&](const std::string& from, const std::string& to) {
      std::string s = good;
      const auto at = s.find(from);
      REQUIRE(at != std::string::npos);
      return s.replace(at, from.size(), to);
    };
    REQUIRE_THROWS_WITH(HfTokenizer::from_json(with("\"type\":\"BPE\"", "\"type\":\"Unigram\""), "f"),
                        Catch::Contains("model type \"Unigram\" is not supported"));
    REQUIRE_THROWS_WITH(
        HfTokenizer::from_json(
            with("\"pre_tokenizer\":{\"type\":\"ByteLevel\"", "\"pre_tokenizer\":{\"type\":\"Whitespace\""), "f"),
        Catch::Contains("pre-tokenizer type \"Whitespace\" is not supported"));
    REQUIRE_THROWS_WITH(
        HfTokenizer::from_json(with("\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"WordPiece\""), "f"),
        Catch::Contains("decoder type \"WordPiece\" is not supported"));
    REQUIRE_THROWS_WITH(HfTokenizer::from_json(with("\"truncation\":null", "\"truncation\":{\"max_length\":5}"), "f"),
                        Catch::Contains("truncation"));
    REQUIRE_THROWS_WITH(HfTokenizer::from_json(with("\"merges\":[[", "\"merges\":[[\"nope\",\"x\"],["), "f"),
                        Catch::Contains("\"nope\", which is not in the vocabulary"));
    // tokenizers would renumber this added token; the file is refused rather than read two ways.
    REQUIRE_THROWS_WITH(
        HfTokenizer::from_json(with("\"id\":700,\"content\":\"<tool>\"", "\"id\":750,\"content\":\"<tool>\""), "f"),
        Catch::Contains("has id 750, but Hugging Face tokenizers gives it id 700"));
  }
}
