// tpkit/engine/scheduler.hpp: continuous batching over a paged KV cache.
//
// Each step the scheduler picks work under two budgets, max_num_seqs running sequences and
// max_num_batched_tokens tokens: first one decode token for every running sequence, then
// prefill chunks (a long prompt is split over steps, so it never stalls running decodes), then
// new requests from the queue while blocks and budget last. With long_prefill_token_threshold
// a long prompt takes at most that many tokens a step, so requests queued behind it start too. When the cache runs out
// of blocks the most recently admitted sequence is preempted: its blocks are freed and it goes back to the front of the
// queue, to be recomputed later. A request too large for the whole cache is finished with an error instead of waiting
// forever.
//
// A new sequence first takes the cached blocks that already hold its prompt's longest whole-block
// prefix (kv/block_pool.hpp), so only the rest is computed; at least the prompt's last token is
// always computed, since its logits are needed. Each block a step fills is offered to the cache.
//
// The scheduler is deterministic: every tensor-parallel rank runs its own copy on the same
// inputs and reaches the same decisions, so ranks agree on every block table and every hit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tpkit/engine/request.hpp"
#include "tpkit/kv/block_pool.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit {

struct SchedulerOptions {
  std::int64_t max_num_seqs = 16;
  std::int64_t max_num_batched_tokens = 512;
  std::int32_t first_block = 0;  // the pool's block b is the cache's block first_block + b
  // A prefill with more tokens left than this computes at most this many per step (0: no cap),
  // leaving the rest of the budget to the requests behind it (vLLM's long_prefill_token_threshold).
  std::int64_t long_prefill_token_threshold = 0;
};

struct Sequence {
  RequestId id = 0;
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
  std::int64_t offered = 0;               // leading blocks already offered to the prefix cache
  bool admitted = false;                  // once: its prompt lookup has been counted
  std::int64_t cached_tokens = 0;         // prompt tokens found in the prefix cache at first admission
  bool started = false;                   // once: it has been in a step
  std::size_t micro_batch = 0;            // whose scheduler holds it
  std::uint64_t output_round = 0;         // the engine loop's round whose outputs hold its slot
  std::size_t output_slot = 0;            // (its index among that round's outputs)

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
  // `pool` holds this scheduler's blocks (and their cache, which outlives the scheduler).
  Scheduler(SchedulerOptions options, BlockPool& pool) : options_(options), pool_(pool) {
    TPKIT_REQUIRE(options.max_num_seqs >= 1, "max_num_seqs must be >= 1 (got ", options.max_num_seqs, ")");
    TPKIT_REQUIRE(options.max_num_batched_tokens >= 1, "max_num_batched_tokens must be >= 1 (got ",
                  options.max_num_batched_tokens, ")");
  }

  void add(Sequence* s) { waiting_.push_back(s); }
  bool done() const { return waiting_.empty() && running_.empty(); }
  std::int64_t num_running() const { return std::int64_t(running_.size()); }
  std::int64_t num_waiting() const { return std::int64_t(waiting_.size()); }
  const BlockPool& pool() const { return pool_; }
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
      const std::int64_t count = chunk(std::int64_t(s->tokens.size()) - s->computed, budget);
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
      const std::int64_t length = std::int64_t(s->tokens.size());
      const std::int64_t need = blocks_for(length);
      if (need > pool_.num_blocks()) {
        waiting_.pop_front();
        finish(s, "error: the request needs " + std::to_string(need) + " KV blocks but the cache has " +
                      std::to_string(pool_.num_blocks()));
        continue;
      }
      // Cached blocks first: whole blocks of the prompt, never its last token.
      const std::int64_t lookup = pool_.caching() ? (length - 1) / pool_.block_size() : 0;
      for (std::int32_t b : pool_.match(s->tokens, lookup)) s->blocks.push_back(options_.first_block + b);
      s->offered = std::int64_t(s->blocks.size());
      s->computed = s->offered * pool_.block_size();
      const std::int64_t count = chunk(length - s->computed, budget);
      if (!reserve(s, s->computed + count)) {  // wait for running sequences to free blocks
        release(s);
        s->computed = 0;
        break;
      }
      waiting_.pop_front();
      running_.push_back(s);
      if (!s->admitted) {  // the prompt's lookup, counted once (not again on readmission)
        pool_.count_lookup(lookup * pool_.block_size(), s->computed);
        s->cached_tokens = s->computed;
      }
      s->admitted = true;
      step.push_back({s, s->computed, count, s->computed + count == length});
      budget -= count;
    }
    if (step.empty() && !waiting_.empty() && running_.empty()) {
      // Nothing runs and the head of the queue does not fit: it never will.
      Sequence* s = waiting_.front();
      waiting_.pop_front();
      finish(s, "error: the request does not fit in the KV cache");
    }
  }

  // After a step: the chunks' tokens are now in the cache, and the blocks they filled are
  // offered to the prefix cache.
  void complete(const std::vector<ScheduledChunk>& step) {
    for (const ScheduledChunk& c : step) {
      Sequence& s = *c.sequence;
      s.computed = c.start + c.count;
      const std::int64_t bs = pool_.block_size();
      for (; s.offered < s.computed / bs; ++s.offered) {
        const std::size_t i = std::size_t(s.offered);
        pool_.cache(s.blocks[i] - options_.first_block, i > 0 ? s.blocks[i - 1] - options_.first_block : -1,
                    s.tokens.data() + s.offered * bs);
      }
    }
  }

  // Ends a sequence, running or waiting (EOS, length, a stop string, an abort or an error), and
  // returns its blocks. It joins the finished list.
  void finish(Sequence* s, std::string reason) {
    if (s->finished) return;
    s->finished = true;
    s->finish_reason = std::move(reason);
    release(s);
    running_.erase(std::remove(running_.begin(), running_.end(), s), running_.end());
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), s), waiting_.end());
    finished_.push_back(s);
  }

  // The sequences finished since the last call, in the order they finished. Once the step that
  // schedule() last filled no longer names them, nothing in the scheduler does.
  std::vector<Sequence*> take_finished() { return std::exchange(finished_, {}); }

 private:
  std::int64_t blocks_for(std::int64_t tokens) const { return (tokens + pool_.block_size() - 1) / pool_.block_size(); }
  // The tokens a sequence with `left` to compute gets this step.
  std::int64_t chunk(std::int64_t left, std::int64_t budget) const {
    const std::int64_t cap = options_.long_prefill_token_threshold;
    return std::min(cap > 0 && left > cap ? cap : left, budget);
  }
  // Grows s's block table to cover `tokens` positions; all or nothing.
  bool reserve(Sequence* s, std::int64_t tokens) {
    const std::int64_t need = blocks_for(tokens) - std::int64_t(s->blocks.size());
    if (need <= 0) return true;
    if (pool_.num_free() < need) return false;
    for (std::int64_t i = 0; i < need; ++i) s->blocks.push_back(options_.first_block + pool_.allocate());
    return true;
  }
  void release(Sequence* s) {
    // Last block first, so that in the LRU list a sequence's later blocks (reachable only through
    // its earlier ones) are reused before the earlier ones.
    for (auto it = s->blocks.rbegin(); it != s->blocks.rend(); ++it) pool_.release(*it - options_.first_block);
    s->blocks.clear();
    s->offered = 0;
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
  BlockPool& pool_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  std::vector<Sequence*> finished_;
  std::int64_t preemptions_ = 0;
};

}  // namespace tpkit
