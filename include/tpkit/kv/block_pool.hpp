// tpkit/kv/block_pool.hpp: the KV cache's blocks, with automatic prefix caching.
//
// A full block holds block_size tokens' K/V, which depend only on those tokens and everything
// before them. So a full block is identified by (its parent block, the parent's generation, its
// own tokens), and a later sequence whose prompt starts with the same tokens can take the blocks
// instead of computing them again (vLLM's automatic prefix caching, made exact: a hit compares
// the tokens and the parent, never trusts a hash alone).
//
// Blocks are reference-counted: cached blocks are shared read-only between sequences (a
// sequence only writes beyond its full blocks). A block whose count drops to zero keeps its
// content and waits in an LRU list; it is reused for new work only when no never-cached block
// is free, the least recently released first. Giving a block new content bumps its generation,
// which invalidates the entries of blocks cached after its old content.
//
// The pool is deterministic: the same calls give the same blocks on every rank, so every rank of
// a TP x PP world, running its own replica of the scheduler, reaches the same hits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

struct PrefixCacheStats {
  std::int64_t queries = 0;  // prompt tokens looked up
  std::int64_t hits = 0;     // of them, found in the cache
};

// FNV-1a over a block's identity: the index's key. Any function will do for correctness, since a
// hit compares the parent and the tokens themselves; tests use one where everything collides.
struct BlockKeyHash {
  std::uint64_t operator()(std::int32_t parent, std::uint64_t parent_generation, const std::int32_t* tokens,
                           std::int64_t count) const {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&](std::uint64_t v) {
      for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    };
    mix(std::uint64_t(std::int64_t(parent))), mix(parent_generation);
    for (std::int64_t i = 0; i < count; ++i) mix(std::uint32_t(tokens[i]));
    return h;
  }
};

