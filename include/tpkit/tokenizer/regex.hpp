// tpkit/tokenizer/regex.hpp: the regular expressions of tokenizer.json (pre-tokenizer splits and
// normalizer replacements), with the meaning Hugging Face tokenizers gives them through
// Oniguruma: leftmost-first alternation, greedy and lazy quantifiers, Unicode classes (\p{L},
// \s as White_Space, \d as Nd, \w), (?i:...) with simple case folding, lookahead, and the
// find_iter of the onig crate (an empty match is reported once per position).
//
// The pattern is compiled to a small program run by a backtracking machine over UTF-8 (the text
// must be valid UTF-8; positions are byte offsets). Anything outside this subset (lookbehind,
// backreferences, possessive quantifiers, \p{Script} names, nested classes) is refused when the
// pattern is compiled, with the offset of the construct. A loop whose body can match nothing is
// refused too, and a match that backtracks more than kStepsPerByte steps per byte of text throws
// instead of running for ever.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/tokenizer/unicode.hpp"

namespace tpkit {

class Regex {
 public:
  static constexpr std::size_t kMaxProgram = 1 << 16;
  static constexpr std::size_t kStepsPerByte = 1 << 12;

  Regex() = default;
  explicit Regex(std::string_view pattern) : pattern_(pattern) {
    if (!unicode::is_valid_utf8(pattern)) throw FormatError("a regex is not valid UTF-8");
    Parser p{*this, unicode::code_points(pattern), 0};
    const int root = p.alternation(false);
    if (p.at != p.text.size()) p.fail("unbalanced ')'");
    emit_node(root);
    program_.push_back({Op::match});
  }

  const std::string& pattern() const { return pattern_; }

  // The end of a match starting exactly at byte `at`, or npos.
  std::size_t match_at(std::string_view text, std::size_t at) const {
    std::size_t budget = kStepsPerByte * (text.size() + 1);
    Stack stack;
    return run(text, at, 0, budget, stack);
  }

  // The leftmost match at or after `from`: {begin, end}, or {npos, npos}.
  std::pair<std::size_t, std::size_t> search(std::string_view text, std::size_t from) const {
    std::size_t budget = kStepsPerByte * (text.size() + 1);
    thread_local Stack stack;  // its storage kept between searches
    for (std::size_t at = from; at <= text.size(); at = next_char(text, at)) {
      const std::size_t end = run(text, at, 0, budget, stack);
      if (end != npos) return {at, end};
      if (at == text.size()) break;
    }
    return {npos, npos};
  }

  // Calls f(begin, end) for each match, as the onig crate's find_iter: after a match the search
  // resumes at its end; an empty match right where the last match ended is skipped by moving on
  // one character.
  template <class F>
  void for_each_match(std::string_view text, F&& f) const {
    std::size_t from = 0, last_end = npos;
    while (from <= text.size()) {
      const auto [begin, end] = search(text, from);
      if (begin == npos) return;
      if (begin == end && last_end == end) {
        if (from == text.size()) return;
        from = next_char(text, from);
        continue;
      }
      f(begin, end);
      from = end;
      last_end = end;
    }
  }

  static constexpr std::size_t npos = std::string_view::npos;

 private:
  enum class Op : std::uint8_t {
    literal,        // the code point `a` (folded when `fold`)
    set,            // class `a`
    any,            // any code point but \n
    split,          // try `a`, then `b`
    jump,           // to `a`
    look,           // lookahead program at `a` (negative when `fold` is set); continue at `b`
    line_begin,     // ^
    line_end,       // $
    text_begin,     // \A
    text_end,       // \z
    text_end_nl,    // \Z
    word_boundary,  // \b (`fold`: \B)
    match,
  };
  using Stack = std::vector<std::pair<std::uint32_t, std::size_t>>;
  struct Instruction {
    Op op;
    bool fold = false;
    std::uint32_t a = 0, b = 0;
  };

