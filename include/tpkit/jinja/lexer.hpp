// tpkit/jinja/lexer.hpp: template source into tokens, with jinja2's whitespace rules as
// transformers configures them for chat templates.
//
// - Newlines are normalised to "\n" and one trailing newline of the source is dropped
//   (keep_trailing_newline=False).
// - trim_blocks: the first newline after a block or comment tag is removed.
// - lstrip_blocks: spaces and tabs from the start of a line up to a block or comment tag are
//   removed (not before `{{`).
// - `{%-` / `-%}` (and `{{-`, `-}}`, `{#-`, `-#}`) strip all whitespace before / after the tag;
//   `{%+` and `+%}` turn lstrip_blocks and trim_blocks off for that tag.
// - `{% raw %}...{% endraw %}` is text.
// Every token knows its line and column, so every later error can say where it is.
#pragma once

#include <cctype>
#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/jinja/value.hpp"
#include "tpkit/tokenizer/utf8.hpp"

namespace tpkit::jinja {

struct Location {
  int line = 1, column = 1;
  std::string text() const { return std::to_string(line) + ":" + std::to_string(column); }
};

struct Token {
  enum class Kind {
    text,
    variable_begin,
    variable_end,
    block_begin,
    block_end,
    name,
    string,
    integer,
    floating,
    op,
    end
  };
  Kind kind;
  std::string text;  // text, name, operator, or the unescaped string literal
  Location where;
  Value number;  // integer / floating

  bool is_op(std::string_view op) const { return kind == Kind::op && text == op; }
  bool is_name(std::string_view name) const { return kind == Kind::name && text == name; }
};

struct LexerOptions {
  bool trim_blocks = true, lstrip_blocks = true, keep_trailing_newline = false;
};

namespace detail {

// Length in bytes of the whitespace character at `at`, or 0.
inline std::size_t space_at(std::string_view s, std::size_t at) {
  if (at >= s.size()) return 0;
  const unsigned char c = static_cast<unsigned char>(s[at]);
  if (c < 0x80) return py_isspace(c) ? 1 : 0;
  const std::size_t n = unicode::utf8_step(s, at).valid;
  return n > 0 && py_isspace(unicode::utf8_code_point(s, at, n)) ? n : 0;
}

inline std::string_view rstrip_spaces(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    if (space_at(s, start) != end - start) break;
    end = start;
  }
  return s.substr(0, end);
}

inline bool all_spaces(std::string_view s) {
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t n = space_at(s, at);
    if (!n) return false;
    at += n;
  }
  return true;
}

class Lexer {
 public:
  Lexer(std::string_view source, LexerOptions options) : options_(options) {
    // Newlines "\r\n" and "\r" become "\n" (in text and string literals alike).
    src_.reserve(source.size());
    for (std::size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!options_.keep_trailing_newline && !src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      const std::size_t open = find_opener(pos_);
      std::string_view text(src_.data() + pos_, (open == std::string::npos ? src_.size() : open) - pos_);
      if (open == std::string::npos) {
        emit_text(text, pos_);
        break;
      }
      const char type = src_[open + 1];
      const char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      if (sign == '-') {
        text = rstrip_spaces(text);
      } else if (sign != '+' && options_.lstrip_blocks && type != '{') {
        const std::size_t line_start = text.rfind('\n') + 1;  // npos + 1 == 0
        if ((line_start > 0 || line_starting) && line_start < text.size() && all_spaces(text.substr(line_start)))
          text = text.substr(0, line_start);
      }
      emit_text(text, pos_);
      pos_ = open + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (type == '#') {
        skip_comment(open);
      } else if (type == '%' && is_raw_begin()) {
        lex_raw(open);
      } else {
        lex_tag(type == '{', open);
      }
      line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    }
    tokens_.push_back({Token::Kind::end, "", where(src_.size()), {}});
    return std::move(tokens_);
  }

 private:
  // Line and column of a byte offset; offsets mostly grow, so the walk resumes from the last.
  Location where(std::size_t at) const {
    if (at < cursor_) cursor_ = 0, cursor_where_ = Location{};
    for (; cursor_ < at && cursor_ < src_.size(); ++cursor_) {
      if (src_[cursor_] == '\n') {
        ++cursor_where_.line;
        cursor_where_.column = 1;
      } else if ((static_cast<unsigned char>(src_[cursor_]) & 0xC0) != 0x80) {
        ++cursor_where_.column;
      }
    }
    return cursor_where_;
  }
  [[noreturn]] void fail(std::size_t at, const std::string& message) const {
    throw TemplateError("chat template " + where(at).text() + ": " + message);
  }

  std::size_t find_opener(std::size_t from) const {
    for (std::size_t at = src_.find('{', from); at != std::string::npos; at = src_.find('{', at + 1))
      if (at + 1 < src_.size() && (src_[at + 1] == '{' || src_[at + 1] == '%' || src_[at + 1] == '#')) return at;
    return std::string::npos;
  }

