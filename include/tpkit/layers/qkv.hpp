// tpkit/layers/qkv.hpp: the fused query/key/value projection for grouped-query attention.
//
// Query heads are split in balance over the ranks (partition_heads); each rank keeps the KV
// heads its query heads read, so KV heads are replicated when tp_size exceeds their number or
// when a split falls inside a group. A TP size that does not divide the head count is fine:
// Qwen2-7B (28 q heads, 4 KV heads) runs at TP 8 with 4,4,4,4,3,3,3,3 query heads per rank.
#pragma once

#include <cstdint>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/layers/detail.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

struct AttentionHeads {
  int num_q_heads = 0;
  int num_kv_heads = 0;
  std::int64_t head_dim = 0;
};

// Full weights, as checkpoints store them (q_proj, k_proj, v_proj); biases optional (Qwen2).
struct QKVWeights {
  RawTensorView q, k, v;                 // [num_q_heads * head_dim, hidden], [num_kv_heads * head_dim, hidden] x2
  RawTensorView q_bias, k_bias, v_bias;  // all three or none
};

template <class T, class Ops = HostOps>
class QKVParallelLinear {
 public:
  QKVParallelLinear(const QKVWeights& w, AttentionHeads heads, ShardSpec shard)
      : QKVParallelLinear(Ops(), w, heads, shard) {}
  QKVParallelLinear(const Ops& ops, const QKVWeights& w, AttentionHeads heads, ShardSpec shard)
      : heads_(heads), shard_(shard) {
    TPKIT_REQUIRE(heads.head_dim >= 1, "head_dim must be positive (got ", heads.head_dim, ")");
    partition_ = partition_heads(heads.num_q_heads, heads.num_kv_heads, shard);
    const std::int64_t hd = heads.head_dim;
    layer_detail::check_full_weight(w.q, "q weight", heads.num_q_heads * hd, -1);
    hidden_ = w.q.size(1);
    layer_detail::check_full_weight(w.k, "k weight", heads.num_kv_heads * hd, hidden_);
    layer_detail::check_full_weight(w.v, "v weight", heads.num_kv_heads * hd, hidden_);
    const Range q_rows{partition_.q_heads.begin * hd, partition_.q_heads.end * hd};
    const Range kv_rows{partition_.kv_heads.begin * hd, partition_.kv_heads.end * hd};
    const Range all{0, hidden_};
    std::vector<layer_detail::Slice> bias_slices;
    const int biases = int(!w.q_bias.empty()) + int(!w.k_bias.empty()) + int(!w.v_bias.empty());
    TPKIT_REQUIRE(biases == 0 || biases == 3, "QKV biases must be given for all of q, k and v or none (got ", biases,
                  ")");
    if (biases == 3) {
      layer_detail::check_full_bias(w.q_bias, "q bias", heads.num_q_heads * hd);
      layer_detail::check_full_bias(w.k_bias, "k bias", heads.num_kv_heads * hd);
      layer_detail::check_full_bias(w.v_bias, "v bias", heads.num_kv_heads * hd);
      bias_slices = {{w.q_bias, q_rows, {0, 1}}, {w.k_bias, kv_rows, {0, 1}}, {w.v_bias, kv_rows, {0, 1}}};
    }
    local_ = layer_detail::LocalWeight<T, Ops>(ops, {{w.q, q_rows, all}, {w.k, kv_rows, all}, {w.v, kv_rows, all}},
                                               bias_slices);
  }

  const HeadPartition& partition() const { return partition_; }
  const AttentionHeads& heads() const { return heads_; }
  std::int64_t hidden_size() const { return hidden_; }
  std::int64_t q_width() const { return partition_.local_q_heads() * heads_.head_dim; }
  std::int64_t kv_width() const { return partition_.local_kv_heads() * heads_.head_dim; }
  // Output row layout: [q (q_width) | k (kv_width) | v (kv_width)].
  std::int64_t output_width() const { return q_width() + 2 * kv_width(); }

  // x: [batch, hidden]; y: [batch, output_width()]. No communication.
  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y) const {
    layer_detail::check_group(comm, shard_, "QKVParallelLinear");
    layer_detail::check_activation(x, "QKVParallelLinear input", hidden_, Ops::memory);
    layer_detail::check_activation(y, "QKVParallelLinear output", output_width(), Ops::memory);
    layer_detail::check_batch(y, "QKVParallelLinear output", x.size(0));
    local_.apply(x.data(), x.stride(0), x.size(0), y.data(), y.stride(0), true);
  }

 private:
  AttentionHeads heads_;
  ShardSpec shard_;
  HeadPartition partition_;
  std::int64_t hidden_ = 0;
  layer_detail::LocalWeight<T, Ops> local_;
};

}  // namespace tpkit
