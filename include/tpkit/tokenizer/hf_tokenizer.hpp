// tpkit/tokenizer/hf_tokenizer.hpp: Hugging Face tokenizer.json, giving the ids of the
// `tokenizers` library (0.22) for every input.
//
// encode(text):
//   1. added tokens are found in the raw text, leftmost-longest (lstrip, rstrip, single_word
//      honoured; special ones only with parse_special);
//   2. each stretch between them is normalized (NFC, Prepend, Replace, Sequence), then split at
//      the added tokens marked `normalized`;
//   3. pre-tokenizers cut it into words (Split, ByteLevel, Metaspace, Digits, Sequence);
//   4. the BPE model turns each word into ids;
//   5. with add_special_tokens the post-processor adds its template (TemplateProcessing,
//      ByteLevel, Sequence).
// decode(ids) runs the decoders (decoders.hpp) over the tokens' strings.
//
// Any component type, model type or option outside this list is refused at load with its name
// (never ignored): a tokenizer that loads encodes as Hugging Face does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/io/mapped_file.hpp"
#include "tpkit/tokenizer/bpe.hpp"
#include "tpkit/tokenizer/decoders.hpp"
#include "tpkit/tokenizer/regex.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"
#include "tpkit/tokenizer/unicode.hpp"

namespace tpkit {

namespace hf {

// A stretch of text on its way to the model. `at_origin`: it begins at offset 0 of the input
// (Metaspace's "first" scheme prepends only there).
struct Piece {
  std::string text;
  bool at_origin = false;
};
using Pieces = std::vector<Piece>;

// A String or Regex pattern, matched as tokenizers matches it: the text cut into matches and the
// stretches between them, in order, covering it.
class Pattern {
 public:
  struct Part {
    std::size_t begin, end;
    bool is_match;
  };
  Pattern() = default;
  static Pattern parse(const Json& j, const std::string& where) {
    Pattern p;
    if (const Json* s = j.is_object() ? j.find("String") : nullptr) {
      p.literal_ = s->string();
    } else if (const Json* r = j.is_object() ? j.find("Regex") : nullptr) {
      p.regex_ = std::make_shared<Regex>(r->string());
    } else {
      throw FormatError(where + ": a pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
    return p;
  }
  static Pattern regex(std::string_view pattern) {
    Pattern p;
    p.regex_ = std::make_shared<Regex>(pattern);
    return p;
  }
  bool is_regex() const { return regex_ != nullptr; }
  const std::string& literal() const { return literal_; }

  std::vector<Part> find(std::string_view text) const {
    std::vector<Part> parts;
    std::size_t prev = 0;
    const auto hit = [&](std::size_t b, std::size_t e) {
      if (prev != b) parts.push_back({prev, b, false});
      parts.push_back({b, e, true});
      prev = e;
    };
    if (regex_) {
      regex_->for_each_match(text, hit);
    } else if (!literal_.empty()) {
      for (std::size_t at = text.find(literal_); at != std::string_view::npos;
           at = text.find(literal_, at + literal_.size()))
        hit(at, at + literal_.size());
    }
    if (prev != text.size() || parts.empty()) parts.push_back({prev, text.size(), false});
    return parts;
  }

  std::string replace(std::string_view text, std::string_view content) const {
    std::string out;
    for (const Part& p : find(text)) {
      if (p.is_match)
        out += content;
      else
        out.append(text.substr(p.begin, p.end - p.begin));
    }
    return out;
  }

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;
};

inline const Json& member(const Json& j, std::string_view key, const std::string& where) {
  const Json* v = j.find(key);
  if (!v) throw FormatError(where + ": missing \"" + std::string(key) + "\"");
  return *v;
}
inline bool flag(const Json& j, std::string_view key, bool fallback) {
  const Json* v = j.find(key);
  return v && !v->is_null() ? v->boolean() : fallback;
}
inline char32_t single_char(const Json& j, const std::string& where) {
  const std::string& s = j.string();
  if (s.empty() || unicode::utf8_step(s, 0).valid != s.size()) throw FormatError(where + ": expected one character");
  return unicode::utf8_code_point(s, 0, s.size());
}

// ---- normalizers ----

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

class Nfc : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = unicode::nfc(s); }
};
class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern p, std::string content) : pattern_(std::move(p)), content_(std::move(content)) {}
  void normalize(std::string& s) const override { s = pattern_.replace(s, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};
class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> n) : items_(std::move(n)) {}
  void normalize(std::string& s) const override {
    for (const auto& n : items_) n->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

inline std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& where) {
  const std::string type = member(j, "type", where).string();
  const std::string here = where + " (" + type + ")";
  if (type == "NFC") return std::make_unique<Nfc>();
  if (type == "Prepend") return std::make_unique<Prepend>(member(j, "prepend", here).string());
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(Pattern::parse(member(j, "pattern", here), here),
                                               member(j, "content", here).string());
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> items;
    for (const Json& n : member(j, "normalizers", here).array()) items.push_back(make_normalizer(n, here));
    return std::make_unique<NormalizerSequence>(std::move(items));
  }
  throw FormatError(where + ": normalizer type \"" + type +
                    "\" is not supported (supported: NFC, Prepend, Replace, Sequence)");
}