  void emit_text(std::string_view text, std::size_t at) {
    if (!text.empty()) tokens_.push_back({Token::Kind::text, std::string(text), where(at), {}});
  }

  void skip_spaces() {
    while (std::size_t n = space_at(src_, pos_)) pos_ += n;
  }

  // After a tag's closing characters: `-` strips what follows, `+` keeps it, else trim_blocks
  // takes one newline (block and comment tags only).
  void after_close(char sign, bool block) {
    if (sign == '-')
      skip_spaces();
    else if (sign != '+' && block && options_.trim_blocks && pos_ < src_.size() && src_[pos_] == '\n')
      ++pos_;
  }

  void skip_comment(std::size_t open) {
    const std::size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) fail(open, "a comment is not closed with '#}'");
    const char sign = close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
    pos_ = close + 2;
    after_close(sign, true);
  }

  // `{% raw %}` (with optional signs) at pos_ (just after "{%" and its sign).
  bool is_raw_begin() const {
    std::size_t at = pos_;
    while (std::size_t n = space_at(src_, at)) at += n;
    if (src_.compare(at, 3, "raw") != 0) return false;
    at += 3;
    while (std::size_t n = space_at(src_, at)) at += n;
    return src_.compare(at, 2, "%}") == 0 || src_.compare(at, 3, "-%}") == 0;
  }

  void lex_raw(std::size_t open) {
    // jinja2 applies no trim_blocks after `{% raw %}`; `-%}` still strips.
    std::size_t at = src_.find("%}", pos_);
    const char begin_sign = src_[at - 1] == '-' ? '-' : '\0';
    pos_ = at + 2;
    after_close(begin_sign, false);
    const bool line_starting = pos_ > 0 && src_[pos_ - 1] == '\n';
    // The body runs to the first {% endraw %}, with its own signs.
    for (std::size_t search = pos_;;) {
      const std::size_t end_open = src_.find("{%", search);
      if (end_open == std::string::npos) fail(open, "a raw block is not closed with '{% endraw %}'");
      std::size_t p = end_open + 2;
      const char sign = p < src_.size() && (src_[p] == '-' || src_[p] == '+') ? src_[p] : '\0';
      if (sign) ++p;
      while (std::size_t n = space_at(src_, p)) p += n;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = end_open + 2;
        continue;
      }
      p += 6;
      while (std::size_t n = space_at(src_, p)) p += n;
      char close_sign = '\0';
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) close_sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) fail(end_open, "expected '%}' after 'endraw'");
      std::string_view body(src_.data() + pos_, end_open - pos_);
      if (sign == '-') {
        body = rstrip_spaces(body);
      } else if (sign != '+' && options_.lstrip_blocks) {
        const std::size_t line_start = body.rfind('\n') + 1;
        if ((line_start > 0 || line_starting) && line_start < body.size() && all_spaces(body.substr(line_start)))
          body = body.substr(0, line_start);
      }
      emit_text(body, pos_);
      pos_ = p + 2;
      after_close(close_sign, true);
      return;
    }
  }

  void lex_tag(bool variable, std::size_t open) {
    tokens_.push_back({variable ? Token::Kind::variable_begin : Token::Kind::block_begin, "", where(open), {}});
    std::vector<char> balance;
    for (;;) {
      skip_spaces();
      if (pos_ >= src_.size()) fail(open, variable ? "'{{' is not closed with '}}'" : "'{%' is not closed with '%}'");
      const char c = src_[pos_];
      if (balance.empty()) {
        const std::string_view close = variable ? "}}" : "%}";
        char sign = '\0';
        std::size_t at = pos_;
        if ((c == '-' || (c == '+' && !variable)) && src_.compare(pos_ + 1, 2, close) == 0) sign = c, ++at;
        if (src_.compare(at, 2, close) == 0) {
          tokens_.push_back({variable ? Token::Kind::variable_end : Token::Kind::block_end, "", where(pos_), {}});
          pos_ = at + 2;
          after_close(sign, !variable);
          return;
        }
      }
      const std::size_t start = pos_;
      if (c == '\'' || c == '"') {
        tokens_.push_back({Token::Kind::string, lex_string(c), where(start), {}});
      } else if (c >= '0' && c <= '9') {
        lex_number();
      } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
          ++pos_;
        tokens_.push_back({Token::Kind::name, src_.substr(start, pos_ - start), where(start), {}});
      } else {
        static const char* const kTwo[] = {"**", "//", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (const char* two : kTwo)
          if (src_.compare(pos_, 2, two) == 0) op = two;
        if (op.size() == 1 && std::string_view("+-*/%~[](){}<>=.:|,;").find(c) == std::string_view::npos)
          fail(start, "unexpected character '" + std::string(1, c) + "'");
        if (c == '(' || c == '[' || c == '{') {
          balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
          if (balance.empty() || balance.back() != c) fail(start, "unexpected '" + op + "'");
          balance.pop_back();
        }
        pos_ += op.size();
        tokens_.push_back({Token::Kind::op, op, where(start), {}});
      }
    }
  }

  // A quoted literal with Python's escapes (jinja2 decodes them as "unicode-escape").
  std::string lex_string(char quote) {
    const std::size_t start = pos_++;
    std::string out;
    for (;;) {
      if (pos_ >= src_.size()) fail(start, "a string literal is not closed");
      const char c = src_[pos_++];
      if (c == quote) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= src_.size()) fail(start, "a string literal is not closed");
      const char e = src_[pos_++];
      const auto hex = [&](int digits) {
        char32_t v = 0;
        for (int i = 0; i < digits; ++i) {
          const char h = pos_ < src_.size() ? src_[pos_] : '\0';
          int d = h >= '0' && h <= '9'   ? h - '0'
                  : h >= 'a' && h <= 'f' ? h - 'a' + 10
                  : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                         : -1;
          if (d < 0) fail(pos_, "truncated \\x, \\u or \\U escape");
          v = v * 16 + char32_t(d);
          ++pos_;
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) fail(pos_, "escape outside Unicode scalar values");
        unicode::append_utf8(out, v);
      };
      // Python's one-character escapes; "\\\n" continues the line.
      static const char kEscapes[][2] = {{'\n', 0},   {'\\', '\\'}, {'\'', '\''}, {'"', '"'},  {'a', '\a'}, {'b', '\b'},
                                         {'f', '\f'}, {'n', '\n'},  {'r', '\r'},  {'t', '\t'}, {'v', '\v'}};
      bool simple = false;
      for (const auto& [from, to] : kEscapes)
        if (e == from) {
          if (to) out += to;
          simple = true;
        }
      if (simple) continue;
      switch (e) {
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            int v = e - '0';
            for (int i = 0; i < 2 && pos_ < src_.size() && src_[pos_] >= '0' && src_[pos_] <= '7'; ++i)
              v = v * 8 + (src_[pos_++] - '0');
            unicode::append_utf8(out, char32_t(v));
          } else {
            out += '\\';  // Python keeps an unknown escape as written
            out += e;
          }
      }
    }
  }

  // Digits with optional underscores; a fraction and/or exponent makes a float ("1." is 1 then '.').
  void lex_number() {
    const std::size_t start = pos_;
    if (src_[pos_] == '0' && pos_ + 2 < src_.size()) {
      const char kind = char(std::tolower(static_cast<unsigned char>(src_[pos_ + 1])));
      const int base = kind == 'x' ? 16 : kind == 'o' ? 8 : kind == 'b' ? 2 : 0;
      if (base) {
        std::string digits;
        std::size_t at = pos_ + 2;
        for (; at < src_.size(); ++at) {
          const char c = char(std::tolower(static_cast<unsigned char>(src_[at])));
          const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
          if (c == '_' && !digits.empty() && at + 1 < src_.size()) continue;
          if (d < 0 || d >= base) break;
          digits += c;
        }
        if (!digits.empty()) {
          Token t{Token::Kind::integer, src_.substr(start, at - start), where(start), {}};
          std::int64_t v = 0;
          const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
          if (r.ec != std::errc()) fail(start, "integer literal out of range: " + t.text);
          t.number = Value(v);
          pos_ = at;
          tokens_.push_back(std::move(t));
          return;
        }
      }
    }
    const auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) ||
                                    (src_[pos_] == '_' && pos_ + 1 < src_.size() &&
                                     std::isdigit(static_cast<unsigned char>(src_[pos_ + 1])) && pos_ > from)))
        ++pos_;
      return pos_ > from;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      ++pos_;
      digits();
      is_float = true;
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      std::size_t save = pos_++;
      if (pos_ < src_.size() && (src_[pos_] == '+' || src_[pos_] == '-')) ++pos_;
      if (digits())
        is_float = true;
      else
        pos_ = save;
    }
    std::string text;
    for (std::size_t i = start; i < pos_; ++i)
      if (src_[i] != '_') text += src_[i];
    Token t{is_float ? Token::Kind::floating : Token::Kind::integer, text, where(start), {}};
    if (is_float) {
      double d = 0;
      std::from_chars(text.data(), text.data() + text.size(), d);
      t.number = Value(d);
    } else {
      std::int64_t v = 0;
      const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
      if (r.ec != std::errc()) fail(start, "integer literal out of range: " + text);
      t.number = Value(v);
    }
    tokens_.push_back(std::move(t));
  }

  LexerOptions options_;
  std::string src_;
  std::size_t pos_ = 0;
  std::vector<Token> tokens_;
  mutable std::size_t cursor_ = 0;
  mutable Location cursor_where_;
};

}  // namespace detail

inline std::vector<Token> tokenize_template(std::string_view source, LexerOptions options = {}) {
  return detail::Lexer(source, options).run();
}

}  // namespace tpkit::jinja