  // A character class: ranges, category masks and flags; `negated` inverts the whole.
  struct CharClass {
    std::vector<std::pair<char32_t, char32_t>> ranges;
    std::uint32_t categories = 0, not_categories = 0;  // bit per unicode::Category
    bool space = false, not_space = false, word = false, not_word = false;
    bool negated = false, fold = false;
    std::uint64_t ascii[2] = {0, 0};  // contains() for code points below 128, set by finish()

    void finish() {
      for (char32_t c = 0; c < 128; ++c)
        if (contains_slow(c)) ascii[c >> 6] |= std::uint64_t(1) << (c & 63);
    }
    bool contains(char32_t c) const {
      if (c < 128) return ascii[c >> 6] >> (c & 63) & 1;
      return contains_slow(c);
    }

    bool contains_raw(char32_t c) const {
      for (const auto& r : ranges)
        if (c >= r.first && c <= r.second) return true;
      if (categories || not_categories) {
        const std::uint32_t bit = std::uint32_t(1) << unsigned(unicode::category(c));
        if (categories & bit) return true;
        if (not_categories && !(not_categories & bit)) return true;
      }
      if (space && unicode::is_white_space(c)) return true;
      if (not_space && !unicode::is_white_space(c)) return true;
      if (word && unicode::is_word(c)) return true;
      if (not_word && !unicode::is_word(c)) return true;
      return false;
    }
    bool contains_slow(char32_t c) const {
      bool in = contains_raw(c);
      if (!in && fold) {
        const char32_t f = unicode::simple_fold(c);
        in = (f != c && contains_raw(f)) || (c >= 'a' && c <= 'z' && contains_raw(c - 32));
      }
      return in != negated;
    }
  };

  // Parse tree.
  enum class Kind { empty, literal, set, any, concat, alternate, repeat, look, assertion };
  struct Node {
    explicit Node(Kind k) : kind(k) {}
    Kind kind;
    char32_t c = 0;
    bool fold = false, negative = false, greedy = true;
    int min = 0, max = 0;     // repeat; max -1: unbounded
    std::uint32_t index = 0;  // set index; assertion op
    std::vector<int> children;
  };

  struct Parser {
    Regex& re;
    std::u32string text;
    std::size_t at;
    bool fold = false;

    [[noreturn]] void fail(const std::string& what) const {
      throw FormatError("regex /" + re.pattern_ + "/: " + what + " at character " + std::to_string(at));
    }
    bool more() const { return at < text.size(); }
    char32_t peek() const { return more() ? text[at] : 0; }
    bool eat(char32_t c) {
      if (peek() != c || !more()) return false;
      ++at;
      return true;
    }
    int add(Node n) {
      if (re.nodes_.size() > kMaxProgram) fail("pattern too large");
      re.nodes_.push_back(std::move(n));
      return int(re.nodes_.size()) - 1;
    }

    int alternation(bool in_group) {
      std::vector<int> branches{concatenation(in_group)};
      while (eat('|')) branches.push_back(concatenation(in_group));
      if (branches.size() == 1) return branches[0];
      Node n{Kind::alternate};
      n.children = std::move(branches);
      return add(std::move(n));
    }

    int concatenation(bool in_group) {
      Node n{Kind::concat};
      while (more() && peek() != '|' && !(peek() == ')' && in_group)) {
        if (peek() == ')') fail("unbalanced ')'");
        // An inline flag group (?i) changes the rest of this group.
        if (peek() == '(' && text.compare(at, 4, U"(?i)") == 0) {
          at += 4;
          fold = true;
          continue;
        }
        if (peek() == '(' && text.compare(at, 5, U"(?-i)") == 0) {
          at += 5;
          fold = false;
          continue;
        }
        n.children.push_back(quantified(atom()));
      }
      if (n.children.size() == 1) return n.children[0];
      return add(std::move(n));
    }

    int quantified(int item) {
      for (;;) {
        int min, max;
        if (eat('*')) {
          min = 0, max = -1;
        } else if (eat('+')) {
          min = 1, max = -1;
        } else if (eat('?')) {
          min = 0, max = 1;
        } else if (peek() == '{' && counted(min, max)) {
        } else {
          return item;
        }
        const Kind k = re.nodes_[std::size_t(item)].kind;
        if (k == Kind::assertion || k == Kind::look) fail("a quantifier after an assertion");
        Node n{Kind::repeat};
        n.min = min, n.max = max;
        n.greedy = !eat('?');
        if (peek() == '+') fail("possessive quantifiers are not supported");
        n.children = {item};
        item = add(std::move(n));
      }
    }

