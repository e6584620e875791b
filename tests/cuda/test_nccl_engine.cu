// The engine with one GPU per rank over NCCL (tpkit/engine/nccl_engine.cuh) on the real
// stories260K weights: the 64 greedy tokens of each golden prompt equal the float64
// reference's (tests/reference/stories_golden.hpp), as for the one-GPU engine.
//   * A world of 1 on GPU 0 (NCCL makes no call; the engine's host messages are staged).
//   * TP 2, one thread and one GPU per rank, when two GPUs are present; TP 2 x PP 2 when four
//     are. Otherwise these report "skipped: needs N GPUs".
//   * A world that cannot hold the layout is refused by name.
// Skipped (exit 77) without a GPU.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "cuda_test_support.hpp"
#include "reference/stories_golden.hpp"
#include "tpkit/engine/nccl_engine.cuh"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;

namespace {
using stories::kBin, stories::kHf, stories::kTokenizer;

// Greedy tokens of every golden prompt from world rank `rank` of `size` (GPU `rank`).
std::vector<std::vector<std::int32_t>> run_rank(const std::string& path, const stories::Golden& g, EngineOptions o,
                                                const ncclUniqueId& id, int rank, int size) {
  o.tokenizer = kTokenizer;
  GpuOptions gpu;
  gpu.device = rank;
  gpu.gpu_memory_utilization = 0.5;
  NcclEngine process([&](cudaStream_t stream) { return NcclBackend::create(id, rank, size, stream); }, path, o, gpu);
  return stories::token_ids(
      process.engine().generate(g.prompt_ids, std::vector<SamplingParams>(g.prompt_ids.size(), stories::greedy(64))));
}

// Every rank of a tp x pp world, one thread per GPU; each rank's tokens must be the golden ones.
void world_against_golden(const std::string& path, const stories::Golden& g, int tp, int pp, int devices) {
  const int size = tp * pp;
  const std::string name = path + " tp " + std::to_string(tp) + " x pp " + std::to_string(pp);
  if (devices < size) {
    std::printf("%s: skipped: needs %d GPUs\n", name.c_str(), size);
    return;
  }
  EngineOptions o;
  o.tp_size = tp, o.pp_size = pp;
  const ncclUniqueId id = NcclBackend::unique_id();
  std::vector<std::vector<std::vector<std::int32_t>>> tokens(static_cast<std::size_t>(size));
  std::vector<std::string> errors(static_cast<std::size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        tokens[std::size_t(r)] = run_rank(path, g, o, id, r, size);
      } catch (const std::exception& e) {
        errors[std::size_t(r)] = e.what();
      }
    });
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < size; ++r) {
    expect(errors[std::size_t(r)].empty(), name + " rank " + std::to_string(r) + ": " + errors[std::size_t(r)]);
    expect(tokens[std::size_t(r)] == g.tokens, name + " rank " + std::to_string(r) + ": tokens differ from the golden");
  }
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  int devices = 0;
  cudaGetDeviceCount(&devices);
  try {
    const stories::Golden g = stories::make_golden();
    for (const std::string& path : {kBin, kHf}) world_against_golden(path, g, 1, 1, devices);
    world_against_golden(kBin, g, 2, 1, devices);
    world_against_golden(kBin, g, 2, 2, devices);
    bool refused = false;
    try {
      EngineOptions o;
      o.tp_size = 2;
      run_rank(kBin, g, o, NcclBackend::unique_id(), 0, 1);
    } catch (const Error& e) {
      refused = std::string(e.what()).find("needs 2 ranks but the world has 1") != std::string::npos;
    }
    expect(refused, "a layout larger than the world is refused by name");
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    ++failures;
  }
  std::printf("NCCL engine: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
