#!/usr/bin/env python3
"""Writes include/tpkit/tokenizer/unicode_tables.hpp: the Unicode data tpkit's tokenizers need.

tpkit must split and normalise text exactly as Hugging Face `tokenizers` 0.22.1 does, and that
library takes its Unicode data from two places of different ages:

- its regex engine (Oniguruma 6.9.10) knows Unicode 16.0: general categories for \\p{..}, \\s
  as the White_Space property, and Unicode simple case folding for (?i:..);
- its NFC normaliser (the crate unicode-normalization-alignments) knows Unicode 9.0: a combining
  mark added later has canonical class 0 there and nothing added later composes.

So the categories come from `unicodedata2` 16.0.0, the simple case folds from Python's own
str.casefold (its Unicode version: 14.0 for Python 3.11; letters added since have no fold here),
the full case mappings for chat templates' upper()/lower() from the same Python's str.upper/lower,
and the NFC data is read off
`tokenizers` itself: every code point's canonical decomposition from its NFD, each combining
class it knows (a mark it does not know is not reordered), and each pair it composes. A reader
can check the second half against Unicode 9.0's UnicodeData.txt.

CI never runs this: the header is committed. Running it again rewrites it byte for byte.

    python3 -m venv ../venv-text && ../venv-text/bin/pip install -r tools/requirements-text.txt
    ../venv-text/bin/python tools/make_unicode_tables.py
"""
import os

import tokenizers
import unicodedata2 as ucd
from tokenizers import normalizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "include", "tpkit", "tokenizer", "unicode_tables.hpp")

CATEGORIES = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi",
              "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"]
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def code_points():
    return range(0x110000)


def category_ranges():
    ranges = []
    for cp in code_points():
        cat = ucd.category(chr(cp))
        if not ranges or ranges[-1][1] != cat:
            ranges.append((cp, cat))
    return ranges


def simple_case_folds():
    """(code point, fold) where the fold differs: casefold() when it is one character (C and S
    mappings), else lower() when that is one character."""
    folds = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        f = c.casefold()
        if len(f) != 1:
            f = c.lower() if len(c.lower()) == 1 else c
        if f != c:
            folds.append((cp, ord(f)))
    return folds


def case_mappings(method):
    """(code point, mapping) where Python's str.upper() / lower() / title() of the single character
    differs from it; a mapping has up to three code points (for example 'ß'.upper() == 'SS')."""
    out = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000:
            continue
        m = getattr(chr(cp), method)()
        if m != chr(cp):
            assert len(m) <= 3
            out.append((cp, [ord(x) for x in m] + [0] * (3 - len(m))))
    return out


def python_ranges(predicate):
    """Inclusive ranges of code points whose one-character string satisfies `predicate`."""
    ranges = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000 or not predicate(chr(cp)):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return ranges


def hf_nfc_data():
    nfd, nfc = normalizers.NFD(), normalizers.NFC()
    decompositions = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000 or HANGUL_FIRST <= cp <= HANGUL_LAST:
            continue
        c = chr(cp)
        d = nfd.normalize_str(c)
        if d != c:
            decompositions.append((cp, [ord(x) for x in d]))
    # Hangul syllables decompose algorithmically; check that tokenizers agrees.
    for cp in range(HANGUL_FIRST, HANGUL_LAST + 1, 97):
        assert nfd.normalize_str(chr(cp)) == ucd.normalize("NFD", chr(cp)), hex(cp)

    # A mark's class is known to tokenizers when it reorders against a mark of class 1 (U+0334)
    # or, for class-1 marks, against one of class 230 (U+0301). Classes never change once set.
    combining = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        k = ucd.combining(c)
        if k == 0:
            continue
        probe = "#" + c + "\u0334" if k > 1 else "#\u0301" + c
        if nfd.normalize_str(probe) != probe:
            combining.append((cp, k))

    compositions = []
    for cp in code_points():
        if 0xD800 <= cp < 0xE000 or HANGUL_FIRST <= cp <= HANGUL_LAST:
            continue
        dec = ucd.decomposition(chr(cp))
        if not dec or dec.startswith("<"):
            continue
        parts = [int(x, 16) for x in dec.split()]
        if len(parts) != 2:
            continue
        if nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == chr(cp):
            compositions.append((parts[0], parts[1], cp))
    # unicode.hpp skips ASCII when it looks for text NFC could change.
    assert all(b >= 0x80 for _, b, _ in compositions) and all(cp >= 0x80 for cp, _ in combining)
    return decompositions, combining, compositions


def ranges_of(pairs):
    """[(cp, value)] sorted -> [(first, last, value)] for runs of consecutive code points."""
    out = []
    for cp, v in pairs:
        if out and out[-1][1] == cp - 1 and out[-1][2] == v:
            out[-1] = (out[-1][0], cp, v)
        else:
            out.append((cp, cp, v))
    return out