    // {n}, {n,}, {n,m}, {,m}; anything else after '{' is a literal brace (as in Oniguruma).
    bool counted(int& min, int& max) {
      std::size_t i = at + 1;
      const auto number = [&](int& out) {
        const std::size_t first = i;
        long v = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
          v = v * 10 + long(text[i] - '0');
          if (v > 100000) fail("repeat count too large");
          ++i;
        }
        out = int(v);
        return i > first;
      };
      int lo = 0, hi = 0;
      const bool has_lo = number(lo);
      if (i < text.size() && text[i] == '}') {
        if (!has_lo) return false;
        min = max = lo;
      } else if (i < text.size() && text[i] == ',') {
        ++i;
        const bool has_hi = number(hi);
        if (i >= text.size() || text[i] != '}' || (!has_lo && !has_hi)) return false;
        min = has_lo ? lo : 0;
        max = has_hi ? hi : -1;
        if (has_hi && hi < min) fail("repeat range out of order");
      } else {
        return false;
      }
      at = i + 1;
      return true;
    }

    int atom() {
      const char32_t c = text[at++];
      switch (c) {
        case '(':
          return group();
        case '[':
          return set();
        case '.':
          return add(Node{Kind::any});
        case '^':
          return assertion(Op::line_begin);
        case '$':
          return assertion(Op::line_end);
        case '\\':
          return escape();
        case '*':
        case '+':
        case '?': {
          --at;
          fail("a quantifier with nothing before it");
        }
        default:
          return literal(c);
      }
    }

    int literal(char32_t c) {
      Node n{Kind::literal};
      n.c = fold ? unicode::simple_fold(c) : c;
      n.fold = fold;
      return add(std::move(n));
    }

    int assertion(Op op, bool negative = false) {
      Node n{Kind::assertion};
      n.index = std::uint32_t(op);
      n.negative = negative;
      return add(std::move(n));
    }

    int group() {
      const bool saved_fold = fold;
      int result;
      if (eat('?')) {
        if (eat(':')) {
          result = alternation(true);
        } else if (eat('=') || eat('!')) {
          Node n{Kind::look};
          n.negative = text[at - 1] == '!';
          n.children = {alternation(true)};
          result = add(std::move(n));
        } else if (peek() == 'i' || peek() == '-') {
          const bool on = eat('i');
          if (!on && !(eat('-') && eat('i'))) fail("unsupported group flag");
          if (!eat(':')) fail("unsupported group flag");
          fold = on;
          result = alternation(true);
        } else if (peek() == '<' && at + 1 < text.size() && text[at + 1] != '=' && text[at + 1] != '!') {
          ++at;  // a named group: the name does not matter here
          while (more() && peek() != '>') ++at;
          if (!eat('>')) fail("unterminated group name");
          result = alternation(true);
        } else {
          fail("unsupported group kind (lookbehind, atomic groups, conditionals and comments are refused)");
        }
      } else {
        result = alternation(true);
      }
      fold = saved_fold;
      if (!eat(')')) fail("missing ')'");
      return result;
    }

    static bool category_bits(std::string_view name, std::uint32_t& bits) {
      static const char* const kGroups[] = {"C", "L", "M", "N", "P", "S", "Z"};
      bits = 0;
      for (std::uint32_t i = 0; i < std::uint32_t(unicode::Category::count); ++i) {
        const std::string_view full = unicode_tables::kCategoryNames[i];
        if (full == name || (name.size() == 1 && full[0] == name[0])) bits |= std::uint32_t(1) << i;
      }
      if (name == "L&") bits = 0b1110;  // Lu Ll Lt
      if (name.size() == 1) {
        bool known = false;
        for (const char* g : kGroups) known |= name == g;
        if (!known) bits = 0;
      }
      return bits != 0;
    }

