// tpkit/parallel/shard.hpp: all tensor-parallel shard arithmetic, in one place.
//
// Every layer, loader and cache asks these functions which slice of a full tensor a rank owns;
// none computes an offset of its own. Splits are balanced: when `parts` does not divide the
// work, the first (total % parts) ranks take one unit more, so TP sizes that do not divide a
// model's head count still run (Qwen2-7B's 28 heads at TP 8 give 4,4,4,4,3,3,3,3).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

// This rank's place in a tensor-parallel group.
struct ShardSpec {
  int rank = 0;
  int size = 1;

  ShardSpec() = default;
  ShardSpec(int rank_, int size_) : rank(rank_), size(size_) {
    TPKIT_REQUIRE(size >= 1, "tp_size must be at least 1 (got ", size, ")");
    TPKIT_REQUIRE(rank >= 0 && rank < size, "rank ", rank, " is out of range for tp_size ", size);
  }
};

// A half-open index range [begin, end).
struct Range {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
  bool contains(std::int64_t i) const { return begin <= i && i < end; }
  friend bool operator==(const Range& a, const Range& b) { return a.begin == b.begin && a.end == b.end; }
};

// Rank `index` of `parts`' balanced share of `units` indivisible units.
inline Range balanced_range(std::int64_t units, int parts, int index) {
  const std::int64_t base = units / parts, extra = units % parts;
  const std::int64_t begin = index * base + (index < extra ? index : extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

// The slice of a dimension of `total` elements that `shard` owns, cut only at multiples of
// `granule` (a head size, say). `what` names the dimension in error messages.
inline Range split_dimension(std::int64_t total, ShardSpec shard, std::int64_t granule = 1,
                             const char* what = "dimension") {
  TPKIT_REQUIRE(granule >= 1, what, ": granule must be positive (got ", granule, ")");
  TPKIT_REQUIRE(total % granule == 0, what, " (", total, ") is not a multiple of its granule (", granule, ")");
  const std::int64_t units = total / granule;
  TPKIT_REQUIRE(units >= shard.size, "tp_size (", shard.size, ") exceeds the number of ", what, " units (", units,
                " of ", granule, "); every rank needs at least one");
  const Range r = balanced_range(units, shard.size, shard.rank);
  return {r.begin * granule, r.end * granule};
}

// Element counts that every rank of the group owns of the same dimension, in rank order (for
// gathers of unevenly split outputs).
inline std::vector<std::int64_t> split_sizes(std::int64_t total, int tp_size, std::int64_t granule = 1,
                                             const char* what = "dimension") {
  std::vector<std::int64_t> sizes(std::size_t(tp_size), 0);
  for (int r = 0; r < tp_size; ++r) sizes[std::size_t(r)] = split_dimension(total, {r, tp_size}, granule, what).size();
  return sizes;
}

// Attention heads of one rank. Query heads are split in balance; the rank holds every KV head
// its query heads read (query head q reads KV head q / group_size). When tp_size exceeds the KV
// head count, or a split falls inside a group, KV heads are replicated on several ranks.
struct HeadPartition {
  int num_q_heads = 0;   // whole model
  int num_kv_heads = 0;  // whole model
  int group_size = 1;    // query heads per KV head
  Range q_heads;         // global query heads on this rank
  Range kv_heads;        // global KV heads on this rank

  int local_q_heads() const { return int(q_heads.size()); }
  int local_kv_heads() const { return int(kv_heads.size()); }
  // Local KV head read by local query head `local_q`.
  int local_kv_for(int local_q) const { return int((q_heads.begin + local_q) / group_size - kv_heads.begin); }
};

inline HeadPartition partition_heads(int num_q_heads, int num_kv_heads, ShardSpec shard) {
  TPKIT_REQUIRE(num_q_heads >= 1 && num_kv_heads >= 1, "head counts must be positive (num_q_heads ", num_q_heads,
                ", num_kv_heads ", num_kv_heads, ")");
  TPKIT_REQUIRE(num_q_heads % num_kv_heads == 0, "num_q_heads (", num_q_heads, ") is not a multiple of num_kv_heads (",
                num_kv_heads, ")");
  TPKIT_REQUIRE(shard.size <= num_q_heads, "tp_size (", shard.size, ") exceeds num_q_heads (", num_q_heads,
                "); every rank needs at least one query head");
  HeadPartition p;
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = num_kv_heads;
  p.group_size = num_q_heads / num_kv_heads;
  p.q_heads = balanced_range(num_q_heads, shard.size, shard.rank);
  p.kv_heads = {p.q_heads.begin / p.group_size, (p.q_heads.end - 1) / p.group_size + 1};
  return p;
}

// The vocabulary is padded so every rank holds the same number of rows (`rows_per_rank`, a
// multiple of `alignment`); rank r owns ids [r * rows_per_rank, ...) clipped to the real vocab.
// Padding rows are zero and never reach a logit.
struct VocabPartition {
  std::int64_t vocab_size = 0;
  std::int64_t padded_vocab_size = 0;
  std::int64_t rows_per_rank = 0;
  Range ids;  // real token ids on this rank; may be empty for the last ranks of a tiny vocab

  std::int64_t local_real_rows() const { return ids.size(); }
};

inline VocabPartition partition_vocab(std::int64_t vocab_size, ShardSpec shard, std::int64_t alignment = 16) {
  TPKIT_REQUIRE(vocab_size >= 1, "vocab_size must be positive (got ", vocab_size, ")");
  TPKIT_REQUIRE(alignment >= 1, "vocab alignment must be positive (got ", alignment, ")");
  VocabPartition p;
  p.vocab_size = vocab_size;
  const std::int64_t per_rank = (vocab_size + shard.size - 1) / shard.size;
  p.rows_per_rank = (per_rank + alignment - 1) / alignment * alignment;
  p.padded_vocab_size = p.rows_per_rank * shard.size;
  const std::int64_t begin = std::min<std::int64_t>(vocab_size, shard.rank * p.rows_per_rank);
  p.ids = {begin, std::min<std::int64_t>(vocab_size, begin + p.rows_per_rank)};
  return p;
}

// Real (unpadded) rows each rank of the group holds, in rank order.
inline std::vector<std::int64_t> vocab_rows_per_rank(const VocabPartition& p, int tp_size) {
  std::vector<std::int64_t> rows(std::size_t(tp_size), 0);
  for (int r = 0; r < tp_size; ++r)
    rows[std::size_t(r)] = std::clamp<std::int64_t>(p.vocab_size - r * p.rows_per_rank, 0, p.rows_per_rank);
  return rows;
}

// Expert parallelism: which ranks of a group hold which experts of a mixture-of-experts layer.
// holders[e] lists the ranks holding a copy of expert e, ascending: one in a balanced split,
// more for a hot expert given redundant copies. A rank may hold no expert at all (more ranks
// than experts).
struct ExpertPlacement {
  int num_experts = 0;
  int ranks = 0;
  std::vector<std::vector<int>> holders;

  bool empty() const { return num_experts == 0; }
  bool holds(int rank, int expert) const {
    const std::vector<int>& h = holders[std::size_t(expert)];
    return std::find(h.begin(), h.end(), rank) != h.end();
  }
  // The experts `rank` holds, ascending.
  std::vector<int> experts_of(int rank) const {
    std::vector<int> out;
    for (int e = 0; e < num_experts; ++e)
      if (holds(rank, e)) out.push_back(e);
    return out;
  }
  // The rank that computes expert `expert` for a token: copies take turns by `key` (the token's
  // position in its sequence), so a token's arithmetic does not depend on what else is batched.
  int computing_rank(int expert, std::int64_t key) const {
    const std::vector<int>& h = holders[std::size_t(expert)];
    return h[std::size_t((key < 0 ? 0 : key) % std::int64_t(h.size()))];
  }
  // Throws InvalidArgument unless every expert has at least one holder, each a rank of the group
  // listed once, ascending.
  void validate(int expected_experts, int expected_ranks) const {
    TPKIT_REQUIRE(num_experts == expected_experts && std::int64_t(holders.size()) == num_experts,
                  "the expert placement covers ", holders.size(), " experts but the model has ", expected_experts);
    TPKIT_REQUIRE(ranks == expected_ranks, "the expert placement is for ", ranks, " ranks but the group has ",
                  expected_ranks);
    for (int e = 0; e < num_experts; ++e) {
      const std::vector<int>& h = holders[std::size_t(e)];
      TPKIT_REQUIRE(!h.empty(), "the expert placement gives expert ", e, " no rank");
      for (std::size_t i = 0; i < h.size(); ++i) {
        TPKIT_REQUIRE(h[i] >= 0 && h[i] < ranks, "the expert placement puts expert ", e, " on rank ", h[i],
                      ", outside the group of ", ranks);
        TPKIT_REQUIRE(i == 0 || h[i] > h[i - 1], "the expert placement lists the ranks of expert ", e,
                      " out of order or twice");
      }
    }
  }
};

// Experts split in balance over the ranks in order (6 experts on 4 ranks: 2, 2, 1, 1), one copy
// each; with more ranks than experts, the last ranks hold none.
inline ExpertPlacement balanced_expert_placement(int num_experts, int ranks) {
  TPKIT_REQUIRE(num_experts >= 1, "a MoE layer needs at least one expert (got ", num_experts, ")");
  TPKIT_REQUIRE(ranks >= 1, "an expert-parallel group needs at least one rank (got ", ranks, ")");
  ExpertPlacement p;
  p.num_experts = num_experts;
  p.ranks = ranks;
  p.holders.resize(std::size_t(num_experts));
  for (int r = 0; r < ranks; ++r) {
    const Range experts = balanced_range(num_experts, ranks, r);
    for (std::int64_t e = experts.begin; e < experts.end; ++e) p.holders[std::size_t(e)].push_back(r);
  }
  return p;
}

// Token dispatch: the rows of a step of `tokens` rows that `shard` routes and sends to the
// experts' owners (a balanced split; ranks past the token count route none).
inline Range token_slice(std::int64_t tokens, ShardSpec shard) {
  return balanced_range(tokens, shard.size, shard.rank);
}

// Pipeline parallelism: the layers [begin, end) of each of `pp_size` stages. Balanced by
// default (the first num_layers % pp_size stages take one more); `layers_per_stage`, when not
// empty, gives the split explicitly. Every stage needs at least one layer.
inline std::vector<Range> split_layers(std::int64_t num_layers, int pp_size,
                                       const std::vector<std::int64_t>& layers_per_stage = {}) {
  TPKIT_REQUIRE(pp_size >= 1, "pp_size must be at least 1 (got ", pp_size, ")");
  TPKIT_REQUIRE(pp_size <= num_layers, "pp_size (", pp_size, ") exceeds the model's ", num_layers,
                " layers; every pipeline stage needs at least one");
  std::vector<Range> out;
  if (layers_per_stage.empty()) {
    for (int s = 0; s < pp_size; ++s) out.push_back(balanced_range(num_layers, pp_size, s));
    return out;
  }
  TPKIT_REQUIRE(std::int64_t(layers_per_stage.size()) == pp_size, "the layer split lists ", layers_per_stage.size(),
                " stages but pp_size is ", pp_size);
  std::int64_t begin = 0;
  for (std::int64_t n : layers_per_stage) {
    TPKIT_REQUIRE(n >= 1, "every pipeline stage needs at least one layer (the split has ", n, ")");
    out.push_back({begin, begin + n});
    begin += n;
  }
  TPKIT_REQUIRE(begin == num_layers, "the layer split covers ", begin, " layers but the model has ", num_layers);
  return out;
}

}  // namespace tpkit
