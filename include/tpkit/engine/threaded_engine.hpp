// tpkit/engine/threaded_engine.hpp: the engine in one process. Loads a checkpoint once and runs
// tp_size x pp_size ranks as threads over the mock backend, each rank with its own HostOps
// (threads_per_rank threads). The ranks' loop runs from the first request until the engine is
// shut down: requests from submit() and generate() join and leave it at any step, and the
// ranks park while there is nothing to do.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tpkit/comm/mock.hpp"
#include "tpkit/config.hpp"
#include "tpkit/engine/engine_base.hpp"
#include "tpkit/engine/engine_rank.hpp"
#include "tpkit/ops/host_ops.hpp"

// In the SIMD namespace, like HostOps, which its inline members run.
TPKIT_SIMD_BEGIN

class Engine : public engine_detail::EngineBase<Engine> {
 public:
  explicit Engine(const std::string& model_path, EngineOptions options = {})
      : EngineBase(model_path, std::move(options)) {
    const int world = options_.layout().world_size();
    options_.threads_per_rank = resolve_threads_per_rank(options_.threads_per_rank, world);
    ranks_.resize(std::size_t(world));
    run_mock_ranks(
        world,
        [&](Communicator<MockBackend>& comm) {  // each rank reads only its own slices, in parallel
          ranks_[std::size_t(comm.rank())] = std::make_unique<EngineRank<MockBackend>>(
              checkpoint_, options_, decoder(), comm.rank(), HostOps(options_.threads_per_rank));
        },
        options_.comm);
    start_on_threads(
        runner_, [this](auto&& fn) { run_mock_ranks(options_.layout().world_size(), fn, options_.comm); }, ranks_);
  }

  using EngineBase::generate;  // text prompts

  // Token-id prompts with per-request parameters. Safe to call from several threads at once, and
  // while requests submitted with submit() run: all of them are batched together.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    return generate_on_loop(prompts, params, on_token);
  }

  // Stops taking requests, ends the ones in flight as `mode` says, and stops the ranks; later
  // calls throw Unavailable. The destructor does it with ShutdownMode::abort.
  void shutdown(ShutdownMode mode = ShutdownMode::drain) { runner_.stop(mode); }

 private:
  std::vector<std::unique_ptr<EngineRank<MockBackend>>> ranks_;
  engine_detail::RankRunner runner_;  // last: stops before the ranks go
};

TPKIT_SIMD_END