// ---- pre-tokenizers ----

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(Pieces& pieces) const = 0;
};

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// Cuts each piece at `parts` (as tokenizers' NormalizedString::split) and drops empty results.
inline void split_piece(const Piece& piece, std::vector<Pattern::Part> parts, SplitBehavior behavior, Pieces& out) {
  struct Span {
    std::size_t begin, end;
    bool remove;
  };
  std::vector<Span> spans;
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::isolated:
      for (const auto& p : parts) spans.push_back({p.begin, p.end, false});
      break;
    case SplitBehavior::removed:
      for (const auto& p : parts) spans.push_back({p.begin, p.end, p.is_match});
      break;
    case SplitBehavior::contiguous:
      for (const auto& p : parts) {
        if (p.is_match == previous && !spans.empty())
          spans.back().end = p.end;
        else
          spans.push_back({p.begin, p.end, false});
        previous = p.is_match;
      }
      break;
    case SplitBehavior::merged_with_previous:
      for (const auto& p : parts) {
        if (p.is_match && !previous && !spans.empty())
          spans.back().end = p.end;
        else
          spans.push_back({p.begin, p.end, false});
        previous = p.is_match;
      }
      break;
    case SplitBehavior::merged_with_next:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous && !spans.empty())
          spans.back().begin = it->begin;
        else
          spans.push_back({it->begin, it->end, false});
        previous = it->is_match;
      }
      std::reverse(spans.begin(), spans.end());
      break;
  }
  for (const Span& s : spans)
    if (!s.remove && s.end > s.begin)
      out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
}

// Matches of a predicate on single characters, each its own match (tokenizers' char patterns).
template <class Predicate>
std::vector<Pattern::Part> char_matches(std::string_view text, Predicate&& is_match) {
  std::vector<Pattern::Part> parts;
  std::size_t last = 0;
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(text, at).valid);
    if (is_match(unicode::utf8_code_point(text, at, n))) {
      if (last < at) parts.push_back({last, at, false});
      parts.push_back({at, at + n, true});
      last = at + n;
    }
    at += n;
  }
  if (last < text.size() || parts.empty()) parts.push_back({last, text.size(), false});
  return parts;
}

