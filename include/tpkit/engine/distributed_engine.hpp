// tpkit/engine/distributed_engine.hpp: the engine with one rank per process (MPI, NCCL, or any
// backend whose world spans processes). Each process loads the checkpoint (memory-mapped: it
// reads only its own slices) and runs its rank. Two ways to use it: generate(), collective, where
// every process passes the same requests (checked: a disagreement is an error on every rank
// rather than a hang or wrong tokens); or serve() on every rank, with world rank 0 taking
// requests from its other threads (submit, abort, status, shutdown) as a server does.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/engine/agreement.hpp"
#include "tpkit/engine/engine_base.hpp"
#include "tpkit/engine/engine_rank.hpp"
#include "tpkit/ops/host_ops.hpp"

namespace tpkit {

// With Ops = CudaOps (one GPU per process; NcclEngine in tpkit/engine/nccl_engine.cuh sets it
// up) the backend must enqueue on the stream of `ops`' context. With HostOps and `ops`
// default-constructed, the rank gets threads_per_rank threads.
template <class Backend, class Ops = HostOps>
class DistributedEngine : public engine_detail::EngineBase<DistributedEngine<Backend, Ops>> {
  using Base = engine_detail::EngineBase<DistributedEngine<Backend, Ops>>;
  using Base::checkpoint_, Base::options_, Base::tokenizer_, Base::stats_, Base::control_;

 public:
  // graph_max_rows: decode steps of up to this many sequences replay graphs where Ops can
  // capture them (CudaOps); 0: never.
  DistributedEngine(Communicator<Backend>& world, const std::string& model_path, EngineOptions options,
                    std::optional<Ops> ops = std::nullopt, std::int64_t graph_max_rows = 0)
      : Base(model_path, std::move(options)),
        world_(world),
        groups_((check_setup(), world), options_.layout()),
        rank_(checkpoint_, options_, this->decoder(), world.rank(), ops ? *ops : default_ops(), graph_max_rows) {
    this->controller_ = world.rank() == 0;
  }

  bool leader() const { return world_.rank() == options_.layout().leader(); }
  using Base::config, Base::has_tokenizer, Base::generate, Base::begin_shutdown;

  // Offline: collective over the world, every rank passing the same requests; every rank returns
  // the results, and `on_token` is called on the leader (the rank that samples) only. Seeds drawn
  // for unseeded requests are world rank 0's.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    std::vector<std::uint64_t> seeds = engine_detail::check_requests(config(), has_tokenizer(), prompts, params);
    Fingerprint f;
    f.add(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      f.add(prompts[i].data(), prompts[i].size() * sizeof(std::int32_t));
      const SamplingParams& p = params[i];
      f.add(p.temperature), f.add(p.top_k), f.add(p.top_p), f.add(p.min_p), f.add(p.max_tokens), f.add(p.ignore_eos);
      f.add(p.seed.has_value()), f.add(p.seed.value_or(0));
      for (const auto& stop : p.stop) f.add(stop);
      f.add(p.stop_token_ids.size()), f.add(p.skip_special_tokens);
      for (std::int32_t id : p.stop_token_ids) f.add(id);
    }
    require_agreement(world_, f, "the requests");
    // Rank 0 queues the requests and tells every rank their first id (or that it takes none: it is
    // shutting down), so every rank can tell them from requests submitted otherwise.
    std::int64_t first = -1;
    if (world_.rank() == 0) {
      std::vector<engine_detail::NewRequest> requests(prompts.size());
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        requests[i].prompt = prompts[i], requests[i].params = params[i];
        requests[i].params.seed = seeds[i];
      }
      try {
        const RequestId next = control_.next_id();
        const std::vector<RequestId> ids = control_.submit(std::move(requests), {});
        first = std::int64_t(ids.empty() ? next : ids[0]);
      } catch (const Unavailable&) {
      }
    }
    world_.broadcast(&first, 1, 0);
    if (first < 0) throw Unavailable("the engine is shutting down and accepts no new requests (world rank 0)");
    const auto start = std::chrono::steady_clock::now();
    // World rank 0 holds every stage's expert statistics (the others send theirs to it).
    EngineStatus before = rank_.counters();
    if (world_.rank() == 0) before.expert_load = control_.status().expert_load;
    engine_detail::ResultCollector collector(prompts, leader() ? std::move(on_token) : TokenCallback());
    const auto n = std::int64_t(prompts.size());
    run_loop(engine_detail::IdleMode::exit, [&](const RequestOutput& out) {
      const std::int64_t i = std::int64_t(out.id) - first;
      if (i >= 0 && i < n) collector.add(std::size_t(i), out);  // (not a request submitted otherwise)
    });
    std::vector<GenerationResult> results = collector.wait();
    EngineStatus after = rank_.counters();
    if (world_.rank() == 0) after.expert_load = control_.status().expert_load;
    stats_ = engine_detail::stats_between(
        before, after, results, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return results;
  }

  // Online: every rank calls serve(), which returns once world rank 0's begin_shutdown() has let the
  // requests in flight end. Meanwhile other threads of world rank 0 submit() and abort(). Idle
  // ranks exchange a heartbeat every EngineOptions::idle_heartbeat, so no timeout trips. If a
  // rank fails, serve() throws on every rank it reaches and every request in flight ends with
  // the error.
  void serve() { run_loop(engine_detail::IdleMode::heartbeat, {}); }

 private:
  // HostOps with threads_per_rank threads (0: this host's cores over its ranks of this job);
  // other policies default-constructed.
  Ops default_ops() {
    if constexpr (std::is_same_v<Ops, HostOps>) {
      options_.threads_per_rank =
          resolve_threads_per_rank(options_.threads_per_rank, ranks_on_this_host(world_.size()));
      return HostOps(options_.threads_per_rank);
    } else {
      return Ops();
    }
  }

  void run_loop(engine_detail::IdleMode idle, const OutputCallback& local) {
    try {
      rank_.serve(groups_, world_.rank() == 0 ? &control_ : nullptr, idle, options_.idle_heartbeat, local);
    } catch (...) {
      if (world_.rank() == 0) control_.fail_all(std::current_exception(), /*accept_more=*/false);
      throw;
    }
  }

  void check_setup() {
    const EngineOptions& o = options_;
    const ModelConfig& c = checkpoint_.config();
    Fingerprint f;
    f.add(o.tp_size), f.add(o.pp_size), f.add(o.micro_batches), f.add(int(o.dtype)), f.add(o.max_num_seqs);
    f.add(o.max_num_batched_tokens), f.add(o.block_size), f.add(o.num_kv_blocks), f.add(o.enable_prefix_caching);
    f.add(o.long_prefill_token_threshold);
    for (std::int64_t n : o.layers_per_stage) f.add(n);
    f.add(c.hidden_size), f.add(c.num_layers), f.add(c.num_heads), f.add(c.num_kv_heads), f.add(c.vocab_size);
    f.add(tokenizer_ != nullptr);
    // The MoE layout and placements: ranks laid out differently would exchange mismatched tokens.
    f.add(int(o.moe_layout));
    for (const auto& [layer, placement] : o.expert_placements)
      for (const std::vector<int>& holders : placement.holders) {
        f.add(layer), f.add(holders.size());
        for (int r : holders) f.add(r);
      }
    require_agreement(world_, f, "the model or the engine options");
  }

  Communicator<Backend>& world_;
  ParallelGroups<Backend> groups_;
  EngineRank<Backend, Ops> rank_;
};

}  // namespace tpkit
