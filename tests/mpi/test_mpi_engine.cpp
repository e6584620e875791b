// The engine with one process per rank over MPI (run with 2, 4 and 5 processes): the same
// greedy tokens as the single-rank engine for every TP x PP shape the world size allows, on
// the real stories260K weights; and processes that disagree get an error, not a hang.
#include <map>

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