class Split : public PreTokenizer {
 public:
  Split(Pattern p, SplitBehavior b, bool invert) : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  void pre_tokenize(Pieces& pieces) const override {
    Pieces out;
    for (const Piece& piece : pieces) {
      auto parts = pattern_.find(piece.text);
      if (invert_)
        for (auto& p : parts) p.is_match = !p.is_match;
      split_piece(piece, std::move(parts), behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

inline const Regex& gpt2_regex() {
  static const Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return re;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(Pieces& pieces) const override {
    Pieces out;
    for (Piece& piece : pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(0, " ");
      if (use_regex_) {
        std::vector<Pattern::Part> parts;
        std::size_t prev = 0;
        gpt2_regex().for_each_match(piece.text, [&](std::size_t b, std::size_t e) {
          if (prev != b) parts.push_back({prev, b, false});
          parts.push_back({b, e, true});
          prev = e;
        });
        if (prev != piece.text.size() || parts.empty()) parts.push_back({prev, piece.text.size(), false});
        split_piece(piece, std::move(parts), SplitBehavior::isolated, out);
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    const ByteLevelMap& map = ByteLevelMap::get();
    for (Piece& p : out) p.text = map.encode(p.text);
    pieces = std::move(out);
  }

 private:
  bool add_prefix_space_, use_regex_;
};

enum class PrependScheme { always, first, never };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(unicode::utf8(replacement)), code_(replacement), scheme_(scheme), split_(split) {}
  void pre_tokenize(Pieces& pieces) const override {
    Pieces out;
    for (Piece& piece : pieces) {
      std::string s;
      s.reserve(piece.text.size() + 8);
      for (char c : piece.text) {
        if (c == ' ')
          s += replacement_;
        else
          s += c;
      }
      const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && piece.at_origin)))
        s.insert(0, replacement_);
      Piece p{std::move(s), piece.at_origin};
      if (split_) {
        auto parts = char_matches(p.text, [&](char32_t c) { return c == code_; });
        split_piece(p, std::move(parts), SplitBehavior::merged_with_next, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  char32_t code_;
  PrependScheme scheme_;
  bool split_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void pre_tokenize(Pieces& pieces) const override {
    Pieces out;
    for (const Piece& piece : pieces) {
      auto parts = char_matches(piece.text, [](char32_t c) { return unicode::is_number(unicode::category(c)); });
      split_piece(piece, std::move(parts), individual_ ? SplitBehavior::isolated : SplitBehavior::contiguous, out);
    }
    pieces = std::move(out);
  }

 private:
  bool individual_;
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> p) : items_(std::move(p)) {}
  void pre_tokenize(Pieces& pieces) const override {
    for (const auto& p : items_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

inline SplitBehavior split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  throw FormatError(where + ": unknown split behavior \"" + name + "\"");
}

inline PrependScheme prepend_scheme(const Json& j, const std::string& where) {
  // Older files say add_prefix_space instead of prepend_scheme.
  if (!flag(j, "add_prefix_space", true)) return PrependScheme::never;
  const Json* s = j.find("prepend_scheme");
  if (!s || s->is_null()) return PrependScheme::always;
  const std::string& name = s->string();
  if (name == "always") return PrependScheme::always;
  if (name == "first") return PrependScheme::first;
  if (name == "never") return PrependScheme::never;
  throw FormatError(where + ": unknown prepend_scheme \"" + name + "\"");
}

inline std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& where) {
  const std::string type = member(j, "type", where).string();
  const std::string here = where + " (" + type + ")";
  if (type == "Split")
    return std::make_unique<Split>(Pattern::parse(member(j, "pattern", here), here),
                                   split_behavior(member(j, "behavior", here).string(), here),
                                   flag(j, "invert", false));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(flag(j, "add_prefix_space", true), flag(j, "use_regex", true));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(single_char(member(j, "replacement", here), here),
                                                   prepend_scheme(j, here), flag(j, "split", true));
  if (type == "Digits") return std::make_unique<Digits>(flag(j, "individual_digits", false));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (const Json& p : member(j, "pretokenizers", here).array()) items.push_back(make_pre_tokenizer(p, here));
    return std::make_unique<PreTokenizerSequence>(std::move(items));
  }
  throw FormatError(where + ": pre-tokenizer type \"" + type +
                    "\" is not supported (supported: Split, ByteLevel, Metaspace, Digits, Sequence)");
}

// ---- post-processors (only run with add_special_tokens) ----

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<std::int32_t>& ids) const = 0;
  // The largest id it adds; -1 when none.
  virtual std::int32_t max_id() const { return -1; }
};

class TemplateProcessing : public PostProcessor {
 public:
  // Each item: the ids of a special token, or (empty `ids`, `sequence` set) the text's ids.
  struct Item {
    std::vector<std::int32_t> ids;
    bool sequence = false;
  };
  explicit TemplateProcessing(std::vector<Item> items) : items_(std::move(items)) {}
  void process(std::vector<std::int32_t>& ids) const override {
    std::vector<std::int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& item : items_) {
      if (item.sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), item.ids.begin(), item.ids.end());
    }
    ids = std::move(out);
  }
  std::int32_t max_id() const override {
    std::int32_t m = -1;
    for (const Item& item : items_)
      for (std::int32_t id : item.ids) m = std::max(m, id);
    return m;
  }

 private:
  std::vector<Item> items_;
};
class NoPostProcessing : public PostProcessor {
 public:
  void process(std::vector<std::int32_t>&) const override {}
};
class PostProcessorSequence : public PostProcessor {
 public:
  explicit PostProcessorSequence(std::vector<std::unique_ptr<PostProcessor>> p) : items_(std::move(p)) {}
  void process(std::vector<std::int32_t>& ids) const override {
    for (const auto& p : items_) p->process(ids);
  }
  std::int32_t max_id() const override {
    std::int32_t m = -1;
    for (const auto& p : items_) m = std::max(m, p->max_id());
    return m;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

inline std::unique_ptr<PostProcessor> make_post_processor(const Json& j, const std::string& where) {
  const std::string type = member(j, "type", where).string();
  const std::string here = where + " (" + type + ")";
  if (type == "ByteLevel") return std::make_unique<NoPostProcessing>();  // it only trims offsets
  if (type == "TemplateProcessing") {
    const Json& specials = member(j, "special_tokens", here);
    std::vector<TemplateProcessing::Item> items;
    for (const Json& piece : member(j, "single", here).array()) {
      if (const Json* s = piece.find("SpecialToken")) {
        const std::string& name = member(*s, "id", here).string();
        const Json* special = specials.find(name);
        if (!special) throw FormatError(here + ": the template names \"" + name + "\", which special_tokens lacks");
        TemplateProcessing::Item item;
        for (const Json& id : member(*special, "ids", here).array())
          item.ids.push_back(std::int32_t(id.integer(0, 1 << 28)));
        items.push_back(std::move(item));
      } else if (const Json* q = piece.find("Sequence")) {
        if (member(*q, "id", here).string() != "A")
          throw FormatError(here + ": the single-sequence template refers to sequence \"" + q->at("id").string() +
                            "\"");
        items.push_back({{}, true});
      } else {
        throw FormatError(here + ": a template piece must be SpecialToken or Sequence");
      }
    }
    return std::make_unique<TemplateProcessing>(std::move(items));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> items;
    for (const Json& p : member(j, "processors", here).array()) items.push_back(make_post_processor(p, here));
    return std::make_unique<PostProcessorSequence>(std::move(items));
  }
  throw FormatError(where + ": post-processor type \"" + type +
                    "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
}

// ---- decoders ----

inline std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& where) {
  const std::string type = member(j, "type", where).string();
  const std::string here = where + " (" + type + ")";
  if (type == "ByteLevel") return std::make_unique<decoders::ByteLevel>();
  if (type == "Replace") {
    const Pattern p = Pattern::parse(member(j, "pattern", here), here);
    if (p.is_regex()) throw FormatError(here + ": a Replace decoder with a Regex pattern is not supported");
    return std::make_unique<decoders::Replace>(p.literal(), member(j, "content", here).string());
  }
  if (type == "ByteFallback") return std::make_unique<decoders::ByteFallback>();
  if (type == "Fuse") return std::make_unique<decoders::Fuse>();
  if (type == "Strip")
    return std::make_unique<decoders::Strip>(single_char(member(j, "content", here), here),
                                             std::size_t(member(j, "start", here).integer(0, 1 << 20)),
                                             std::size_t(member(j, "stop", here).integer(0, 1 << 20)));
  if (type == "Metaspace")
    return std::make_unique<decoders::Metaspace>(single_char(member(j, "replacement", here), here),
                                                 prepend_scheme(j, here) != PrependScheme::never);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> items;
    for (const Json& d : member(j, "decoders", here).array()) items.push_back(make_decoder(d, here));
    return std::make_unique<decoders::Sequence>(std::move(items));
  }
  throw FormatError(where + ": decoder type \"" + type +
                    "\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, "
                    "Sequence)");
}

// ---- added tokens ----

struct AddedToken {
  std::int32_t id;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Finds added tokens in text: leftmost-longest, as the aho-corasick automaton of tokenizers.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<const AddedToken*> tokens) : tokens_(std::move(tokens)) {
    nodes_.emplace_back();
    for (std::size_t t = 0; t < tokens_.size(); ++t) {
      const std::string& s = tokens_[t]->content;
      if (s.empty()) continue;
      first_bytes_[static_cast<unsigned char>(s[0])] = true;
      std::size_t node = 0;
      for (unsigned char b : s) {
        auto it = nodes_[node].next.find(b);
        if (it == nodes_[node].next.end()) {
          nodes_[node].next.emplace(b, nodes_.size());
          node = nodes_.size();
          nodes_.emplace_back();
        } else {
          node = it->second;
        }
      }
      if (nodes_[node].token < 0) nodes_[node].token = std::int32_t(t);  // the first of equal contents
    }
  }
  bool empty() const { return nodes_.size() <= 1; }

