// The llama2.c tokenizer against an encoder written here from the format's definition (sorted
// vocabulary, binary search, highest-score merge), and decode(encode(text)) == text.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "catch.hpp"
#include "reference/reference.hpp"
#include "tpkit/tokenizer/llama2c_tokenizer.hpp"

namespace {
const std::string kTokenizer = std::string(TPKIT_TEST_MODELS) + "/stories260K/tok512.bin";

// Independent reading of tokenizer.bin and the encoding rules.
struct ReferenceTokenizer {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<std::pair<std::string, int>> sorted;

  ReferenceTokenizer() {
    std::ifstream in(kTokenizer, std::ios::binary);
    std::int32_t max_len;
    in.read(reinterpret_cast<char*>(&max_len), 4);
    float score;
    std::int32_t len;
    while (in.read(reinterpret_cast<char*>(&score), 4) && in.read(reinterpret_cast<char*>(&len), 4)) {
      std::string s(std::size_t(len), '\0');
      in.read(s.data(), len);
      pieces.push_back(s);
      scores.push_back(score);
    }
    for (int i = 0; i < int(pieces.size()); ++i) sorted.emplace_back(pieces[std::size_t(i)], i);
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  int lookup(const std::string& s) const {
    const auto it = std::lower_bound(sorted.begin(), sorted.end(), s,
                                     [](const auto& e, const std::string& k) { return e.first < k; });
    return it != sorted.end() && it->first == s ? it->second : -1;
  }
  std::vector<std::int32_t> encode(const std::string& text) const {
    std::vector<std::int32_t> ids = {1};
    if (!text.empty()) ids.push_back(lookup(" "));
    for (std::size_t i = 0; i < text.size();) {
      std::size_t n = 1;
      while (i + n < text.size() && n < 4 && (static_cast<unsigned char>(text[i + n]) >> 6) == 2) ++n;
      const int id = lookup(text.substr(i, n));
      if (id >= 0)
        ids.push_back(id);
      else
        for (std::size_t k = 0; k < n; ++k) ids.push_back(3 + static_cast<unsigned char>(text[i + k]));
      i += n;
    }
    for (;;) {
      int best = -1, at = -1;
      float best_score = -1e30f;
      for (std::size_t k = 1; k + 1 < ids.size(); ++k) {
        const int id = lookup(pieces[std::size_t(ids[k])] + pieces[std::size_t(ids[k + 1])]);
        if (id >= 0 && scores[std::size_t(id)] > best_score)
          best_score = scores[std::size_t(id)], best = id, at = int(k);
      }
      if (best < 0) return ids;
      ids[std::size_t(at)] = best;
      ids.erase(ids.begin() + at + 1);
    }
  }
};
}  // namespace

TEST_CASE("encoding matches the format's definition and decoding inverts it", "[tokenizer]") {
  const tpkit::Llama2cTokenizer tok(kTokenizer);
  const ReferenceTokenizer reference;
  REQUIRE(tok.vocab_size() == 512);
  std::vector<std::string> texts = {"Once upon a time",
                                    "Lily and Tom went to the park.",
                                    "\"Hello!\" she said.\nThe end",
                                    "naïve café",
                                    "日本語 and emoji 🙂",
                                    "  two  spaces",
                                    "x",
                                    "1234567890 + 42 = ?"};
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?'\"\n0123456789";
  const std::vector<std::string> multibyte = {"é", "ñ", "ü", "中", "字", "🙂", "€"};
  ref::Rng rng(9);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const int n = 1 + int(rng.next() % 40);
    for (int k = 0; k < n; ++k)
      s += rng.next() % 10 == 0 ? multibyte[rng.next() % multibyte.size()]
                                : std::string(1, alphabet[rng.next() % alphabet.size()]);
    texts.push_back(s);
  }
  for (const auto& text : texts) {
    INFO("text: " << text);
    const auto ids = tok.encode(text, true, false);
    REQUIRE(ids == reference.encode(text));
    REQUIRE(tok.decode(std::vector<std::int32_t>(ids.begin() + 1, ids.end())) == text);
  }
}

TEST_CASE("byte fallback, special tokens and bad ids", "[tokenizer]") {
  const tpkit::Llama2cTokenizer tok(kTokenizer);
  // No piece holds these code points: their UTF-8 bytes become <0xXX> tokens (id = byte + 3).
  const auto ids = tok.encode("中", false, false);
  REQUIRE(ids.size() >= 2);
  REQUIRE(tok.decode_bytes(ids, 0) == " 中");
  REQUIRE(tok.decode(ids) == "中");  // the leading space of the first piece is dropped
  REQUIRE(tok.encode("", true, true) == std::vector<std::int32_t>{1, 2});
  REQUIRE(tok.decode(2, 0x41 + 3) == "A");
  REQUIRE(tok.decode(1, tok.encode("Once", false, false)[0]).front() != ' ');  // space after BOS dropped
  REQUIRE_THROWS_AS(tok.decode(1, 512), tpkit::InvalidArgument);
}
