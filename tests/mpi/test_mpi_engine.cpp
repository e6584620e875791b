// The engine with one process per rank over MPI (run with 2, 4 and 5 processes): the same
// greedy tokens as the single-rank engine for every TP x PP shape the world size allows, on
// the real stories260K weights; processes that disagree get an error, not a hang; and the
// running engine serves from world rank 0 while the other ranks follow.
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "catch.hpp"
#include "stories.hpp"
#include "tpkit/comm/mpi.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;

namespace {
using stories::kBin, stories::kHf, stories::kTokenizer, stories::kPrompts;
SamplingParams greedy() { return stories::greedy(48); }
const auto tokens = stories::token_ids;

// The single-rank engine (threads, TP 1), which test_engine_stories checks against float64.
const std::vector<std::vector<std::int32_t>>& reference(const std::string& path) {
  static std::map<std::string, std::vector<std::vector<std::int32_t>>> cache;
  if (!cache.count(path)) {
    EngineOptions o;
    o.tokenizer = kTokenizer;
    Engine engine(path, o);
    cache[path] = tokens(engine.generate(kPrompts, greedy()));
  }
  return cache[path];
}

struct Shape {
  int tp, pp;
  std::vector<std::int64_t> split;
  int micro_batches;
};
std::vector<Shape> shapes(int world) {
  switch (world) {
    case 2:
      return {{2, 1, {}, 0}, {1, 2, {}, 0}, {1, 2, {1, 4}, 0}};
    case 4:
      return {{2, 2, {}, 0}, {4, 1, {}, 0}, {1, 4, {1, 1, 1, 2}, 0}, {2, 2, {}, 1}};
    case 5:
      return {{1, 5, {}, 0}, {5, 1, {}, 0}};
    default:
      return {{world, 1, {}, 0}};
  }
}
}  // namespace

TEST_CASE("MPI engine: TP 1's greedy tokens at every TP x PP shape of this world", "[mpi][engine]") {
  MpiOptions mpi;
  mpi.timeout = std::chrono::seconds(60);
  Communicator<MpiBackend> world(MpiBackend::world(mpi));
  for (const std::string& path : {kBin, kHf}) {
    for (const Shape& shape : shapes(world.size())) {
      EngineOptions o;
      o.tp_size = shape.tp, o.pp_size = shape.pp, o.layers_per_stage = shape.split;
      o.micro_batches = shape.micro_batches, o.tokenizer = kTokenizer;
      DistributedEngine<MpiBackend> engine(world, path, o);
      INFO(path << ": tp " << shape.tp << " x pp " << shape.pp << ", world rank " << world.rank());
      // Every rank returns the tokens (they all accept the same ones).
      REQUIRE(tokens(engine.generate(kPrompts, greedy())) == reference(path));
    }
  }
}

TEST_CASE("MPI engine: processes that disagree are told so on every rank", "[mpi][engine]") {
  Communicator<MpiBackend> world(MpiBackend::world());
  EngineOptions o;
  o.tp_size = world.size(), o.tokenizer = kTokenizer;
  EngineOptions other = o;
  if (world.rank() == 1) other.max_num_seqs = 3;
  REQUIRE_THROWS_WITH(DistributedEngine<MpiBackend>(world, kBin, other),
                      Catch::Contains("ranks disagree on the model or the engine options: world rank(s) 1"));
  DistributedEngine<MpiBackend> engine(world, kBin, o);
  SamplingParams p = greedy();
  if (world.rank() == world.size() - 1) p.max_tokens = 7;
  REQUIRE_THROWS_WITH(engine.generate(kPrompts, p), Catch::Contains("ranks disagree on the requests"));
  EngineOptions wrong = o;
  wrong.tp_size = world.size() + 1;  // a world of the wrong size for the layout
  wrong.pp_size = 1;
  if (wrong.tp_size <= 8)
    REQUIRE_THROWS_WITH(DistributedEngine<MpiBackend>(world, kBin, wrong), Catch::Contains("needs"));
}