  // The leftmost-longest match at or after `from`: {begin, end, token}, token nullptr when none.
  struct Match {
    std::size_t begin = 0, end = 0;
    const AddedToken* token = nullptr;
  };
  Match find(std::string_view text, std::size_t from) const {
    for (std::size_t at = from; at < text.size(); ++at) {
      if (!first_bytes_[static_cast<unsigned char>(text[at])]) continue;
      std::size_t node = 0, best_end = 0;
      std::int32_t best = -1;
      for (std::size_t k = at; k < text.size(); ++k) {
        const auto it = nodes_[node].next.find(static_cast<unsigned char>(text[k]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].token >= 0) best = nodes_[node].token, best_end = k + 1;
      }
      if (best >= 0) return {at, best_end, tokens_[std::size_t(best)]};
    }
    return {};
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, std::size_t> next;
    std::int32_t token = -1;
  };
  std::vector<const AddedToken*> tokens_;
  std::vector<Node> nodes_;
  bool first_bytes_[256] = {};
};

}  // namespace hf

class HfTokenizer : public Tokenizer {
 public:
  // Loads a tokenizer.json file.
  explicit HfTokenizer(const std::string& path) {
    const MappedFile file(path);
    load(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()), path);
  }
  // A tokenizer.json held in memory; `source` names it in errors.
  static HfTokenizer from_json(std::string_view text, const std::string& source) { return HfTokenizer(text, source); }

  std::vector<std::int32_t> encode(std::string_view raw, const EncodeOptions& options = {}) const override {
    const std::string text = unicode::to_valid_utf8(raw);
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    hf::Pieces pieces, words;
    // 1. Added tokens in the raw text.
    for_each_segment(text, raw_matcher_, options.parse_special,
                     [&](std::string_view segment, std::size_t offset, const hf::AddedToken* token) {
                       if (token) {
                         ids.push_back(token->id);
                         return;
                       }
                       // 2. Normalize, then added tokens marked `normalized`.
                       std::string normalized(segment);
                       if (normalizer_) normalizer_->normalize(normalized);
                       pieces.clear();
                       for_each_segment(
                           normalized, normalized_matcher_, options.parse_special,
                           [&](std::string_view part, std::size_t part_offset, const hf::AddedToken* inner) {
                             if (inner) {
                               flush(pieces, words, ids);
                               ids.push_back(inner->id);
                             } else {
                               pieces.push_back({std::string(part), offset == 0 && part_offset == 0});
                             }
                           });
                       flush(pieces, words, ids);
                     });
    if (options.add_special_tokens && post_processor_) post_processor_->process(ids);
    return ids;
  }

  std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens = false) const override {
    return std::make_unique<Stream>(*this, skip_special_tokens);
  }

  std::size_t vocab_size() const override { return id_space_; }
  std::optional<std::string> token(std::int32_t id) const override {
    const auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return it->second->content;
    if (model_.vocabulary().has(id)) return std::string(model_.vocabulary().token(id));
    return std::nullopt;
  }
  std::optional<std::int32_t> token_id(std::string_view token) const override {
    for (const auto& a : added_)
      if (a.content == token) return a.id;
    return model_.vocabulary().find(token);
  }
  bool is_special(std::int32_t id) const override {
    const auto t = token(id);
    return t && special_contents_.count(*t) != 0;
  }
  std::vector<std::int32_t> special_ids() const override {
    std::vector<std::int32_t> ids;
    for (const auto& a : added_)
      if (a.special) ids.push_back(a.id);
    return ids;
  }
  std::string description() const override { return "tokenizer.json (BPE)"; }

  const std::vector<hf::AddedToken>& added_tokens() const { return added_; }

 private:
  HfTokenizer(std::string_view text, const std::string& source) { load(text, source); }

  // Calls f(text, offset, token) for each stretch of `text` between matches of `matcher` (token
  // nullptr) and each match (as tokenizers' AddedVocabulary::find_matches); empty stretches are
  // skipped.
  template <class F>
  void for_each_segment(std::string_view text, const hf::AddedTokenMatcher& matcher, bool parse_special, F&& f) const {
    std::size_t start = 0;  // the end of the last match kept
    if (!matcher.empty())
      for (std::size_t from = 0;;) {
        const auto m = matcher.find(text, from);
        if (!m.token) break;
        from = m.end;
        std::size_t begin = m.begin, end = m.end;
        if (m.token->special && !parse_special) continue;
        if (m.token->single_word) {
          const bool space_before = begin == 0 || !word_char_before(text, begin);
          const bool space_after = end == text.size() || !word_char_after(text, end);
          if (!space_before || !space_after) continue;
        }
        if (m.token->lstrip) {
          std::size_t b = begin;
          while (b > 0) {
            std::size_t c = b - 1;
            while (c > 0 && (static_cast<unsigned char>(text[c]) & 0xC0) == 0x80) --c;
            if (!unicode::is_white_space(unicode::utf8_code_point(text, c, b - c))) break;
            b = c;
          }
          begin = std::max(b, start);
        }
        if (m.token->rstrip)
          while (end < text.size()) {
            const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(text, end).valid);
            if (!unicode::is_white_space(unicode::utf8_code_point(text, end, n))) break;
            end += n;
          }
        if (start < begin) f(text.substr(start, begin - start), start, nullptr);
        f(text.substr(begin, end - begin), begin, m.token);
        start = end;
      }
    if (start < text.size()) f(text.substr(start), start, nullptr);
  }
  static bool word_char_before(std::string_view text, std::size_t at) {
    std::size_t c = at - 1;
    while (c > 0 && (static_cast<unsigned char>(text[c]) & 0xC0) == 0x80) --c;
    return unicode::is_word(unicode::utf8_code_point(text, c, at - c));
  }
  static bool word_char_after(std::string_view text, std::size_t at) {
    const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(text, at).valid);
    return unicode::is_word(unicode::utf8_code_point(text, at, n));
  }

  // 3-4: pre-tokenize the pending pieces and run the model over each word.
  void flush(hf::Pieces& pieces, hf::Pieces& words, std::vector<std::int32_t>& ids) const {
    if (pieces.empty()) return;
    words.clear();
    for (auto& p : pieces)
      if (!p.text.empty()) words.push_back(std::move(p));
    pieces.clear();
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(words);
    for (const auto& w : words) model_.tokenize(w.text, ids);
  }

  class Stream : public DecodeStream {
   public:
    Stream(const HfTokenizer& t, bool skip) : t_(t), skip_(skip), stage_(t.decoder_->start()) {}
    std::string push(std::int32_t id) override {
      if (id < 0 || std::size_t(id) >= t_.id_space_)
        throw InvalidArgument("token id " + std::to_string(id) + " is outside the tokenizer's ids [0, " +
                              std::to_string(t_.id_space_) + ")");
      std::string_view token;
      const auto added = t_.added_by_id_.find(id);
      if (added != t_.added_by_id_.end())
        token = added->second->content;
      else if (t_.model_.vocabulary().has(id))
        token = t_.model_.vocabulary().token(id);
      else
        return {};  // a hole in the id space decodes to nothing, as in tokenizers
      if (skip_ && t_.special_contents_.count(std::string(token))) return {};
      out_.clear();
      stage_->push({std::string(token), true, true}, out_);
      return text();
    }
    std::string finish() override {
      out_.clear();
      stage_->finish(out_);
      return text();
    }

   private:
    std::string text() {
      std::string s;
      for (auto& c : out_) s += c.text;
      return s;
    }
    const HfTokenizer& t_;
    bool skip_;
    std::unique_ptr<DecoderStage> stage_;
    Chunks out_;
  };

  void load(std::string_view text, const std::string& source) {
    const Json root = Json::parse(text, source);
    const auto absent = [](const Json* j) { return !j || j->is_null(); };
    if (!absent(root.find("truncation")))
      throw FormatError(source + ": \"truncation\" is set; tpkit does not truncate (set it to null)");
    if (!absent(root.find("padding")))
      throw FormatError(source + ": \"padding\" is set; tpkit does not pad (set it to null)");

    const Json& model = hf::member(root, "model", source);
    const std::string where = source + ": model";
    const Json* type = model.find("type");
    if (type && type->string() != "BPE")
      throw FormatError(where + ": model type \"" + type->string() + "\" is not supported (supported: BPE)");
    if (!type && !model.find("merges"))
      throw FormatError(where + ": not a BPE model (no \"merges\"); only BPE is supported");
    if (const Json* d = model.find("dropout"); d && !d->is_null() && d->number() != 0.0)
      throw FormatError(where + ": BPE dropout is not supported (it makes encoding random)");
    std::vector<std::pair<std::string, std::int32_t>> vocab;
    for (const auto& [token, id] : hf::member(model, "vocab", where).object())
      vocab.emplace_back(token, std::int32_t(id.integer(0, (1 << 28) - 1)));
    std::vector<std::pair<std::string, std::string>> merges;
    std::size_t rank = 0;
    for (const Json& m : hf::member(model, "merges", where).array()) {
      ++rank;
      if (m.is_string()) {
        const std::string& line = m.string();
        if (line.rfind("#version", 0) == 0) continue;
        const std::size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
          throw FormatError(where + ": merge " + std::to_string(rank) + " (\"" + line +
                            "\") is not two tokens separated by one space");
        merges.emplace_back(line.substr(0, space), line.substr(space + 1));
      } else {
        const auto& pair = m.array();
        if (pair.size() != 2) throw FormatError(where + ": merge " + std::to_string(rank) + " is not a pair");
        merges.emplace_back(pair[0].string(), pair[1].string());
      }
    }
    BpeOptions options;
    if (const Json* u = model.find("unk_token"); u && !u->is_null()) options.unk_token = u->string();
    if (const Json* p = model.find("continuing_subword_prefix"); p && !p->is_null())
      options.continuing_subword_prefix = p->string();
    if (const Json* s = model.find("end_of_word_suffix"); s && !s->is_null()) options.end_of_word_suffix = s->string();
    options.fuse_unk = hf::flag(model, "fuse_unk", false);
    options.byte_fallback = hf::flag(model, "byte_fallback", false);
    options.ignore_merges = hf::flag(model, "ignore_merges", false);
    model_ = BpeModel(vocab, merges, options);
    id_space_ = model_.vocabulary().id_space();

    if (const Json* added = root.find("added_tokens"); !absent(added)) {
      // tokenizers does not take an added token's id from the file: it is the token's id in the
      // vocabulary, else the next free id after the vocabulary. A file that says otherwise means
      // different things to different readers, so it is refused.
      std::unordered_map<std::string, std::int32_t> assigned;
      std::int64_t max_assigned = -1;
      const std::int64_t model_size = std::int64_t(model_.vocabulary().size());
      for (const Json& a : added->array()) {
        hf::AddedToken t;
        t.id = std::int32_t(hf::member(a, "id", source + ": added_tokens").integer(0, (1 << 28) - 1));
        t.content = hf::member(a, "content", source + ": added_tokens").string();
        if (t.content.empty()) throw FormatError(source + ": added token " + std::to_string(t.id) + " is empty");
        t.single_word = hf::flag(a, "single_word", false);
        t.lstrip = hf::flag(a, "lstrip", false);
        t.rstrip = hf::flag(a, "rstrip", false);
        t.normalized = hf::flag(a, "normalized", !hf::flag(a, "special", false));
        t.special = hf::flag(a, "special", false);
        std::int64_t expected;
        if (const auto it = assigned.find(t.content); it != assigned.end())
          expected = it->second;
        else if (const auto in_vocab = model_.vocabulary().find(t.content))
          expected = *in_vocab;
        else
          expected = max_assigned < 0 ? model_size : max_assigned >= model_size ? max_assigned + 1 : model_size;
        if (t.id != expected)
          throw FormatError(source + ": added token \"" + t.content + "\" has id " + std::to_string(t.id) +
                            ", but Hugging Face tokenizers gives it id " + std::to_string(expected) +
                            " (the vocabulary's id, else the next free one)");
        assigned[t.content] = t.id;
        max_assigned = std::max<std::int64_t>(max_assigned, t.id);
        added_.push_back(std::move(t));
      }
    }
    std::vector<const hf::AddedToken*> raw, normalized;
    for (const auto& a : added_) {
      added_by_id_[a.id] = &a;
      id_space_ = std::max(id_space_, std::size_t(a.id) + 1);
      (a.normalized ? normalized : raw).push_back(&a);
      if (a.special) special_contents_.insert(a.content);
    }
    raw_matcher_ = hf::AddedTokenMatcher(raw);
    normalized_matcher_ = hf::AddedTokenMatcher(normalized);

    if (const Json* n = root.find("normalizer"); !absent(n))
      normalizer_ = hf::make_normalizer(*n, source + ": normalizer");
    if (const Json* p = root.find("pre_tokenizer"); !absent(p))
      pre_tokenizer_ = hf::make_pre_tokenizer(*p, source + ": pre_tokenizer");
    if (const Json* p = root.find("post_processor"); !absent(p)) {
      post_processor_ = hf::make_post_processor(*p, source + ": post_processor");
      if (std::size_t(post_processor_->max_id() + 1) > id_space_)
        throw FormatError(source + ": post_processor adds id " + std::to_string(post_processor_->max_id()) +
                          ", outside the tokenizer's ids [0, " + std::to_string(id_space_) + ")");
    }
    if (const Json* d = root.find("decoder"); !absent(d))
      decoder_ = hf::make_decoder(*d, source + ": decoder");
    else
      decoder_ = std::make_unique<decoders::JoinWithSpaces>();
  }

  BpeModel model_;
  std::size_t id_space_ = 0;
  std::vector<hf::AddedToken> added_;
  std::unordered_map<std::int32_t, const hf::AddedToken*> added_by_id_;
  std::set<std::string> special_contents_;
  hf::AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<hf::PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
};

}  // namespace tpkit