template <class KeyHash = BlockKeyHash>
class BasicBlockPool {
 public:
  BasicBlockPool(std::int64_t num_blocks, std::int64_t block_size, bool caching)
      : block_size_(block_size), caching_(caching), blocks_(std::size_t(num_blocks)) {
    TPKIT_REQUIRE(num_blocks >= 0 && block_size >= 1, "a block pool needs num_blocks >= 0 and block_size >= 1 (got ",
                  num_blocks, ", ", block_size, ")");
    free_.reserve(std::size_t(num_blocks));
    for (std::int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(std::int32_t(b));  // hand out 0, 1, 2, ...
  }

  std::int64_t num_blocks() const { return std::int64_t(blocks_.size()); }
  std::int64_t block_size() const { return block_size_; }
  bool caching() const { return caching_; }
  // Blocks allocate() can hand out: never-cached free blocks and cached ones nobody holds.
  std::int64_t num_free() const { return std::int64_t(free_.size() + lru_.size()); }
  std::int64_t num_cached() const { return std::int64_t(index_.size()); }
  const PrefixCacheStats& stats() const { return stats_; }
  void count_lookup(std::int64_t queried_tokens, std::int64_t hit_tokens) {
    stats_.queries += queried_tokens;
    stats_.hits += hit_tokens;
  }

  // A block for new content (reference count 1), or -1 when every block is held.
  std::int32_t allocate() {
    std::int32_t b;
    if (!free_.empty()) {
      b = free_.back();
      free_.pop_back();
    } else if (!lru_.empty()) {
      b = lru_.front();  // the least recently released cached block
      lru_.pop_front();
      forget(b);
    } else {
      return -1;
    }
    Block& block = blocks_[std::size_t(b)];
    block.refs = 1;
    // New content: entries cached after this block under its old content (children of an
    // uncached duplicate, for one) must never match behind the new.
    ++block.generation;
    return b;
  }

  // Drops one reference; at zero a cached block waits in the LRU list, another is free.
  void release(std::int32_t b) {
    TPKIT_REQUIRE(b >= 0 && b < num_blocks() && blocks_[std::size_t(b)].refs > 0, "block ", b,
                  " is not allocated (double free or foreign block)");
    Block& block = blocks_[std::size_t(b)];
    if (--block.refs > 0) return;
    if (block.cached) {
      block.lru_at = lru_.insert(lru_.end(), b);
    } else {
      free_.push_back(b);
    }
  }

  // The cached blocks that hold the longest prefix of `tokens` made of whole blocks, at most
  // `max_blocks` of them; each gains a reference. (The caller counts the lookup, once per request.)
  std::vector<std::int32_t> match(const std::vector<std::int32_t>& tokens, std::int64_t max_blocks) {
    std::vector<std::int32_t> hits;
    if (!caching_ || max_blocks <= 0) return hits;
    std::int32_t parent = -1;
    for (std::int64_t i = 0; i < max_blocks; ++i) {
      const std::int32_t b = find(parent, tokens.data() + i * block_size_);
      if (b < 0) break;
      Block& block = blocks_[std::size_t(b)];
      if (block.refs++ == 0) lru_.erase(block.lru_at);
      hits.push_back(b);
      parent = b;
    }
    return hits;
  }

  // Records that block `b` (held by the caller) is full with `tokens` (block_size of them) after
  // `parent` (-1: the first block). When an equal block is already cached, `b` stays uncached.
  void cache(std::int32_t b, std::int32_t parent, const std::int32_t* tokens) {
    if (!caching_) return;
    Block& block = blocks_[std::size_t(b)];
    if (block.cached || find(parent, tokens) >= 0) return;
    block.cached = true;
    block.parent = parent;
    block.parent_generation = parent >= 0 ? blocks_[std::size_t(parent)].generation : 0;
    block.tokens.assign(tokens, tokens + block_size_);
    block.key = key(parent, block.parent_generation, tokens);
    index_.emplace(block.key, b);
  }

 private:
  struct Block {
    int refs = 0;
    bool cached = false;
    std::uint64_t generation = 0;  // bumped when the block's content is replaced
    std::int32_t parent = -1;
    std::uint64_t parent_generation = 0, key = 0;
    std::vector<std::int32_t> tokens;
    std::list<std::int32_t>::iterator lru_at;
  };

  std::uint64_t key(std::int32_t parent, std::uint64_t generation, const std::int32_t* tokens) const {
    return KeyHash()(parent, generation, tokens, block_size_);
  }

  // The cached block holding `tokens` after `parent` (exactly: tokens, parent and its generation).
  std::int32_t find(std::int32_t parent, const std::int32_t* tokens) const {
    const std::uint64_t generation = parent >= 0 ? blocks_[std::size_t(parent)].generation : 0;
    const auto [first, last] = index_.equal_range(key(parent, generation, tokens));
    for (auto it = first; it != last; ++it) {
      const Block& block = blocks_[std::size_t(it->second)];
      if (block.parent == parent && block.parent_generation == generation &&
          std::equal(block.tokens.begin(), block.tokens.end(), tokens))
        return it->second;
    }
    return -1;
  }

  // Drops a block's cache entry before its content is replaced.
  void forget(std::int32_t b) {
    Block& block = blocks_[std::size_t(b)];
    const auto [first, last] = index_.equal_range(block.key);
    for (auto it = first; it != last; ++it)
      if (it->second == b) {
        index_.erase(it);
        break;
      }
    block.cached = false;
    block.tokens.clear();
  }

  std::int64_t block_size_;
  bool caching_;
  std::vector<Block> blocks_;
  std::vector<std::int32_t> free_;  // never cached (or forgotten), free
  std::list<std::int32_t> lru_;     // cached, nobody holds them; front: released longest ago
  std::unordered_multimap<std::uint64_t, std::int32_t> index_;
  PrefixCacheStats stats_;
};

using BlockPool = BasicBlockPool<>;

}  // namespace tpkit
