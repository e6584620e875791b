// tpkit/tokenizer/bpe.hpp: the BPE model of tokenizer.json, as Hugging Face tokenizers runs it.
//
// A word starts as one symbol per character (with `continuing_subword_prefix` on all but the
// first and `end_of_word_suffix` on the last); a character missing from the vocabulary becomes
// its <0xXX> byte tokens under `byte_fallback`, else the unknown token (runs of unknowns fused
// under `fuse_unk`), else nothing. Then the adjacent pair of lowest merge rank merges, the
// leftmost of equals first, until no pair has a merge. Candidates wait in a priority queue over a
// linked list of symbols, so a word costs O(n log n), not a rescan per merge. With
// `ignore_merges` a word that is itself a token is that token.
//
// The vocabulary is immutable after construction, so one model serves any number of threads.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/tokenizer/unicode.hpp"

namespace tpkit {

// Token strings by id, kept in one buffer; ids may have holes (a vocabulary need not be dense).
class Vocabulary {
 public:
  Vocabulary() = default;
  explicit Vocabulary(const std::vector<std::pair<std::string, std::int32_t>>& entries) {
    std::int32_t max_id = -1;
    std::size_t bytes = 0;
    for (const auto& [token, id] : entries) {
      if (id < 0 || id >= (1 << 28))
        throw FormatError("token \"" + token + "\" has id " + std::to_string(id) + " (expected 0 to 2^28)");
      max_id = std::max(max_id, id);
      bytes += token.size();
    }
    // Ids index a table; one far beyond the number of tokens would only cost memory.
    if (std::size_t(max_id) >= 2 * entries.size() + (std::size_t(1) << 20))
      throw FormatError("token id " + std::to_string(max_id) + " is far beyond the " + std::to_string(entries.size()) +
                        " tokens of the vocabulary");
    spans_.assign(std::size_t(max_id + 1), {0, kNone});
    text_.reserve(bytes);
    for (const auto& [token, id] : entries) {
      if (spans_[std::size_t(id)].second != kNone)
        throw FormatError("two tokens share id " + std::to_string(id) + ": \"" + std::string(this->token(id)) +
                          "\" and \"" + token + "\"");
      spans_[std::size_t(id)] = {std::uint32_t(text_.size()), std::uint32_t(token.size())};
      text_ += token;
    }
    ids_.reserve(entries.size());
    for (const auto& [token, id] : entries) {
      const auto [it, fresh] = ids_.emplace(token_view(id), id);
      if (!fresh) throw FormatError("token \"" + token + "\" appears twice in the vocabulary");
    }
  }

  // One past the largest id, and the number of tokens (smaller where the ids have holes).
  std::size_t id_space() const { return spans_.size(); }
  std::size_t size() const { return ids_.size(); }
  bool has(std::int32_t id) const {
    return id >= 0 && std::size_t(id) < spans_.size() && spans_[std::size_t(id)].second != kNone;
  }
  std::string_view token(std::int32_t id) const { return has(id) ? token_view(id) : std::string_view(); }
  std::optional<std::int32_t> find(std::string_view token) const {
    const auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFF;
  std::string_view token_view(std::int32_t id) const {
    const auto& s = spans_[std::size_t(id)];
    return std::string_view(text_).substr(s.first, s.second);
  }
  std::string text_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> spans_;  // offset, length (kNone: no token)
  std::unordered_map<std::string_view, std::int32_t> ids_;      // views into text_
};

// Merge ranks by pair: open addressing over a power-of-two table (the merge loop's hot lookup;
// std::unordered_map's prime modulo costs a division per probe).
class PairTable {
 public:
  struct Value {
    std::uint32_t rank;
    std::int32_t merged;
  };
  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return std::uint64_t(std::uint32_t(a)) << 32 | std::uint32_t(b);
  }

