// tpkit/kv/paged_kv_cache.hpp: a paged key/value cache and its block allocator.
//
// Memory is a pool of fixed-size blocks (block_size token slots, 16 by default). A sequence
// owns a block table, the list of its blocks in order; token position p lives in slot
// p % block_size of block table[p / block_size]. Blocks return to the pool when a sequence
// ends, so memory follows the live tokens rather than the longest possible sequence.
// The cache holds this rank's KV heads only (see partition_heads).
#pragma once

#include <cstdint>
#include <vector>

#include "tpkit/core/checked_math.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"

namespace tpkit {

class BlockAllocator {
 public:
  explicit BlockAllocator(std::int64_t num_blocks = 0) : in_use_(std::size_t(num_blocks), false) {
    TPKIT_REQUIRE(num_blocks >= 0, "num_blocks must be non-negative (got ", num_blocks, ")");
    free_.reserve(std::size_t(num_blocks));
    for (std::int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(std::int32_t(b));  // hand out 0, 1, 2, ...
  }
  std::int64_t num_blocks() const { return std::int64_t(in_use_.size()); }
  std::int64_t num_free() const { return std::int64_t(free_.size()); }

  // A free block, or -1 when none is left (the caller queues or preempts; nothing is corrupted).
  std::int32_t allocate() {
    if (free_.empty()) return -1;
    const std::int32_t b = free_.back();
    free_.pop_back();
    in_use_[std::size_t(b)] = true;
    return b;
  }
  void release(std::int32_t block) {
    TPKIT_REQUIRE(block >= 0 && block < num_blocks() && in_use_[std::size_t(block)], "block ", block,
                  " is not allocated (double free or foreign block)");
    in_use_[std::size_t(block)] = false;
    free_.push_back(block);
  }

 private:
  std::vector<std::int32_t> free_;
  std::vector<bool> in_use_;
};

struct KVCacheShape {
  std::int64_t num_layers = 0, num_blocks = 0, block_size = 16;
  int kv_heads = 0;  // local KV heads of this rank
  std::int64_t head_dim = 0;
  std::int64_t slot_elements() const { return kv_heads * head_dim; }
};

template <class T, class Ops>
class PagedKVCache {
 public:
  explicit PagedKVCache(KVCacheShape shape) : shape_(shape) {
    TPKIT_REQUIRE(shape.block_size >= 1, "block_size must be positive (got ", shape.block_size, ")");
    TPKIT_REQUIRE(shape.num_layers >= 0 && shape.num_blocks >= 0 && shape.kv_heads >= 0 && shape.head_dim >= 0,
                  "a KV cache shape cannot be negative (layers ", shape.num_layers, ", blocks ", shape.num_blocks,
                  ", KV heads ", shape.kv_heads, ", head_dim ", shape.head_dim, ")");
    const std::size_t per_layer = std::size_t(checked_mul(
        checked_mul(shape.num_blocks, shape.block_size, "KV cache size"), shape.slot_elements(), "KV cache size"));
    for (std::int64_t l = 0; l < shape.num_layers; ++l) {
      keys_.emplace_back(per_layer);
      values_.emplace_back(per_layer);
    }
  }
  const KVCacheShape& shape() const { return shape_; }

  // Slot index of token position `pos` of a sequence with block table `blocks`.
  std::int64_t slot(const std::vector<std::int32_t>& blocks, std::int64_t pos) const {
    TPKIT_REQUIRE(pos >= 0 && std::size_t(pos / shape_.block_size) < blocks.size(), "position ", pos,
                  " is beyond the sequence's ", blocks.size(), " blocks");
    return slot_unchecked(blocks, pos);
  }
  // The same for a position already known to be covered (inner loops check once, up front).
  std::int64_t slot_unchecked(const std::vector<std::int32_t>& blocks, std::int64_t pos) const {
    return std::int64_t(blocks[std::size_t(pos / shape_.block_size)]) * shape_.block_size + pos % shape_.block_size;
  }
  T* key(std::int64_t layer, std::int64_t slot) {
    return keys_[std::size_t(layer)].data() + slot * shape_.slot_elements();
  }
  T* value(std::int64_t layer, std::int64_t slot) {
    return values_[std::size_t(layer)].data() + slot * shape_.slot_elements();
  }
  const T* key(std::int64_t layer, std::int64_t slot) const {
    return keys_[std::size_t(layer)].data() + slot * shape_.slot_elements();
  }
  const T* value(std::int64_t layer, std::int64_t slot) const {
    return values_[std::size_t(layer)].data() + slot * shape_.slot_elements();
  }

 private:
  KVCacheShape shape_;
  std::vector<typename Ops::template Buffer<T>> keys_, values_;
};

}  // namespace tpkit
