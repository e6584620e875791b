// tpkit/ops/step.hpp: the description of one forward step, from the sequences the engine
// schedules to the per-row lists the attention kernels read. One place for every step type:
//
//   StepSequence  what one sequence brings to a step (the model's input, from the engine)
//   StepLayout    the step flattened into token rows: each row's position, block table and
//                 cache slot (built by the model; each Ops policy's prepare_step turns it into
//                 what its kernels read: HostOps keeps the lists, CudaOps uploads them)
#pragma once

#include <cstdint>
#include <vector>

#include "tpkit/config.hpp"

namespace tpkit {

// The tokens one sequence contributes to a forward step: `count` tokens at positions
// start_position.. (a whole prompt, a prefill chunk, or one decode token).
struct StepSequence {
  const std::int32_t* tokens = nullptr;
  std::int64_t count = 0;
  std::int64_t start_position = 0;
  const std::vector<std::int32_t>* blocks = nullptr;  // covers every position up to the last
  bool want_logits = false;                           // logits for the last token of this step
  // A row that only fills a fixed step shape (a captured graph's; see engine/step_runner.hpp):
  // it writes no K/V, reads whatever its block table holds, and nothing reads its outputs.
  bool padding = false;
};

// One query token: its position (it attends to positions 0..position) and its sequence's
// block table.
struct AttentionQuery {
  std::int64_t position;
  const std::vector<std::int32_t>* blocks;
};

// The tokens of one forward step as the K/V writes and attention see them.
struct StepLayout {
  struct Sequence {
    const std::vector<std::int32_t>* blocks;  // block table, covering every position of the step
    std::int64_t first_row, count, start_position;
  };
  std::vector<Sequence> sequences;
  std::vector<AttentionQuery> queries;  // per token row: its position and block table
  std::vector<std::int64_t> slots;      // per token row: the cache slot its K/V go to (< 0: none)
  // > 0: block tables are padded to this many blocks and attention is planned for as many
  // positions, so that steps of one shape launch the same kernels (a captured graph's replay).
  std::int64_t table_width = 0;
  int q_heads = 0;  // the query heads this rank's attention runs (a policy may plan the step once)
  void clear() { sequences.clear(), queries.clear(), slots.clear(), table_width = 0; }
};

}  // namespace tpkit