  void reserve(std::size_t n) {
    std::size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    slots_.assign(capacity, {kEmpty, {0, 0}});
    shift_ = 64;
    for (std::size_t c = capacity; c > 1; c >>= 1) --shift_;
  }
  // Inserts or replaces (a repeated pair: the last one wins, as in tokenizers).
  void put(std::uint64_t k, Value v) {
    for (std::size_t i = slot(k);; i = (i + 1) & (slots_.size() - 1))
      if (slots_[i].first == kEmpty || slots_[i].first == k) {
        slots_[i] = {k, v};
        return;
      }
  }
  const Value* find(std::uint64_t k) const {
    if (slots_.empty()) return nullptr;
    for (std::size_t i = slot(k);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].first == k) return &slots_[i].second;
      if (slots_[i].first == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t(0);  // ids are below 2^28: never a key
  std::size_t slot(std::uint64_t k) const { return std::size_t((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<std::pair<std::uint64_t, Value>> slots_;
  unsigned shift_ = 64;
};

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
};

// Words already tokenized, as tokenizers keeps them: up to 10,000 words (then no more are
// added), in shards with a lock each so threads rarely meet. Results are deterministic, so the
// cache changes speed only.
class WordCache {
 public:
  WordCache() = default;
  WordCache(const WordCache&) {}  // a copy starts empty
  WordCache& operator=(const WordCache&) { return *this; }

  bool find(std::string_view word, std::vector<std::int32_t>& out) const {
    if (word.size() > kMaxWordBytes) return false;
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mutex);
    const auto it = s.words.find(std::string(word));
    if (it == s.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void add(std::string_view word, const std::int32_t* ids, std::size_t n) const {
    if (word.size() > kMaxWordBytes) return;
    Shard& s = shard(word);
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.words.size() < kWordsPerShard) s.words.emplace(std::string(word), std::vector<std::int32_t>(ids, ids + n));
  }

 private:
  static constexpr std::size_t kShards = 16, kWordsPerShard = 10000 / kShards, kMaxWordBytes = 64;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>> words;
  };
  Shard& shard(std::string_view word) const { return shards_[std::hash<std::string_view>()(word) % kShards]; }
  mutable std::array<Shard, kShards> shards_;
};

class BpeModel {
 public:
  BpeModel() = default;
  // `merges` in rank order; a merge whose parts or result are not tokens is a FormatError naming it.
  BpeModel(const std::vector<std::pair<std::string, std::int32_t>>& vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options)
      : vocab_(vocab), options_(std::move(options)) {
    if (options_.unk_token && !vocab_.find(*options_.unk_token))
      throw FormatError("the unknown token \"" + *options_.unk_token + "\" is not in the vocabulary");
    const std::size_t prefix = options_.continuing_subword_prefix.size();
    merges_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& [a, b] = merges[rank];
      const auto left = vocab_.find(a), right = vocab_.find(b);
      // The merged token drops the second part's continuing prefix.
      const std::string merged =
          a + (prefix && b.compare(0, prefix, options_.continuing_subword_prefix) == 0 ? b.substr(prefix) : b);
      const auto result = vocab_.find(merged);
      if (!left || !right || !result)
        throw FormatError("merge " + std::to_string(rank) + " (\"" + a + "\" \"" + b + "\") names " +
                          (!left    ? "\"" + a + "\""
                           : !right ? "\"" + b + "\""
                                    : "\"" + merged + "\"") +
                          ", which is not in the vocabulary");
      merges_.put(PairTable::key(*left, *right), {std::uint32_t(rank), *result});
    }
    if (prefix == 0 && options_.end_of_word_suffix.empty()) {
      small_chars_.assign(kSmallChars, -1);
      for (std::size_t id = 0; id < vocab_.id_space(); ++id) {
        const std::string_view t = vocab_.token(std::int32_t(id));
        if (t.empty() || unicode::utf8_step(t, 0).valid != t.size()) continue;
        const char32_t c = unicode::utf8_code_point(t, 0, t.size());
        if (c < kSmallChars)
          small_chars_[c] = std::int32_t(id);
        else
          single_chars_.emplace(c, std::int32_t(id));
      }
    }
    if (options_.byte_fallback)
      for (int b = 0; b < 256; ++b) {
        static const char* const kHex = "0123456789ABCDEF";
        const std::string name = std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
        byte_tokens_[std::size_t(b)] = vocab_.find(name).value_or(-1);
      }
  }

  const Vocabulary& vocabulary() const { return vocab_; }
  const BpeOptions& options() const { return options_; }

  // Appends the ids of `word` (valid UTF-8) to `out`.
  void tokenize(std::string_view word, std::vector<std::int32_t>& out) const {
    if (word.empty()) return;
    if (options_.ignore_merges)
      if (const auto id = vocab_.find(word)) {
        out.push_back(*id);
        return;
      }
    if (cache_.find(word, out)) return;
    const std::size_t first = out.size();
    std::vector<Symbol>& symbols = scratch();
    symbols.clear();
    initial_symbols(word, symbols);
    merge_all(symbols);
    for (const Symbol& s : symbols)
      if (s.length) out.push_back(s.id);
    cache_.add(word, out.data() + first, out.size() - first);
  }

 private:
  struct Symbol {
    std::int32_t id;
    std::int32_t prev, next;  // -1: none
    std::uint32_t length;     // bytes of the word it covers; 0: merged away
  };

  static std::vector<Symbol>& scratch() {
    thread_local std::vector<Symbol> symbols;
    return symbols;
  }

  void add(std::vector<Symbol>& symbols, std::int32_t id, std::size_t length) const {
    const std::int32_t at = std::int32_t(symbols.size());
    symbols.push_back({id, at - 1, -1, std::uint32_t(length)});
    if (at > 0) symbols[std::size_t(at) - 1].next = at;
  }

  std::optional<std::int32_t> char_id(std::string_view word, std::size_t at, std::size_t n, bool first,
                                      bool last) const {
    if (options_.continuing_subword_prefix.empty() && options_.end_of_word_suffix.empty()) {
      const char32_t c = unicode::utf8_code_point(word, at, n);
      if (c < kSmallChars) {
        if (small_chars_[c] < 0) return std::nullopt;
        return small_chars_[c];
      }
      const auto it = single_chars_.find(c);
      if (it == single_chars_.end()) return std::nullopt;
      return it->second;
    }
    std::string s(word.substr(at, n));
    if (!first) s = options_.continuing_subword_prefix + s;
    if (last) s += options_.end_of_word_suffix;
    return vocab_.find(s);
  }

  void initial_symbols(std::string_view word, std::vector<Symbol>& symbols) const {
    // A pending unknown (id, bytes): runs of unknown characters become one under fuse_unk.
    std::int32_t unk = -1;
    std::size_t unk_bytes = 0;
    const std::int32_t unk_id = options_.unk_token ? vocab_.find(*options_.unk_token).value_or(-1) : -1;
    for (std::size_t at = 0; at < word.size();) {
      const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(word, at).valid);
      const bool first = at == 0, last = at + n == word.size();
      if (const auto id = char_id(word, at, n, first, last)) {
        if (unk >= 0) add(symbols, unk, unk_bytes), unk = -1;
        add(symbols, *id, n);
      } else {
        bool fell_back = false;
        if (options_.byte_fallback) {
          // As tokenizers: the bytes of the character with its prefix/suffix, all or none.
          std::string s(word.substr(at, n));
          if (!first) s = options_.continuing_subword_prefix + s;
          if (last) s += options_.end_of_word_suffix;
          bool all = true;
          for (unsigned char b : s) all = all && byte_tokens_[b] >= 0;
          if (all) {
            for (unsigned char b : s) add(symbols, byte_tokens_[b], 1);  // a pending unknown stays pending
            fell_back = true;
          }
        }
        if (!fell_back && unk_id >= 0) {
          if (unk >= 0 && options_.fuse_unk) {
            unk_bytes += n;
          } else {
            if (unk >= 0) add(symbols, unk, unk_bytes);
            unk = unk_id, unk_bytes = n;
          }
        }
      }
      at += n;
    }
    if (unk >= 0) add(symbols, unk, unk_bytes);
  }

