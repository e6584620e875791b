// tpkit/layers/linear.hpp: column-parallel, row-parallel and replicated linear layers.
//
// Weights follow the PyTorch layout [out_features, in_features]; y = x . W^T + b. Every layer
// is built from the FULL weight and its (rank, tp_size); which rows or columns it keeps comes
// from tpkit/parallel/shard.hpp. forward() takes the tensor-parallel group's communicator. A
// layer runs on the Ops handle it was built with (the first constructor argument; omitted, a
// default-constructed one: HostOps on the calling thread).
#pragma once

#include <cstdint>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/layers/detail.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

struct ColumnParallelOptions {
  bool gather_output = false;  // all-gather the output so every rank holds all out_features
  std::int64_t granule = 1;    // split out_features only at multiples of this (a head size)
};

// Splits out_features: rank r computes rows split_dimension(out_features, r) of y.
template <class T, class Ops = HostOps>
class ColumnParallelLinear {
 public:
  // weight: [out_features, in_features]; bias: [out_features] or an empty view.
  ColumnParallelLinear(const RawTensorView& weight, const RawTensorView& bias, ShardSpec shard,
                       ColumnParallelOptions options = {})
      : ColumnParallelLinear(Ops(), weight, bias, shard, options) {}
  ColumnParallelLinear(const Ops& ops, const RawTensorView& weight, const RawTensorView& bias, ShardSpec shard,
                       ColumnParallelOptions options = {})
      : shard_(shard), options_(options) {
    layer_detail::check_full_weight(weight, "ColumnParallelLinear weight", -1, -1);
    in_features_ = weight.size(1);
    out_features_ = weight.size(0);
    if (!bias.empty()) layer_detail::check_full_bias(bias, "ColumnParallelLinear bias", out_features_);
    out_range_ = split_dimension(out_features_, shard, options.granule, "out_features");
    const Range all_in{0, in_features_};
    std::vector<layer_detail::Slice> bias_slices;
    if (!bias.empty()) bias_slices.push_back({bias, out_range_, {0, 1}});
    local_ = layer_detail::LocalWeight<T, Ops>(ops, {{weight, out_range_, all_in}}, bias_slices);
    if (options.gather_output) {
      for (std::int64_t n : split_sizes(out_features_, shard.size, options.granule, "out_features"))
        gather_sizes_.push_back(std::size_t(n));
    }
  }

  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  Range output_range() const { return out_range_; }
  // Width of forward()'s output: out_features when gathering, this rank's share otherwise.
  std::int64_t output_width() const { return options_.gather_output ? out_features_ : out_range_.size(); }
  const layer_detail::LocalWeight<T, Ops>& local() const { return local_; }

  // x: [batch, in_features]; y: [batch, output_width()].
  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y) {
    layer_detail::check_group(comm, shard_, "ColumnParallelLinear");
    layer_detail::check_activation(x, "ColumnParallelLinear input", in_features_, Ops::memory);
    layer_detail::check_activation(y, "ColumnParallelLinear output", output_width(), Ops::memory);
    const std::int64_t batch = x.size(0);
    layer_detail::check_batch(y, "ColumnParallelLinear output", batch);
    if (!options_.gather_output) {
      local_.apply(x.data(), x.stride(0), batch, y.data(), y.stride(0), true);
      return;
    }
    // Compute the local block, gather every rank's [batch, n_r] block, then interleave columns.
    const std::int64_t local = out_range_.size();
    local_out_.reserve_at_least(std::size_t(batch * local));
    gathered_.reserve_at_least(std::size_t(batch * out_features_));
    local_.apply(x.data(), x.stride(0), batch, local_out_.data(), local, true);
    counts_.clear();
    for (std::size_t n : gather_sizes_) counts_.push_back(n * std::size_t(batch));
    comm.all_gather(local_out_.data(), gathered_.data(), counts_);
    std::int64_t block = 0, col = 0;
    for (std::size_t n : gather_sizes_) {
      for (std::int64_t b = 0; b < batch; ++b)
        local_.ops().copy(gathered_.data() + block + b * std::int64_t(n), y.row(b) + col, n);
      block += batch * std::int64_t(n);
      col += std::int64_t(n);
    }
  }

 private:
  ShardSpec shard_;
  ColumnParallelOptions options_;
  std::int64_t in_features_ = 0, out_features_ = 0;
  Range out_range_;
  layer_detail::LocalWeight<T, Ops> local_;
  std::vector<std::size_t> gather_sizes_, counts_;
  typename Ops::template Buffer<T> local_out_, gathered_;  // grow-only workspaces
};

struct RowParallelOptions {
  bool input_is_parallel = true;  // x holds only this rank's in_features slice
  bool reduce_output = true;      // all-reduce the partial sums (otherwise the caller does)
  std::int64_t granule = 1;       // split in_features only at multiples of this
};

