// tpkit/engine/engine_rank.hpp: one rank of the engine and the generation loop every rank of a
// TP x PP world runs.
//
// Every rank runs the same deterministic schedulers; the leader (TP rank 0 of the last stage)
// samples and hands the tokens to every other rank, so all ranks extend the same sequences.
// Used by Engine (ranks as threads over the mock backend), one per process over MPI or NCCL
// (DistributedEngine), and on a GPU with Ops = CudaOps (CudaEngine, NcclEngine).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/engine/rank_model.hpp"
#include "tpkit/engine/request.hpp"
#include "tpkit/engine/scheduler.hpp"
#include "tpkit/engine/stop_checker.hpp"
#include "tpkit/model/checkpoint.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/parallel/pipeline.hpp"

namespace tpkit {

template <class Backend, class Ops = HostOps>
class EngineRank {
 public:
  static constexpr int kTokenTag = 2;
  // How the tokens travel. Host backends buffer sends: the leader sends each rank the tokens as
  // soon as it has sampled them, and a rank receives them only when it needs them, so the
  // pipeline's stages overlap. A stream-ordered backend (NCCL: stream_ordered) cannot
  // promise that a send completes before its receive is posted, and a receive queued on a
  // stage's stream behind that stage's activation sends would then deadlock with the leader.
  // There every rank enters a world broadcast at the same point of its loop instead, which
  // keeps every rank's operations in one order; the stages then wait for each other's tokens.
  static constexpr bool kTokensByBroadcast = stream_ordered<Backend>::value;

  // `options` as returned by resolve_options; `tokenizer` turns tokens into text (null: no
  // text; it must outlive the rank). The model runs on `ops`; decode steps of up to graph_max_rows sequences replay
  // graphs where the Ops can capture them (0: never).
  EngineRank(const Checkpoint& checkpoint, const EngineOptions& options, const Tokenizer* tokenizer, int world_rank,
             const Ops& ops = Ops(), std::int64_t graph_max_rows = 0)
      : options_(options), stop_(checkpoint.config().eos_token_ids, checkpoint.config().max_position, tokenizer) {
    const ParallelLayout layout = options.layout();
    const ShardSpec shard{layout.tp_rank(world_rank), options.tp_size};
    layers_ = split_layers(checkpoint.config().num_layers, options.pp_size,
                           options.layers_per_stage)[std::size_t(layout.pp_rank(world_rank))];
    model_ = make_rank_model<Backend>(ops, checkpoint, shard, options, layers_, graph_max_rows);
    // One block pool per micro-batch, each over its share of the KV blocks. They live as long as
    // the rank (so does the cache they index): a later generate() finds the prefixes of earlier ones.
    const std::int64_t blocks_each = options_.num_kv_blocks / options_.micro_batches;
    pools_.reserve(std::size_t(options_.micro_batches));  // the pools hold iterators into themselves
    for (int k = 0; k < options_.micro_batches; ++k)
      pools_.emplace_back(blocks_each, options_.block_size, options_.enable_prefix_caching);
  }

  // Generates for every request. Every rank returns the same results; `on_token` is called and
  // `stats` filled on the leader only.
  std::vector<GenerationResult> generate(ParallelGroups<Backend>& groups,
                                         const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params,
                                         const std::vector<std::uint64_t>& seeds, const TokenCallback& on_token,
                                         GenerationStats* stats = nullptr) {
    try {
      return run(groups, prompts, params, seeds, on_token, stats);
    } catch (...) {
      // The sequences that held blocks are gone, and the ranks may have stopped at different
      // points of a step: every rank starts again from empty pools (the cache is dropped).
      for (BlockPool& pool : pools_) pool = BlockPool(pool.num_blocks(), pool.block_size(), pool.caching());
      throw;
    }
  }