  struct Candidate {
    std::uint32_t rank;
    std::int32_t pos, merged;
    bool operator<(const Candidate& o) const {  // the queue's top: lowest rank, then leftmost
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };

  const PairTable::Value* merge_of(std::int32_t a, std::int32_t b) const { return merges_.find(PairTable::key(a, b)); }

  void merge_all(std::vector<Symbol>& symbols) const {
    thread_local std::vector<Candidate> heap;  // a priority queue, its storage kept between words
    heap.clear();
    const auto push = [&](Candidate c) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end());
    };
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
      if (const auto* m = merge_of(symbols[i].id, symbols[i + 1].id)) push({m->rank, std::int32_t(i), m->merged});
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = symbols[std::size_t(top.pos)];
      if (left.length == 0 || left.next < 0) continue;
      Symbol& right = symbols[std::size_t(left.next)];
      // Stale when the pair there no longer merges into the same token (tokenizers' own test).
      const auto* m = merge_of(left.id, right.id);
      if (!m || m->merged != top.merged) continue;
      left.id = top.merged;
      left.length += right.length;
      left.next = right.next;
      right.length = 0;
      if (left.next >= 0) symbols[std::size_t(left.next)].prev = top.pos;
      if (left.prev >= 0)
        if (const auto* p = merge_of(symbols[std::size_t(left.prev)].id, left.id))
          push({p->rank, left.prev, p->merged});
      if (left.next >= 0)
        if (const auto* n = merge_of(left.id, symbols[std::size_t(left.next)].id)) push({n->rank, top.pos, n->merged});
    }
  }

  Vocabulary vocab_;
  BpeOptions options_;
  WordCache cache_;
  PairTable merges_;                              // pair -> rank, result
  static constexpr char32_t kSmallChars = 0x800;  // one- and two-byte characters: a direct table
  std::vector<std::int32_t> small_chars_;
  std::unordered_map<char32_t, std::int32_t> single_chars_;
  std::int32_t byte_tokens_[256] = {};
};

}  // namespace tpkit
