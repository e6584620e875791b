// tpkit/io/json.hpp: a small, strict JSON reader for checkpoint metadata (config.json,
// safetensors headers, sharded-checkpoint indexes). Malformed input throws FormatError with the
// byte offset; nesting is limited so hostile input cannot exhaust the stack. Numbers are read
// with std::from_chars, so a program running under any locale (a comma-decimal LC_NUMERIC
// included) reads "0.02" as 0.02; integers are range-checked before they are converted. Strings
// must be valid UTF-8 and \u escapes whole characters (an unpaired surrogate is an error), so
// every string read is valid UTF-8.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

class Json {
 public:
  enum class Type { null, boolean, number, string, array, object };

  Json() = default;
  static Json parse(std::string_view text, const std::string& source = "JSON") {
    Parser p{text, source};
    p.skip_space();
    Json v = p.value(0);
    p.skip_space();
    if (p.at != text.size()) p.fail("unexpected data after the value");
    return v;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_number() const { return type_ == Type::number; }
  bool is_string() const { return type_ == Type::string; }
  bool is_object() const { return type_ == Type::object; }
  bool is_array() const { return type_ == Type::array; }

  double number() const {
    expect(Type::number, "a number");
    return number_;
  }
  // Whether a number was written without a fraction or exponent ("2", not "2.0"): JSON does not
  // tell integers from floats, but a reader that prints them back (chat templates' tojson) must.
  bool written_as_integer() const { return type_ == Type::number && integral_; }
  // The exact value of a number written as an integer that fits in int64 (a double would round
  // 9007199254740993); nullopt otherwise.
  std::optional<std::int64_t> exact_integer() const {
    if (type_ != Type::number || !integral_ || !exact_) return std::nullopt;
    return exact_value_;
  }
  // An integer-valued number within [lo, hi] (checked before it is converted: a number outside
  // the int64 range, or not an integer, is a FormatError, never undefined behaviour).
  std::int64_t integer(std::int64_t lo = INT64_MIN / 2, std::int64_t hi = INT64_MAX / 2) const {
    const double v = number();
    if (!(v >= double(lo) && v <= double(hi)) || v != std::floor(v))
      throw FormatError("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                        number_text(v));
    const std::int64_t i = std::int64_t(v);
    if (i < lo || i > hi)  // double(hi) rounded up to a value just above hi
      throw FormatError("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                        number_text(v));
    return i;
  }
  bool boolean() const {
    expect(Type::boolean, "a boolean");
    return bool_;
  }
  const std::string& string() const {
    expect(Type::string, "a string");
    return string_;
  }
  const std::vector<Json>& array() const {
    expect(Type::array, "an array");
    return array_;
  }
  const std::vector<std::pair<std::string, Json>>& object() const {
    expect(Type::object, "an object");
    return object_;
  }
  // Member lookup on an object; nullptr when absent.
  const Json* find(std::string_view key) const {
    expect(Type::object, "an object");
    for (const auto& kv : object_)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  const Json& at(std::string_view key) const {
    const Json* v = find(key);
    if (!v) throw FormatError("missing key \"" + std::string(key) + "\"");
    return *v;
  }

 private:
  // A number for a message, locale-independent.
  static std::string number_text(double v) {
    char buffer[64];
    const auto r = std::to_chars(buffer, buffer + sizeof buffer, v);
    return std::string(buffer, r.ptr);
  }
  void expect(Type t, const char* what) const {
    if (type_ != t) throw FormatError(std::string("expected ") + what + " in JSON");
  }

  struct Parser {
    std::string_view text;
    const std::string& source;
    std::size_t at = 0;
    static constexpr int kMaxDepth = 64;

    [[noreturn]] void fail(const std::string& why) const {
      throw FormatError(source + ": invalid JSON at byte " + std::to_string(at) + ": " + why);
    }
    void skip_space() {
      while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t')) ++at;
    }
    char peek() const { return at < text.size() ? text[at] : '\0'; }
    void literal(std::string_view word) {
      if (text.substr(at, word.size()) != word) fail("unknown literal");
      at += word.size();
    }
    Json value(int depth) {
      if (depth > kMaxDepth) fail("nesting deeper than 64");
      Json v;
      switch (peek()) {
        case '{': {
          v.type_ = Type::object;
          ++at;
          skip_space();
          if (peek() == '}') return ++at, v;
          for (;;) {
            skip_space();
            if (peek() != '"') fail("expected a key");
            std::string key = string_body();
            skip_space();
            if (peek() != ':') fail("expected ':'");
            ++at;
            skip_space();
            v.object_.emplace_back(std::move(key), value(depth + 1));
            skip_space();
            if (peek() == ',') {
              ++at;
              continue;
            }
            if (peek() == '}') return ++at, v;
            fail("expected ',' or '}'");
          }
        }
        case '[': {
          v.type_ = Type::array;
          ++at;
          skip_space();
          if (peek() == ']') return ++at, v;
          for (;;) {
            skip_space();
            v.array_.push_back(value(depth + 1));
            skip_space();
            if (peek() == ',') {
              ++at;
              continue;
            }
            if (peek() == ']') return ++at, v;
            fail("expected ',' or ']'");
          }
        }
        case '"':
          v.type_ = Type::string;
          v.string_ = string_body();
          return v;
        case 't':
          literal("true");
          v.type_ = Type::boolean, v.bool_ = true;
          return v;
        case 'f':
          literal("false");
          v.type_ = Type::boolean, v.bool_ = false;
          return v;
        case 'n':
          literal("null");
          return v;
        default:
          return number_value();
      }
    }
    Json number_value() {
      const std::size_t start = at;
      if (peek() == '-') ++at;
      if (!(peek() >= '0' && peek() <= '9')) fail("expected a value");
      while ((peek() >= '0' && peek() <= '9') || peek() == '.' || peek() == 'e' || peek() == 'E' || peek() == '+' ||
             peek() == '-')
        ++at;
      const char* first = text.data() + start;
      const char* last = text.data() + at;
      Json v;
      v.type_ = Type::number;
      v.integral_ = std::string_view(first, std::size_t(last - first)).find_first_of(".eE") == std::string_view::npos;
      // from_chars takes no leading '+' and, unlike strtod, no locale.
      const auto [end, error] = std::from_chars(first, last, v.number_, std::chars_format::general);
      if (error == std::errc::result_out_of_range) fail("number out of range");
      if (error != std::errc() || end != last) fail("malformed number");
      if (v.integral_) {
        const auto exact = std::from_chars(first, last, v.exact_value_);
        v.exact_ = exact.ec == std::errc() && exact.ptr == last;
      }
      return v;
    }
    unsigned hex4() {
      if (at + 4 > text.size()) fail("truncated \\u escape");
      unsigned v = 0;
      for (int i = 0; i < 4; ++i) {
        const char c = text[at++];
        v <<= 4;
        if (c >= '0' && c <= '9')
          v |= unsigned(c - '0');
        else if (c >= 'a' && c <= 'f')
          v |= unsigned(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
          v |= unsigned(c - 'A' + 10);
        else
          fail("bad hex digit in \\u escape");
      }
      return v;
    }
    // Whether `s` (a lead byte and its continuation bytes) is one valid UTF-8 sequence.
    static bool valid_utf8(std::string_view s) {
      const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
      const unsigned char lead = b(0);
      std::size_t need;
      unsigned char lo = 0x80, hi = 0xbf;
      if (lead >= 0xc2 && lead <= 0xdf)
        need = 2;
      else if (lead >= 0xe0 && lead <= 0xef)
        need = 3, lo = lead == 0xe0 ? 0xa0 : 0x80, hi = lead == 0xed ? 0x9f : 0xbf;
      else if (lead >= 0xf0 && lead <= 0xf4)
        need = 4, lo = lead == 0xf0 ? 0x90 : 0x80, hi = lead == 0xf4 ? 0x8f : 0xbf;
      else
        return false;
      return s.size() == need && b(1) >= lo && b(1) <= hi;
    }
    static void append_utf8(std::string& out, unsigned cp) {
      if (cp < 0x80)
        out += char(cp);
      else if (cp < 0x800)
        out += char(0xc0 | (cp >> 6)), out += char(0x80 | (cp & 0x3f));
      else if (cp < 0x10000)
        out += char(0xe0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3f)), out += char(0x80 | (cp & 0x3f));
      else
        out += char(0xf0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3f)), out += char(0x80 | ((cp >> 6) & 0x3f)),
            out += char(0x80 | (cp & 0x3f));
    }
    std::string string_body() {
      ++at;  // opening quote
      std::string out;
      for (;;) {
        if (at >= text.size()) fail("unterminated string");
        const char c = text[at++];
        if (c == '"') return out;
        if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
        if (c != '\\') {
          if (static_cast<unsigned char>(c) >= 0x80) {  // a UTF-8 sequence, checked whole
            const std::size_t begin = at - 1;
            std::size_t n = 1;
            while (at < text.size() && n < 4 && (static_cast<unsigned char>(text[at]) & 0xc0) == 0x80) ++at, ++n;
            if (!valid_utf8(text.substr(begin, n))) {
              at = begin;
              fail("invalid UTF-8 in string");
            }
            out.append(text, begin, n);
            continue;
          }
          out += c;
          continue;
        }
        if (at >= text.size()) fail("unterminated escape");
        switch (text[at++]) {
          case '"':
            out += '"';
            break;
          case '\\':
            out += '\\';
            break;
          case '/':
            out += '/';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          case 'u': {
            unsigned cp = hex4();
            if (cp >= 0xdc00 && cp < 0xe000) fail("unpaired surrogate");
            if (cp >= 0xd800 && cp < 0xdc00) {
              if (text.substr(at, 2) != "\\u") fail("unpaired surrogate");
              at += 2;
              const unsigned low = hex4();
              if (low < 0xdc00 || low >= 0xe000) fail("bad low surrogate");
              cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            append_utf8(out, cp);
            break;
          }
          default:
            fail("unknown escape");
        }
      }
    }
  };

  Type type_ = Type::null;
  bool bool_ = false, integral_ = false, exact_ = false;
  std::int64_t exact_value_ = 0;
  double number_ = 0;
  std::string string_;
  std::vector<Json> array_;
  std::vector<std::pair<std::string, Json>> object_;
};

}  // namespace tpkit
