// tpkit/layers/embedding.hpp: the vocabulary-parallel embedding and the parallel LM head.
//
// The vocabulary is padded so each rank holds rows_per_rank rows (partition_vocab). A rank
// embeds the ids it owns and writes zeros for the rest; the all-reduce then yields each
// token's row exactly (one non-zero term per element). The LM head multiplies by the same
// row shard (its own weight, or the embedding's when tied) and either gathers full logits or
// finds the greedy token with a sharded argmax that exchanges one (value, id) pair per row.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/layers/detail.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

template <class T, class Ops = HostOps>
class VocabParallelEmbedding {
 public:
  // table: [vocab_size, hidden]. alignment: rows per rank are padded to a multiple of this.
  VocabParallelEmbedding(const RawTensorView& table, ShardSpec shard, std::int64_t alignment = 16)
      : VocabParallelEmbedding(Ops(), table, shard, alignment) {}
  VocabParallelEmbedding(const Ops& ops, const RawTensorView& table, ShardSpec shard, std::int64_t alignment = 16)
      : ops_(ops), shard_(shard) {
    layer_detail::check_full_weight(table, "embedding table", -1, -1);
    hidden_ = table.size(1);
    partition_ = partition_vocab(table.size(0), shard, alignment);
    const std::int64_t real = partition_.local_real_rows();
    auto local = std::make_shared<typename Ops::template Buffer<T>>(
        std::size_t(checked_mul(partition_.rows_per_rank, hidden_, "embedding shard size")));
    ops_.load_block(table, partition_.ids, {0, hidden_}, local->data(), hidden_);
    ops_.fill_zero(local->data() + real * hidden_, std::size_t((partition_.rows_per_rank - real) * hidden_));
    table_ = std::move(local);
  }

  const VocabPartition& partition() const { return partition_; }
  std::int64_t vocab_size() const { return partition_.vocab_size; }
  std::int64_t hidden_size() const { return hidden_; }
  ShardSpec shard() const { return shard_; }
  const Ops& ops() const { return ops_; }
  // This rank's [rows_per_rank, hidden] rows, padding included (shared with a tied LM head).
  const std::shared_ptr<const typename Ops::template Buffer<T>>& local_table() const { return table_; }

  // ids: `count` token ids (host memory, identical on every rank); y: [count, hidden], contiguous.
  template <class Backend>
  void forward(Communicator<Backend>& comm, const std::int32_t* ids, std::int64_t count, TensorView<T> y) const {
    layer_detail::check_group(comm, shard_, "VocabParallelEmbedding");
    layer_detail::check_activation(y, "VocabParallelEmbedding output", hidden_, Ops::memory);
    layer_detail::check_batch(y, "VocabParallelEmbedding output", count);
    TPKIT_REQUIRE(y.is_contiguous(), "VocabParallelEmbedding output must be contiguous (it is all-reduced in place)");
    // Checked before any communication, on every rank alike, so a bad id cannot hang the group.
    for (std::int64_t i = 0; i < count; ++i)
      TPKIT_REQUIRE(ids[i] >= 0 && ids[i] < partition_.vocab_size, "token id ", ids[i], " at position ", i,
                    " is outside the vocabulary [0, ", partition_.vocab_size, ")");
    ops_.gather_rows(table_->data(), partition_.ids.begin, partition_.ids.size(), hidden_, ids, count, y.data(),
                     y.stride(0));
    if (shard_.size > 1) comm.all_reduce(y.data(), std::size_t(count * hidden_));
  }

 private:
  Ops ops_;
  ShardSpec shard_;
  std::int64_t hidden_ = 0;
  VocabPartition partition_;
  std::shared_ptr<const typename Ops::template Buffer<T>> table_;
};

// Logits are produced in float whatever T is: sampling compares and exponentiates them, and a
// 16-bit rounding would create ties the unsharded model does not have.
template <class T, class Ops = HostOps>
class ParallelLMHead {
 public:
  // An untied head: weight [vocab_size, hidden].
  ParallelLMHead(const RawTensorView& weight, ShardSpec shard, std::int64_t alignment = 16)
      : ParallelLMHead(Ops(), weight, shard, alignment) {}
  ParallelLMHead(const Ops& ops, const RawTensorView& weight, ShardSpec shard, std::int64_t alignment = 16)
      : ParallelLMHead(VocabParallelEmbedding<T, Ops>(ops, weight, shard, alignment)) {}

  // A head tied to an embedding: shares its local rows (and its Ops), no copy.
  static ParallelLMHead tied_to(const VocabParallelEmbedding<T, Ops>& embedding) { return ParallelLMHead(embedding); }

  const VocabPartition& partition() const { return partition_; }
  std::int64_t vocab_size() const { return partition_.vocab_size; }
  std::int64_t hidden_size() const { return hidden_; }
  const T* local_weight() const { return table_->data(); }

  // This rank's logits for its real ids, partition().ids: [batch, local_real_rows].
  template <class Backend>
  void local_logits(Communicator<Backend>& comm, TensorView<const T> hidden, TensorView<float> logits) const {
    layer_detail::check_group(comm, shard_, "ParallelLMHead");
    layer_detail::check_activation(hidden, "ParallelLMHead input", hidden_, Ops::memory);
    layer_detail::check_activation(logits, "ParallelLMHead local logits", partition_.local_real_rows(), Ops::memory);
    layer_detail::check_batch(logits, "ParallelLMHead local logits", hidden.size(0));
    compute_local(hidden, logits.data(), logits.stride(0));
  }

