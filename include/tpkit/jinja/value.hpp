// tpkit/jinja/value.hpp: the values a chat template computes with, and the Python semantics
// jinja2 gives them (templates run on Python objects): truthiness, str() and repr(), ==, <, +,
// in, indexing and slicing by code point, and json.dumps as transformers' tojson calls it.
//
// Lists, dicts and namespaces are shared (as Python references are), so `set ns.x = 1` inside
// a loop is seen after it. Undefined is a value: falsy, prints as nothing, iterates as empty,
// and is an error to compute with or look into, as jinja2's default Undefined.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/tokenizer/unicode.hpp"
#include "tpkit/tokenizer/utf8.hpp"

namespace tpkit::jinja {

// A template that cannot be parsed, or fails while rendering; the message carries line:column.
class TemplateError : public Error {
 public:
  using Error::Error;
};
// raise_exception(message) called by the template: the message is the template's own words
// (a server returns it to the client as a 400).
class TemplateRaised : public TemplateError {
 public:
  using TemplateError::TemplateError;
};

// An error inside an operation; the renderer adds where in the template it happened.
class ValueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Python's str.isspace(), which is what jinja2's \\s and strip() mean.
inline bool py_isspace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The longest string a template may build (str() of a value, tojson, joins, repeats).
inline constexpr std::size_t kMaxStringBytes = std::size_t(16) << 20;

[[noreturn]] inline void string_too_long() { throw ValueError("MemoryError: string too long"); }

// Bounds the recursion of printing, comparing and serialising values: a template can nest lists
// as deep as it loops (`set ns.x = [ns.x]`), and Python would stop it with a RecursionError too.
class NestingGuard {
 public:
  static constexpr int kLimit = 512;
  NestingGuard() {
    if (++depth() > kLimit) {
      --depth();
      throw ValueError("RecursionError: values nested deeper than " + std::to_string(kLimit));
    }
  }
  ~NestingGuard() { --depth(); }
  NestingGuard(const NestingGuard&) = delete;
  NestingGuard& operator=(const NestingGuard&) = delete;

 private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
};

class Value;
struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
};
using Function = std::function<Value(Arguments&)>;

class Value {
 public:
  static constexpr int kMaxDepth = 256;  // how deep lists, dicts and namespaces may nest

  enum class Kind { undefined, none, boolean, integer, floating, string, list, tuple, dict, name_space, function };
  using Items = std::vector<std::pair<Value, Value>>;

  Value() = default;  // undefined
  static Value undefined(std::string name) {
    Value v;
    v.string_ = std::make_shared<const std::string>(std::move(name));
    return v;
  }
  static Value none() { return Value(Kind::none); }
  Value(bool b) : kind_(Kind::boolean), int_(b) {}
  Value(int i) : kind_(Kind::integer), int_(i) {}
  Value(std::int64_t i) : kind_(Kind::integer), int_(i) {}
  Value(double d) : kind_(Kind::floating), float_(d) {}
  Value(std::string s) : kind_(Kind::string), string_(std::make_shared<const std::string>(std::move(s))) {}
  Value(const char* s) : Value(std::string(s)) {}
  // A string jinja2 treats as Markup (from escape / safe): `markup + str` escapes the str.
  static Value markup(std::string s) {
    Value v(std::move(s));
    v.markup_ = true;
    return v;
  }
  bool is_markup() const { return kind_ == Kind::string && markup_; }

  // A list Python would print as another type: "range(0, 3)" (`label` is the whole repr) or a
  // dict view such as "dict_items" (printed around the list). Everything else sees a list.
  static Value list_printed_as(std::vector<Value> items, std::string label) {
    Value v = list(std::move(items));
    v.string_ = std::make_shared<const std::string>(std::move(label));
    return v;
  }

