// tpkit/tokenizer/unicode.hpp: the Unicode the tokenizer.json pipeline needs beyond UTF-8:
// general categories, White_Space, simple case folding and NFC. The data is in
// unicode_tables.hpp (generated; see there for the Unicode versions and why they differ).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tpkit/tokenizer/unicode_tables.hpp"
#include "tpkit/tokenizer/utf8.hpp"

namespace tpkit::unicode {

// General categories, numbered as unicode_tables::kCategoryNames.
enum class Category : std::uint8_t {
  Cn,
  Lu,
  Ll,
  Lt,
  Lm,
  Lo,
  Mn,
  Mc,
  Me,
  Nd,
  Nl,
  No,
  Pc,
  Pd,
  Ps,
  Pe,
  Pi,
  Pf,
  Po,
  Sm,
  Sc,
  Sk,
  So,
  Zs,
  Zl,
  Zp,
  Cc,
  Cf,
  Cs,
  Co,
  count
};

namespace detail {

// Two-stage category lookup built once from the range table: 4352 blocks of 256 code points,
// identical blocks shared.
struct CategoryTable {
  std::array<std::uint16_t, 0x1100> block_of{};
  std::vector<std::array<Category, 256>> blocks;

  CategoryTable() {
    std::vector<Category> all(0x110000);
    const auto& starts = unicode_tables::kCategoryStarts;
    const std::size_t n = sizeof(starts) / sizeof(starts[0]);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t end = i + 1 < n ? starts[i + 1].first : 0x110000;
      std::fill(all.begin() + starts[i].first, all.begin() + end, Category(starts[i].category));
    }
    std::unordered_map<std::string, std::uint16_t> seen;
    for (std::size_t b = 0; b < block_of.size(); ++b) {
      std::array<Category, 256> block;
      std::copy(all.begin() + b * 256, all.begin() + (b + 1) * 256, block.begin());
      const std::string key(reinterpret_cast<const char*>(block.data()), block.size());
      const auto [it, fresh] = seen.emplace(key, std::uint16_t(blocks.size()));
      if (fresh) blocks.push_back(block);
      block_of[b] = it->second;
    }
  }
};

inline const CategoryTable& category_table() {
  static const CategoryTable table;
  return table;
}

}  // namespace detail

inline Category category(char32_t cp) {
  if (cp >= 0x110000) return Category::Cn;
  const auto& t = detail::category_table();
  return t.blocks[t.block_of[cp >> 8]][cp & 0xFF];
}

inline bool is_letter(Category c) { return c >= Category::Lu && c <= Category::Lo; }
inline bool is_mark(Category c) { return c >= Category::Mn && c <= Category::Me; }
inline bool is_number(Category c) { return c >= Category::Nd && c <= Category::No; }
inline bool is_punctuation(Category c) { return c >= Category::Pc && c <= Category::Po; }
inline bool is_symbol(Category c) { return c >= Category::Sm && c <= Category::So; }
inline bool is_separator(Category c) { return c >= Category::Zs && c <= Category::Zp; }
inline bool is_other(Category c) { return c == Category::Cn || c >= Category::Cc; }

// The White_Space property (stable since Unicode 6.3; what \s means in Oniguruma).
inline bool is_white_space(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Rust's char::is_alphanumeric-like "word" character of regex \w: letters, marks, decimal digits,
// connector punctuation.
inline bool is_word(char32_t cp) {
  const Category c = category(cp);
  return is_letter(c) || is_mark(c) || c == Category::Nd || c == Category::Pc;
}

inline char32_t simple_fold(char32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
  const auto& folds = unicode_tables::kCaseFolds;
  const auto* end = folds + sizeof(folds) / sizeof(folds[0]);
  const auto* it = std::lower_bound(folds, end, cp, [](const auto& f, char32_t c) { return f.from < c; });
  return it != end && it->from == cp ? char32_t(it->to) : cp;
}

namespace detail {
template <std::size_t N>
void append_case_mapped(std::string& out, char32_t cp, const unicode_tables::CaseMapping (&table)[N]) {
  const auto* it = std::lower_bound(table, table + N, cp, [](const auto& m, char32_t c) { return m.from < c; });
  if (it == table + N || it->from != cp) return append_utf8(out, cp);
  for (std::uint32_t to : it->to)
    if (to) append_utf8(out, to);
}
}  // namespace detail

namespace detail {
template <std::size_t N>
bool in_ranges(char32_t cp, const unicode_tables::CodePointRange (&table)[N]) {
  const auto* it = std::upper_bound(table, table + N, cp, [](char32_t c, const auto& r) { return c < r.first; });
  return it != table && cp <= (it - 1)->last;
}
}  // namespace detail

// Python's str.isupper() / islower() of one character (Other_Uppercase counts: "Ⅷ" is upper).
inline bool is_python_upper(char32_t cp) { return detail::in_ranges(cp, unicode_tables::kPythonUpper); }
inline bool is_python_lower(char32_t cp) { return detail::in_ranges(cp, unicode_tables::kPythonLower); }

// Python's str.upper(): full mappings (so "ß" becomes "SS"), Unicode 14.0 as Python 3.11.
inline std::string to_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : code_points(s)) detail::append_case_mapped(out, cp, unicode_tables::kUpper);
  return out;
}

// Python's title case of one character (str.capitalize's first letter: "ß" becomes "Ss").
inline std::string to_title(char32_t cp) {
  std::string out;
  detail::append_case_mapped(out, cp, unicode_tables::kTitle);
  return out;
}

