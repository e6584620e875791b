// tpkit/layers/detail.hpp: what every parallel layer shares: argument checks and the local
// weight block it builds from slices of full (unsharded) tensors.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/checked_math.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {
namespace layer_detail {

// A full weight must be a host 2-D floating tensor of the expected shape (-1: any extent).
inline void check_full_weight(const RawTensorView& w, const char* name, std::int64_t rows, std::int64_t cols) {
  TPKIT_REQUIRE(!w.empty(), name, " is empty");
  TPKIT_REQUIRE(w.rank() == 2, name, " must be 2-D [out_features, in_features] but has shape ", w.shape_string());
  TPKIT_REQUIRE(is_floating_dtype(w.dtype()), name, " has dtype ", dtype_name(w.dtype()), "; expected a floating type");
  TPKIT_REQUIRE(w.memory() == MemoryKind::host, name, " must be in host memory to be sharded");
  TPKIT_REQUIRE(rows < 0 || w.size(0) == rows, name, " has ", w.size(0), " rows; expected ", rows, " (shape ",
                w.shape_string(), ")");
  TPKIT_REQUIRE(cols < 0 || w.size(1) == cols, name, " has ", w.size(1), " columns; expected ", cols, " (shape ",
                w.shape_string(), ")");
  TPKIT_REQUIRE(w.stride(1) == 1, name, " must have contiguous rows");
}

inline void check_full_bias(const RawTensorView& b, const char* name, std::int64_t size) {
  TPKIT_REQUIRE(b.rank() == 1 && b.size(0) == size, name, " must have shape [", size, "] but has shape ",
                b.shape_string());
  TPKIT_REQUIRE(is_floating_dtype(b.dtype()), name, " has dtype ", dtype_name(b.dtype()), "; expected a floating type");
}

// Activations: 2-D, unit column stride, in the layer's memory, with the expected width.
template <class V>
void check_activation(const V& v, const char* name, std::int64_t cols, MemoryKind memory) {
  TPKIT_REQUIRE(v.rank() == 2, name, " must be 2-D [batch, features] but has shape ", v.shape_string());
  TPKIT_REQUIRE(v.has_contiguous_rows(), name, " must have contiguous rows");
  TPKIT_REQUIRE(v.size(1) == cols, name, " has ", v.size(1), " features; expected ", cols);
  TPKIT_REQUIRE(v.memory() == memory, name, " is in ", memory_kind_name(v.memory()), " memory but the layer runs on ",
                memory_kind_name(memory));
}

template <class V>
void check_batch(const V& out, const char* name, std::int64_t batch) {
  TPKIT_REQUIRE(out.size(0) == batch, name, " has ", out.size(0), " rows; expected ", batch, " (the input batch)");
}

// A layer sharded for (rank, tp_size) must run on a communicator of that rank and size.
template <class Backend>
void check_group(const Communicator<Backend>& comm, ShardSpec shard, const char* layer) {
  TPKIT_REQUIRE(comm.size() == shard.size && comm.rank() == shard.rank, layer, " was sharded for rank ", shard.rank,
                " of tp_size ", shard.size, " but runs on rank ", comm.rank(), " of a group of ", comm.size());
}

// One slice of a full tensor that goes into a local weight: rows x cols of `source`.
struct Slice {
  RawTensorView source;
  Range rows;
  Range cols;
};

// The local [rows, cols] weight matrix (and bias) of one rank, stacked from slices of full
// tensors: a QKV layer stacks its q, k and v rows; a gate/up layer its gate and up rows. It
// keeps the Ops handle the layer runs on.
template <class T, class Ops>
class LocalWeight {
 public:
  LocalWeight() = default;
  LocalWeight(const Ops& ops, const std::vector<Slice>& weight_slices, const std::vector<Slice>& bias_slices)
      : ops_(ops) {
    cols_ = weight_slices.empty() ? 0 : weight_slices.front().cols.size();
    for (const Slice& s : weight_slices) rows_ += s.rows.size();
    weight_ = typename Ops::template Buffer<T>(std::size_t(checked_mul(rows_, cols_, "local weight size")));
    std::int64_t at = 0;
    for (const Slice& s : weight_slices) {
      ops_.load_block(s.source, s.rows, s.cols, weight_.data() + at * cols_, cols_);
      at += s.rows.size();
    }
    if (bias_slices.empty()) return;
    bias_ = typename Ops::template Buffer<T>(std::size_t(rows_));
    at = 0;
    for (const Slice& s : bias_slices) {
      ops_.load_block(s.source, s.rows, Range{0, 1}, bias_.data() + at, 1);
      at += s.rows.size();
    }
  }

  const Ops& ops() const { return ops_; }
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  const T* weight() const { return weight_.data(); }
  const T* bias() const { return bias_.size() ? bias_.data() : nullptr; }
  TensorView<const T> weight_view() const { return TensorView<const T>(weight_.data(), {rows_, cols_}, Ops::memory); }

  // y = x . W^T (+ bias when with_bias), x [batch, cols] (with column offset), y [batch, rows].
  template <class Out>
  void apply(const T* x, std::int64_t ldx, std::int64_t batch, Out* y, std::int64_t ldy, bool with_bias) const {
    ops_.linear(x, ldx, batch, weight(), cols_, rows_, cols_, with_bias ? bias() : nullptr, y, ldy);
  }

 private:
  Ops ops_;
  typename Ops::template Buffer<T> weight_;
  typename Ops::template Buffer<T> bias_;
  std::int64_t rows_ = 0, cols_ = 0;
};

}  // namespace layer_detail
}  // namespace tpkit