  // groupby's (grouper, list) pair: a tuple that also answers .grouper and .list.
  static Value group(Value grouper, Value items) {
    Value v = list({std::move(grouper), std::move(items)}, true);
    v.string_ = std::make_shared<const std::string>("_GroupTuple");
    return v;
  }
  bool is_group() const { return kind_ == Kind::tuple && string_; }
  static Value list(std::vector<Value> items, bool tuple = false) {
    Value v(tuple ? Kind::tuple : Kind::list);
    for (const Value& item : items) v.contain(item);
    v.list_ = std::make_shared<std::vector<Value>>(std::move(items));
    return v;
  }
  // A mapping whose keys the caller knows to be distinct (no duplicate check: built per loop
  // iteration).
  static Value dict_of_distinct(Items items, bool name_space = false) {
    Value v(name_space ? Kind::name_space : Kind::dict);
    for (const auto& [key, value] : items) v.contain(key), v.contain(value);
    v.dict_ = std::make_shared<Items>(std::move(items));
    return v;
  }
  // Keys are unique: a later duplicate replaces the earlier value in its place, as a Python dict.
  static Value dict(Items items = {}, bool name_space = false) {
    Value v(name_space ? Kind::name_space : Kind::dict);
    v.dict_ = std::make_shared<Items>();
    for (auto& [key, value] : items) v.set(key, std::move(value));
    return v;
  }
  static Value function(std::string name, Function f) {
    Value v(Kind::function);
    v.string_ = std::make_shared<const std::string>(std::move(name));
    v.function_ = std::make_shared<Function>(std::move(f));
    return v;
  }