// Python's str.lower(), with its one context rule: a capital sigma ending a word (after a letter,
// before none) becomes the final form.
inline std::string to_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const std::u32string cps = code_points(s);
  for (std::size_t i = 0; i < cps.size(); ++i) {
    if (cps[i] == 0x3A3 && i > 0 && is_letter(category(cps[i - 1])) &&
        (i + 1 == cps.size() || !is_letter(category(cps[i + 1])))) {
      append_utf8(out, 0x3C2);
      continue;
    }
    detail::append_case_mapped(out, cps[i], unicode_tables::kLower);
  }
  return out;
}

namespace detail {

struct NfcTables {
  std::unordered_map<char32_t, std::pair<std::uint16_t, std::uint8_t>> decomposition;
  std::unordered_map<char32_t, std::uint8_t> combining;
  std::unordered_map<std::uint64_t, char32_t> composition;
  // One bit per code point: set where NFC may change the text around it (it decomposes, has a
  // combining class, or composes with what precedes it). Text with no bit set is already NFC.
  std::vector<std::uint64_t> active = std::vector<std::uint64_t>(0x110000 / 64);

  bool is_active(char32_t cp) const { return cp < 0x110000 && (active[cp >> 6] >> (cp & 63) & 1); }

  NfcTables() {
    const auto mark = [&](char32_t cp) { active[cp >> 6] |= std::uint64_t(1) << (cp & 63); };
    for (const auto& d : unicode_tables::kDecompositions) {
      decomposition.emplace(d.code_point, std::make_pair(d.offset, d.length));
      mark(d.code_point);
    }
    for (const auto& r : unicode_tables::kCombiningRanges)
      for (char32_t c = r.first; c <= r.last; ++c) {
        combining.emplace(c, r.ccc);
        mark(c);
      }
    for (const auto& c : unicode_tables::kCompositions) {
      composition.emplace(std::uint64_t(c.first) << 32 | c.second, c.composite);
      mark(c.second);
    }
    for (char32_t c = 0x1161; c < 0x1161 + 21; ++c) mark(c);  // Hangul vowels and trailing consonants
    for (char32_t c = 0x11A8; c < 0x11A7 + 28; ++c) mark(c);
  }
};

inline const NfcTables& nfc_tables() {
  static const NfcTables tables;
  return tables;
}

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

}  // namespace detail

inline std::uint8_t combining_class(char32_t cp) {
  const auto& t = detail::nfc_tables();
  if (!t.is_active(cp)) return 0;
  const auto it = t.combining.find(cp);
  return it == t.combining.end() ? 0 : it->second;
}

// NFC of valid UTF-8 `s` (canonical decomposition, canonical ordering, canonical composition).
inline std::string nfc(std::string_view s) {
  const auto& t = detail::nfc_tables();
  bool unchanged = true;
  for (std::size_t at = 0; at < s.size() && unchanged;) {
    if (static_cast<unsigned char>(s[at]) < 0x80) {
      ++at;
      continue;
    }
    const std::size_t n = std::max<std::size_t>(1, utf8_step(s, at).valid);
    unchanged = !t.is_active(utf8_code_point(s, at, n));
    at += n;
  }
  if (unchanged) return std::string(s);

  // Decompose.
  std::u32string d;
  d.reserve(s.size());
  for (char32_t cp : code_points(s)) {
    if (cp >= detail::kSBase && cp < detail::kSBase + detail::kSCount) {
      const int index = int(cp - detail::kSBase);
      d += detail::kLBase + index / detail::kNCount;
      d += detail::kVBase + (index % detail::kNCount) / detail::kTCount;
      if (index % detail::kTCount) d += detail::kTBase + index % detail::kTCount;
      continue;
    }
    const auto it = t.is_active(cp) ? t.decomposition.find(cp) : t.decomposition.end();
    if (it == t.decomposition.end()) {
      d += cp;
    } else {
      for (std::size_t k = 0; k < it->second.second; ++k)
        d += char32_t(unicode_tables::kDecompositionPool[it->second.first + k]);
    }
  }
  // Canonical ordering: a stable sort of each run of non-starters by class.
  for (std::size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + std::ptrdiff_t(i), d.begin() + std::ptrdiff_t(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Compose: a character joins the last starter when nothing between them blocks it (a kept
  // character of class 0, or of a class not below its own).
  using namespace detail;
  std::u32string out;
  out.reserve(d.size());
  std::ptrdiff_t starter = -1;
  int between = -1;  // the class of the last character kept after the starter; -1: none
  for (char32_t cp : d) {
    const int cls = combining_class(cp);
    if (starter >= 0 && (between == -1 || between < cls)) {
      const char32_t first = out[std::size_t(starter)];
      char32_t composite = 0;
      if (first >= kLBase && first < kLBase + kLCount && cp >= kVBase && cp < kVBase + kVCount) {
        composite = kSBase + ((first - kLBase) * kVCount + (cp - kVBase)) * kTCount;
      } else if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && cp > kTBase &&
                 cp < kTBase + kTCount) {
        composite = first + (cp - kTBase);
      } else {
        const auto it = t.composition.find(std::uint64_t(first) << 32 | cp);
        if (it != t.composition.end()) composite = it->second;
      }
      if (composite) {
        out[std::size_t(starter)] = composite;
        continue;
      }
    }
    if (cls == 0) {
      starter = std::ptrdiff_t(out.size());
      between = -1;
    } else {
      between = cls;
    }
    out += cp;
  }
  std::string result;
  result.reserve(s.size() + 8);
  for (char32_t cp : out) append_utf8(result, cp);
  return result;
}

}  // namespace tpkit::unicode
