// tpkit/engine/threaded_engine.hpp: the engine in one process. Loads a checkpoint once and runs
// tp_size x pp_size ranks as threads over the mock backend, each rank with its own HostOps
// (threads_per_rank threads).
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
  }

  using EngineBase::generate;  // text prompts

  // Token-id prompts with per-request parameters.
  std::vector<GenerationResult> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                         const std::vector<SamplingParams>& params, TokenCallback on_token = {}) {
    return generate_on_threads(
        prompts, params, on_token,
        [&](auto&& fn) { run_mock_ranks(options_.layout().world_size(), fn, options_.comm); }, ranks_);
  }

 private:
  std::vector<std::unique_ptr<EngineRank<MockBackend>>> ranks_;
};

TPKIT_SIMD_END