  // JSON into values; integers stay integers (2 prints as 2, 2.0 as 2.0).
  static Value from_json(const Json& j) {
    switch (j.type()) {
      case Json::Type::null:
        return none();
      case Json::Type::boolean:
        return Value(j.boolean());
      case Json::Type::number:
        if (const auto exact = j.exact_integer()) return Value(*exact);
        if (j.written_as_integer())
          throw ValueError("OverflowError: an integer outside 64 bits (tpkit's template integers are 64-bit)");
        return Value(j.number());
      case Json::Type::string:
        return Value(j.string());
      case Json::Type::array: {
        std::vector<Value> items;
        for (const Json& e : j.array()) items.push_back(from_json(e));
        return list(std::move(items));
      }
      case Json::Type::object: {
        Value d = dict();
        for (const auto& [k, e] : j.object()) d.set(Value(k), from_json(e));  // a repeated key: the last wins
        return d;
      }
    }
    return none();
  }

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::floating || kind_ == Kind::boolean; }
  bool is_sequence() const { return kind_ == Kind::list || kind_ == Kind::tuple; }
  bool is_mapping() const { return kind_ == Kind::dict || kind_ == Kind::name_space; }
  bool is_function() const { return kind_ == Kind::function; }

  const std::string& str() const { return *string_; }
  std::int64_t integer() const { return int_; }
  double floating() const { return kind_ == Kind::floating ? float_ : double(int_); }
  const std::vector<Value>& items() const { return *list_; }
  const Items& entries() const { return *dict_; }
  // Empties a mapping (every handle sees it): ends a namespace's life at the end of a render.
  void clear_entries() const { dict_->clear(); }
  const std::string& undefined_name() const {
    static const std::string none;
    return string_ ? *string_ : none;
  }
  const std::string& function_name() const { return *string_; }
  Value call(Arguments& args) const { return (*function_)(args); }

  // Member lookup on a mapping: the value, or nullptr.
  const Value* find(const Value& key) const {
    for (const auto& [k, v] : *dict_)
      if (k == key) return &v;
    return nullptr;
  }
  void set(const Value& key, Value v) {
    contain(key);
    contain(v);
    for (auto& [k, old] : *dict_)
      if (k == key) {
        old = std::move(v);
        return;
      }
    dict_->emplace_back(key, std::move(v));
  }

  std::string type_name() const {
    switch (kind_) {
      case Kind::undefined:
        return "Undefined";
      case Kind::none:
        return "NoneType";
      case Kind::boolean:
        return "bool";
      case Kind::integer:
        return "int";
      case Kind::floating:
        return "float";
      case Kind::string:
        return "str";
      case Kind::list:
        return !string_ ? "list" : string_->rfind("range(", 0) == 0 ? "range" : *string_;
      case Kind::tuple:
        return "tuple";
      case Kind::dict:
        return "dict";
      case Kind::name_space:
        return "Namespace";
      case Kind::function:
        return "function";
    }
    return "?";
  }

  bool truthy() const {
    switch (kind_) {
      case Kind::undefined:
      case Kind::none:
        return false;
      case Kind::boolean:
      case Kind::integer:
        return int_ != 0;
      case Kind::floating:
        return float_ != 0.0;
      case Kind::string:
        return !string_->empty();
      case Kind::list:
      case Kind::tuple:
        return !list_->empty();
      case Kind::dict:
        return !dict_->empty();
      case Kind::name_space:
      case Kind::function:
        return true;
    }
    return false;
  }

  // Python's ==.
  bool operator==(const Value& o) const {
    const NestingGuard guard;
    if (is_number() && o.is_number()) {
      if (kind_ != Kind::floating && o.kind_ != Kind::floating) return int_ == o.int_;
      return floating() == o.floating();
    }
    if (kind_ != o.kind_) return false;
    switch (kind_) {
      case Kind::undefined:
      case Kind::none:
        return true;
      case Kind::string:
        return *string_ == *o.string_;
      case Kind::list:
      case Kind::tuple:
        return *list_ == *o.list_;
      case Kind::dict:
        if (dict_->size() != o.dict_->size()) return false;
        for (const auto& [k, v] : *dict_) {
          const Value* other = o.find(k);
          if (!other || !(*other == v)) return false;
        }
        return true;
      default:
        return dict_ == o.dict_ && function_ == o.function_;
    }
  }
  bool operator!=(const Value& o) const { return !(*this == o); }

  // Python's <: numbers, strings (code point order, which UTF-8 byte order keeps), sequences.
  static bool less(const Value& a, const Value& b) {
    const NestingGuard guard;
    if (a.is_number() && b.is_number()) {
      if (a.kind_ != Kind::floating && b.kind_ != Kind::floating) return a.int_ < b.int_;
      return a.floating() < b.floating();
    }
    if (a.is_string() && b.is_string()) return *a.string_ < *b.string_;
    if (a.is_sequence() && b.kind_ == a.kind_) {
      const auto &x = *a.list_, &y = *b.list_;
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (less(x[i], y[i])) return true;
        if (less(y[i], x[i])) return false;
      }
      return x.size() < y.size();
    }
    throw ValueError("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
  }

  // Python's str().
  std::string to_string() const {
    switch (kind_) {
      case Kind::undefined:
        return "";
      case Kind::string:
        return *string_;
      default:
        return repr();
    }
  }

  // Python's repr().
  std::string repr() const {
    const NestingGuard guard;
    switch (kind_) {
      case Kind::undefined:
        return "Undefined";
      case Kind::none:
        return "None";
      case Kind::boolean:
        return int_ ? "True" : "False";
      case Kind::integer:
        return std::to_string(int_);
      case Kind::floating:
        return float_repr(float_);
      case Kind::string:
        return string_repr(*string_);
      case Kind::list:
        if (string_) {
          if (string_->rfind("range(", 0) == 0) return *string_;
          Value plain = list(*list_);
          return *string_ + "(" + plain.repr() + ")";
        }
        [[fallthrough]];
      case Kind::tuple: {
        if (kind_ == Kind::tuple && string_)
          return "_GroupTuple(grouper=" + (*list_)[0].repr() + ", list=" + (*list_)[1].repr() + ")";
        std::string s = kind_ == Kind::list ? "[" : "(";
        for (std::size_t i = 0; i < list_->size(); ++i) {
          s += (i ? ", " : "") + (*list_)[i].repr();
          if (s.size() > kMaxStringBytes) string_too_long();
        }
        if (kind_ == Kind::tuple && list_->size() == 1) s += ",";
        return s + (kind_ == Kind::list ? "]" : ")");
      }
      case Kind::dict: {
        std::string s = "{";
        for (std::size_t i = 0; i < dict_->size(); ++i) {
          s += (i ? ", " : "") + (*dict_)[i].first.repr() + ": " + (*dict_)[i].second.repr();
          if (s.size() > kMaxStringBytes) string_too_long();
        }
        return s + "}";
      }
      case Kind::name_space: {
        std::string s = "<Namespace {";
        for (std::size_t i = 0; i < dict_->size(); ++i) {
          s += (i ? ", " : "") + (*dict_)[i].first.repr() + ": " + (*dict_)[i].second.repr();
          if (s.size() > kMaxStringBytes) string_too_long();
        }
        return s + "}>";
      }
      case Kind::function:
        return "<function " + *string_ + ">";
    }
    return "";
  }

  // Python's float repr: the shortest digits that read back, fixed between 1e-4 and 1e16.
  static std::string float_repr(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
    char buffer[64];
    const auto r = std::to_chars(buffer, buffer + sizeof buffer, d, std::chars_format::scientific);
    const std::string sci(buffer, r.ptr);  // e.g. "-1.2345e+02"
    const std::size_t e = sci.find('e');
    std::string mantissa = sci.substr(0, e);
    const int exponent = std::stoi(sci.substr(e + 1));
    const bool negative = mantissa[0] == '-';
    if (negative) mantissa.erase(0, 1);
    std::string digits;
    for (char c : mantissa)
      if (c != '.') digits += c;
    std::string out;
    if (exponent >= -4 && exponent < 16) {
      if (exponent < 0) {
        out = "0." + std::string(std::size_t(-exponent - 1), '0') + digits;
      } else if (std::size_t(exponent) + 1 >= digits.size()) {
        out = digits + std::string(std::size_t(exponent) + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, std::size_t(exponent) + 1) + "." + digits.substr(std::size_t(exponent) + 1);
      }
    } else {
      out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "") + "e" + (exponent < 0 ? "-" : "+") +
            (std::abs(exponent) < 10 ? "0" : "") + std::to_string(std::abs(exponent));
    }
    return (negative ? "-" : "") + out;
  }

  // Python's str.isprintable() for one character: not Other (Cc Cf Cs Co Cn) nor a separator
  // (Zl Zp Zs) other than the space.
  static bool printable(char32_t c) {
    if (c == ' ') return true;
    const auto category = unicode::category(c);
    return !unicode::is_other(category) && !unicode::is_separator(category);
  }

  // Python's repr of a str: single quotes unless the text has one and no double quote.
  static std::string string_repr(const std::string& s) {
    const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    const char quote = use_double ? '"' : '\'';
    std::string out(1, quote);
    for (std::size_t at = 0; at < s.size();) {
      const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(s, at).valid);
      const char32_t c = unicode::utf8_code_point(s, at, n);
      if (c == char32_t(quote) || c == '\\') {
        out += '\\';
        out += char(c);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (!printable(c)) {
        static const char* const kHex = "0123456789abcdef";
        const int digits = c < 0x100 ? 2 : c < 0x10000 ? 4 : 8;
        out += digits == 2 ? "\\x" : digits == 4 ? "\\u" : "\\U";
        for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) out += kHex[(c >> shift) & 15];
      } else {
        out.append(s, at, n);
      }
      at += n;
    }
    return out + quote;
  }

  // json.dumps(v, ensure_ascii=False, indent=indent, separators=..., sort_keys=sort_keys), as
  // transformers' tojson filter calls it. `indent` < 0: none.
  std::string to_json(int indent = -1, bool sort_keys = false, std::string item_separator = "",
                      std::string key_separator = ": ", bool ensure_ascii = false) const {
    return to_json(indent < 0 ? std::nullopt : std::optional<std::string>(std::string(std::size_t(indent), ' ')),
                   sort_keys, std::move(item_separator), std::move(key_separator), ensure_ascii);
  }
  // The same with json.dumps' string indent (each level indented by `indent`; nullopt: one line).
  std::string to_json(const std::optional<std::string>& indent, bool sort_keys, std::string item_separator,
                      std::string key_separator, bool ensure_ascii) const {
    if (item_separator.empty()) item_separator = indent ? "," : ", ";
    std::string out;
    write_json(out, indent ? &*indent : nullptr, sort_keys, item_separator, key_separator, 0, ensure_ascii);
    return out;
  }

  // Python's `is` for containers and functions: the same shared object.
  bool same_object(const Value& o) const {
    return kind_ == o.kind_ && list_ == o.list_ && dict_ == o.dict_ && function_ == o.function_ && string_ == o.string_;
  }

 private:
  explicit Value(Kind k) : kind_(k) {}

  // Records that this container holds `item`, refusing nesting beyond kMaxDepth: a template can
  // nest lists as deep as it loops (`set ns.x = [ns.x]`), and printing, comparing or freeing such a
  // value recurses once per level.
  void contain(const Value& item) {
    depth_ = std::max(depth_, item.depth_ + 1);
    if (depth_ > kMaxDepth) throw ValueError("RecursionError: values nested deeper than " + std::to_string(kMaxDepth));
  }

  static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
    static const char* const kHex = "0123456789abcdef";
    const auto escape_unit = [&](unsigned u) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(u >> shift) & 15];
    };
    out += '"';
    for (std::size_t at = 0; at < s.size(); ++at) {
      const unsigned char c = static_cast<unsigned char>(s[at]);
      if (ensure_ascii && c >= 0x80) {
        const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(s, at).valid);
        const char32_t cp = unicode::utf8_code_point(s, at, n);
        if (cp >= 0x10000) {
          escape_unit(0xD800 + ((cp - 0x10000) >> 10));
          escape_unit(0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else {
          escape_unit(cp);
        }
        at += n - 1;
        continue;
      }
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20 || (ensure_ascii && c == 0x7F)) {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 15];
          } else {
            out += char(c);
          }
      }
    }
    out += '"';
  }

  void write_json(std::string& out, const std::string* indent, bool sort_keys, const std::string& item_sep,
                  const std::string& key_sep, int depth, bool ensure_ascii) const {
    const NestingGuard guard;
    const auto newline = [&](int d) {
      if (!indent) return;
      out += '\n';
      for (int i = 0; i < d; ++i) out += *indent;
    };
    switch (kind_) {
      case Kind::none:
        out += "null";
        return;
      case Kind::boolean:
        out += int_ ? "true" : "false";
        return;
      case Kind::integer:
        out += std::to_string(int_);
        return;
      case Kind::floating:
        if (std::isnan(float_))
          out += "NaN";
        else if (std::isinf(float_))
          out += float_ > 0 ? "Infinity" : "-Infinity";
        else
          out += float_repr(float_);
        return;
      case Kind::string:
        json_string(out, *string_, ensure_ascii);
        return;
      case Kind::list:
      case Kind::tuple:
        if (string_)  // range, a dict view, a groupby tuple
          throw ValueError("TypeError: Object of type " + type_name() + " is not JSON serializable");
        if (list_->empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (std::size_t i = 0; i < list_->size(); ++i) {
          if (i) out += item_sep;
          newline(depth + 1);
          (*list_)[i].write_json(out, indent, sort_keys, item_sep, key_sep, depth + 1, ensure_ascii);
          if (out.size() > kMaxStringBytes) string_too_long();
        }
        newline(depth);
        out += ']';
        return;
      case Kind::dict: {
        if (dict_->empty()) {
          out += "{}";
          return;
        }
        std::vector<const std::pair<Value, Value>*> items;
        for (const auto& kv : *dict_) items.push_back(&kv);
        if (sort_keys)
          std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return less(a->first, b->first); });
        out += '{';
        for (std::size_t i = 0; i < items.size(); ++i) {
          if (out.size() > kMaxStringBytes) string_too_long();
          if (i) out += item_sep;
          newline(depth + 1);
          const Value& k = items[i]->first;
          if (k.is_string())
            json_string(out, k.str(), ensure_ascii);
          else if (k.kind_ == Kind::integer)
            json_string(out, std::to_string(k.int_), ensure_ascii);
          else if (k.kind_ == Kind::boolean)
            json_string(out, k.int_ ? "true" : "false", ensure_ascii);
          else if (k.kind_ == Kind::floating)
            json_string(out, float_repr(k.float_), ensure_ascii);
          else if (k.is_none())
            json_string(out, "null", ensure_ascii);
          else
            throw ValueError("keys must be str, int, float, bool or None, not " + k.type_name());
          out += key_sep;
          items[i]->second.write_json(out, indent, sort_keys, item_sep, key_sep, depth + 1, ensure_ascii);
        }
        newline(depth);
        out += '}';
        return;
      }
      default:
        throw ValueError("Object of type " + type_name() + " is not JSON serializable");
    }
  }

  Kind kind_ = Kind::undefined;
  std::int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<const std::string> string_;  // string; undefined: its name; function: its name
  std::shared_ptr<std::vector<Value>> list_;
  std::shared_ptr<Items> dict_;
  std::shared_ptr<Function> function_;
  bool markup_ = false;
  int depth_ = 0;  // containers: how deep this handle's value nests (namespaces: as of its last set)
};

}  // namespace tpkit::jinja