    // \p{X}, \P{X}, \pX after the backslash and the p/P; returns the category bits.
    std::uint32_t property() {
      std::string name;
      if (eat('{')) {
        if (eat('^')) fail("\\p{^...} is not supported");
        while (more() && peek() != '}') name += char(peek() < 0x80 ? char(text[at++]) : (++at, '?'));
        if (!eat('}')) fail("unterminated \\p{");
      } else if (more() && peek() < 0x80) {
        name = char(text[at++]);
      }
      std::uint32_t bits;
      if (!category_bits(name, bits))
        fail("unsupported property \\p{" + name + "} (general categories only, such as L, Lu, N, P)");
      return bits;
    }

    char32_t hex(std::size_t digits_min, std::size_t digits_max, bool braced) {
      char32_t v = 0;
      std::size_t n = 0;
      while (more() && n < digits_max) {
        const char32_t d = peek();
        int x = d >= '0' && d <= '9'   ? int(d - '0')
                : d >= 'a' && d <= 'f' ? int(d - 'a' + 10)
                : d >= 'A' && d <= 'F' ? int(d - 'A' + 10)
                                       : -1;
        if (x < 0) break;
        v = v * 16 + char32_t(x);
        ++at, ++n;
      }
      if (n < digits_min) fail("bad hexadecimal escape");
      if (braced && !eat('}')) fail("unterminated \\x{");
      if (v > 0x10FFFF || (v >= 0xD800 && v < 0xE000)) fail("escape outside Unicode scalar values");
      return v;
    }

    // A single-character escape (after the backslash), or 0xFFFFFFFF when it is a class escape.
    char32_t simple_escape(char32_t e) {
      switch (e) {
        case 'n':
          return '\n';
        case 'r':
          return '\r';
        case 't':
          return '\t';
        case 'f':
          return '\f';
        case 'v':
          return '\v';
        case 'a':
          return '\a';
        case 'e':
          return 0x1B;
        case '0':
          return 0;
        case 'x':
          return eat('{') ? hex(1, 8, true) : hex(1, 2, false);
        case 'u':
          return hex(4, 4, false);
        default:
          break;
      }
      if ((e >= '1' && e <= '9')) fail("backreferences are not supported");
      if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) return 0xFFFFFFFF;
      return e;  // an escaped punctuation character stands for itself
    }

    // A class escape letter applied to `cls`; false when `e` is not one.
    bool class_escape(char32_t e, CharClass& cls) {
      switch (e) {
        case 'p':
          cls.categories |= property();
          return true;
        case 'P':
          cls.not_categories |= property();
          return true;
        case 's':
          cls.space = true;
          return true;
        case 'S':
          cls.not_space = true;
          return true;
        case 'd':
          cls.categories |= 1u << unsigned(unicode::Category::Nd);
          return true;
        case 'D':
          cls.not_categories |= 1u << unsigned(unicode::Category::Nd);
          return true;
        case 'w':
          cls.word = true;
          return true;
        case 'W':
          cls.not_word = true;
          return true;
        case 'h':
          cls.ranges.insert(cls.ranges.end(), {{'0', '9'}, {'a', 'f'}, {'A', 'F'}});
          return true;
        default:
          return false;
      }
    }

    int escape() {
      if (!more()) fail("trailing backslash");
      const char32_t e = text[at++];
      switch (e) {
        case 'A':
          return assertion(Op::text_begin);
        case 'z':
          return assertion(Op::text_end);
        case 'Z':
          return assertion(Op::text_end_nl);
        case 'b':
          return assertion(Op::word_boundary);
        case 'B':
          return assertion(Op::word_boundary, true);
        default:
          break;
      }
      CharClass cls;
      if (class_escape(e, cls)) return add_set(std::move(cls));
      const char32_t c = simple_escape(e);
      if (c == 0xFFFFFFFF) fail(std::string("unsupported escape \\") + char(e));
      return literal(c);
    }

    int add_set(CharClass cls) {
      cls.fold = fold;
      cls.finish();
      re.classes_.push_back(std::move(cls));
      Node n{Kind::set};
      n.index = std::uint32_t(re.classes_.size() - 1);
      return add(std::move(n));
    }