  // Full logits on every rank: hidden [batch, hidden] -> logits [batch, vocab_size].
  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> hidden, TensorView<float> logits) {
    layer_detail::check_group(comm, shard_, "ParallelLMHead");
    layer_detail::check_activation(hidden, "ParallelLMHead input", hidden_, Ops::memory);
    layer_detail::check_activation(logits, "ParallelLMHead logits", partition_.vocab_size, Ops::memory);
    const std::int64_t batch = hidden.size(0);
    layer_detail::check_batch(logits, "ParallelLMHead logits", batch);
    if (shard_.size == 1) return compute_local(hidden, logits.data(), logits.stride(0));
    const std::int64_t local = partition_.local_real_rows();
    local_.reserve_at_least(std::size_t(batch * local));
    gathered_.reserve_at_least(std::size_t(batch * partition_.vocab_size));
    compute_local(hidden, local_.data(), local);
    counts_.clear();
    for (std::int64_t rows : rows_per_rank_) counts_.push_back(std::size_t(batch * rows));
    comm.all_gather(local_.data(), gathered_.data(), counts_);
    // gathered holds rank blocks [batch, n_r] in id order; interleave them into rows.
    std::int64_t block = 0, col = 0;
    for (std::int64_t n : rows_per_rank_) {
      for (std::int64_t b = 0; b < batch; ++b)
        ops_.copy(gathered_.data() + block + b * n, logits.row(b) + col, std::size_t(n));
      block += batch * n;
      col += n;
    }
  }

  // Greedy tokens (argmax of the full logits, lowest id on ties) without gathering the logits:
  // each rank finds its best (value, id) per row and the group exchanges just those pairs.
  template <class Backend>
  void greedy(Communicator<Backend>& comm, TensorView<const T> hidden, std::int32_t* token_ids) {
    layer_detail::check_group(comm, shard_, "ParallelLMHead");
    layer_detail::check_activation(hidden, "ParallelLMHead input", hidden_, Ops::memory);
    const std::int64_t batch = hidden.size(0), local = partition_.local_real_rows();
    local_.reserve_at_least(std::size_t(batch * local));
    compute_local(hidden, local_.data(), local);
    best_value_.resize(std::size_t(batch));
    best_index_.resize(std::size_t(batch));
    ops_.row_argmax(local_.data(), local, batch, local, best_value_.data(), best_index_.data());
    // One (value, global id) record per row, exchanged as bytes in a single all-gather.
    candidates_.resize(std::size_t(batch));
    for (std::int64_t b = 0; b < batch; ++b) {
      const bool any = best_index_[std::size_t(b)] >= 0;
      candidates_[std::size_t(b)] = {any ? best_value_[std::size_t(b)] : -std::numeric_limits<float>::infinity(),
                                     any ? std::int32_t(partition_.ids.begin + best_index_[std::size_t(b)]) : -1};
    }
    all_candidates_.resize(std::size_t(batch * shard_.size));
    comm.all_gather(reinterpret_cast<const std::uint8_t*>(candidates_.data()), std::size_t(batch) * sizeof(Candidate),
                    reinterpret_cast<std::uint8_t*>(all_candidates_.data()));
    for (std::int64_t b = 0; b < batch; ++b) {
      Candidate best{0.0f, -1};
      for (int r = 0; r < shard_.size; ++r) {  // ranks hold increasing ids: strict > keeps the lowest
        const Candidate& c = all_candidates_[std::size_t(r * batch + b)];
        if (c.id >= 0 && (best.id < 0 || c.value > best.value)) best = c;
      }
      token_ids[b] = best.id;
    }
  }

 private:
  struct Candidate {
    float value;
    std::int32_t id;
  };

  explicit ParallelLMHead(const VocabParallelEmbedding<T, Ops>& e)
      : ops_(e.ops()),
        shard_(e.shard()),
        hidden_(e.hidden_size()),
        partition_(e.partition()),
        rows_per_rank_(vocab_rows_per_rank(partition_, shard_.size)),
        table_(e.local_table()) {}

  void compute_local(TensorView<const T> hidden, float* out, std::int64_t ld) const {
    if (partition_.local_real_rows() == 0) return;  // this rank holds padding rows only
    ops_.linear(hidden.data(), hidden.stride(0), hidden.size(0), table_->data(), hidden_, partition_.local_real_rows(),
                hidden_, static_cast<const T*>(nullptr), out, ld);
  }

  Ops ops_;
  ShardSpec shard_;
  std::int64_t hidden_ = 0;
  VocabPartition partition_;
  std::vector<std::int64_t> rows_per_rank_;
  std::shared_ptr<const typename Ops::template Buffer<T>> table_;
  std::vector<std::size_t> counts_;
  std::vector<float> best_value_;
  std::vector<std::int64_t> best_index_;
  std::vector<Candidate> candidates_, all_candidates_;
  typename Ops::template Buffer<float> local_, gathered_;
};

}  // namespace tpkit
