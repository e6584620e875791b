// tpkit/engine/scheduler.hpp: continuous batching over a paged KV cache.
//
// Each step the scheduler picks work under two budgets, max_num_seqs running sequences and
// max_num_batched_tokens tokens: first one decode token for every running sequence, then
// prefill chunks (a long prompt is split over steps, so it never stalls running decodes), then
// new requests from the queue while blocks and budget last. When the cache runs out of blocks
// the most recently admitted sequence is preempted: its blocks are freed and it goes back to
// the front of the queue, to be recomputed later. A request too large for the whole cache is
// finished with an error instead of waiting forever.
//
// The scheduler is deterministic: every tensor-parallel rank runs its own copy on the same
// inputs and reaches the same decisions, so ranks agree on every block table.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tpkit/engine/request.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit {

struct SchedulerOptions {
  std::int64_t max_num_seqs = 16;
  std::int64_t max_num_batched_tokens = 512;
  std::int64_t block_size = 16;
  std::int64_t num_blocks = 0;
  std::int32_t first_block = 0;  // this scheduler's blocks are first_block .. first_block + num_blocks - 1
};

struct Sequence {
  std::size_t index = 0;             // position in the caller's request list
  std::vector<std::int32_t> tokens;  // prompt, then generated tokens
  std::int64_t prompt_length = 0;
  std::int64_t computed = 0;  // leading tokens whose K/V are in the cache
  std::vector<std::int32_t> blocks;
  SamplingParams params;
  std::mt19937_64 rng;
  bool finished = false;
  std::string finish_reason;              // "stop" (EOS or a stop string), "length", or an error
  std::string text;                       // decoded generation (when a tokenizer is present)
  std::size_t streamed = 0;               // characters of `text` already handed to the stream callback
  std::shared_ptr<DecodeStream> decoder;  // the text's decode session, primed with the prompt

  std::int64_t generated() const { return std::int64_t(tokens.size()) - prompt_length; }
};

// One sequence's share of a step.
struct ScheduledChunk {
  Sequence* sequence;
  std::int64_t start;  // first position computed in this step
  std::int64_t count;
  bool samples;  // the chunk ends at the last token: the step yields this sequence's next token
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options) : options_(options), allocator_(options.num_blocks) {
    TPKIT_REQUIRE(options.max_num_seqs >= 1, "max_num_seqs must be >= 1 (got ", options.max_num_seqs, ")");
    TPKIT_REQUIRE(options.max_num_batched_tokens >= 1, "max_num_batched_tokens must be >= 1 (got ",
                  options.max_num_batched_tokens, ")");
  }

  void add(Sequence* s) { waiting_.push_back(s); }
  bool done() const { return waiting_.empty() && running_.empty(); }
  const BlockAllocator& allocator() const { return allocator_; }
  std::int64_t preemptions() const { return preemptions_; }

  // Fills `step` (cleared first; reused across steps) with the work for the next step. It stays
  // empty when nothing can run this step, e.g. after refusing a request that can never fit.
  void schedule(std::vector<ScheduledChunk>& step) {
    step.clear();
    std::int64_t budget = options_.max_num_batched_tokens;
    // Running sequences, oldest first: decodes need one token, unfinished prefills a chunk.
    // Blocks come from the newest sequences when the pool is empty (they are preempted).
    for (std::size_t i = 0; i < running_.size() && budget > 0;) {
      Sequence* s = running_[i];
      const std::int64_t count = std::min(std::int64_t(s->tokens.size()) - s->computed, budget);
      bool ok = reserve(s, s->computed + count);
      while (!ok && running_.size() > i + 1) {
        preempt(running_.back());
        ok = reserve(s, s->computed + count);
      }
      if (!ok) {
        if (i == 0)
          finish(s, "length");  // alone, it has outgrown the whole cache
        else
          preempt(s);
        continue;
      }
      step.push_back({s, s->computed, count, s->computed + count == std::int64_t(s->tokens.size())});
      budget -= count;
      ++i;
    }
    // Admit queued requests while budget, sequence slots and blocks allow.
    while (!waiting_.empty() && budget > 0 && std::int64_t(running_.size()) < options_.max_num_seqs) {
      Sequence* s = waiting_.front();
      const std::int64_t need = blocks_for(std::int64_t(s->tokens.size()));
      if (need > allocator_.num_blocks()) {
        waiting_.pop_front();
        finish(s, "error: the request needs " + std::to_string(need) + " KV blocks but the cache has " +
                      std::to_string(allocator_.num_blocks()));
        continue;
      }
      const std::int64_t count = std::min<std::int64_t>(std::int64_t(s->tokens.size()), budget);
      if (!reserve(s, count)) break;  // wait for running sequences to free blocks
      waiting_.pop_front();
      running_.push_back(s);
      step.push_back({s, 0, count, count == std::int64_t(s->tokens.size())});
      budget -= count;
    }
    if (step.empty() && !waiting_.empty() && running_.empty()) {
      // Nothing runs and the head of the queue does not fit: it never will.
      Sequence* s = waiting_.front();
      waiting_.pop_front();
      finish(s, "error: the request does not fit in the KV cache");
    }
  }

  // After a step: the chunks' tokens are now cached.
  void complete(const std::vector<ScheduledChunk>& step) {
    for (const ScheduledChunk& c : step) c.sequence->computed = c.start + c.count;
  }

  // Ends a sequence (EOS, length, stop string or error) and returns its blocks.
  void finish(Sequence* s, std::string reason) {
    s->finished = true;
    s->finish_reason = std::move(reason);
    release(s);
    running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
  }

 private:
  std::int64_t blocks_for(std::int64_t tokens) const {
    return (tokens + options_.block_size - 1) / options_.block_size;
  }
  // Grows s's block table to cover `tokens` positions; all or nothing.
  bool reserve(Sequence* s, std::int64_t tokens) {
    const std::int64_t need = blocks_for(tokens) - std::int64_t(s->blocks.size());
    if (need <= 0) return true;
    if (allocator_.num_free() < need) return false;
    for (std::int64_t i = 0; i < need; ++i) s->blocks.push_back(options_.first_block + allocator_.allocate());
    return true;
  }
  void release(Sequence* s) {
    for (std::int32_t b : s->blocks) allocator_.release(b - options_.first_block);
    s->blocks.clear();
  }
  // Frees a running sequence's blocks and puts it back at the head of the queue; it will be
  // recomputed from its tokens when readmitted.
  void preempt(Sequence* victim) {
    release(victim);
    victim->computed = 0;
    ++preemptions_;
    running_.erase(std::remove(running_.begin(), running_.end(), victim), running_.end());
    waiting_.push_front(victim);
  }

  SchedulerOptions options_;
  BlockAllocator allocator_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  std::int64_t preemptions_ = 0;
};

}  // namespace tpkit