    int set() {
      CharClass cls;
      cls.negated = eat('^');
      bool first = true;
      for (;;) {
        if (!more()) fail("unterminated character class");
        char32_t c = text[at++];
        if (c == ']' && !first) break;
        first = false;
        if (c == '[') fail("nested character classes are not supported");
        if (c == '&' && peek() == '&') fail("class intersection is not supported");
        if (c == '\\') {
          if (!more()) fail("trailing backslash");
          const char32_t e = text[at++];
          if (class_escape(e, cls)) continue;
          c = e == 'b' ? char32_t(8) : simple_escape(e);
          if (c == 0xFFFFFFFF) fail(std::string("unsupported escape \\") + char(e) + " in a class");
        }
        char32_t hi = c;
        if (peek() == '-' && at + 1 < text.size() && text[at + 1] != ']') {
          ++at;
          hi = text[at++];
          if (hi == '\\') {
            if (!more()) fail("trailing backslash");
            hi = simple_escape(text[at++]);
            if (hi == 0xFFFFFFFF) fail("a class escape cannot end a range");
          }
          if (hi < c) fail("class range out of order");
        }
        cls.ranges.push_back({c, hi});
      }
      return add_set(std::move(cls));
    }
  };

  // Whether node `i` can match the empty string.
  bool nullable(int i) const {
    const Node& n = nodes_[std::size_t(i)];
    switch (n.kind) {
      case Kind::empty:
      case Kind::look:
      case Kind::assertion:
        return true;
      case Kind::literal:
      case Kind::set:
      case Kind::any:
        return false;
      case Kind::concat:
        for (int c : n.children)
          if (!nullable(c)) return false;
        return true;
      case Kind::alternate:
        for (int c : n.children)
          if (nullable(c)) return true;
        return false;
      case Kind::repeat:
        return n.min == 0 || nullable(n.children[0]);
    }
    return true;
  }

  std::uint32_t here() const { return std::uint32_t(program_.size()); }
  void push(Instruction in) {
    if (program_.size() >= kMaxProgram)
      throw FormatError("regex /" + pattern_ + "/: the compiled program is too large (repeat counts?)");
    program_.push_back(in);
  }

  void emit_node(int i) {
    const Node n = nodes_[std::size_t(i)];  // copy: nodes_ does not grow here, but keep it simple
    switch (n.kind) {
      case Kind::empty:
        return;
      case Kind::literal:
        push({Op::literal, n.fold, std::uint32_t(n.c)});
        return;
      case Kind::set:
        push({Op::set, false, n.index});
        return;
      case Kind::any:
        push({Op::any});
        return;
      case Kind::assertion:
        push({Op(n.index), n.negative});
        return;
      case Kind::concat:
        for (int c : n.children) emit_node(c);
        return;
      case Kind::alternate: {
        std::vector<std::uint32_t> exits;
        for (std::size_t k = 0; k < n.children.size(); ++k) {
          if (k + 1 < n.children.size()) {
            const std::uint32_t split = here();
            push({Op::split});
            program_[split].a = here();
            emit_node(n.children[k]);
            exits.push_back(here());
            push({Op::jump});
            program_[split].b = here();
          } else {
            emit_node(n.children[k]);
          }
        }
        for (std::uint32_t e : exits) program_[e].a = here();
        return;
      }
      case Kind::look: {
        const std::uint32_t look = here();
        push({Op::look, n.negative});
        program_[look].a = here();
        emit_node(n.children[0]);
        push({Op::match});
        program_[look].b = here();
        return;
      }
      case Kind::repeat: {
        const int body = n.children[0];
        if (n.max != 0 && nullable(body))
          throw FormatError("regex /" + pattern_ + "/: a repeated part can match the empty string (not supported)");
        for (int k = 0; k < n.min; ++k) emit_node(body);
        const auto branch = [&](std::uint32_t split, std::uint32_t body_at, std::uint32_t skip_at) {
          program_[split].a = n.greedy ? body_at : skip_at;
          program_[split].b = n.greedy ? skip_at : body_at;
        };
        if (n.max < 0) {
          const std::uint32_t split = here();
          push({Op::split});
          const std::uint32_t body_at = here();
          emit_node(body);
          push({Op::jump, false, split});
          branch(split, body_at, here());
        } else {
          std::vector<std::uint32_t> splits;
          for (int k = n.min; k < n.max; ++k) {
            splits.push_back(here());
            push({Op::split});
            emit_node(body);
          }
          for (std::uint32_t s : splits) branch(s, s + 1, here());
        }
        return;
      }
    }
  }

  static std::size_t next_char(std::string_view text, std::size_t at) {
    if (at >= text.size()) return at + 1;
    return at + std::max<std::size_t>(1, unicode::utf8_step(text, at).valid);
  }
  static char32_t char_at(std::string_view text, std::size_t at, std::size_t& length) {
    const unsigned char b = static_cast<unsigned char>(text[at]);
    if (b < 0x80) {
      length = 1;
      return b;
    }
    length = std::max<std::size_t>(1, unicode::utf8_step(text, at).valid);
    return unicode::utf8_code_point(text, at, length);
  }
  static bool word_before(std::string_view text, std::size_t at) {
    if (at == 0) return false;
    std::size_t begin = at - 1;
    while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
    std::size_t n;
    return unicode::is_word(char_at(text, begin, n));
  }
  static bool word_after(std::string_view text, std::size_t at) {
    std::size_t n;
    return at < text.size() && unicode::is_word(char_at(text, at, n));
  }

  // Runs the program from `pc` at `at`; the end of the first match in priority order, or npos.
  std::size_t run(std::string_view text, std::size_t at, std::uint32_t pc, std::size_t& budget, Stack& stack) const {
    stack.clear();
    stack.emplace_back(pc, at);
    while (!stack.empty()) {
      auto [p, pos] = stack.back();
      stack.pop_back();
      for (;;) {
        if (budget-- == 0)
          throw FormatError("regex /" + pattern_ + "/: too much backtracking on a text of " +
                            std::to_string(text.size()) + " bytes");
        const Instruction& in = program_[p];
        bool ok = true;
        switch (in.op) {
          case Op::literal: {
            if (pos >= text.size()) {
              ok = false;
              break;
            }
            std::size_t n;
            const char32_t c = char_at(text, pos, n);
            ok = (in.fold ? unicode::simple_fold(c) : c) == char32_t(in.a);
            pos += n, ++p;
            break;
          }
          case Op::set: {
            if (pos >= text.size()) {
              ok = false;
              break;
            }
            std::size_t n;
            ok = classes_[in.a].contains(char_at(text, pos, n));
            pos += n, ++p;
            break;
          }
          case Op::any: {
            if (pos >= text.size() || text[pos] == '\n') {
              ok = false;
              break;
            }
            pos = next_char(text, pos), ++p;
            break;
          }
          case Op::split:
            stack.emplace_back(in.b, pos);
            p = in.a;
            break;
          case Op::jump:
            p = in.a;
            break;
          case Op::look: {
            Stack inner;
            const bool found = run(text, pos, in.a, budget, inner) != npos;
            ok = found != in.fold;
            p = in.b;
            break;
          }
          case Op::line_begin:
            ok = pos == 0 || text[pos - 1] == '\n', ++p;
            break;
          case Op::line_end:
            ok = pos == text.size() || text[pos] == '\n', ++p;
            break;
          case Op::text_begin:
            ok = pos == 0, ++p;
            break;
          case Op::text_end:
            ok = pos == text.size(), ++p;
            break;
          case Op::text_end_nl:
            ok = pos == text.size() || (pos + 1 == text.size() && text[pos] == '\n'), ++p;
            break;
          case Op::word_boundary:
            ok = (word_before(text, pos) != word_after(text, pos)) != in.fold, ++p;
            break;
          case Op::match:
            return pos;
        }
        if (!ok) break;
      }
    }
    return npos;
  }

  std::string pattern_;
  std::vector<Node> nodes_;
  std::vector<CharClass> classes_;
  std::vector<Instruction> program_;
};

}  // namespace tpkit
