// tpkit/jinja/builtins.hpp: what a template can do with values: Python's operators, attribute
// and item lookup (with the str, dict and list methods chat templates call), and jinja2's
// filters and tests, each with jinja2's argument names and defaults.
//
// Everything here follows jinja2 3.1 running in transformers' ImmutableSandboxedEnvironment:
// methods that modify a list or dict are not offered (the sandbox refuses them), range() stops at
// 100000 items, and tojson is transformers' json.dumps(ensure_ascii=False) rather than jinja2's
// HTML-safe one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/jinja/value.hpp"
#include "tpkit/tokenizer/unicode.hpp"

namespace tpkit::jinja {

// Using an undefined value for anything but printing, testing or iterating.
class UndefinedError : public ValueError {
 public:
  using ValueError::ValueError;
};

namespace builtins {

// The sandbox's limit on range() (jinja2's MAX_RANGE).
inline constexpr std::int64_t kMaxRange = 100000;
// tpkit's limit on one string or list a template builds ('x' * n, list * n).
inline constexpr std::size_t kMaxBuilt = kMaxStringBytes;
// The longest string a template may iterate character by character (for, list, join, ...).
inline constexpr std::size_t kMaxIteratedString = std::size_t(1) << 20;

[[noreturn]] inline void type_error(const std::string& message) { throw ValueError("TypeError: " + message); }

inline void require_defined(const Value& v) {
  if (v.is_undefined()) throw UndefinedError(v.undefined_name());
}

// ---------------------------------------------------------------------------------------------
// Strings by code point.

inline std::u32string cps(const std::string& s) { return unicode::code_points(s); }
inline std::string utf8_of(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) unicode::append_utf8(out, c);
  return out;
}
inline std::size_t length_of_string(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

inline bool is_cased_letter(char32_t c) {
  const auto cat = unicode::category(c);
  return cat == unicode::Category::Lu || cat == unicode::Category::Ll || cat == unicode::Category::Lt;
}

// Python's str.title(): a cased letter after a cased letter is lowered, any other is raised.
inline std::string py_title(const std::string& s) {
  std::string out;
  bool previous_cased = false;
  for (char32_t c : cps(s)) {
    const std::string one = unicode::utf8(c);
    out += previous_cased ? unicode::to_lower(one) : unicode::to_title(c);
    previous_cased = is_cased_letter(c);
  }
  return out;
}

inline std::string py_capitalize(const std::string& s) {
  const std::u32string c = cps(s);
  if (c.empty()) return s;
  return unicode::to_title(c[0]) + unicode::to_lower(utf8_of(std::u32string_view(c).substr(1)));
}

inline bool in_chars(char32_t c, const std::u32string* chars) {
  return chars ? chars->find(c) != std::u32string::npos : py_isspace(c);
}

// str.strip / lstrip / rstrip with an optional set of characters (None: whitespace).
inline std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::u32string set;
  const std::u32string* which = nullptr;
  if (!chars.is_undefined() && !chars.is_none()) {
    if (!chars.is_string()) type_error("strip arg must be None or str");
    set = cps(chars.str());
    which = &set;
  }
  const std::u32string c = cps(s);
  std::size_t begin = 0, end = c.size();
  if (left)
    while (begin < end && in_chars(c[begin], which)) ++begin;
  if (right)
    while (end > begin && in_chars(c[end - 1], which)) --end;
  return utf8_of(std::u32string_view(c).substr(begin, end - begin));
}

// str.split(sep=None, maxsplit=-1) and rsplit.
inline std::vector<Value> py_split(const std::string& s, const Value& sep, std::int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_undefined() || sep.is_none()) {
    std::u32string c = cps(s);
    if (from_right) std::reverse(c.begin(), c.end());
    std::size_t at = 0;
    std::int64_t splits = 0;
    while (true) {
      while (at < c.size() && py_isspace(c[at])) ++at;
      if (at == c.size()) break;
      if (maxsplit >= 0 && splits == maxsplit) {  // the remainder keeps its trailing spaces
        parts.push_back(utf8_of(std::u32string_view(c).substr(at)));
        break;
      }
      std::size_t end = at;
      while (end < c.size() && !py_isspace(c[end])) ++end;
      parts.push_back(utf8_of(std::u32string_view(c).substr(at, end - at)));
      ++splits;
      at = end;
    }
    if (from_right) {
      for (auto& p : parts) {
        std::u32string r = cps(p);
        std::reverse(r.begin(), r.end());
        p = utf8_of(r);
      }
      std::reverse(parts.begin(), parts.end());
    }
  } else {
    if (!sep.is_string()) type_error("must be str or None, not " + sep.type_name());
    const std::string& d = sep.str();
    if (d.empty()) throw ValueError("ValueError: empty separator");
    if (!from_right) {
      std::size_t at = 0;
      std::int64_t splits = 0;
      for (std::size_t hit; (maxsplit < 0 || splits < maxsplit) && (hit = s.find(d, at)) != std::string::npos;
           ++splits) {
        parts.push_back(s.substr(at, hit - at));
        at = hit + d.size();
      }
      parts.push_back(s.substr(at));
    } else {
      std::size_t end = s.size();
      std::int64_t splits = 0;
      while (maxsplit < 0 || splits < maxsplit) {
        if (end < d.size()) break;
        const std::size_t hit = s.rfind(d, end - d.size());
        if (hit == std::string::npos) break;
        parts.push_back(s.substr(hit + d.size(), end - hit - d.size()));
        end = hit;
        ++splits;
      }
      parts.push_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
  }
  std::vector<Value> out;
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

inline std::vector<Value> py_splitlines(const std::string& s, bool keepends) {
  const std::u32string c = cps(s);
  std::vector<Value> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    const char32_t x = c[i];
    const bool is_break = x == '\n' || x == '\r' || x == 0x0B || x == 0x0C || x == 0x1C || x == 0x1D || x == 0x1E ||
                          x == 0x85 || x == 0x2028 || x == 0x2029;
    if (!is_break) continue;
    std::size_t end = i + 1;
    if (x == '\r' && i + 1 < c.size() && c[i + 1] == '\n') end = i + 2;
    out.emplace_back(utf8_of(std::u32string_view(c).substr(start, (keepends ? end : i) - start)));
    start = end;
    i = end - 1;
  }
  if (start < c.size()) out.emplace_back(utf8_of(std::u32string_view(c).substr(start)));
  return out;
}

inline std::string py_replace(const std::string& s, const std::string& old, const std::string& with,
                              std::int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` before every code point and at the end.
    std::int64_t done = 0;
    for (std::size_t at = 0; at < s.size();) {
      if (count < 0 || done < count) out += with, ++done;
      const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(s, at).valid);
      out.append(s, at, n);
      at += n;
    }
    if (count < 0 || done < count) out += with;
    return out;
  }
  std::size_t at = 0;
  std::int64_t done = 0;
  for (std::size_t hit; (count < 0 || done < count) && (hit = s.find(old, at)) != std::string::npos; ++done) {
    out.append(s, at, hit - at);
    out += with;
    at = hit + old.size();
    if (out.size() > kMaxBuilt) throw ValueError("string too long");
  }
  out.append(s, at);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Arguments.

// The argument bound to parameter `index` / `name`, or `fallback`.
inline Value arg(const Arguments& a, std::size_t index, std::string_view name, Value fallback = Value()) {
  if (index < a.positional.size()) return a.positional[index];
  for (const auto& [n, v] : a.named)
    if (n == name) return v;
  return fallback;
}

// Refuses more positional arguments than `names`, unknown names and a parameter given twice.
inline void check_arguments(const Arguments& a, const std::string& who, std::initializer_list<std::string_view> names) {
  if (a.positional.size() > names.size())
    type_error(who + "() takes at most " + std::to_string(names.size()) + " arguments (" +
               std::to_string(a.positional.size()) + " given)");
  for (const auto& [n, v] : a.named) {
    const auto it = std::find(names.begin(), names.end(), n);
    if (it == names.end()) type_error(who + "() got an unexpected keyword argument '" + n + "'");
    if (std::size_t(it - names.begin()) < a.positional.size())
      type_error(who + "() got multiple values for argument '" + n + "'");
  }
}

inline std::int64_t as_int(const Value& v, const std::string& what) {
  if (v.kind() == Value::Kind::integer || v.kind() == Value::Kind::boolean) return v.integer();
  type_error(what + " must be an integer, not " + v.type_name());
}

// ---------------------------------------------------------------------------------------------
// Iteration and lookup.

inline std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
      return {};
    case Value::Kind::list:
    case Value::Kind::tuple:
      return v.items();
    case Value::Kind::dict: {
      std::vector<Value> keys;
      for (const auto& [k, x] : v.entries()) keys.push_back(k);
      return keys;
    }
    case Value::Kind::string: {
      // A Value per character is heavy; a longer string is not something a chat template walks.
      if (v.str().size() > kMaxIteratedString) throw ValueError("MemoryError: iterating a string over 1 MiB");
      std::vector<Value> out;
      for (char32_t c : cps(v.str())) out.emplace_back(unicode::utf8(c));
      return out;
    }
    default:
      type_error("'" + v.type_name() + "' object is not iterable");
  }
}

inline std::int64_t length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined:
      return 0;
    case Value::Kind::string:
      return std::int64_t(length_of_string(v.str()));
    case Value::Kind::list:
    case Value::Kind::tuple:
      return std::int64_t(v.items().size());
    case Value::Kind::dict:
      return std::int64_t(v.entries().size());
    default:
      type_error("object of type '" + v.type_name() + "' has no len()");
  }
}

inline Value method(const Value& self, const std::string& name);

inline std::string object_name(const Value& v) {
  return v.is_undefined() ? "Undefined" : "'" + v.type_name() + " object'";
}

inline Value missing_attribute(const Value& obj, const std::string& name) {
  return Value::undefined(object_name(obj) + " has no attribute '" + name + "'");
}

// obj.name: a method or attribute first, then obj["name"] (jinja2's Environment.getattr).
inline Value get_attribute(const Value& obj, const std::string& name) {
  require_defined(obj);
  if (obj.kind() == Value::Kind::name_space) {
    const Value* found = obj.find(Value(name));
    return found ? *found : missing_attribute(obj, name);
  }
  if (obj.is_group() && (name == "grouper" || name == "list")) return obj.items()[name == "grouper" ? 0 : 1];
  if (obj.is_number() && (name == "real" || name == "imag")) {
    if (name == "imag") return obj.kind() == Value::Kind::floating ? Value(0.0) : Value(0);
    return obj.kind() == Value::Kind::boolean ? Value(obj.integer()) : obj;
  }
  Value m = method(obj, name);
  if (!m.is_undefined()) return m;
  if (obj.kind() == Value::Kind::dict) {
    const Value* found = obj.find(Value(name));
    if (found) return *found;
  }
  return missing_attribute(obj, name);
}

// Python's index normalisation for a sequence of `size`.
inline bool normalise_index(std::int64_t& i, std::size_t size) {
  if (i < 0) i += std::int64_t(size);
  return i >= 0 && i < std::int64_t(size);
}

// obj[key]: the item first, then an attribute for a string key (jinja2's Environment.getitem).
inline Value get_item(const Value& obj, const Value& key) {
  require_defined(obj);
  switch (obj.kind()) {
    case Value::Kind::dict:
    case Value::Kind::name_space: {
      if (key.is_undefined()) require_defined(key);
      const Value* found = obj.find(key);
      if (found) return *found;
      break;
    }
    case Value::Kind::list:
    case Value::Kind::tuple:
      if (key.kind() == Value::Kind::integer || key.kind() == Value::Kind::boolean) {
        std::int64_t i = key.integer();
        if (normalise_index(i, obj.items().size())) return obj.items()[std::size_t(i)];
        return Value::undefined(object_name(obj) + " has no element " + key.repr());
      }
      break;
    case Value::Kind::string:
      if (key.kind() == Value::Kind::integer || key.kind() == Value::Kind::boolean) {
        const std::u32string c = cps(obj.str());
        std::int64_t i = key.integer();
        if (normalise_index(i, c.size())) return Value(unicode::utf8(c[std::size_t(i)]));
        return Value::undefined(object_name(obj) + " has no element " + key.repr());
      }
      break;
    default:
      break;
  }
  if (key.is_string()) return get_attribute(obj, key.str());
  return Value::undefined(object_name(obj) + " has no element " + key.repr());
}

// obj[start:stop:step] with Python's clamping.
inline Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  require_defined(obj);
  const auto bound = [](const Value& v, const char* what) -> std::optional<std::int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (v.kind() != Value::Kind::integer && v.kind() != Value::Kind::boolean)
      type_error(std::string("slice ") + what + " must be an integer or None");
    return v.integer();
  };
  const std::int64_t step = bound(step_v, "step").value_or(1);
  if (step == 0) throw ValueError("ValueError: slice step cannot be zero");
  const auto pick = [&](std::size_t size, auto&& take) {
    const std::int64_t n = std::int64_t(size);
    const auto clamp = [&](std::optional<std::int64_t> b, std::int64_t fallback) {
      if (!b) return fallback;
      std::int64_t i = *b;
      if (i < 0) i += n;
      if (step > 0) return std::clamp<std::int64_t>(i, 0, n);
      return std::clamp<std::int64_t>(i, -1, n - 1);
    };
    const std::int64_t from = clamp(bound(start_v, "start"), step > 0 ? 0 : n - 1);
    const std::int64_t to = clamp(bound(stop_v, "stop"), step > 0 ? n : -1);
    // Counted first: stepping past the end could overflow (a step of 2**63 - 1).
    const std::uint64_t stride = step > 0 ? std::uint64_t(step) : std::uint64_t(0) - std::uint64_t(step);
    const std::int64_t span = step > 0 ? to - from : from - to;
    const std::uint64_t count = span > 0 ? (std::uint64_t(span) - 1) / stride + 1 : 0;
    for (std::uint64_t k = 0; k < count; ++k) take(std::size_t(from + std::int64_t(k) * step));
  };
  if (obj.is_string()) {
    const std::u32string c = cps(obj.str());
    std::u32string out;
    pick(c.size(), [&](std::size_t i) { out += c[i]; });
    return Value(utf8_of(out));
  }
  if (obj.is_sequence()) {
    std::vector<Value> out;
    pick(obj.items().size(), [&](std::size_t i) { out.push_back(obj.items()[i]); });
    return Value::list(std::move(out), obj.kind() == Value::Kind::tuple);
  }
  // jinja2's getitem turns the TypeError into an undefined value (`none[:2]` prints nothing).
  return Value::undefined("'" + obj.type_name() + "' object is not subscriptable");
}

// ---------------------------------------------------------------------------------------------
// Operators.

inline bool is_int(const Value& v) { return v.kind() == Value::Kind::integer || v.kind() == Value::Kind::boolean; }

[[noreturn]] inline void operand_error(const char* op, const Value& a, const Value& b) {
  type_error(std::string("unsupported operand type(s) for ") + op + ": '" + a.type_name() + "' and '" + b.type_name() +
             "'");
}

[[noreturn]] inline void overflow() {
  throw ValueError("OverflowError: integer outside 64 bits (tpkit's template integers are 64-bit)");
}
inline std::int64_t checked_add(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_add_overflow(a, b, &r)) overflow();
  return r;
}
inline std::int64_t checked_sub(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) overflow();
  return r;
}
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) overflow();
  return r;
}

inline Value repeat(const Value& seq, std::int64_t times) {
  if (times <= 0) return seq.is_string() ? Value(std::string()) : Value::list({}, seq.kind() == Value::Kind::tuple);
  if (seq.is_string()) {
    if (seq.str().size() * std::size_t(times) > kMaxBuilt || std::size_t(times) > kMaxBuilt)
      throw ValueError("MemoryError: string too long");
    std::string out;
    for (std::int64_t i = 0; i < times; ++i) out += seq.str();
    return Value(std::move(out));
  }
  if (seq.items().size() * std::size_t(times) > kMaxBuilt / 64 || std::size_t(times) > kMaxBuilt)
    throw ValueError("MemoryError: list too long");
  std::vector<Value> out;
  for (std::int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out), seq.kind() == Value::Kind::tuple);
}

// Python's divmod on floats (floor division and a modulo with the divisor's sign).
inline std::pair<double, double> float_divmod(double x, double y) {
  if (y == 0) throw ValueError("ZeroDivisionError: float division by zero");
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  double floordiv;
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, x / y);
  }
  return {floordiv, mod};
}

inline std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Python's printf-style `format % values`: %s %r %a %d %i %u %f %F %e %E %g %G %x %X %o %c %%,
// with flags, width, precision (or *), and %(name)s from a mapping.
inline Value percent_format(const Value& format, const Value& values) {
  std::vector<Value> positional;
  const bool by_name = values.kind() == Value::Kind::dict;
  if (values.kind() == Value::Kind::tuple)
    positional = values.items();
  else
    positional.push_back(values);
  std::size_t next = 0;
  bool used_name = false;
  const auto take = [&]() -> Value {
    if (next >= positional.size()) type_error("not enough arguments for format string");
    return positional[next++];
  };
  const std::string& f = format.str();
  std::string out;
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') {
      out += f[i];
      continue;
    }
    if (++i >= f.size()) throw ValueError("ValueError: incomplete format");
    Value named;
    bool has_named = false;
    if (f[i] == '(') {
      const std::size_t close = f.find(')', i);
      if (close == std::string::npos) throw ValueError("ValueError: incomplete format key");
      if (!by_name) type_error("format requires a mapping");
      const Value* found = values.find(Value(f.substr(i + 1, close - i - 1)));
      if (!found) throw ValueError("KeyError: " + Value(f.substr(i + 1, close - i - 1)).repr());
      named = *found;
      has_named = used_name = true;
      i = close + 1;
    }
    std::string flags;
    while (i < f.size() && std::string_view("-+ #0").find(f[i]) != std::string_view::npos) flags += f[i++];
    std::string width, precision;
    bool has_precision = false;
    if (i < f.size() && f[i] == '*') width = std::to_string(as_int(take(), "* width")), ++i;
    while (i < f.size() && std::isdigit(static_cast<unsigned char>(f[i]))) width += f[i++];
    if (i < f.size() && f[i] == '.') {
      has_precision = true;
      ++i;
      if (i < f.size() && f[i] == '*') precision = std::to_string(as_int(take(), "* precision")), ++i;
      while (i < f.size() && std::isdigit(static_cast<unsigned char>(f[i]))) precision += f[i++];
      if (precision.empty()) precision = "0";
    }
    while (i < f.size() && (f[i] == 'h' || f[i] == 'l' || f[i] == 'L')) ++i;
    if (i >= f.size()) throw ValueError("ValueError: incomplete format");
    const char conversion = f[i];
    if (conversion == '%') {
      out += '%';
      continue;
    }
    if (width.size() > 6 || precision.size() > 6) throw ValueError("ValueError: width or precision too big");
    const Value v = has_named ? named : take();
    std::string piece;
    const std::string spec = "%" + flags + width + (has_precision ? "." + precision : "");
    char buffer[1100];
    switch (conversion) {
      case 's':
      case 'r':
      case 'a': {
        std::string text = conversion == 's' ? v.to_string() : v.repr();
        if (has_precision) {
          const std::u32string c = cps(text);
          text = utf8_of(std::u32string_view(c).substr(0, std::size_t(std::stoll(precision))));
        }
        const std::size_t n = length_of_string(text), w = width.empty() ? 0 : std::size_t(std::stoll(width));
        if (n < w)
          text = flags.find('-') != std::string::npos ? text + std::string(w - n, ' ') : std::string(w - n, ' ') + text;
        piece = text;
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
      case 'c': {
        if (conversion == 'c' && v.is_string()) {
          if (length_of_string(v.str()) != 1)
            type_error("%c requires an int or a unicode character, not a string of another length");
          piece = v.str();
          break;
        }
        if (!v.is_number())
          type_error(std::string("%") + conversion + " format: a real number is required, not " + v.type_name());
        if (conversion == 'c') {
          const std::int64_t cp = as_int(v, "%c");
          if (cp < 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
            throw ValueError("OverflowError: %c arg not in range(0x110000) or a surrogate");
          piece = unicode::utf8(char32_t(cp));
          break;
        }
        if (!is_int(v) && !(std::abs(v.floating()) < 9.2e18)) overflow();
        const long long n = is_int(v) ? v.integer() : (long long)std::trunc(v.floating());
        const char c = conversion == 'i' || conversion == 'u' ? 'd' : conversion;
        if (c == 'd') {
          std::snprintf(buffer, sizeof buffer, (spec + "ll" + c).c_str(), n);
          piece = buffer;
        } else {  // Python prints a sign and the magnitude, C the two's complement bits
          const unsigned long long magnitude = n < 0 ? 0ull - (unsigned long long)n : (unsigned long long)n;
          std::snprintf(buffer, sizeof buffer, (spec + "ll" + c).c_str(), magnitude);
          piece = (n < 0 ? "-" : "") + std::string(buffer);
        }
        if (c == 'o' && flags.find('#') != std::string::npos) {  // Python's alternate octal is 0o
          const std::size_t zero = piece.find('0');
          if (zero != std::string::npos) piece.insert(zero + 1, "o");
        }
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!v.is_number()) type_error("must be real number, not " + v.type_name());
        std::snprintf(buffer, sizeof buffer, (spec + conversion).c_str(), v.floating());
        piece = buffer;
        break;
      default:
        throw ValueError(std::string("ValueError: unsupported format character '") + conversion + "'");
    }
    out +=
        format.is_markup() && (conversion == 's' || conversion == 'r') && !v.is_markup() ? html_escape(piece) : piece;
    if (out.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
  }
  if (!by_name && next < positional.size()) type_error("not all arguments converted during string formatting");
  if (by_name && !used_name && next == 0 && values.entries().size() > 0) {
    // Python: a mapping with no %(name)s is fine
  }
  return format.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
}

inline Value binary(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") {  // undefined joins as ""
    std::string joined = a.to_string();
    const std::string right = b.to_string();
    if (joined.size() + right.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
    return Value(joined + right);
  }
  require_defined(a);
  require_defined(b);
  const bool ints = is_int(a) && is_int(b);
  const bool numbers = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) return Value(checked_add(a.integer(), b.integer()));
    if (numbers) return Value(a.floating() + b.floating());
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
      if (a.is_markup() || b.is_markup())  // Markup escapes the plain side
        return Value::markup((a.is_markup() ? a.str() : html_escape(a.str())) +
                             (b.is_markup() ? b.str() : html_escape(b.str())));
      return Value(a.str() + b.str());
    }
    if (a.is_sequence() && a.kind() == b.kind()) {
      if (a.items().size() + b.items().size() > kMaxBuilt / 64) throw ValueError("MemoryError: list too long");
      std::vector<Value> out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(out), a.kind() == Value::Kind::tuple);
    }
    if (a.is_string()) type_error("can only concatenate str (not \"" + b.type_name() + "\") to str");
    operand_error("+", a, b);
  }
  if (op == "-") {
    if (ints) return Value(checked_sub(a.integer(), b.integer()));
    if (numbers) return Value(a.floating() - b.floating());
    operand_error("-", a, b);
  }
  if (op == "*") {
    if (ints) return Value(checked_mul(a.integer(), b.integer()));
    if (numbers) return Value(a.floating() * b.floating());
    if ((a.is_string() || a.is_sequence()) && is_int(b)) return repeat(a, b.integer());
    if ((b.is_string() || b.is_sequence()) && is_int(a)) return repeat(b, a.integer());
    type_error("can't multiply sequence by non-int of type '" + b.type_name() + "'");
  }
  if (op == "/") {
    if (!numbers) operand_error("/", a, b);
    if (b.floating() == 0) throw ValueError("ZeroDivisionError: division by zero");
    return Value(a.floating() / b.floating());
  }
  if (op == "//" || op == "%") {
    if (!numbers) {
      if (op == "%" && a.is_string()) return percent_format(a, b);
      operand_error(op.c_str(), a, b);
    }
    if (ints) {
      const std::int64_t x = a.integer(), y = b.integer();
      if (y == 0) throw ValueError("ZeroDivisionError: integer division or modulo by zero");
      if (x == std::numeric_limits<std::int64_t>::min() && y == -1) overflow();
      std::int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) m += y, q -= 1;
      return Value(op == "//" ? q : m);
    }
    const auto [q, m] = float_divmod(a.floating(), b.floating());
    return Value(op == "//" ? q : m);
  }
  if (op == "**") {
    if (!numbers) operand_error("** or pow()", a, b);
    if (ints && b.integer() >= 0) {
      std::int64_t result = 1, base = a.integer();
      for (std::int64_t e = b.integer(); e > 0; e >>= 1) {
        if (e & 1) result = checked_mul(result, base);
        if (e > 1) base = checked_mul(base, base);
      }
      return Value(result);
    }
    if (a.floating() == 0 && b.floating() < 0)
      throw ValueError("ZeroDivisionError: 0.0 cannot be raised to a negative power");
    return Value(std::pow(a.floating(), b.floating()));
  }
  if (op == "~") return Value(a.to_string() + b.to_string());
  throw ValueError("unknown operator " + op);
}

inline bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::undefined:
      return false;
    case Value::Kind::string:
      if (!item.is_string()) type_error("'in <string>' requires string as left operand, not " + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::list:
    case Value::Kind::tuple:
      for (const Value& v : container.items())
        if (v == item) return true;
      return false;
    case Value::Kind::dict:
      return container.find(item) != nullptr;
    default:
      type_error("argument of type '" + container.type_name() + "' is not iterable");
  }
}

inline bool compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return a == b;
  if (op == "!=") return a != b;
  if (op == "in") return contains(b, a);
  if (op == "not in") return !contains(b, a);
  require_defined(a);
  require_defined(b);
  if (op == "<") return Value::less(a, b);
  if (op == ">") return Value::less(b, a);
  if (op == "<=") return !Value::less(b, a) && (Value::less(a, b) || a == b || (a.is_number() && b.is_number()));
  if (op == ">=") return !Value::less(a, b) && (Value::less(b, a) || a == b || (a.is_number() && b.is_number()));
  throw ValueError("unknown comparison " + op);
}

// ---------------------------------------------------------------------------------------------
// Methods of str, dict and list (bound to their object).

// Python's str.islower() / isupper(): some cased character, and every cased one in that case
// (titlecase letters count as neither).
inline bool py_is_case(const std::string& s, bool upper) {
  bool cased = false;
  for (char32_t c : cps(s)) {
    const bool is_upper = unicode::is_python_upper(c), is_lower = unicode::is_python_lower(c);
    if (unicode::category(c) == unicode::Category::Lt || (upper ? is_lower : is_upper)) return false;
    cased |= upper ? is_upper : is_lower;
  }
  return cased;
}

inline Value bound(const Value& self, const std::string& name, Value (*f)(const Value&, Arguments&)) {
  return Value::function(name, [self, f](Arguments& a) { return f(self, a); });
}

inline std::int64_t code_point_index(const std::string& s, std::size_t byte) {
  return std::int64_t(length_of_string(s.substr(0, byte)));
}

// Python's format(value, spec) for str, int, bool and float: [[fill]align][sign][#][0][width]
// [,|_][.precision][type], types s d n b o x X c e E f F g G %.
inline std::string format_value(const Value& v, const std::string& spec) {
  std::size_t at = 0;
  const std::u32string c = cps(spec);
  std::string fill = " ";
  char align = 0, sign = '-', type = 0, grouping = 0;
  bool alternate = false;
  std::int64_t width = -1, precision = -1;
  const auto is_align = [](char32_t x) { return x == '<' || x == '>' || x == '^' || x == '='; };
  if (c.size() >= 2 && is_align(c[1])) {
    fill = unicode::utf8(c[0]);
    align = char(c[1]);
    at = 2;
  } else if (!c.empty() && is_align(c[0])) {
    align = char(c[0]);
    at = 1;
  }
  if (at < c.size() && (c[at] == '+' || c[at] == '-' || c[at] == ' ')) sign = char(c[at++]);
  if (at < c.size() && c[at] == '#') alternate = true, ++at;
  if (at < c.size() && c[at] == '0') {
    if (!align) fill = "0", align = '=';
    ++at;
  }
  const auto number = [&](std::int64_t& out) {
    std::int64_t n = -1;
    while (at < c.size() && c[at] >= '0' && c[at] <= '9') {
      n = (n < 0 ? 0 : n) * 10 + (c[at++] - '0');
      if (n > (1 << 20)) throw ValueError("ValueError: format width or precision too big");
    }
    out = n;
  };
  number(width);
  if (at < c.size() && (c[at] == ',' || c[at] == '_')) grouping = char(c[at++]);
  if (at < c.size() && c[at] == '.') {
    ++at;
    number(precision);
    if (precision < 0) throw ValueError("ValueError: Format specifier missing precision");
  }
  if (at < c.size()) type = char(c[at++]);
  if (at != c.size()) throw ValueError("ValueError: Invalid format specifier '" + spec + "'");

  std::string body, prefix;
  const bool integral = is_int(v) && v.kind() != Value::Kind::floating;
  if (v.is_string() || (!v.is_number() && !type)) {
    if (type && type != 's')
      throw ValueError(std::string("ValueError: Unknown format code '") + type + "' for object of type '" +
                       v.type_name() + "'");
    body = v.to_string();
    if (precision >= 0) body = utf8_of(std::u32string_view(cps(body)).substr(0, std::size_t(precision)));
    if (!align) align = '<';
  } else if (!v.is_number()) {
    throw ValueError(std::string("ValueError: Unknown format code '") + type + "' for object of type '" +
                     v.type_name() + "'");
  } else if (integral && (!type || type == 'd' || type == 'n' || type == 'b' || type == 'o' || type == 'x' ||
                          type == 'X' || type == 'c')) {
    if (v.kind() == Value::Kind::boolean && !type && spec.empty()) return v.to_string();
    if (precision >= 0) throw ValueError("ValueError: Precision not allowed in integer format specifier");
    const std::int64_t n = v.integer();
    if (type == 'c') {
      if (n < 0 || n > 0x10FFFF || (n >= 0xD800 && n < 0xE000))
        throw ValueError("OverflowError: %c arg not in range(0x110000)");
      body = unicode::utf8(char32_t(n));
    } else {
      unsigned long long m = n < 0 ? 0ull - (unsigned long long)n : (unsigned long long)n;
      const int base = type == 'b' ? 2 : type == 'o' ? 8 : (type == 'x' || type == 'X') ? 16 : 10;
      const char* digits = type == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
      do {
        body.insert(body.begin(), digits[m % unsigned(base)]);
        m /= unsigned(base);
      } while (m);
      if (grouping) {
        const std::size_t every = base == 10 ? 3 : 4;
        for (std::size_t k = body.size(); k > every; k -= every) body.insert(k - every, 1, grouping);
      }
      if (alternate && base != 10) prefix = base == 2 ? "0b" : base == 8 ? "0o" : type == 'X' ? "0X" : "0x";
      if (n < 0)
        prefix = "-" + prefix;
      else if (sign != '-')
        prefix = std::string(1, sign) + prefix;
    }
    if (!align) align = '>';
  } else {
    double x = v.floating();
    if (type && std::string("eEfFgG%").find(type) == std::string::npos)
      throw ValueError(std::string("ValueError: Unknown format code '") + type + "' for object of type 'float'");
    char buffer[1200];
    if (!type && precision < 0) {
      body = Value::float_repr(std::abs(x));
      if (std::isnan(x)) body = "nan";
    } else {
      const bool percent = type == '%';
      if (percent) x *= 100;
      const char conversion = !type ? 'g' : percent ? 'f' : type;
      const std::string c_spec =
          std::string("%") + (alternate ? "#" : "") + "." + std::to_string(precision < 0 ? 6 : precision) + conversion;
      std::snprintf(buffer, sizeof buffer, c_spec.c_str(), std::abs(x));
      body = buffer;
      if (percent) body += "%";
    }
    if (grouping) {
      std::size_t end = body.find_first_not_of("0123456789");
      if (end == std::string::npos) end = body.size();
      for (std::size_t k = end; k > 3; k -= 3) body.insert(k - 3, 1, grouping);
    }
    if (std::signbit(x) && !std::isnan(x))
      prefix = "-";
    else if (sign != '-')
      prefix = std::string(1, sign);
    if (!align) align = '>';
  }
  const std::int64_t length = std::int64_t(length_of_string(prefix + body));
  if (width <= length) return prefix + body;
  std::string pad;
  for (std::int64_t k = 0; k < width - length; ++k) pad += fill;
  if (align == '<') return prefix + body + pad;
  if (align == '=') return prefix + pad + body;
  if (align == '^') {
    const std::int64_t left = (width - length) / 2;
    std::string l, r;
    for (std::int64_t k = 0; k < left; ++k) l += fill;
    for (std::int64_t k = left; k < width - length; ++k) r += fill;
    return l + prefix + body + r;
  }
  return pad + prefix + body;
}

// Python's str.format: {} and {0} and {name}, then .attr and [key], !s / !r, and :spec.
inline std::string py_format(const std::string& f, const Arguments& a) {
  std::string out;
  std::size_t automatic = 0;
  bool numbered = false, auto_numbered = false;
  for (std::size_t i = 0; i < f.size(); ++i) {
    const char ch = f[i];
    if (ch == '}') {
      if (i + 1 < f.size() && f[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      throw ValueError("ValueError: Single '}' encountered in format string");
    }
    if (ch != '{') {
      out += ch;
      continue;
    }
    if (i + 1 < f.size() && f[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const std::size_t close = f.find('}', i);
    if (close == std::string::npos) throw ValueError("ValueError: Single '{' encountered in format string");
    std::string field = f.substr(i + 1, close - i - 1);
    if (field.find('{') != std::string::npos)
      throw ValueError("ValueError: nested format fields are not supported by tpkit");
    i = close;
    std::string spec, conversion;
    if (const std::size_t colon = field.find(':'); colon != std::string::npos)
      spec = field.substr(colon + 1), field.resize(colon);
    if (const std::size_t bang = field.find('!'); bang != std::string::npos)
      conversion = field.substr(bang + 1), field.resize(bang);
    std::size_t name_end = field.find_first_of(".[");
    const std::string name = field.substr(0, name_end);
    Value v;
    if (name.empty()) {
      if (numbered)
        throw ValueError("ValueError: cannot switch from manual field specification to automatic field numbering");
      auto_numbered = true;
      if (automatic >= a.positional.size())
        throw ValueError("IndexError: Replacement index " + std::to_string(automatic) + " out of range");
      v = a.positional[automatic++];
    } else if (name.find_first_not_of("0123456789") == std::string::npos) {
      if (auto_numbered)
        throw ValueError("ValueError: cannot switch from automatic field numbering to manual field specification");
      numbered = true;
      const std::size_t index = std::size_t(std::stoull(name.substr(0, 9)));
      if (index >= a.positional.size()) throw ValueError("IndexError: Replacement index " + name + " out of range");
      v = a.positional[index];
    } else {
      bool found = false;
      for (const auto& [n, x] : a.named)
        if (n == name) v = x, found = true;
      if (!found) throw ValueError("KeyError: '" + name + "'");
    }
    while (name_end != std::string::npos && name_end < field.size()) {
      if (field[name_end] == '.') {
        const std::size_t next = field.find_first_of(".[", name_end + 1);
        v = get_attribute(
            v, field.substr(name_end + 1, next == std::string::npos ? std::string::npos : next - name_end - 1));
        name_end = next;
      } else {
        const std::size_t end = field.find(']', name_end);
        if (end == std::string::npos) throw ValueError("ValueError: Missing ']' in format string");
        const std::string key = field.substr(name_end + 1, end - name_end - 1);
        const bool digits = !key.empty() && key.find_first_not_of("0123456789") == std::string::npos;
        v = get_item(v, digits ? Value(std::int64_t(std::stoll(key.substr(0, 18)))) : Value(key));
        name_end = end + 1;
      }
      if (v.is_undefined()) throw ValueError("AttributeError: " + v.undefined_name());
    }
    if (conversion == "r" || conversion == "a")
      v = Value(v.repr());
    else if (conversion == "s")
      v = Value(v.to_string());
    else if (!conversion.empty())
      throw ValueError("ValueError: Unknown conversion specifier " + conversion);
    out += format_value(v, spec);
    if (out.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
  }
  return out;
}

// s[start:end] by code points (None: open), for str methods' optional start and end.
inline std::string code_point_range(const std::string& s, const Value& start, const Value& end) {
  if ((start.is_none() || start.is_undefined()) && (end.is_none() || end.is_undefined())) return s;
  return slice(Value(s), start, end, Value::none()).str();
}

// str.ljust / rjust / center / zfill.
inline std::string py_pad(const std::string& s, std::int64_t width, const Value& fill_v, char how) {
  std::string fill = " ";
  if (!fill_v.is_undefined()) {
    if (!fill_v.is_string() || length_of_string(fill_v.str()) != 1)
      type_error("The fill character must be exactly one character long");
    fill = fill_v.str();
  }
  const std::int64_t n = std::int64_t(length_of_string(s));
  width = std::min<std::int64_t>(width, 1 << 20);
  if (width <= n) return s;
  const std::int64_t pad = width - n;
  std::int64_t left = how == 'l' ? 0 : how == 'r' || how == 'z' ? pad : pad / 2 + (pad & width & 1);
  const auto repeat_fill = [&](std::int64_t k) {
    std::string out;
    for (std::int64_t i = 0; i < k; ++i) out += fill;
    return out;
  };
  if (how == 'z') {
    const bool sign = !s.empty() && (s[0] == '-' || s[0] == '+');
    return (sign ? s.substr(0, 1) : "") + std::string(std::size_t(pad), '0') + (sign ? s.substr(1) : s);
  }
  return repeat_fill(left) + s + repeat_fill(pad - left);
}

inline Value method(const Value& self, const std::string& name) {
  using K = Value::Kind;
  if (self.kind() == K::string) {
    static const std::pair<const char*, Value (*)(const Value&, Arguments&)> kStr[] = {
        {"startswith",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "startswith", {"prefix", "start", "end"});
           const Value p = arg(a, 0, "prefix");
           const std::string text =
               code_point_range(s.str(), arg(a, 1, "start", Value::none()), arg(a, 2, "end", Value::none()));
           const auto one = [&](const Value& x) {
             if (!x.is_string()) type_error("startswith first arg must be str or a tuple of str, not " + x.type_name());
             return text.compare(0, x.str().size(), x.str()) == 0;
           };
           if (p.kind() == K::tuple) return Value(std::any_of(p.items().begin(), p.items().end(), one));
           return Value(one(p));
         }},
        {"endswith",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "endswith", {"suffix", "start", "end"});
           const Value p = arg(a, 0, "suffix");
           const std::string text =
               code_point_range(s.str(), arg(a, 1, "start", Value::none()), arg(a, 2, "end", Value::none()));
           const auto one = [&](const Value& x) {
             if (!x.is_string()) type_error("endswith first arg must be str or a tuple of str, not " + x.type_name());
             return text.size() >= x.str().size() &&
                    text.compare(text.size() - x.str().size(), x.str().size(), x.str()) == 0;
           };
           if (p.kind() == K::tuple) return Value(std::any_of(p.items().begin(), p.items().end(), one));
           return Value(one(p));
         }},
        {"strip",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "strip", {"chars"});
           return Value(py_strip(s.str(), arg(a, 0, "chars"), true, true));
         }},
        {"lstrip",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "lstrip", {"chars"});
           return Value(py_strip(s.str(), arg(a, 0, "chars"), true, false));
         }},
        {"rstrip",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "rstrip", {"chars"});
           return Value(py_strip(s.str(), arg(a, 0, "chars"), false, true));
         }},
        {"split",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "split", {"sep", "maxsplit"});
           return Value::list(
               py_split(s.str(), arg(a, 0, "sep"), as_int(arg(a, 1, "maxsplit", Value(-1)), "maxsplit"), false));
         }},
        {"rsplit",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "rsplit", {"sep", "maxsplit"});
           return Value::list(
               py_split(s.str(), arg(a, 0, "sep"), as_int(arg(a, 1, "maxsplit", Value(-1)), "maxsplit"), true));
         }},
        {"splitlines",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "splitlines", {"keepends"});
           return Value::list(py_splitlines(s.str(), arg(a, 0, "keepends", Value(false)).truthy()));
         }},
        {"upper",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "upper", {});
           return Value(unicode::to_upper(s.str()));
         }},
        {"lower",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "lower", {});
           return Value(unicode::to_lower(s.str()));
         }},
        {"title",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "title", {});
           return Value(py_title(s.str()));
         }},
        {"capitalize",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "capitalize", {});
           return Value(py_capitalize(s.str()));
         }},
        {"replace",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "replace", {"old", "new", "count"});
           const Value old = arg(a, 0, "old"), with = arg(a, 1, "new");
           if (!old.is_string() || !with.is_string()) type_error("replace() arguments must be str");
           return Value(py_replace(s.str(), old.str(), with.str(), as_int(arg(a, 2, "count", Value(-1)), "count")));
         }},
        {"find",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "find", {"sub"});
           const Value sub = arg(a, 0, "sub");
           if (!sub.is_string()) type_error("must be str, not " + sub.type_name());
           const std::size_t at = s.str().find(sub.str());
           return Value(at == std::string::npos ? std::int64_t(-1) : code_point_index(s.str(), at));
         }},
        {"rfind",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "rfind", {"sub"});
           const Value sub = arg(a, 0, "sub");
           if (!sub.is_string()) type_error("must be str, not " + sub.type_name());
           const std::size_t at = s.str().rfind(sub.str());
           return Value(at == std::string::npos ? std::int64_t(-1) : code_point_index(s.str(), at));
         }},
        {"count",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "count", {"sub"});
           const Value sub = arg(a, 0, "sub");
           if (!sub.is_string()) type_error("must be str, not " + sub.type_name());
           if (sub.str().empty()) return Value(std::int64_t(length_of_string(s.str())) + 1);
           std::int64_t n = 0;
           for (std::size_t at = s.str().find(sub.str()); at != std::string::npos;
                at = s.str().find(sub.str(), at + sub.str().size()))
             ++n;
           return Value(n);
         }},
        {"join",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "join", {"iterable"});
           std::string out;
           bool first = true;
           for (const Value& v : iterate(arg(a, 0, "iterable"))) {
             if (!v.is_string()) type_error("sequence item: expected str instance, " + v.type_name() + " found");
             if (!first) out += s.str();
             out += v.str();
             first = false;
           }
           return Value(std::move(out));
         }},
        {"isdigit",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "isdigit", {});
           const std::u32string c = cps(s.str());
           return Value(!c.empty() && std::all_of(c.begin(), c.end(), [](char32_t x) {
             return unicode::category(x) == unicode::Category::Nd || (x >= 0xB2 && x <= 0xB3) || x == 0xB9;
           }));
         }},
        {"isalpha",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "isalpha", {});
           const std::u32string c = cps(s.str());
           return Value(!c.empty() && std::all_of(c.begin(), c.end(),
                                                  [](char32_t x) { return unicode::is_letter(unicode::category(x)); }));
         }},
        {"isalnum",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "isalnum", {});
           const std::u32string c = cps(s.str());
           return Value(!c.empty() && std::all_of(c.begin(), c.end(), [](char32_t x) {
             return unicode::is_letter(unicode::category(x)) || unicode::is_number(unicode::category(x));
           }));
         }},
        {"ljust",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "ljust", {"width", "fillchar"});
           return Value(py_pad(s.str(), as_int(arg(a, 0, "width"), "width"), arg(a, 1, "fillchar"), 'l'));
         }},
        {"rjust",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "rjust", {"width", "fillchar"});
           return Value(py_pad(s.str(), as_int(arg(a, 0, "width"), "width"), arg(a, 1, "fillchar"), 'r'));
         }},
        {"center",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "center", {"width", "fillchar"});
           return Value(py_pad(s.str(), as_int(arg(a, 0, "width"), "width"), arg(a, 1, "fillchar"), 'c'));
         }},
        {"zfill",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "zfill", {"width"});
           return Value(py_pad(s.str(), as_int(arg(a, 0, "width"), "width"), Value(), 'z'));
         }},
        {"format", [](const Value& s, Arguments& a) { return Value(py_format(s.str(), a)); }},
        {"isupper",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "isupper", {});
           return Value(py_is_case(s.str(), true));
         }},
        {"islower",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "islower", {});
           return Value(py_is_case(s.str(), false));
         }},
        {"isspace",
         [](const Value& s, Arguments& a) {
           check_arguments(a, "isspace", {});
           const std::u32string c = cps(s.str());
           return Value(!c.empty() && std::all_of(c.begin(), c.end(), [](char32_t x) { return py_isspace(x); }));
         }},
    };
    for (const auto& [n, f] : kStr)
      if (name == n) return bound(self, name, f);
    return Value();
  }
  if (self.kind() == K::dict) {
    static const std::pair<const char*, Value (*)(const Value&, Arguments&)> kDict[] = {
        {"items",
         [](const Value& d, Arguments& a) {
           check_arguments(a, "items", {});
           std::vector<Value> out;
           for (const auto& [k, v] : d.entries()) out.push_back(Value::list({k, v}, true));
           return Value::list_printed_as(std::move(out), "dict_items");
         }},
        {"keys",
         [](const Value& d, Arguments& a) {
           check_arguments(a, "keys", {});
           return Value::list_printed_as(iterate(d), "dict_keys");
         }},
        {"values",
         [](const Value& d, Arguments& a) {
           check_arguments(a, "values", {});
           std::vector<Value> out;
           for (const auto& [k, v] : d.entries()) out.push_back(v);
           return Value::list_printed_as(std::move(out), "dict_values");
         }},
        {"get",
         [](const Value& d, Arguments& a) {
           check_arguments(a, "get", {"key", "default"});
           const Value* found = d.find(arg(a, 0, "key"));
           return found ? *found : arg(a, 1, "default", Value::none());
         }},
        {"copy",
         [](const Value& d, Arguments& a) {
           check_arguments(a, "copy", {});
           return Value::dict(d.entries());
         }},
    };
    for (const auto& [n, f] : kDict)
      if (name == n) return bound(self, name, f);
    static const char* const kUnsafe[] = {"clear", "pop", "popitem", "setdefault", "update"};
    for (const char* n : kUnsafe)
      if (name == n) return Value::undefined("access to attribute '" + name + "' of 'dict' object is unsafe.");
    return Value();
  }
  if (self.is_sequence()) {
    static const std::pair<const char*, Value (*)(const Value&, Arguments&)> kList[] = {
        {"count",
         [](const Value& l, Arguments& a) {
           check_arguments(a, "count", {"value"});
           const Value x = arg(a, 0, "value");
           return Value(std::int64_t(std::count(l.items().begin(), l.items().end(), x)));
         }},
        {"index",
         [](const Value& l, Arguments& a) {
           check_arguments(a, "index", {"value"});
           const Value x = arg(a, 0, "value");
           const auto it = std::find(l.items().begin(), l.items().end(), x);
           if (it == l.items().end()) throw ValueError("ValueError: " + x.repr() + " is not in list");
           return Value(std::int64_t(it - l.items().begin()));
         }},
    };
    for (const auto& [n, f] : kList)
      if (name == n) return bound(self, name, f);
    return Value();
  }
  return Value();
}

// ---------------------------------------------------------------------------------------------
// Filters and tests.

using Filter = Value (*)(const Value& subject, Arguments& args);
using Test = bool (*)(const Value& subject, Arguments& args);

inline const Filter* find_filter(std::string_view name);
inline const Test* find_test(std::string_view name);

inline Value apply_filter(const std::string& name, const Value& subject, Arguments& args) {
  const Filter* f = find_filter(name);
  if (!f) throw ValueError("no filter named '" + name + "'");
  return (*f)(subject, args);
}
inline bool apply_test(const std::string& name, const Value& subject, Arguments& args) {
  const Test* t = find_test(name);
  if (!t) throw ValueError("no test named '" + name + "'");
  return (*t)(subject, args);
}

// jinja2's attribute paths for filters ("user.name", "items.0").
inline Value attribute_path(const Value& v, const Value& path) {
  if (is_int(path)) return get_item(v, path);
  Value out = v;
  const std::string& p = path.str();
  for (std::size_t at = 0;;) {
    const std::size_t dot = p.find('.', at);
    const std::string part = p.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    std::int64_t index = 0;
    const auto r = std::from_chars(part.data(), part.data() + part.size(), index);
    out = r.ec == std::errc() && r.ptr == part.data() + part.size() ? get_item(out, Value(index))
                                                                    : get_item(out, Value(part));
    if (dot == std::string::npos) return out;
    at = dot + 1;
  }
}

inline Value lowered(const Value& v, bool case_sensitive) {
  return !case_sensitive && v.is_string() ? Value(unicode::to_lower(v.str())) : v;
}

// The sort key jinja2 builds for sort, unique, min, max and dictsort.
// `several`: "a,b" names several attributes and the key is their tuple (jinja2's sort only).
inline std::vector<Value> sort_keys(const std::vector<Value>& items, const Value& attribute, bool case_sensitive,
                                    bool several = false) {
  std::vector<Value> keys;
  std::vector<Value> paths{attribute};
  if (several && attribute.is_string() && attribute.str().find(',') != std::string::npos) {
    paths.clear();
    for (const Value& p : py_split(attribute.str(), Value(","), -1, false)) paths.push_back(p);
  }
  for (const Value& v : items) {
    if (paths.size() > 1) {
      std::vector<Value> parts;
      for (const Value& p : paths) parts.push_back(lowered(attribute_path(v, p), case_sensitive));
      keys.push_back(Value::list(std::move(parts)));
      continue;
    }
    const Value k = attribute.is_undefined() || attribute.is_none() ? v : attribute_path(v, attribute);
    keys.push_back(lowered(k, case_sensitive));
  }
  return keys;
}

inline std::vector<Value> sorted(const std::vector<Value>& items, const std::vector<Value>& keys, bool reverse) {
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return reverse ? Value::less(keys[b], keys[a]) : Value::less(keys[a], keys[b]);
  });
  std::vector<Value> out;
  for (std::size_t i : order) out.push_back(items[i]);
  return out;
}

// Python's round(x, n): correctly rounded to n decimals, ties to even on the exact binary value
// (what printf does in the default rounding mode).
inline double py_round(double x, std::int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits == 0) return std::nearbyint(x);
  if (digits > 300 || digits < -300) return digits > 0 ? x : 0.0 * x;
  if (digits < 0) {
    const double scale = std::pow(10.0, double(-digits));
    return std::nearbyint(x / scale) * scale;
  }
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, "%.*f", int(digits), x);
  double out = 0;
  std::from_chars(buffer, buffer + std::strlen(buffer), out);
  return out;
}

inline std::string indent_text(std::string s, const Value& width, bool first, bool blank) {
  const std::string indention =
      width.is_string() ? width.str()
                        : std::string(std::size_t(std::clamp<std::int64_t>(as_int(width, "width"), 0, 1 << 16)), ' ');
  s += "\n";  // jinja2 adds one so that splitlines keeps a final empty line
  const std::vector<Value> lines = py_splitlines(s, false);
  std::string out;
  if (blank) {
    for (std::size_t i = 0; i < lines.size(); ++i) {
      out += (i ? "\n" + indention : "") + lines[i].str();
      if (out.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
    }
  } else {
    out = lines.empty() ? "" : lines[0].str();
    for (std::size_t i = 1; i < lines.size(); ++i)
      out += "\n" + (lines[i].str().empty() ? "" : indention) + lines[i].str();
    if (out.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
  }
  return first ? indention + out : out;
}

inline Value to_int(const Value& v, const Value& fallback, std::int64_t base) {
  if (is_int(v)) return Value(v.integer());
  if (v.kind() == Value::Kind::floating) {
    if (!std::isfinite(v.floating()) || std::abs(v.floating()) >= 9.2e18) return fallback;
    return Value(std::int64_t(v.floating()));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.str(), Value(), true, true);
    std::string digits;
    for (char c : s)
      if (c != '_') digits += c;
    bool negative = false;
    std::size_t at = 0;
    if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) negative = digits[0] == '-', at = 1;
    if (digits.size() > at + 2 && digits[at] == '0') {  // Python accepts the prefix of its base
      const char p = char(std::tolower(static_cast<unsigned char>(digits[at + 1])));
      if ((p == 'x' && base == 16) || (p == 'o' && base == 8) || (p == 'b' && base == 2)) at += 2;
    }
    std::int64_t out = 0;
    if (base) {
      const auto r = std::from_chars(digits.data() + at, digits.data() + digits.size(), out, int(base));
      if (r.ec == std::errc() && r.ptr == digits.data() + digits.size() && at < digits.size())
        return Value(negative ? -out : out);
    }
    double d = 0;
    const auto f = std::from_chars(digits.data(), digits.data() + digits.size(), d);
    if (f.ec == std::errc() && f.ptr == digits.data() + digits.size() && std::isfinite(d) && std::abs(d) < 9.2e18)
      return Value(std::int64_t(d));
  }
  return fallback;
}

inline Value to_float(const Value& v, const Value& fallback) {
  if (v.is_number()) return Value(v.floating());
  if (v.is_string()) {
    const std::string s = py_strip(v.str(), Value(), true, true);
    std::string lower = unicode::to_lower(s);
    if (lower == "inf" || lower == "+inf" || lower == "infinity" || lower == "+infinity") return Value(HUGE_VAL);
    if (lower == "-inf" || lower == "-infinity") return Value(-HUGE_VAL);
    if (lower == "nan" || lower == "+nan" || lower == "-nan") return Value(std::nan(""));
    double d = 0;
    const char* first = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
    const auto r = std::from_chars(first, s.data() + s.size(), d);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size() && first != s.data() + s.size()) return Value(d);
  }
  return fallback;
}

inline Value join_filter(const Value& v, Arguments& a) {
  check_arguments(a, "join", {"d", "attribute"});
  const Value separator = arg(a, 0, "d", Value(std::string())), attribute = arg(a, 1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    if (!first) out += separator.to_string();
    out += (attribute.is_undefined() || attribute.is_none() ? item : attribute_path(item, attribute)).to_string();
    if (out.size() > kMaxBuilt) throw ValueError("MemoryError: string too long");
    first = false;
  }
  return Value(std::move(out));
}

inline Value tojson_filter(const Value& v, Arguments& a) {
  check_arguments(a, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  const Value indent = arg(a, 1, "indent", Value::none()), separators = arg(a, 2, "separators", Value::none());
  std::string item_separator, key_separator = ": ";
  if (!separators.is_none()) {
    if (!separators.is_sequence() || separators.items().size() != 2 || !separators.items()[0].is_string() ||
        !separators.items()[1].is_string())
      throw ValueError("ValueError: tojson separators must be a pair of strings");
    item_separator = separators.items()[0].str();
    key_separator = separators.items()[1].str();
  }
  std::optional<std::string> unit;  // json.dumps: an int indents by that many spaces, a str by itself
  if (indent.is_string())
    unit = indent.str().substr(0, 64);
  else if (!indent.is_none())
    unit = std::string(std::size_t(std::clamp<std::int64_t>(as_int(indent, "indent"), 0, 64)), ' ');
  require_defined(v);
  return Value(v.to_json(unit, arg(a, 3, "sort_keys", Value(false)).truthy(), item_separator, key_separator,
                         arg(a, 0, "ensure_ascii", Value(false)).truthy()));
}

inline Value select_filter(const Value& v, Arguments& a, bool by_attribute, bool keep) {
  std::vector<Value> out;
  std::size_t first_test_argument = by_attribute ? 2 : 1;
  const Value attribute = by_attribute ? (a.positional.empty() ? Value() : a.positional[0]) : Value();
  if (by_attribute && attribute.is_undefined()) type_error("selectattr/rejectattr need an attribute");
  const std::size_t test_at = by_attribute ? 1 : 0;
  const bool has_test = a.positional.size() > test_at;
  std::string test = has_test ? a.positional[test_at].to_string() : "";
  if (has_test && !find_test(test)) throw ValueError("no test named '" + test + "'");
  Arguments test_args;
  for (std::size_t i = first_test_argument; i < a.positional.size(); ++i)
    test_args.positional.push_back(a.positional[i]);
  test_args.named = a.named;
  for (const Value& item : iterate(v)) {
    const Value subject = by_attribute ? attribute_path(item, attribute) : item;
    Arguments copy = test_args;
    const bool passed = has_test ? apply_test(test, subject, copy) : subject.truthy();
    if (passed == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

inline Value map_filter(const Value& v, Arguments& a) {
  std::vector<Value> out;
  if (a.positional.empty()) {
    Value attribute, fallback;
    for (const auto& [n, x] : a.named) {
      if (n == "attribute")
        attribute = x;
      else if (n == "default")
        fallback = x;
      else
        type_error("map() got an unexpected keyword argument '" + n + "'");
    }
    if (attribute.is_undefined()) type_error("map requires a filter argument");
    for (const Value& item : iterate(v)) {
      Value x = attribute_path(item, attribute);
      out.push_back(x.is_undefined() && !fallback.is_undefined() ? fallback : x);
    }
    return Value::list(std::move(out));
  }
  const std::string name = a.positional[0].to_string();
  if (!find_filter(name)) throw ValueError("no filter named '" + name + "'");
  Arguments rest;
  rest.positional.assign(a.positional.begin() + 1, a.positional.end());
  rest.named = a.named;
  for (const Value& item : iterate(v)) {
    Arguments copy = rest;
    out.push_back(apply_filter(name, item, copy));
  }
  return Value::list(std::move(out));
}

inline Value aggregate(const Value& v, Arguments& a, bool want_max) {
  check_arguments(a, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  const std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const std::vector<Value> keys =
      sort_keys(items, arg(a, 1, "attribute"), arg(a, 0, "case_sensitive", Value(false)).truthy());
  std::size_t best = 0;
  for (std::size_t i = 1; i < items.size(); ++i)
    if (want_max ? Value::less(keys[best], keys[i]) : Value::less(keys[i], keys[best])) best = i;
  return items[best];
}

inline const std::pair<std::string_view, Filter>* filter_table(std::size_t& count) {
  static const std::pair<std::string_view, Filter> kFilters[] = {
      {"abs",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "abs", {});
         if (is_int(v)) {
           if (v.integer() == std::numeric_limits<std::int64_t>::min()) overflow();
           return Value(std::abs(v.integer()));
         }
         if (v.kind() == Value::Kind::floating) return Value(std::abs(v.floating()));
         require_defined(v);
         type_error("bad operand type for abs(): '" + v.type_name() + "'");
       }},
      {"attr",
       [](const Value& v, Arguments& a) {
         // An attribute only (a method, a namespace member), never an item: jinja2's do_attr.
         check_arguments(a, "attr", {"name"});
         const std::string name = arg(a, 0, "name").to_string();
         require_defined(v);
         if (v.kind() == Value::Kind::name_space) return get_attribute(v, name);
         const Value m = method(v, name);
         return m.is_undefined() ? missing_attribute(v, name) : m;
       }},
      {"batch",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "batch", {"linecount", "fill_with"});
         const std::int64_t per = as_int(arg(a, 0, "linecount"), "linecount");
         if (per <= 0) throw ValueError("ValueError: batch linecount must be positive");
         if (per > (1 << 20)) throw ValueError("MemoryError: batch linecount over 2**20");
         const Value fill = arg(a, 1, "fill_with", Value::none());
         std::vector<Value> out, row;
         for (const Value& item : iterate(v)) {
           row.push_back(item);
           if (std::int64_t(row.size()) == per) out.push_back(Value::list(std::move(row))), row.clear();
         }
         if (!row.empty()) {
           if (!fill.is_none())
             while (std::int64_t(row.size()) < per) row.push_back(fill);
           out.push_back(Value::list(std::move(row)));
         }
         return Value::list(std::move(out));
       }},
      {"capitalize",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "capitalize", {});
         return Value(py_capitalize(v.to_string()));
       }},
      {"center",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "center", {"width"});
         return Value(py_pad(v.to_string(), as_int(arg(a, 0, "width", Value(80)), "width"), Value(), 'c'));
       }},
      {"count", [](const Value& v, Arguments& a) {
         check_arguments(a, "count", {});
         return Value(length(v));
       }},
      {"default",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "default", {"default_value", "boolean"});
         const bool boolean = arg(a, 1, "boolean", Value(false)).truthy();
         if (v.is_undefined() || (boolean && !v.truthy())) return arg(a, 0, "default_value", Value(std::string()));
         return v;
       }},
      {"dictsort",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "dictsort", {"case_sensitive", "by", "reverse"});
         if (!v.is_mapping()) type_error("can only dictsort a mapping");
         const std::string by = arg(a, 1, "by", Value("key")).to_string();
         if (by != "key" && by != "value") throw ValueError("FilterArgumentError: You can only sort by either \"key\" or \"value\"");
         std::vector<Value> pairs, keys;
         for (const auto& [k, x] : v.entries()) {
           pairs.push_back(Value::list({k, x}, true));
           keys.push_back(lowered(by == "key" ? k : x, arg(a, 0, "case_sensitive", Value(false)).truthy()));
         }
         return Value::list(sorted(pairs, keys, arg(a, 2, "reverse", Value(false)).truthy()));
       }},
      {"escape",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "escape", {});
         return v.is_markup() ? v : Value::markup(html_escape(v.to_string()));
       }},
      {"first",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "first", {});
         const std::vector<Value> items = iterate(v);
         return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
       }},
      {"float",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "float", {"default"});
         return to_float(v, arg(a, 0, "default", Value(0.0)));
       }},
      {"format",
       [](const Value& v, Arguments& a) {
         if (!a.named.empty() && !a.positional.empty()) throw ValueError("FilterArgumentError: can't handle positional and keyword arguments at the same time");
         Value values = Value::list(a.positional, true);
         if (!a.named.empty()) {
           values = Value::dict();
           for (const auto& [k, x] : a.named) values.set(Value(k), x);
         }
         return percent_format(Value(v.to_string()), values);
       }},
      {"groupby",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "groupby", {"attribute", "default", "case_sensitive"});
         const Value attribute = arg(a, 0, "attribute"), fallback = arg(a, 1, "default", Value::none());
         const bool case_sensitive = arg(a, 2, "case_sensitive", Value(false)).truthy();
         const auto key_of = [&](const Value& item) {
           Value k = attribute_path(item, attribute);
           return k.is_undefined() && !fallback.is_none() ? fallback : k;
         };
         std::vector<Value> items = iterate(v), keys;
         for (const Value& item : items) keys.push_back(lowered(key_of(item), case_sensitive));
         std::vector<std::size_t> order(items.size());
         for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
         std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return Value::less(keys[x], keys[y]); });
         std::vector<Value> out, members;
         for (std::size_t k = 0; k < order.size(); ++k) {
           members.push_back(items[order[k]]);
           if (k + 1 == order.size() || keys[order[k + 1]] != keys[order[k]]) {
             // The grouper is the first member's own value (not the lowered key).
             Value grouper = case_sensitive ? keys[order[k]] : key_of(members.front());
             out.push_back(Value::group(std::move(grouper), Value::list(std::move(members))));
             members.clear();
           }
         }
         return Value::list(std::move(out));
       }},
      {"indent",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "indent", {"width", "first", "blank"});
         return Value(indent_text(v.to_string(), arg(a, 0, "width", Value(4)), arg(a, 1, "first", Value(false)).truthy(),
                                  arg(a, 2, "blank", Value(false)).truthy()));
       }},
      {"int",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "int", {"default", "base"});
         const std::int64_t base = as_int(arg(a, 1, "base", Value(10)), "base");
         // jinja2 falls back to int(float(value)) when int(value, base) fails, a bad base included.
         return to_int(v, arg(a, 0, "default", Value(0)), base >= 2 && base <= 36 ? base : 0);
       }},
      {"items",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "items", {});
         if (v.is_undefined()) return Value::list({});
         if (!v.is_mapping()) type_error("Can only get item pairs from a mapping.");
         std::vector<Value> out;
         for (const auto& [k, x] : v.entries()) out.push_back(Value::list({k, x}, true));
         return Value::list(std::move(out));
       }},
      {"join", join_filter},
      {"last",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "last", {});
         const std::vector<Value> items = iterate(v);
         return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
       }},
      {"length",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "length", {});
         return Value(length(v));
       }},
      {"list",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "list", {});
         return Value::list(iterate(v));
       }},
      {"lower",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "lower", {});
         return Value(unicode::to_lower(v.to_string()));
       }},
      {"map", map_filter},
      {"max", [](const Value& v, Arguments& a) { return aggregate(v, a, true); }},
      {"min", [](const Value& v, Arguments& a) { return aggregate(v, a, false); }},
      {"reject", [](const Value& v, Arguments& a) { return select_filter(v, a, false, false); }},
      {"rejectattr", [](const Value& v, Arguments& a) { return select_filter(v, a, true, false); }},
      {"replace",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "replace", {"old", "new", "count"});
         const Value count = arg(a, 2, "count", Value::none());
         return Value(py_replace(v.to_string(), arg(a, 0, "old").to_string(), arg(a, 1, "new").to_string(),
                                 count.is_none() ? -1 : as_int(count, "count")));
       }},
      {"reverse",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "reverse", {});
         if (v.is_string()) {
           std::u32string c = cps(v.str());
           std::reverse(c.begin(), c.end());
           return Value(utf8_of(c));
         }
         std::vector<Value> items = iterate(v);
         std::reverse(items.begin(), items.end());
         return Value::list(std::move(items));
       }},
      {"round",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "round", {"precision", "method"});
         const std::int64_t precision = as_int(arg(a, 0, "precision", Value(0)), "precision");
         const std::string how = arg(a, 1, "method", Value("common")).to_string();
         require_defined(v);
         if (!v.is_number()) type_error("type " + v.type_name() + " doesn't define __round__ method");
         if (how == "common") {
           if (!is_int(v)) return Value(py_round(v.floating(), precision));
           if (precision >= 0 || precision < -18) return Value(precision < -18 ? std::int64_t(0) : v.integer());
           std::int64_t scale = 1;  // Python rounds an int to 10**-precision, ties to even
           for (std::int64_t k = 0; k < -precision; ++k) scale *= 10;
           const std::int64_t x = v.integer();
           std::int64_t q = x / scale, r = x % scale;
           if (r < 0) r += scale, q -= 1;
           if (2 * r > scale || (2 * r == scale && (q & 1))) q += 1;
           return Value(checked_mul(q, scale));
         }
         if (how != "ceil" && how != "floor") throw ValueError("FilterArgumentError: method must be common, ceil or floor");
         const double scale = std::pow(10.0, double(precision));
         const double x = v.floating() * scale;
         return Value((how == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
       }},
      {"safe",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "safe", {});
         return Value::markup(v.to_string());
       }},
      {"select", [](const Value& v, Arguments& a) { return select_filter(v, a, false, true); }},
      {"selectattr", [](const Value& v, Arguments& a) { return select_filter(v, a, true, true); }},
      {"slice",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "slice", {"slices", "fill_with"});
         const std::int64_t slices = as_int(arg(a, 0, "slices"), "slices");
         if (slices <= 0 || slices > 100000) throw ValueError("ValueError: slice count must be in 1..100000");
         const Value fill = arg(a, 1, "fill_with", Value::none());
         const std::vector<Value> seq = iterate(v);
         const std::int64_t n = std::int64_t(seq.size()), per = n / slices, extra = n % slices;
         std::vector<Value> out;
         std::int64_t offset = 0;
         for (std::int64_t k = 0; k < slices; ++k) {
           const std::int64_t start = offset + k * per;
           if (k < extra) ++offset;
           const std::int64_t end = offset + (k + 1) * per;
           std::vector<Value> part(seq.begin() + start, seq.begin() + end);
           if (!fill.is_none() && k >= extra) part.push_back(fill);
           out.push_back(Value::list(std::move(part)));
         }
         return Value::list(std::move(out));
       }},
      {"sort",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "sort", {"reverse", "case_sensitive", "attribute"});
         const std::vector<Value> items = iterate(v);
         return Value::list(sorted(items, sort_keys(items, arg(a, 2, "attribute"), arg(a, 1, "case_sensitive", Value(false)).truthy(), true),
                                   arg(a, 0, "reverse", Value(false)).truthy()));
       }},
      {"string",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "string", {});
         return Value(v.to_string());
       }},
      {"sum",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "sum", {"attribute", "start"});
         const Value attribute = arg(a, 0, "attribute");
         Value total = arg(a, 1, "start", Value(0));
         for (const Value& item : iterate(v))
           total = binary("+", total, attribute.is_undefined() || attribute.is_none() ? item : attribute_path(item, attribute));
         return total;
       }},
      {"title",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "title", {});
         // jinja2: a word starts after '-', whitespace or an opening bracket.
         const std::u32string c = cps(v.to_string());
         std::string out;
         bool start = true;
         for (char32_t x : c) {
           const bool separator = x == '-' || x == '(' || x == '{' || x == '[' || x == '<' || py_isspace(x);
           const std::string one = unicode::utf8(x);
           out += separator ? one : start ? unicode::to_upper(one) : unicode::to_lower(one);
           start = separator;
         }
         return Value(out);
       }},
      {"tojson", tojson_filter},
      {"trim",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "trim", {"chars"});
         return Value(py_strip(v.to_string(), arg(a, 0, "chars", Value::none()), true, true));
       }},
      {"truncate",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "truncate", {"length", "killwords", "end", "leeway"});
         const std::int64_t length = as_int(arg(a, 0, "length", Value(255)), "length");
         const std::string end = arg(a, 2, "end", Value("...")).to_string();
         const std::int64_t leeway = as_int(arg(a, 3, "leeway", Value(5)), "leeway");
         const std::u32string c = cps(v.to_string());
         const std::int64_t end_length = std::int64_t(length_of_string(end));
         if (length < end_length) throw ValueError("AssertionError: expected length >= " + std::to_string(end_length));
         if (leeway < 0) throw ValueError("AssertionError: expected leeway >= 0");
         if (std::int64_t(c.size()) - leeway <= length) return Value(utf8_of(c));
         std::string kept = utf8_of(std::u32string_view(c).substr(0, std::size_t(length - end_length)));
         if (!arg(a, 1, "killwords", Value(false)).truthy()) {
           const std::size_t space = kept.rfind(' ');
           if (space != std::string::npos) kept.resize(space);
         }
         return Value(kept + end);
       }},
      {"unique",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "unique", {"case_sensitive", "attribute"});
         const std::vector<Value> items = iterate(v);
         const std::vector<Value> keys = sort_keys(items, arg(a, 1, "attribute"), arg(a, 0, "case_sensitive", Value(false)).truthy());
         std::vector<Value> out, seen;
         for (std::size_t i = 0; i < items.size(); ++i) {
           if (std::find(seen.begin(), seen.end(), keys[i]) != seen.end()) continue;
           seen.push_back(keys[i]);
           out.push_back(items[i]);
         }
         return Value::list(std::move(out));
       }},
      {"upper",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "upper", {});
         return Value(unicode::to_upper(v.to_string()));
       }},
      {"wordcount",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "wordcount", {});
         std::int64_t words = 0;
         bool in_word = false;
         for (char32_t c : cps(v.to_string())) {
           // Python's \\w: letters, numbers and '_' (marks are not word characters there).
           const bool w = unicode::is_letter(unicode::category(c)) || unicode::is_number(unicode::category(c)) || c == '_';
           words += w && !in_word;
           in_word = w;
         }
         return Value(words);
       }},
  };
  count = sizeof(kFilters) / sizeof(kFilters[0]);
  return kFilters;
}

inline const Filter* find_filter(std::string_view name) {
  if (name == "d") name = "default";
  if (name == "e") name = "escape";
  std::size_t count = 0;
  const auto* table = filter_table(count);
  for (std::size_t i = 0; i < count; ++i)
    if (table[i].first == name) return &table[i].second;
  return nullptr;
}

inline bool is_true_int(const Value& v) { return v.kind() == Value::Kind::integer; }

inline const Test* find_test(std::string_view name) {
  static const std::pair<std::string_view, Test> kTests[] = {
      {"boolean", [](const Value& v, Arguments&) { return v.kind() == Value::Kind::boolean; }},
      {"callable", [](const Value& v, Arguments&) { return v.is_function(); }},
      {"defined", [](const Value& v, Arguments&) { return !v.is_undefined(); }},
      {"divisibleby",
       [](const Value& v, Arguments& a) {
         check_arguments(a, "divisibleby", {"num"});
         return binary("%", v, arg(a, 0, "num")) == Value(0);
       }},
      {"eq", [](const Value& v, Arguments& a) { return compare("==", v, arg(a, 0, "other")); }},
      {"equalto", [](const Value& v, Arguments& a) { return compare("==", v, arg(a, 0, "other")); }},
      {"==", [](const Value& v, Arguments& a) { return compare("==", v, arg(a, 0, "other")); }},
      {"even",
       [](const Value& v, Arguments&) {
         require_defined(v);
         return binary("%", v, Value(2)) == Value(0);
       }},
      {"escaped", [](const Value& v, Arguments&) { return v.is_markup(); }},
      {"filter", [](const Value& v, Arguments&) { return v.is_string() && find_filter(v.str()) != nullptr; }},
      {"test", [](const Value& v, Arguments&) { return v.is_string() && find_test(v.str()) != nullptr; }},
      {"false", [](const Value& v, Arguments&) { return v.kind() == Value::Kind::boolean && !v.integer(); }},
      {"float", [](const Value& v, Arguments&) { return v.kind() == Value::Kind::floating; }},
      {"ge", [](const Value& v, Arguments& a) { return compare(">=", v, arg(a, 0, "other")); }},
      {">=", [](const Value& v, Arguments& a) { return compare(">=", v, arg(a, 0, "other")); }},
      {"gt", [](const Value& v, Arguments& a) { return compare(">", v, arg(a, 0, "other")); }},
      {">", [](const Value& v, Arguments& a) { return compare(">", v, arg(a, 0, "other")); }},
      {"greaterthan", [](const Value& v, Arguments& a) { return compare(">", v, arg(a, 0, "other")); }},
      {"in", [](const Value& v, Arguments& a) { return contains(arg(a, 0, "seq"), v); }},
      {"integer", [](const Value& v, Arguments&) { return is_true_int(v); }},
      {"iterable",
       [](const Value& v, Arguments&) {
         return v.is_undefined() || v.is_string() || v.is_sequence() || v.kind() == Value::Kind::dict;
       }},
      {"le", [](const Value& v, Arguments& a) { return compare("<=", v, arg(a, 0, "other")); }},
      {"<=", [](const Value& v, Arguments& a) { return compare("<=", v, arg(a, 0, "other")); }},
      {"lower", [](const Value& v, Arguments&) { return py_is_case(v.to_string(), false); }},
      {"lt", [](const Value& v, Arguments& a) { return compare("<", v, arg(a, 0, "other")); }},
      {"<", [](const Value& v, Arguments& a) { return compare("<", v, arg(a, 0, "other")); }},
      {"lessthan", [](const Value& v, Arguments& a) { return compare("<", v, arg(a, 0, "other")); }},
      {"mapping", [](const Value& v, Arguments&) { return v.kind() == Value::Kind::dict; }},
      {"ne", [](const Value& v, Arguments& a) { return compare("!=", v, arg(a, 0, "other")); }},
      {"!=", [](const Value& v, Arguments& a) { return compare("!=", v, arg(a, 0, "other")); }},
      {"none", [](const Value& v, Arguments&) { return v.is_none(); }},
      {"number", [](const Value& v, Arguments&) { return v.is_number(); }},
      {"odd",
       [](const Value& v, Arguments&) {
         require_defined(v);
         return binary("%", v, Value(2)) == Value(1);
       }},
      {"sameas",
       [](const Value& v, Arguments& a) {
         const Value o = arg(a, 0, "other");
         if (v.kind() != o.kind()) return false;
         switch (v.kind()) {
           case Value::Kind::none:
           case Value::Kind::undefined: return true;
           case Value::Kind::boolean:
           case Value::Kind::integer:
           case Value::Kind::string: return v == o;  // Python interns small ints and the literals templates use
           default: return v.same_object(o);
         }
       }},
      {"sequence",
       [](const Value& v, Arguments&) {
         return v.is_undefined() || v.is_string() || v.is_sequence() || v.kind() == Value::Kind::dict;
       }},
      {"string", [](const Value& v, Arguments&) { return v.is_string(); }},
      {"true", [](const Value& v, Arguments&) { return v.kind() == Value::Kind::boolean && v.integer(); }},
      {"undefined", [](const Value& v, Arguments&) { return v.is_undefined(); }},
      {"upper", [](const Value& v, Arguments&) { return py_is_case(v.to_string(), true); }},
  };
  for (const auto& [n, t] : kTests)
    if (n == name) return &t;
  return nullptr;
}

}  // namespace builtins
}  // namespace tpkit::jinja
