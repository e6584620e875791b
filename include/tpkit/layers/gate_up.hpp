// tpkit/layers/gate_up.hpp: the merged gate/up projection of a gated MLP (SwiGLU).
//
// Both projections are split over the intermediate dimension the same way, so a rank's gate
// and up rows line up and the down projection (a RowParallelLinear over the same dimension,
// split by the same function) consumes act(gate) * up without communication.
#pragma once

#include <cstdint>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/layers/detail.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

template <class T, class Ops = HostOps>
class MergedGateUpLinear {
 public:
  // gate, up: [intermediate, hidden]. granule: split the intermediate dimension at multiples.
  MergedGateUpLinear(const RawTensorView& gate, const RawTensorView& up, ShardSpec shard, std::int64_t granule = 1)
      : MergedGateUpLinear(Ops(), gate, up, shard, granule) {}
  MergedGateUpLinear(const Ops& ops, const RawTensorView& gate, const RawTensorView& up, ShardSpec shard,
                     std::int64_t granule = 1)
      : shard_(shard) {
    layer_detail::check_full_weight(gate, "gate weight", -1, -1);
    intermediate_ = gate.size(0);
    hidden_ = gate.size(1);
    layer_detail::check_full_weight(up, "up weight", intermediate_, hidden_);
    range_ = split_dimension(intermediate_, shard, granule, "intermediate_size");
    const Range all{0, hidden_};
    local_ = layer_detail::LocalWeight<T, Ops>(ops, {{gate, range_, all}, {up, range_, all}}, {});
  }

  std::int64_t hidden_size() const { return hidden_; }
  std::int64_t intermediate_size() const { return intermediate_; }
  Range intermediate_range() const { return range_; }
  // Output row layout: [gate (local) | up (local)].
  std::int64_t output_width() const { return 2 * range_.size(); }

  template <class Backend>
  void forward(Communicator<Backend>& comm, TensorView<const T> x, TensorView<T> y) const {
    layer_detail::check_group(comm, shard_, "MergedGateUpLinear");
    layer_detail::check_activation(x, "MergedGateUpLinear input", hidden_, Ops::memory);
    layer_detail::check_activation(y, "MergedGateUpLinear output", output_width(), Ops::memory);
    layer_detail::check_batch(y, "MergedGateUpLinear output", x.size(0));
    local_.apply(x.data(), x.stride(0), x.size(0), y.data(), y.stride(0), false);
  }

 private:
  ShardSpec shard_;
  std::int64_t intermediate_ = 0, hidden_ = 0;
  Range range_;
  layer_detail::LocalWeight<T, Ops> local_;
};

}  // namespace tpkit
