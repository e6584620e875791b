// tpkit/tokenizer/llama2c_tokenizer.hpp: the tokenizer.bin format of llama2.c.
//
// File: int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// Encoding: optional BOS, a dummy-prefix " " token for non-empty text, each UTF-8 code point
// as its token or, when absent, its bytes as byte tokens (<0xXX> = id byte + 3), then the pair
// whose concatenation is a token with the highest score is merged (leftmost on ties) until no
// pair merges. Decoding: byte tokens become their byte; the leading space of a piece right
// after BOS is dropped.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/mapped_file.hpp"

namespace tpkit {

class Llama2cTokenizer {
 public:
  static constexpr int kBos = 1, kEos = 2;

  Llama2cTokenizer() = default;
  explicit Llama2cTokenizer(const std::string& path) {
    MappedFile f(path);
    const unsigned char* p = f.data();
    std::size_t at = 0;
    const auto need = [&](std::size_t n, const char* what) {
      if (f.size() - at < n)
        throw FormatError(path + ": truncated tokenizer file at byte " + std::to_string(at) + " (reading " + what +
                          " of token " + std::to_string(pieces_.size()) + ")");
    };
    need(4, "max_token_length");
    std::int32_t max_len;
    std::memcpy(&max_len, p, 4);
    at = 4;
    if (max_len <= 0 || max_len > 1 << 16)
      throw FormatError(path + ": implausible max_token_length " + std::to_string(max_len));
    while (at < f.size()) {
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
      pieces_.emplace_back(reinterpret_cast<const char*>(p + at), std::size_t(len));
      scores_.push_back(score);
      at += std::size_t(len);
    }
    if (pieces_.size() < 3 + 256)
      throw FormatError(path + ": only " + std::to_string(pieces_.size()) +
                        " tokens; expected at least 259 (specials and byte tokens)");
    for (std::size_t i = 0; i < pieces_.size(); ++i) lookup_.emplace(pieces_[i], int(i));  // first wins
  }

  std::size_t vocab_size() const { return pieces_.size(); }
  const std::string& piece(int id) const { return pieces_.at(std::size_t(id)); }

  std::vector<std::int32_t> encode(std::string_view text, bool bos = true, bool eos = false) const {
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
    const std::size_t first = bos ? 1 : 0;  // BOS never merges
    for (;;) {
      float best = -1e30f;
      int best_id = -1;
      std::size_t best_at = 0;
      for (std::size_t k = first; k + 1 < ids.size(); ++k) {
        const auto it = lookup_.find(pieces_[std::size_t(ids[k])] + pieces_[std::size_t(ids[k + 1])]);
        if (it != lookup_.end() && scores_[std::size_t(it->second)] > best) {
          best = scores_[std::size_t(it->second)];
          best_id = it->second;
          best_at = k;
        }
      }
      if (best_id < 0) break;
      ids[best_at] = best_id;
      ids.erase(ids.begin() + std::ptrdiff_t(best_at) + 1);
    }
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

  std::string decode(const std::vector<std::int32_t>& ids, std::int32_t previous = kBos) const {
    std::string out;
    for (std::int32_t id : ids) {
      out += decode(previous, id);
      previous = id;
    }
    return out;
  }

 private:
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