// Splits in_features: each rank multiplies its slice of x by its columns of W, then the partial
// products are summed over ranks. The bias is added once, after the sum (on rank 0 only when
// the caller does the reduction).
template <class T, class Ops = HostOps>
class RowParallelLinear {
 public:
  RowParallelLinear(const RawTensorView& weight, const RawTensorView& bias, ShardSpec shard,
                    RowParallelOptions options = {})
      : RowParallelLinear(Ops(), weight, bias, shard, options) {}
  RowParallelLinear(const Ops& ops, const RawTensorView& weight, const RawTensorView& bias, ShardSpec shard,
                    RowParallelOptions options = {})
      : shard_(shard), options_(options) {
    layer_detail::check_full_weight(weight, "RowParallelLinear weight", -1, -1);
    in_features_ = weight.size(1);
    out_features_ = weight.size(0);
    if (!bias.empty()) layer_detail::check_full_bias(bias, "RowParallelLinear bias", out_features_);
    in_range_ = split_dimension(in_features_, shard, options.granule, "in_features");
    std::vector<layer_detail::Slice> bias_slices;
    if (!bias.empty()) bias_slices.push_back({bias, {0, out_features_}, {0, 1}});
    local_ = layer_detail::LocalWeight<T, Ops>(ops, {{weight, {0, out_features_}, in_range_}}, bias_slices);
  }

  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }
  Range input_range() const { return in_range_; }
  std::int64_t input_width() const { return options_.input_is_parallel ? in_range_.size() : in_features_; }

  // x: [batch, input_width()]; y: [batch, out_features], contiguous.
  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y) {
    layer_detail::check_group(comm, shard_, "RowParallelLinear");
    layer_detail::check_activation(x, "RowParallelLinear input", input_width(), Ops::memory);
    layer_detail::check_activation(y, "RowParallelLinear output", out_features_, Ops::memory);
    const std::int64_t batch = x.size(0);
    layer_detail::check_batch(y, "RowParallelLinear output", batch);
    TPKIT_REQUIRE(y.is_contiguous(), "RowParallelLinear output must be contiguous (it is all-reduced in place)");
    const T* xs = options_.input_is_parallel ? x.data() : x.data() + in_range_.begin;
    local_.apply(xs, x.stride(0), batch, y.data(), out_features_, false);
    if (options_.reduce_output) comm.all_reduce(y.data(), std::size_t(batch * out_features_));
    if (local_.bias() && (options_.reduce_output || shard_.rank == 0))
      local_.ops().add_bias(y.data(), out_features_, batch, local_.bias(), out_features_);
  }

 private:
  ShardSpec shard_;
  RowParallelOptions options_;
  std::int64_t in_features_ = 0, out_features_ = 0;
  Range in_range_;
  layer_detail::LocalWeight<T, Ops> local_;
};

// Every rank holds the whole weight (small projections, routers).
template <class T, class Ops = HostOps>
class ReplicatedLinear {
 public:
  ReplicatedLinear(const RawTensorView& weight, const RawTensorView& bias) : ReplicatedLinear(Ops(), weight, bias) {}
  ReplicatedLinear(const Ops& ops, const RawTensorView& weight, const RawTensorView& bias) {
    layer_detail::check_full_weight(weight, "ReplicatedLinear weight", -1, -1);
    in_features_ = weight.size(1);
    out_features_ = weight.size(0);
    std::vector<layer_detail::Slice> bias_slices;
    if (!bias.empty()) {
      layer_detail::check_full_bias(bias, "ReplicatedLinear bias", out_features_);
      bias_slices.push_back({bias, {0, out_features_}, {0, 1}});
    }
    local_ = layer_detail::LocalWeight<T, Ops>(ops, {{weight, {0, out_features_}, {0, in_features_}}}, bias_slices);
  }

  std::int64_t in_features() const { return in_features_; }
  std::int64_t out_features() const { return out_features_; }

  // No communication; the communicator is taken so every layer is called the same way.
  template <class Backend>
  void forward(Communicator<Backend>&, TensorView<const T> x, TensorView<T> y) const {
    layer_detail::check_activation(x, "ReplicatedLinear input", in_features_, Ops::memory);
    layer_detail::check_activation(y, "ReplicatedLinear output", out_features_, Ops::memory);
    layer_detail::check_batch(y, "ReplicatedLinear output", x.size(0));
    local_.apply(x.data(), x.stride(0), x.size(0), y.data(), y.stride(0), true);
  }

 private:
  std::int64_t in_features_ = 0, out_features_ = 0;
  layer_detail::LocalWeight<T, Ops> local_;
};

}  // namespace tpkit
