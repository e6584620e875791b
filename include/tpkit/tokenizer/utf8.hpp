// tpkit/tokenizer/utf8.hpp: UTF-8 that never reads past its input. A maximal invalid subpart
// (the longest prefix that could still begin a valid sequence, or one byte) is replaced by one
// U+FFFD, as Rust's String::from_utf8_lossy and Python's "replace" handler do.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace tpkit::unicode {

inline constexpr char32_t kReplacement = 0xFFFD;

// The length of the UTF-8 sequence at s[at..] if it is valid (1-4), else 0 with `invalid` set to
// the length of its maximal invalid subpart (1-3): the longest prefix that could still begin a
// valid sequence, or 1. `complete` is false when the input ends inside a sequence that could
// still be valid (its prefix so far is a maximal subpart).
struct Utf8Step {
  std::size_t valid = 0, invalid = 0;
  bool complete = true;
};
inline Utf8Step utf8_step(std::string_view s, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(at);
  if (b0 < 0x80) return {1, 0, true};
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0, 1, true};
  }
  for (std::size_t k = 1; k < need; ++k) {
    if (at + k >= s.size()) return {0, k, false};
    const unsigned char b = byte(at + k);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return {0, k, true};
  }
  return {need, 0, true};
}

// The code point of a valid sequence of `length` bytes at s[at..].
inline char32_t utf8_code_point(std::string_view s, std::size_t at, std::size_t length) {
  const auto byte = [&](std::size_t i) { return char32_t(static_cast<unsigned char>(s[at + i])); };
  switch (length) {
    case 1:
      return byte(0);
    case 2:
      return (byte(0) & 0x1F) << 6 | (byte(1) & 0x3F);
    case 3:
      return (byte(0) & 0x0F) << 12 | (byte(1) & 0x3F) << 6 | (byte(2) & 0x3F);
    default:
      return (byte(0) & 0x07) << 18 | (byte(1) & 0x3F) << 12 | (byte(2) & 0x3F) << 6 | (byte(3) & 0x3F);
  }
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

inline std::string utf8(char32_t cp) {
  std::string s;
  append_utf8(s, cp);
  return s;
}

inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t at = 0; at < s.size();) {
    if (static_cast<unsigned char>(s[at]) < 0x80) {
      ++at;
      continue;
    }
    const Utf8Step step = utf8_step(s, at);
    if (!step.valid) return false;
    at += step.valid;
  }
  return true;
}

// `s` with each maximal invalid subpart replaced by U+FFFD.
inline std::string to_valid_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (std::size_t at = 0; at < s.size();) {
    const Utf8Step step = utf8_step(s, at);
    if (step.valid) {
      out.append(s, at, step.valid);
      at += step.valid;
    } else {
      append_utf8(out, kReplacement);
      at += step.invalid;
    }
  }
  return out;
}

// The code points of valid UTF-8 `s`.
inline std::u32string code_points(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t n = std::max<std::size_t>(1, utf8_step(s, at).valid);
    out += utf8_code_point(s, at, n);
    at += n;
  }
  return out;
}

// Lossy UTF-8 decoding of a byte stream that arrives in pieces: push() returns the text that is
// final (complete sequences, and U+FFFD for each subpart already known to be invalid); a sequence
// cut by the end of a piece waits for the next; finish() ends it as one U+FFFD. The pieces thus
// concatenate to to_valid_utf8 of all the bytes.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes) {
    pending_.append(bytes);
    std::string out;
    std::size_t at = 0;
    while (at < pending_.size()) {
      const Utf8Step step = utf8_step(pending_, at);
      if (step.valid) {
        out.append(pending_, at, step.valid);
        at += step.valid;
      } else if (!step.complete) {
        break;  // may still become valid
      } else {
        append_utf8(out, kReplacement);
        at += step.invalid;
      }
    }
    pending_.erase(0, at);
    return out;
  }
  std::string finish() {
    std::string out = pending_.empty() ? std::string() : utf8(kReplacement);
    pending_.clear();
    return out;
  }
  bool empty() const { return pending_.empty(); }

 private:
  std::string pending_;
};

}  // namespace tpkit::unicode
