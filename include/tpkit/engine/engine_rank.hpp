// tpkit/engine/engine_rank.hpp: one rank of the engine and the step loop every rank of a TP x PP
// world runs for as long as the engine serves.
//
// Each round the controller (world rank 0) sends every rank the requests that arrived and the
// ones aborted (tpkit/engine/control.hpp); every rank then runs the same deterministic schedulers
// over them, and the leader (TP rank 0 of the last stage) samples and hands the tokens to every
// other rank, so all ranks extend the same sequences and agree on every block table.
// Used by Engine (ranks as threads over the mock backend), one per process over MPI or NCCL
// (DistributedEngine), and on a GPU with Ops = CudaOps (CudaEngine, NcclEngine).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tpkit/comm/backend.hpp"
#include "tpkit/engine/control.hpp"
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
  static constexpr int kControlTag = 3;
  static constexpr int kExpertLoadTag = 4;
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
    // The sparse layers of every stage, for the controller to place the statistics the other
    // stages send it (processes).
    const ModelConfig& c = checkpoint.config();
    for (const Range& r : split_layers(c.num_layers, options.pp_size, options.layers_per_stage)) {
      std::vector<std::int64_t> sparse;
      for (std::int64_t l = r.begin; l < r.end; ++l)
        if (c.sparse_layer(l)) sparse.push_back(l);
      sparse_layers_.push_back(std::move(sparse));
    }
    num_experts_ = c.moe.num_experts;
    moe_ = c.moe.enabled();
    // One block pool per micro-batch, each over its share of the KV blocks. They live as long as
    // the rank (so does the cache they index): a later generate() finds the prefixes of earlier ones.
    const std::int64_t blocks_each = options_.num_kv_blocks / options_.micro_batches;
    pools_.reserve(std::size_t(options_.micro_batches));  // the pools hold iterators into themselves
    for (int k = 0; k < options_.micro_batches; ++k)
      pools_.emplace_back(blocks_each, options_.block_size, options_.enable_prefix_caching);
  }

  // The step loop, until the controller sends `exit`. World rank 0 is the controller: `control`
  // is where its requests come from and its outputs go. Other ranks pass null, or with
  // IdleMode::park the same object, only to park on. `local`, if set, receives every output on
  // this rank too (every rank holds every sequence). On an exception the rank drops its cache
  // (the ranks may have stopped at different points of a step) and rethrows; the requests are
  // then the caller's to fail (EngineControl::fail_all).
  void serve(ParallelGroups<Backend>& groups, EngineControl* control, engine_detail::IdleMode idle,
             std::chrono::milliseconds heartbeat, const OutputCallback& local = {}) {
    try {
      loop(groups, control, idle, heartbeat, local);
    } catch (...) {
      for (BlockPool& pool : pools_) {
        const PrefixCacheStats seen = pool.stats();  // counters stay monotonic
        pool = BlockPool(pool.num_blocks(), pool.block_size(), pool.caching());
        pool.count_lookup(seen.queries, seen.hits);
      }
      throw;
    }
  }

  // This rank's counters since it was built (EngineStatus's counters; the gauges are not set).
  EngineStatus counters() const {
    EngineStatus s = counters_;
    for (const BlockPool& pool : pools_) {
      s.prefix_cache_queries += pool.stats().queries;
      s.prefix_cache_hits += pool.stats().hits;
    }
    s.graph_steps = model_->graph_steps();
    return s;
  }

 private:
  void loop(ParallelGroups<Backend>& groups, EngineControl* control, engine_detail::IdleMode idle,
            std::chrono::milliseconds heartbeat, const OutputCallback& local) {
    using engine_detail::ControlMessage;
    Communicator<Backend>& world = groups.world();
    const bool controller = world.rank() == 0;
    TPKIT_REQUIRE(!controller || control, "world rank 0 runs the engine's loop with its EngineControl");
    const bool leader = groups.leader();
    PipelineStage<Backend> stage(groups.pp(), layers_);
    // The later stages send their expert statistics to the controller with each sampled step
    // (host backends), which it reads where it reads the step's tokens: a generate() that returns
    // has every stage's counts. Stream-ordered backends publish into a shared EngineControl
    // where there is one (threads), else report the first stage only.
    const bool expert_load_by_message = !kTokensByBroadcast;
    // One scheduler per micro-batch, each with its own share of the KV blocks; requests are dealt
    // round-robin. While micro-batch k's step runs through the later stages, the earlier stages
    // work on micro-batch k + 1.
    const int mbs = options_.micro_batches;
    const std::int64_t blocks_each = options_.num_kv_blocks / mbs;
    std::vector<Scheduler> schedulers;
    for (int k = 0; k < mbs; ++k)
      schedulers.emplace_back(SchedulerOptions{(options_.max_num_seqs + mbs - 1) / mbs, options_.max_num_batched_tokens,
                                               std::int32_t(k * blocks_each), options_.long_prefill_token_threshold},
                              pools_[std::size_t(k)]);
    struct InFlight {
      std::vector<ScheduledChunk> step;
      std::vector<std::int32_t> tokens;  // the step's sampled tokens, once known
      bool pending = false;              // sampled tokens not yet accepted
    };
    std::vector<InFlight> flights(static_cast<std::size_t>(mbs));
    std::map<RequestId, std::unique_ptr<Sequence>> live;  // every rank holds every sequence
    std::vector<SampleRequest> requests;
    std::vector<StepSequence> step_sequences;
    // This round's outputs (built on the controller, or where `local` wants them).
    const bool outputs_wanted = controller || bool(local);
    std::vector<RequestOutput> outputs;
    std::vector<RequestId> started;
    std::uint64_t round = 0;
    const auto output_for = [&](Sequence& s) -> RequestOutput& {  // one output per sequence a round
      if (s.output_round != round) {
        s.output_round = round, s.output_slot = outputs.size();
        outputs.emplace_back().id = s.id;
      }
      return outputs[s.output_slot];
    };
    std::size_t dealt = 0;  // requests dealt to the micro-batches
    const std::int64_t preemptions_before = counters_.preemptions;
    for (;;) {
      ++round;
      bool idle_now = true;
      for (int k = 0; k < mbs; ++k)
        idle_now = idle_now && schedulers[std::size_t(k)].done() && !flights[std::size_t(k)].pending;
      ControlMessage message =
          exchange(world, controller ? control->next(idle_now, idle, heartbeat) : ControlMessage());
      for (engine_detail::NewRequest& r : message.added) {
        auto s = std::make_unique<Sequence>();
        s->id = r.id;
        s->tokens = std::move(r.prompt);
        s->prompt_length = std::int64_t(s->tokens.size());
        s->params = std::move(r.params);
        s->rng.seed(r.seed);
        s->micro_batch = dealt++ % std::size_t(mbs);
        Scheduler& scheduler = schedulers[s->micro_batch];
        scheduler.add(s.get());
        if (!r.generated.empty()) resume(*s, r.generated, scheduler);
        live.emplace(r.id, std::move(s));
      }
      for (RequestId id : message.aborted) {
        auto it = live.find(id);
        if (it == live.end()) continue;  // finished meanwhile
        schedulers[it->second->micro_batch].finish(it->second.get(), "abort");
      }
      if (message.action == ControlMessage::exit) break;  // sent only when nothing is live
      if (message.action == ControlMessage::park) {
        TPKIT_REQUIRE(control, "an engine rank parks on its EngineControl");
        const std::uint64_t wakes = control->wake_count();
        world.barrier();  // every rank is here: none can fail while the others wait without a deadline
        if (controller)
          control->park();
        else
          control->wait_past(wakes);
        continue;
      }
      for (int k = 0; k < mbs; ++k) {
        InFlight& f = flights[std::size_t(k)];
        Scheduler& scheduler = schedulers[std::size_t(k)];
        if (f.pending) {  // the tokens of this micro-batch's previous step
          if (kTokensByBroadcast)
            world.broadcast(f.tokens.data(), f.tokens.size(), groups.layout().leader());
          else if (!leader)
            world.recv(f.tokens.data(), f.tokens.size(), groups.layout().leader(), kTokenTag);
          if (controller && moe_ && expert_load_by_message) receive_expert_load(groups, *control);
          std::size_t row = 0;
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) {
              const std::int32_t token = f.tokens[row++];
              if (!ch.sequence->finished)  // (not aborted since)
                accept(*ch.sequence, token, scheduler, outputs_wanted ? &output_for(*ch.sequence) : nullptr);
            }
          f.pending = false;
        }
        f.step.clear();
        if (!scheduler.done()) scheduler.schedule(f.step);
        // The finished sequences are in no step now: their last output, and they are gone.
        for (Sequence* s : scheduler.take_finished()) {
          if (outputs_wanted) {
            RequestOutput& out = output_for(*s);
            out.text += s->text.substr(std::min(s->streamed, s->text.size()));  // what a stop string held back
            out.finished = true;
            out.finish_reason = s->finish_reason;
            out.prompt_tokens = s->prompt_length;
            out.completion_tokens = s->generated();
            out.cached_tokens = s->cached_tokens;
          }
          live.erase(s->id);
        }
        if (f.step.empty()) continue;
        step_sequences.clear();
        std::int64_t rows = 0;
        for (const ScheduledChunk& ch : f.step) {
          step_sequences.push_back(
              {ch.sequence->tokens.data() + ch.start, ch.count, ch.start, &ch.sequence->blocks, ch.samples});
          rows += ch.samples ? 1 : 0;
          counters_.computed_tokens += ch.count;
          if (!ch.sequence->started) {
            ch.sequence->started = true;
            counters_.prompt_tokens += ch.sequence->prompt_length;
            if (controller) started.push_back(ch.sequence->id);
          }
        }
        model_->forward(groups.tp(), step_sequences, stage.last() ? rows : 0, &stage);
        if (moe_ && rows > 0) report_expert_load(groups, control, expert_load_by_message);
        scheduler.complete(f.step);
        ++counters_.steps;
        if (rows == 0) continue;
        f.tokens.assign(std::size_t(rows), 0);
        if (leader) {
          requests.clear();
          for (const ScheduledChunk& ch : f.step)
            if (ch.samples) requests.push_back({&ch.sequence->params, &ch.sequence->rng});
          model_->sample(requests, f.tokens.data());
          for (int r = 0; !kTokensByBroadcast && r < world.size(); ++r)
            if (r != world.rank()) world.send(f.tokens.data(), f.tokens.size(), r, kTokenTag);
        }
        f.pending = true;
      }
      counters_.preemptions = preemptions_before;
      for (const Scheduler& scheduler : schedulers) counters_.preemptions += scheduler.preemptions();
      if (local)
        for (const RequestOutput& out : outputs) local(out);
      if (controller) {
        EngineStatus status = counters();
        for (std::size_t k = 0; k < schedulers.size(); ++k) {
          status.running += schedulers[k].num_running();
          status.waiting += schedulers[k].num_waiting();
          status.kv_blocks_used += pools_[k].num_blocks() - pools_[k].num_free();
          status.kv_blocks_total += pools_[k].num_blocks();
        }
        control->end_round(started, outputs, status);
      }
      outputs.clear(), started.clear();
    }
  }

  // A sampled step's expert statistics of this stage (its TP rank 0), before the step's tokens go
  // out, so that a generate() that returns sees its counts: published into the shared
  // EngineControl, or sent to the controller, which reads them where it reads the step's tokens.
  void report_expert_load(ParallelGroups<Backend>& groups, EngineControl* control, bool by_message) {
    if (groups.tp().rank() != 0) return;
    const std::vector<ExpertLoad> loads = model_->expert_load();
    if (groups.world().rank() == 0 || (control && !by_message)) {
      control->publish_expert_load(loads);
    } else if (by_message && !loads.empty()) {
      expert_message_.clear();
      for (const ExpertLoad& l : loads) expert_message_.insert(expert_message_.end(), l.tokens.begin(), l.tokens.end());
      groups.world().send(expert_message_.data(), expert_message_.size(), 0, kExpertLoadTag);
    }
  }
  void receive_expert_load(ParallelGroups<Backend>& groups, EngineControl& control) {
    const ParallelLayout layout = groups.layout();
    for (int s = 1; s < layout.pp_size; ++s) {
      const std::vector<std::int64_t>& sparse = sparse_layers_[std::size_t(s)];
      if (sparse.empty()) continue;
      expert_message_.resize(sparse.size() * std::size_t(num_experts_));
      groups.world().recv(expert_message_.data(), expert_message_.size(), s * layout.tp_size, kExpertLoadTag);
      std::vector<ExpertLoad> loads;
      for (std::size_t i = 0; i < sparse.size(); ++i)
        loads.push_back({sparse[i],
                         {expert_message_.begin() + std::ptrdiff_t(i) * num_experts_,
                          expert_message_.begin() + std::ptrdiff_t(i + 1) * num_experts_}});
      control.publish_expert_load(loads);
    }
  }

  // The controller's message, on every rank. Host backends buffer sends, so the controller (a
  // stage-0 rank) sends and goes on; a stream-ordered backend broadcasts (see kTokensByBroadcast).
  static engine_detail::ControlMessage exchange(Communicator<Backend>& world, engine_detail::ControlMessage mine) {
    using engine_detail::ControlMessage;
    if (world.size() == 1) return mine;
    std::vector<std::uint8_t> bytes;
    std::int64_t header[2] = {0, 0};  // action, payload bytes
    if (world.rank() == 0) {
      if (mine.action == ControlMessage::run) bytes = mine.encode();
      header[0] = mine.action, header[1] = std::int64_t(bytes.size());
    }
    if (kTokensByBroadcast) {
      world.broadcast(header, 2, 0);
      bytes.resize(std::size_t(header[1]));
      if (header[1] > 0) world.broadcast(bytes.data(), bytes.size(), 0);
    } else if (world.rank() == 0) {
      for (int r = 1; r < world.size(); ++r) {
        world.send(header, 2, r, kControlTag);
        if (header[1] > 0) world.send(bytes.data(), bytes.size(), r, kControlTag);
      }
    } else {
      world.recv(header, 2, 0, kControlTag);
      TPKIT_REQUIRE(header[0] >= ControlMessage::run && header[0] <= ControlMessage::exit && header[1] >= 0,
                    "engine control message: bad header (", header[0], ", ", header[1], ")");
      bytes.resize(std::size_t(header[1]));
      if (header[1] > 0) world.recv(bytes.data(), bytes.size(), 0, kControlTag);
    }
    if (world.rank() == 0) return mine;
    return ControlMessage::decode(ControlMessage::Action(header[0]), bytes.data(), bytes.size());
  }

  // A resumed sequence: its earlier tokens go through the stop rules as if sampled here (nothing is
  // output; what they released counts as streamed), and the generator skips the draws they took.
  void resume(Sequence& s, const std::vector<std::int32_t>& generated, Scheduler& scheduler) {
    for (std::int32_t token : generated) {
      const StopChecker::Verdict v = stop_.accept(s, token);
      if (!v.finish_reason.empty()) {  // it had ended already
        scheduler.finish(&s, v.finish_reason);
        return;
      }
    }
    if (!s.params.greedy()) s.rng.discard(generated.size());  // one draw per sampled token
  }

  // Appends a sampled token, applies the stop rules, and adds what became final to `out`.
  void accept(Sequence& s, std::int32_t token, Scheduler& scheduler, RequestOutput* out) {
    ++counters_.generation_tokens;
    const StopChecker::Verdict v = stop_.accept(s, token);
    if (out) {
      if (!v.eos) out->token_ids.push_back(token);
      out->text += v.text;
    }
    if (!v.finish_reason.empty()) scheduler.finish(&s, v.finish_reason);
  }

  EngineOptions options_;
  StopChecker stop_;
  std::vector<BlockPool> pools_;
  EngineStatus counters_;  // steps, tokens and preemptions of the loops so far
  Range layers_;
  std::unique_ptr<RankModel<Backend>> model_;
  bool moe_ = false;  // publish expert statistics
  int num_experts_ = 0;
  std::vector<std::vector<std::int64_t>> sparse_layers_;  // per stage
  std::vector<std::int64_t> expert_message_;
};

}  // namespace tpkit