// The running engine over processes: every rank serves; world rank 0 takes requests from another
// thread of its own while the loop runs on its main thread. Requests join one at a time and get
// what they get alone; the world idles past its collective timeout (heartbeats keep the followers
// waiting) and serves again; shutdown ends serve() on every rank.
TEST_CASE("MPI engine: world rank 0 serves requests from another thread, heartbeats keep it alive when idle",
          "[mpi][engine][service]") {
  MpiOptions mpi;
  mpi.timeout = std::chrono::milliseconds(1000);
  Communicator<MpiBackend> world(MpiBackend::world(mpi));
  const int pp = world.size() % 2 == 0 ? 2 : 1;
  EngineOptions o;
  o.tp_size = world.size() / pp, o.pp_size = pp, o.tokenizer = kTokenizer;
  o.idle_heartbeat = std::chrono::milliseconds(100);
  DistributedEngine<MpiBackend> engine(world, kBin, o);
  INFO("tp " << o.tp_size << " x pp " << o.pp_size << ", world rank " << world.rank());
  std::vector<std::vector<std::int32_t>> got(kPrompts.size());
  std::string failure;
  std::thread client;
  if (world.rank() == 0) {
    client = std::thread([&] {
      try {
        std::mutex m;
        std::condition_variable cv;
        std::size_t finished = 0;
        for (std::size_t i = 0; i < kPrompts.size(); ++i) {
          engine.submit(kPrompts[i], greedy(), [&, i](const RequestOutput& out) {
            std::lock_guard<std::mutex> lock(m);
            got[i].insert(got[i].end(), out.token_ids.begin(), out.token_ids.end());
            if (out.finished) ++finished, cv.notify_all();
          });
          if (i == 2) std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // idle for > the timeout
        }
        std::unique_lock<std::mutex> lock(m);
        if (!cv.wait_for(lock, std::chrono::seconds(120), [&] { return finished == kPrompts.size(); }))
          failure = "the requests did not finish";
      } catch (const std::exception& e) {
        failure = e.what();
      }
      engine.begin_shutdown(ShutdownMode::drain);
    });
  }
  engine.serve();
  if (client.joinable()) client.join();
  REQUIRE(failure.empty());
  if (world.rank() == 0) {
    REQUIRE(got == reference(kBin));
    REQUIRE_THROWS_AS(engine.submit(kPrompts[0], greedy(), {}), Unavailable);
  } else {
    REQUIRE_THROWS_AS(engine.submit(kPrompts[0], greedy(), {}), Unavailable);  // only world rank 0 takes requests
  }
}

// Mixture-of-experts models over processes: every MoE layout at every TP x PP shape of this
// world gives the greedy tokens of the single-rank threaded engine (which test_hf_fixtures checks
// against transformers). qwen2_moe has a shared expert and 6 experts (uneven over 4 ranks);
// qwen3_moe_sparse_step mixes dense and sparse layers over 4 layers. World rank 0 reports every
// sparse layer's expert statistics, those of the other stages included.
TEST_CASE("MPI engine: MoE models give the same greedy tokens in every layout and TP x PP shape",
          "[mpi][engine][moe]") {
  MpiOptions mpi;
  mpi.timeout = std::chrono::seconds(60);
  Communicator<MpiBackend> world(MpiBackend::world(mpi));
  std::vector<std::pair<int, int>> grid;  // tp, pp
  if (world.size() == 2) grid = {{2, 1}, {1, 2}};
  if (world.size() == 4) grid = {{2, 2}, {4, 1}};
  if (grid.empty()) return;  // 5 processes: more than these models' heads and layers
  SamplingParams params = stories::greedy(24);
  params.ignore_eos = true;
  const std::vector<std::vector<std::int32_t>> prompts = {{5, 17, 99, 3, 42}, {7, 8, 200, 31, 64, 12, 9}};
  const std::vector<SamplingParams> all(prompts.size(), params);
  for (const std::string name : {"qwen2_moe", "qwen3_moe_sparse_step"}) {
    const std::string path = std::string(TPKIT_TEST_DATA) + "/" + name + "/f32";
    static std::map<std::string, std::vector<std::vector<std::int32_t>>> want;
    if (!want.count(name)) want[name] = tokens(Engine(path, EngineOptions()).generate(prompts, all));
    for (const auto& [tp, pp] : grid)
      for (MoELayout layout : {MoELayout::tensor_parallel, MoELayout::expert_parallel, MoELayout::expert_dispatch}) {
        EngineOptions o;
        o.tp_size = tp, o.pp_size = pp, o.moe_layout = layout;
        DistributedEngine<MpiBackend> engine(world, path, o);
        INFO(name << " " << moe_layout_name(layout) << " tp " << tp << " x pp " << pp << ", world rank "
                  << world.rank());
        REQUIRE(tokens(engine.generate(prompts, all)) == want[name]);
        if (world.rank() != 0) continue;
        // Every sparse layer's statistics reach world rank 0, whichever stage holds it: top_k routed
        // tokens per computed token.
        const GenerationStats& stats = engine.last_stats();
        const std::size_t sparse = name == std::string("qwen2_moe") ? 2 : 1;
        const std::int64_t top_k = 3;  // both models
        REQUIRE(stats.expert_load.size() == sparse);
        for (const ExpertLoad& l : stats.expert_load) {
          std::int64_t total = 0;
          for (std::int64_t t : l.tokens) total += t;
          REQUIRE(total == top_k * stats.computed_tokens);
        }
      }
  }
}