 private:
  std::vector<GenerationResult> run(ParallelGroups<Backend>& groups,
                                    const std::vector<std::vector<std::int32_t>>& prompts,
                                    const std::vector<SamplingParams>& params, const std::vector<std::uint64_t>& seeds,
                                    const TokenCallback& on_token, GenerationStats* stats) {
    const bool leader = groups.leader();
    PipelineStage<Backend> stage(groups.pp(), layers_);
    // One scheduler per micro-batch, each with its own share of the KV blocks; requests are dealt
    // round-robin. While micro-batch k's step runs through the later stages, the earlier stages
    // work on micro-batch k + 1.
    const int mbs = options_.micro_batches;
    const std::int64_t blocks_each = options_.num_kv_blocks / mbs;
    std::vector<Scheduler> schedulers;
    std::vector<PrefixCacheStats> cache_before;
    for (int k = 0; k < mbs; ++k) {
      schedulers.emplace_back(SchedulerOptions{(options_.max_num_seqs + mbs - 1) / mbs, options_.max_num_batched_tokens,
                                               std::int32_t(k * blocks_each)},
                              pools_[std::size_t(k)]);
      cache_before.push_back(pools_[std::size_t(k)].stats());
    }
    std::int64_t computed_tokens = 0;
    std::vector<Sequence> sequences(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      Sequence& s = sequences[i];
      s.index = i;
      s.tokens = prompts[i];
      s.prompt_length = std::int64_t(prompts[i].size());
      s.params = params[i];
      s.rng.seed(seeds[i]);
      schedulers[i % std::size_t(mbs)].add(&s);
    }
    struct InFlight {
      std::vector<ScheduledChunk> step;
      std::vector<std::int32_t> tokens;  // the step's sampled tokens, once known
      bool pending = false;              // sampled tokens not yet accepted
    };
    std::vector<InFlight> flights(static_cast<std::size_t>(mbs));
    std::vector<SampleRequest> requests;
    std::vector<StepSequence> step_sequences;
    std::int64_t steps = 0;
    const std::int64_t graph_steps_before = model_->graph_steps();
    const TokenCallback* callback = leader ? &on_token : nullptr;
    for (bool active = true; active;) {
      active = false;
      for (int k = 0; k < mbs; ++k) {
        InFlight& f = flights[std::size_t(k)];
        Scheduler& scheduler = schedulers[std::size_t(k)];
        if (!f.pending && scheduler.done()) continue;
        active = true;
        if (f.pending) {  // the tokens of this micro-batch's previous step
          if (kTokensByBroadcast)
            groups.world().broadcast(f.tokens.data(), f.tokens.size(), groups.layout().leader());
          else if (!leader)
            groups.world().recv(f.tokens.data(), f.tokens.size(), groups.layout().leader(), kTokenTag);
          std::size_t row = 0;
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) accept(*ch.sequence, f.tokens[row++], scheduler, callback);
          f.pending = false;
        }
        if (scheduler.done()) continue;
        scheduler.schedule(f.step);
        if (f.step.empty()) continue;  // the scheduler finished requests that cannot run
        step_sequences.clear();
        std::int64_t rows = 0;
        for (const ScheduledChunk& ch : f.step) {
          step_sequences.push_back(
              {ch.sequence->tokens.data() + ch.start, ch.count, ch.start, &ch.sequence->blocks, ch.samples});
          rows += ch.samples ? 1 : 0;
        }
        for (const ScheduledChunk& ch : f.step) computed_tokens += ch.count;
        model_->forward(groups.tp(), step_sequences, stage.last() ? rows : 0, &stage);
        scheduler.complete(f.step);
        ++steps;
        if (rows == 0) continue;
        f.tokens.assign(std::size_t(rows), 0);
        if (leader) {
          requests.clear();
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) requests.push_back({&ch.sequence->params, &ch.sequence->rng});
          model_->sample(requests, f.tokens.data());
          for (int r = 0; !kTokensByBroadcast && r < groups.world().size(); ++r)
            if (r != groups.world().rank()) groups.world().send(f.tokens.data(), f.tokens.size(), r, kTokenTag);
        }
        f.pending = true;
      }
    }
    std::vector<GenerationResult> results(prompts.size());
    GenerationStats st;
    st.steps = steps;
    st.graph_steps = model_->graph_steps() - graph_steps_before;
    st.computed_tokens = computed_tokens;
    for (std::size_t k = 0; k < schedulers.size(); ++k) {
      st.preemptions += schedulers[k].preemptions();
      st.prefix_cache_queries += pools_[k].stats().queries - cache_before[k].queries;
      st.prefix_cache_hits += pools_[k].stats().hits - cache_before[k].hits;
    }
    for (Sequence& s : sequences) {
      GenerationResult& r = results[s.index];
      r.prompt_ids.assign(s.tokens.begin(), s.tokens.begin() + s.prompt_length);
      r.token_ids.assign(s.tokens.begin() + s.prompt_length, s.tokens.end());
      r.text = s.text;
      r.finish_reason = s.finish_reason;
      st.prompt_tokens += s.prompt_length;
      st.generated_tokens += s.generated();
    }
    if (leader && stats) *stats = st;
    return results;
  }

  // Appends a sampled token, applies the stop rules and streams what became final.
  void accept(Sequence& s, std::int32_t token, Scheduler& scheduler, const TokenCallback* on_token) {
    const StopChecker::Verdict v = stop_.accept(s, token);
    if (on_token && *on_token && v.stream) (*on_token)(s.index, v.eos ? -1 : token, v.text);
    if (!v.finish_reason.empty()) scheduler.finish(&s, v.finish_reason);
  }

  EngineOptions options_;
  StopChecker stop_;
  std::vector<BlockPool> pools_;
  Range layers_;
  std::unique_ptr<RankModel<Backend>> model_;
};

}  // namespace tpkit
