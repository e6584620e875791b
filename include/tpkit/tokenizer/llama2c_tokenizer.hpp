// tpkit/tokenizer/llama2c_tokenizer.hpp: the tokenizer.bin format of llama2.c.
//
// File: int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// Encoding: optional BOS, a dummy-prefix " " token for non-empty text, each UTF-8 code point
// as its token or, when absent, its bytes as byte tokens (<0xXX> = id byte + 3), then the pair
// whose concatenation is a token with the highest score is merged (leftmost on ties) until no
// pair merges. The merges run on a linked list of symbols with a priority queue of adjacent
// pairs (as llama.cpp's tokenizer does): O(n log n), not a rescan per merge, so a long prompt
// reaches the context-length check at once. Decoding: byte tokens become their byte; the
// leading space of a piece right after BOS (or at the start of a decode) is dropped; the bytes
// are read as UTF-8, each invalid subpart as U+FFFD. Bytes that are not valid UTF-8 in the text
// to encode become byte tokens, so encoding loses nothing. Ids 0-2 (<unk>, <s>, </s>) are special.
#pragma once

#include <cstdint>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/mapped_file.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"
#include "tpkit/tokenizer/utf8.hpp"

namespace tpkit {

class Llama2cTokenizer : public Tokenizer {
 public:
  static constexpr int kBos = 1, kEos = 2;
  using Tokenizer::decode;

  Llama2cTokenizer() = default;
  explicit Llama2cTokenizer(const std::string& path) {
    MappedFile f(path);
    parse(f.data(), f.size(), path);
  }
  // A tokenizer.bin held in memory; `source` names it in errors.
  static Llama2cTokenizer from_bytes(const unsigned char* data, std::size_t size, const std::string& source) {
    Llama2cTokenizer t;
    t.parse(data, size, source);
    return t;
  }

  std::size_t vocab_size() const override { return pieces_.size(); }
  const std::string& piece(int id) const { return pieces_.at(std::size_t(id)); }
  std::optional<std::string> token(std::int32_t id) const override {
    if (id < 0 || std::size_t(id) >= pieces_.size()) return std::nullopt;
    return pieces_[std::size_t(id)];
  }
  std::optional<std::int32_t> token_id(std::string_view token) const override {
    const auto it = lookup_.find(std::string(token));
    if (it == lookup_.end()) return std::nullopt;
    return it->second;
  }
  bool is_special(std::int32_t id) const override { return id >= 0 && id <= kEos; }
  std::vector<std::int32_t> special_ids() const override { return {0, kBos, kEos}; }
  std::string description() const override { return "llama2.c tokenizer.bin"; }

  // add_special_tokens: a BOS in front. parse_special has nothing to do: the format has no
  // special-token text.
  std::vector<std::int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const override {
    return encode(text, options.add_special_tokens, false);
  }

  std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens = false) const override {
    return std::make_unique<Stream>(*this, skip_special_tokens);
  }

  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const {
    std::vector<std::int32_t> ids;
    if (bos) ids.push_back(kBos);
    if (!text.empty()) ids.push_back(find(" "));
    std::size_t i = 0;
    while (i < text.size()) {
      std::size_t n = 1;  // bytes of this code point: a lead byte and its continuation bytes, at most 4
      while (i + n < text.size() && n < 4 && (static_cast<unsigned char>(text[i + n]) & 0xc0) == 0x80) ++n;
      const auto it = lookup_.find(std::string(text.substr(i, n)));
      if (it != lookup_.end())
        ids.push_back(it->second);
      else
        for (std::size_t b = 0; b < n; ++b) ids.push_back(std::int32_t(static_cast<unsigned char>(text[i + b])) + 3);
      i += n;
    }
    merge(ids, bos ? 1 : 0);  // BOS never merges
    if (eos) ids.push_back(kEos);
    return ids;
  }

  // The bytes token `id` stands for when it follows token `previous`.
  std::string decode(std::int32_t previous, std::int32_t id) const {
    TPKIT_REQUIRE(id >= 0 && std::size_t(id) < pieces_.size(), "token id ", id,
                  " is outside the tokenizer's vocabulary [0, ", pieces_.size(), ")");
    std::string_view s = pieces_[std::size_t(id)];
    if (previous == kBos && !s.empty() && s[0] == ' ') s.remove_prefix(1);
    if (s.size() == 6 && s.substr(0, 3) == "<0x" && s[5] == '>') {
      const auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
      return std::string(1, char(hex(s[3]) * 16 + hex(s[4])));
    }
    return std::string(s);
  }

  // The bytes of `ids` as decode(previous, id) gives them, without reading them as UTF-8.
  std::string decode_bytes(const std::vector<std::int32_t>& ids, std::int32_t previous = kBos) const {
    std::string out;
    for (std::int32_t id : ids) {
      out += decode(previous, id);
      previous = id;
    }
    return out;
  }

