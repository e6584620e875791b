// tpkit/engine/step_runner.hpp: runs one rank's model step by step, and decides which steps
// replay their decoder layers from a captured graph (the CUDA-graph policy lives here, with the
// engine that schedules the steps, not in the model).
//
// A decode step of up to `graph_max_rows` sequences is run from a graph when the model's Ops can
// capture one (CudaOps), the model is a single stage and its TP group's collectives are stream-
// ordered (a group of one, or NCCL). Each such step is padded to a shape: the rows to the next
// power of two (at most graph_max_rows), the block tables to the next power of two of blocks
// (at most a full-length sequence's). Padding rows are StepSequences marked `padding`: one
// token at position 0 reading block 0, writing no K/V, their outputs never read. Ops::run_graph
// keeps one graph per shape. The embedding runs before the graph and the final norm and LM
// head after it, so their host inputs and outputs stay out of it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/ops/ops_policy.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/pipeline.hpp"

namespace tpkit {

template <class Model>
class StepRunner {
 public:
  using Ops = typename Model::ops_type;
  using Graphs = typename step_graphs<Ops>::type;

  // graph_max_rows 0: every step runs eagerly.
  StepRunner(Model& model, std::int64_t graph_max_rows) : model_(model), graph_max_rows_(graph_max_rows) {}

  // model.forward over `sequences`, from a graph when the step qualifies (see above).
  template <class Backend>
  void run(Communicator<Backend>& tp, const std::vector<StepSequence>& sequences, TensorView<float> logits,
           PipelineStage<Backend>* stage) {
    const Shape shape = graph_shape(tp, sequences);
    if constexpr (step_graphs<Ops>::supported) {
      if (shape.rows > 0) {
        padded_ = sequences;
        const StepSequence padding{&padding_token_, 1, 0, &padding_table_, false, true};
        padded_.resize(std::size_t(shape.rows), padding);
        const std::int64_t key = shape.rows << 32 | shape.table_width;
        model_.forward(tp, padded_, logits, stage, shape.table_width,
                       [&](const std::vector<const void*>& addresses, auto&& body) {
                         model_.ops().run_graph(graphs_, key, addresses, body);
                       });
        return;
      }
    }
    model_.forward(tp, sequences, logits, stage);
  }

  // Steps whose layers ran from a graph so far.
  std::int64_t graph_steps() const {
    if constexpr (step_graphs<Ops>::supported)
      return graphs_.replays;
    else
      return 0;
  }
  // The Ops' graph cache (CudaOps: captures and replays), for diagnostics and tests.
  const Graphs& graphs() const { return graphs_; }

 private:
  struct Shape {
    std::int64_t rows = 0, table_width = 0;
  };

  static std::int64_t next_power_of_two(std::int64_t x) {
    std::int64_t p = 1;
    while (p < x) p *= 2;
    return p;
  }

  // The padded shape of a step that runs from a graph, or rows 0.
  template <class Backend>
  Shape graph_shape(const Communicator<Backend>& tp, const std::vector<StepSequence>& sequences) const {
    Shape g;
    if constexpr (step_graphs<Ops>::supported) {
      const std::int64_t count = std::int64_t(sequences.size());
      if (graph_max_rows_ <= 0 || count == 0 || count > graph_max_rows_ || !model_.first_stage() ||
          !model_.last_stage())
        return g;
      if (tp.size() > 1 && !stream_ordered<Backend>::value) return g;  // a host rendezvous
      if (model_.config().moe.enabled()) return g;                     // MoE layers route on the host, between kernels
      std::int64_t blocks = 1;
      for (const StepSequence& s : sequences) {
        if (s.count != 1 || s.blocks == nullptr) return g;  // decode steps only
        blocks = std::max(blocks, std::int64_t(s.blocks->size()));
      }
      const std::int64_t block_size = model_.cache().shape().block_size;
      const std::int64_t full = (model_.config().max_position + block_size - 1) / block_size;
      g.rows = std::min(next_power_of_two(count), graph_max_rows_);
      g.table_width = std::max(blocks, std::min(next_power_of_two(blocks), full));
    }
    return g;
  }

  Model& model_;
  std::int64_t graph_max_rows_;
  Graphs graphs_;
  std::vector<StepSequence> padded_;
  std::vector<std::int32_t> padding_table_{0};  // the padding rows' block table: block 0
  std::int32_t padding_token_ = 0;
};

}  // namespace tpkit
