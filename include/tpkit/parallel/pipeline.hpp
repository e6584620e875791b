// tpkit/parallel/pipeline.hpp: arranging a world of tp_size x pp_size ranks, and one pipeline
// stage's link to its neighbours.
//
// World rank w is tensor-parallel rank w % tp_size of pipeline stage w / tp_size, so the ranks of
// one stage are adjacent (on one machine, when a launcher fills machines in rank order) and the
// activations that cross stages travel between ranks of equal TP rank.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

struct ParallelLayout {
  int tp_size = 1, pp_size = 1;

  int world_size() const { return tp_size * pp_size; }
  int tp_rank(int world_rank) const { return world_rank % tp_size; }
  int pp_rank(int world_rank) const { return world_rank / tp_size; }
  int world_rank(int pp_rank, int tp_rank) const { return pp_rank * tp_size + tp_rank; }
  // The rank that samples: TP rank 0 of the last stage, which holds the logits.
  int leader() const { return world_rank(pp_size - 1, 0); }

  void validate(int world_size_given) const {
    TPKIT_REQUIRE(tp_size >= 1 && pp_size >= 1, "tp_size (", tp_size, ") and pp_size (", pp_size,
                  ") must be at least 1");
    TPKIT_REQUIRE(world_size_given == world_size(), "tp_size ", tp_size, " x pp_size ", pp_size, " needs ",
                  world_size(), " ranks but the world has ", world_size_given);
  }
};

// The three communicators a rank of a TP x PP world uses: the world (token distribution), its
// TP group (the layers' collectives) and its PP group (one rank per stage, activations).
// Constructing it is collective over the world: two splits, in the same order on every rank.
template <class Backend>
class ParallelGroups {
 public:
  ParallelGroups(Communicator<Backend>& world, ParallelLayout layout)
      : layout_((layout.validate(world.size()), layout)),
        world_(&world),
        tp_(world.split(layout.pp_rank(world.rank()), world.rank())),
        pp_(world.split(layout.tp_rank(world.rank()), world.rank())) {}

  const ParallelLayout& layout() const { return layout_; }
  Communicator<Backend>& world() { return *world_; }
  Communicator<Backend>& tp() { return tp_; }
  Communicator<Backend>& pp() { return pp_; }
  int stage() const { return pp_.rank(); }
  bool leader() const { return world_->rank() == layout_.leader(); }

 private:
  ParallelLayout layout_;
  Communicator<Backend>* world_;
  Communicator<Backend> tp_, pp_;
};

// One stage's links to the previous and the next stage over its PP group. Sends are buffered
// (every backend's send returns once the data is copied or queued), so a stage hands its
// activations on and goes on to the next micro-batch while the next stage works.
template <class Backend>
class PipelineStage {
 public:
  static constexpr int kActivationTag = 1;

  // pp: the PP group (rank = stage); layers: the layers this stage runs.
  PipelineStage(Communicator<Backend>& pp, Range layers) : pp_(&pp), layers_(layers) {}

  int stage() const { return pp_->rank(); }
  int num_stages() const { return pp_->size(); }
  bool first() const { return stage() == 0; }
  bool last() const { return stage() == num_stages() - 1; }
  Range layers() const { return layers_; }

  template <class T>
  void receive_activations(T* data, std::size_t count) {
    TPKIT_REQUIRE(!first(), "the first pipeline stage has no previous stage to receive from");
    pp_->recv(data, count, stage() - 1, kActivationTag);
  }
  template <class T>
  void send_activations(const T* data, std::size_t count) {
    TPKIT_REQUIRE(!last(), "the last pipeline stage has no next stage to send to");
    pp_->send(data, count, stage() + 1, kActivationTag);
  }

 private:
  Communicator<Backend>* pp_;
  Range layers_;
};

}  // namespace tpkit