 private:
  class Stream : public DecodeStream {
   public:
    Stream(const Llama2cTokenizer& t, bool skip) : t_(t), skip_(skip) {}
    std::string push(std::int32_t id) override {
      const std::int32_t previous = previous_;
      std::string bytes = t_.decode(previous, id);  // checks the id
      previous_ = id;
      if (skip_ && t_.is_special(id)) return {};
      return utf8_.push(bytes);
    }
    std::string finish() override { return utf8_.finish(); }

   private:
    const Llama2cTokenizer& t_;
    bool skip_;
    std::int32_t previous_ = kBos;
    unicode::Utf8Stream utf8_;
  };

  void parse(const unsigned char* p, std::size_t size, const std::string& path) {
    std::size_t at = 0;
    const auto need = [&](std::size_t n, const char* what) {
      if (size - at < n)
        throw FormatError(path + ": truncated tokenizer file at byte " + std::to_string(at) + " (reading " + what +
                          " of token " + std::to_string(pieces_.size()) + ")");
    };
    need(4, "max_token_length");
    std::int32_t max_len;
    std::memcpy(&max_len, p, 4);
    at = 4;
    if (max_len <= 0 || max_len > 1 << 16)
      throw FormatError(path + ": implausible max_token_length " + std::to_string(max_len));
    while (at < size) {
      float score;
      std::int32_t len;
      need(8, "score and length");
      std::memcpy(&score, p + at, 4);
      std::memcpy(&len, p + at + 4, 4);
      at += 8;
      if (len < 0 || len > max_len)
        throw FormatError(path + ": token " + std::to_string(pieces_.size()) + " has length " + std::to_string(len) +
                          " (max_token_length " + std::to_string(max_len) + ")");
      need(std::size_t(len), "bytes");
      if (pieces_.size() >= std::size_t(1) << 28) throw FormatError(path + ": more than 2^28 tokens");
      pieces_.emplace_back(reinterpret_cast<const char*>(p + at), std::size_t(len));
      scores_.push_back(score);
      at += std::size_t(len);
    }
    if (pieces_.size() < 3 + 256)
      throw FormatError(path + ": only " + std::to_string(pieces_.size()) +
                        " tokens; expected at least 259 (specials and byte tokens)");
    for (std::size_t i = 0; i < pieces_.size(); ++i) lookup_.emplace(pieces_[i], int(i));  // first wins
  }

  // Merges ids[first..] in place: while some adjacent pair concatenates to a token, the pair whose
  // token scores highest (the leftmost of equals) becomes that token. Candidates wait in a
  // priority queue; one made stale by an earlier merge is dropped when it comes up.
  void merge(std::vector<std::int32_t>& ids, std::size_t first) const {
    const std::size_t n = ids.size();
    if (n < first + 2) return;
    struct Symbol {
      std::int32_t id;
      std::ptrdiff_t prev, next;  // -1: none
    };
    std::vector<Symbol> symbols(n);
    for (std::size_t i = first; i < n; ++i)
      symbols[i] = {ids[i], i > first ? std::ptrdiff_t(i) - 1 : -1, i + 1 < n ? std::ptrdiff_t(i) + 1 : -1};
    struct Candidate {
      float score;
      std::ptrdiff_t left, right;
      std::int32_t left_id, right_id, merged;
      bool operator<(const Candidate& o) const {  // the queue's top: highest score, then leftmost
        return score < o.score || (score == o.score && left > o.left);
      }
    };
    std::priority_queue<Candidate> queue;
    const auto offer = [&](std::ptrdiff_t left, std::ptrdiff_t right) {
      if (left < 0 || right < 0) return;
      const Symbol &a = symbols[std::size_t(left)], &b = symbols[std::size_t(right)];
      const auto it = lookup_.find(pieces_[std::size_t(a.id)] + pieces_[std::size_t(b.id)]);
      if (it == lookup_.end() || !(scores_[std::size_t(it->second)] > -1e30f)) return;
      queue.push({scores_[std::size_t(it->second)], left, right, a.id, b.id, it->second});
    };
    for (std::size_t i = first; i + 1 < n; ++i) offer(std::ptrdiff_t(i), std::ptrdiff_t(i) + 1);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& a = symbols[std::size_t(c.left)];
      Symbol& b = symbols[std::size_t(c.right)];
      if (a.next != c.right || a.id != c.left_id || b.id != c.right_id) continue;  // stale
      a.id = c.merged;
      a.next = b.next;
      if (b.next >= 0) symbols[std::size_t(b.next)].prev = c.left;
      b.id = -1;
      offer(a.prev, c.left);
      offer(c.left, a.next);
    }
    std::size_t out = first;
    for (std::ptrdiff_t i = std::ptrdiff_t(first); i >= 0; i = symbols[std::size_t(i)].next)
      ids[out++] = symbols[std::size_t(i)].id;
    ids.resize(out);
  }

  std::int32_t find(const std::string& s) const {
    const auto it = lookup_.find(s);
    if (it == lookup_.end()) throw FormatError("tokenizer has no token for \"" + s + "\"");
    return it->second;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> lookup_;
};

}  // namespace tpkit