def rows(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append("    " + " ".join(items[i:i + per_line]))
    return "\n".join(lines)


def main():
    cats = category_ranges()
    folds = simple_case_folds()
    uppers, lowers, titles = case_mappings("upper"), case_mappings("lower"), case_mappings("title")
    is_upper, is_lower = python_ranges(str.isupper), python_ranges(str.islower)
    decompositions, combining, compositions = hf_nfc_data()
    pool = []
    entries = []
    for cp, d in decompositions:
        entries.append(f"{{0x{cp:X}, {len(pool)}, {len(d)}}},")
        pool.extend(d)
    text = f"""// tpkit/tokenizer/unicode_tables.hpp: Unicode data for the tokenizers. GENERATED by
// tools/make_unicode_tables.py (tokenizers {tokenizers.__version__}, unicodedata2 {ucd.unidata_version}); do not edit.
//
// Categories and case folds are Unicode {ucd.unidata_version}, as the regex engine of Hugging Face tokenizers
// knows them; the NFC data is what its normaliser knows (Unicode 9.0), read off the library itself.
#pragma once

#include <cstdint>

// Generated rows: not for clang-format.
// clang-format off
namespace tpkit::unicode_tables {{

// General categories, in this order; a category's index is its value in kCategoryStarts.
inline constexpr const char* kCategoryNames[] = {{{", ".join('"' + c + '"' for c in CATEGORIES)}}};

struct CategoryStart {{
  std::uint32_t first;  // the category holds from here to the next entry's first
  std::uint8_t category;
}};
inline constexpr CategoryStart kCategoryStarts[] = {{
{rows([f"{{0x{cp:X}, {CATEGORIES.index(c)}}}," for cp, c in cats], 8)}
}};

// Simple case folding (Python's str.casefold, single-character results): code points whose\n// fold differs from themselves.
struct CaseFold {{
  std::uint32_t from, to;
}};
inline constexpr CaseFold kCaseFolds[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in folds], 8)}
}};

// Full case mappings (Python's str.upper, title and lower of one character, for chat templates):
// code points whose mapping differs, to up to three code points (0 pads).
struct CaseMapping {{
  std::uint32_t from, to[3];
}};
inline constexpr CaseMapping kUpper[] = {{
{rows([f"{{0x{a:X}, {{0x{b[0]:X}, 0x{b[1]:X}, 0x{b[2]:X}}}}}," for a, b in uppers], 5)}
}};
inline constexpr CaseMapping kTitle[] = {{
{rows([f"{{0x{a:X}, {{0x{b[0]:X}, 0x{b[1]:X}, 0x{b[2]:X}}}}}," for a, b in titles], 5)}
}};
inline constexpr CaseMapping kLower[] = {{
{rows([f"{{0x{a:X}, {{0x{b[0]:X}, 0x{b[1]:X}, 0x{b[2]:X}}}}}," for a, b in lowers], 5)}
}};

// Python's str.isupper() / str.islower() of one character (Lu / Ll plus Other_Uppercase /
// Other_Lowercase), as inclusive ranges.
struct CodePointRange {{
  std::uint32_t first, last;
}};
inline constexpr CodePointRange kPythonUpper[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in is_upper], 8)}
}};
inline constexpr CodePointRange kPythonLower[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}}}," for a, b in is_lower], 8)}
}};

// Canonical combining classes other than 0, as ranges.
struct CombiningRange {{
  std::uint32_t first, last;
  std::uint8_t ccc;
}};
inline constexpr CombiningRange kCombiningRanges[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}, {k}}}," for a, b, k in ranges_of(combining)], 6)}
}};

// Full canonical decompositions (Hangul syllables excepted: they are computed), as slices of
// kDecompositionPool.
struct Decomposition {{
  std::uint32_t code_point;
  std::uint16_t offset;
  std::uint8_t length;
}};
inline constexpr Decomposition kDecompositions[] = {{
{rows(entries, 6)}
}};
inline constexpr std::uint32_t kDecompositionPool[] = {{
{rows([f"0x{x:X}," for x in pool], 12)}
}};

// Primary composites: (first, second) composes to composite (Hangul excepted).
struct Composition {{
  std::uint32_t first, second, composite;
}};
inline constexpr Composition kCompositions[] = {{
{rows([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in compositions], 5)}
}};

}}  // namespace tpkit::unicode_tables
// clang-format on
"""
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{OUT}: {len(cats)} category runs, {len(folds)} folds, {len(combining)} combining marks, "
          f"{len(decompositions)} decompositions, {len(compositions)} compositions, {len(text)} bytes")


if __name__ == "__main__":
    main()
