// The decode-step graphs of the engine's StepRunner, checked on the CPU: a policy that is
// HostOps plus a run_graph that records each step's shape and runs the layers. It exercises
// everything a graph step does except the capture itself: padding the rows and the block
// tables to a shape, the padding rows' K/V (none may be written), and that the real rows'
// logits do not depend on the padding. The reference is the same model under HostOps,
// run eagerly: each real row's arithmetic is the same expression in both, so the logits must be
// equal bitwise. Block 0, which padding rows read, belongs to a real sequence, so a padding row
// writing K/V there would change that sequence's logits.
#include <algorithm>
#include <vector>

#include "catch.hpp"
#include "stories.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/step_runner.hpp"
#include "tpkit/model/transformer.hpp"

using namespace tpkit;

namespace {
struct RecordingOps : HostOps {
  struct StepState : HostOps::StepState {
    void append_addresses(std::vector<const void*>&) const {}
  };
  struct StepGraphs {
    std::int64_t replays = 0;
    std::vector<std::int64_t> keys;  // rows << 32 | table width, per step
  };
  template <class Body>
  static void run_graph(StepGraphs& g, std::int64_t key, const std::vector<const void*>& addresses, Body&& body) {
    REQUIRE(addresses.size() >= 9);  // the model's step buffers
    g.keys.push_back(key);
    ++g.replays;
    body();
  }
};

template <class Ops>
using Runner = StepRunner<TransformerModel<float, Ops>>;

// Runs `steps` decode steps after prefilling three prompts; sequence 2 stops after 6 steps.
// Returns every step's logits, flattened.
template <class Ops>
std::vector<float> run(TransformerModel<float, Ops>& model, Runner<Ops>& runner, Communicator<MockBackend>& comm) {
  const std::int64_t V = model.config().vocab_size;
  // 8 blocks of 4 positions each; sequence 0 owns block 0.
  std::vector<std::vector<std::int32_t>> tables = {{0, 3, 6, 9, 12}, {1, 4, 7, 10, 13}, {2, 5, 8, 11, 14}};
  std::vector<std::vector<std::int32_t>> tokens = {{1, 403, 407, 261}, {1, 322, 300}, {1, 351, 275, 274, 360}};
  std::vector<float> all, logits;
  const auto step = [&](const std::vector<StepSequence>& seqs) {
    logits.assign(seqs.size() * std::size_t(V), 0.0f);
    runner.run(comm, seqs, TensorView<float>(logits.data(), {std::int64_t(seqs.size()), V}),
               static_cast<PipelineStage<MockBackend>*>(nullptr));
    all.insert(all.end(), logits.begin(), logits.end());
    for (std::size_t i = 0; i < seqs.size(); ++i) {  // greedy
      const float* row = logits.data() + i * std::size_t(V);
      tokens[i].push_back(std::int32_t(std::max_element(row, row + V) - row));
    }
  };
  std::vector<StepSequence> seqs;
  for (std::size_t i = 0; i < 3; ++i)
    seqs.push_back({tokens[i].data(), std::int64_t(tokens[i].size()), 0, &tables[i], true});
  step(seqs);
  for (int s = 0; s < 12; ++s) {
    seqs.clear();
    for (std::size_t i = 0; i < (s < 6 ? 3u : 2u); ++i) {
      const std::int64_t last = std::int64_t(tokens[i].size()) - 1;
      seqs.push_back({tokens[i].data() + last, 1, last, &tables[i], true});
    }
    step(seqs);
  }
  return all;
}
}  // namespace

TEST_CASE("decode steps padded to a graph's shape give the eager logits bitwise", "[model][graphs]") {
  const Checkpoint ckpt = Checkpoint::open(stories::kBin);
  run_mock_ranks(1, [&](Communicator<MockBackend>& comm) {
    TransformerModel<float, HostOps> eager(ckpt, {0, 1}, 16, 4);
    TransformerModel<float, RecordingOps> padded(ckpt, {0, 1}, 16, 4);
    Runner<HostOps> eager_runner(eager, 8);  // HostOps cannot capture: every step runs eagerly
    Runner<RecordingOps> padded_runner(padded, 8);
    const std::vector<float> want = run(eager, eager_runner, comm);
    REQUIRE(run(padded, padded_runner, comm) == want);
    REQUIRE(eager_runner.graph_steps() == 0);
    REQUIRE(padded_runner.graph_steps() == 12);  // the decode steps; the prefill step is not one
    // Rows: 3 padded to 4 for six steps, then 2. Tables: each holds 5 blocks -> 8 wide.
    const std::int64_t width = std::min<std::int64_t>(8, (ckpt.config().max_position + 3) / 4);
    std::vector<std::int64_t> keys(6, 4ll << 32 | width);
    keys.resize(12, 2ll << 32 | width);
    REQUIRE(padded_runner.graphs().keys == keys);
  });
}

TEST_CASE("graph shapes: rows and block tables padded to powers of two, decode steps only", "[model][graphs]") {
  const Checkpoint ckpt = Checkpoint::open(stories::kBin);
  run_mock_ranks(1, [&](Communicator<MockBackend>& comm) {
    TransformerModel<float, RecordingOps> model(ckpt, {0, 1}, 16, 4);
    Runner<RecordingOps> runner(model, 3);  // not a power of two: 3 rows stay 3
    std::vector<std::int32_t> table = {0, 1, 2};
    std::vector<std::int32_t> tokens(12, 5);
    std::vector<float> logits(std::size_t(ckpt.config().vocab_size));
    const auto forward = [&](std::vector<StepSequence> seqs) {  // logits for the first row only
      runner.run(comm, seqs, TensorView<float>(logits.data(), {1, ckpt.config().vocab_size}),
                 static_cast<PipelineStage<MockBackend>*>(nullptr));
    };
    forward({{tokens.data(), 9, 0, &table, true}});  // prefill: no graph
    forward({{tokens.data(), 1, 9, &table, true}});  // 1 row, 3 blocks -> 4 wide
    forward({{tokens.data(), 1, 10, &table, true}, {tokens.data(), 1, 10, &table, false}});  // 2 rows
    forward({{tokens.data(), 1, 11, &table, true},
             {tokens.data(), 1, 11, &table, false},
             {tokens.data(), 1, 11, &table, false}});  // 3 rows: at most max_rows
    forward({{tokens.data(), 2, 9, &table, true}});    // two tokens: a prefill chunk, no graph
    // A 3-block table is 4 wide; 3 rows are at most max_rows, so they stay 3.
    const std::vector<std::int64_t> keys = {1ll << 32 | 4, 2ll << 32 | 4, 3ll << 32 | 4};
    REQUIRE(runner.graphs().keys == keys);
    REQUIRE(runner.graph_steps() == 3);
  });
  run_mock_ranks(2, [&](Communicator<MockBackend>& comm) {  // the host mock cannot be captured
    TransformerModel<float, RecordingOps> model(ckpt, {comm.rank(), 2}, 16, 4);
    Runner<RecordingOps> runner(model, 8);
    std::vector<std::int32_t> table = {0};
    std::vector<std::int32_t> tokens = {1, 5};
    std::vector<float> logits(std::size_t(ckpt.config().vocab_size));
    runner.run(comm, {{tokens.data(), 1, 0, &table, true}},
               TensorView<float>(logits.data(), {1, ckpt.config().vocab_size}),
               static_cast<PipelineStage<MockBackend>*>(nullptr));
    REQUIRE(runner.graph_steps() == 0);
  });
}
