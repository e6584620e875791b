// Pipeline parallelism: the layer split, the TP x PP arrangement of a world, and the engine on
// the real stories260K weights (5 layers) giving the same tokens at every TP x PP shape.
#include <chrono>
#include <map>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;

namespace {
const std::string kModels = TPKIT_TEST_MODELS;
const std::string kBin = kModels + "/stories260K/stories260K.bin";
const std::string kHf = kModels + "/stories260K_hf";

const std::vector<std::string> kPrompts = {"Once upon a time",
                                           "Lily and Tom",
                                           "The little dog",
                                           "One day, a girl named Sue went to the park with her mom",
                                           "Sam wanted a big red ball because",
                                           "The sun",
                                           "A cat and a bird"};

std::vector<std::vector<std::int32_t>> generate(const std::string& path, EngineOptions options,
                                                const SamplingParams& params) {
  options.tokenizer = kModels + "/stories260K/tok512.bin";
  Engine engine(path, options);
  std::vector<std::vector<std::int32_t>> out;
  for (const GenerationResult& r : engine.generate(kPrompts, params)) out.push_back(r.token_ids);
  return out;
}

SamplingParams greedy() {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 48;
  p.ignore_eos = true;
  return p;
}

struct Shape {
  int tp, pp;
  std::vector<std::int64_t> split;  // empty: balanced
  int micro_batches;                // 0: pp
};
}  // namespace

TEST_CASE("split_layers: balanced by default, explicit when given, refused when impossible", "[pipeline]") {
  REQUIRE(split_layers(5, 1) == std::vector<Range>{{0, 5}});
  REQUIRE(split_layers(5, 2) == std::vector<Range>{{0, 3}, {3, 5}});
  REQUIRE(split_layers(5, 5) == std::vector<Range>{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}});
  REQUIRE(split_layers(32, 3) == std::vector<Range>{{0, 11}, {11, 22}, {22, 32}});
  REQUIRE(split_layers(5, 2, {1, 4}) == std::vector<Range>{{0, 1}, {1, 5}});
  REQUIRE_THROWS_WITH(split_layers(5, 6), Catch::Contains("pp_size (6) exceeds the model's 5 layers"));
  REQUIRE_THROWS_WITH(split_layers(5, 2, {2, 2}), Catch::Contains("covers 4 layers but the model has 5"));
  REQUIRE_THROWS_WITH(split_layers(5, 2, {5, 0}), Catch::Contains("at least one layer"));
  REQUIRE_THROWS_WITH(split_layers(5, 3, {2, 3}), Catch::Contains("lists 2 stages but pp_size is 3"));
}

TEST_CASE("ParallelGroups arrange a world as TP groups inside pipeline stages", "[pipeline][comm]") {
  const int tp = GENERATE(1, 2, 3), pp = GENERATE(1, 2, 3);
  const ParallelLayout layout{tp, pp};
  test::RankChecks checks;
  run_mock_ranks(layout.world_size(), [&](Communicator<MockBackend>& world) {
    ParallelGroups<MockBackend> groups(world, layout);
    const int w = world.rank();
    RANK_CHECK(checks, groups.tp().size() == tp && groups.pp().size() == pp);
    RANK_CHECK(checks, groups.tp().rank() == w % tp && groups.stage() == w / tp);
    // The members of each group, by world rank, as the layout says.
    std::vector<int> tp_members(static_cast<std::size_t>(tp)), pp_members(static_cast<std::size_t>(pp));
    groups.tp().all_gather(&w, 1, tp_members.data());
    groups.pp().all_gather(&w, 1, pp_members.data());
    for (int r = 0; r < tp; ++r) RANK_CHECK(checks, tp_members[std::size_t(r)] == layout.world_rank(w / tp, r));
    for (int s = 0; s < pp; ++s) RANK_CHECK(checks, pp_members[std::size_t(s)] == layout.world_rank(s, w % tp));
    RANK_CHECK(checks, groups.leader() == (w == (pp - 1) * tp));
  });
  REQUIRE_RANK_CHECKS(checks);
  REQUIRE_THROWS_WITH(run_mock_ranks(5,
                                     [&](Communicator<MockBackend>& world) {
                                       ParallelGroups<MockBackend> groups(world, ParallelLayout{2, 2});
                                     }),
                      Catch::Contains("tp_size 2 x pp_size 2 needs 4 ranks but the world has 5"));
}

// The single-rank engine is the reference: test_engine_stories proves it equals an independent
// float64 forward pass. Pipeline stages do the same arithmetic as one rank (PP only moves the
// hidden state), so at TP 1 even the logits are bitwise equal; TP changes reduction order, and
// the greedy tokens are shown equal (the margins are argued in test_engine_stories).
TEST_CASE("the engine gives TP 1's greedy tokens at every TP x PP shape", "[pipeline][engine]") {
  const std::string path = GENERATE(kBin, kHf);
  static std::map<std::string, std::vector<std::vector<std::int32_t>>> reference;
  if (!reference.count(path)) reference[path] = generate(path, {}, greedy());
  const Shape shape = GENERATE(Shape{2, 1, {}, 0}, Shape{1, 2, {}, 0}, Shape{2, 2, {}, 0}, Shape{1, 5, {}, 0},
                               Shape{1, 2, {1, 4}, 0}, Shape{1, 3, {3, 1, 1}, 0}, Shape{3, 2, {2, 3}, 0},
                               Shape{2, 2, {}, 1}, Shape{1, 2, {}, 4}, Shape{4, 5, {}, 0});
  EngineOptions options;
  options.tp_size = shape.tp;
  options.pp_size = shape.pp;
  options.layers_per_stage = shape.split;
  options.micro_batches = shape.micro_batches;
  INFO(path << ": tp " << shape.tp << " pp " << shape.pp << " micro-batches " << shape.micro_batches << " split of "
            << shape.split.size());
  REQUIRE(generate(path, options, greedy()) == reference[path]);
}

TEST_CASE("pipeline stages do not change seeded sampling, batching limits or preemption", "[pipeline][engine]") {
  SamplingParams sampled;
  sampled.temperature = 0.9f, sampled.top_p = 0.95f, sampled.seed = 11, sampled.max_tokens = 40;
  EngineOptions one;
  const auto want = generate(kBin, one, sampled);
  EngineOptions piped;
  piped.pp_size = 3;
  REQUIRE(generate(kBin, piped, sampled) == want);  // PP alone keeps logits bitwise: same samples

  // Tight limits: few sequences, small steps (chunked prefill), and a KV cache small enough to
  // force preemption in every micro-batch's scheduler.
  EngineOptions tight;
  tight.max_num_seqs = 4, tight.max_num_batched_tokens = 6, tight.num_kv_blocks = 40, tight.block_size = 4;
  const auto want_tight = generate(kBin, tight, greedy());
  REQUIRE(want_tight == generate(kBin, {}, greedy()));
  tight.pp_size = 2, tight.tp_size = 2;
  tight.tokenizer = kModels + "/stories260K/tok512.bin";
  Engine engine(kBin, tight);
  std::vector<std::vector<std::int32_t>> got;
  for (const GenerationResult& r : engine.generate(kPrompts, greedy())) got.push_back(r.token_ids);
  REQUIRE(got == want_tight);
  REQUIRE(engine.last_stats().preemptions > 0);
}

TEST_CASE("engine options a pipeline cannot take are refused", "[pipeline][engine]") {
  EngineOptions o;
  o.pp_size = 6;
  REQUIRE_THROWS_WITH(Engine(kBin, o), Catch::Contains("pp_size (6) exceeds the model's 5 layers"));
  o.pp_size = 2, o.layers_per_stage = {1, 1};
  REQUIRE_THROWS_WITH(Engine(kBin, o), Catch::Contains("covers 2 layers but the model has 5"));
  o.layers_per_stage = {}, o.num_kv_blocks = 1;
  REQUIRE_THROWS_WITH(Engine(kBin, o), Catch::Contains("each of the 2 micro-batches at least one block"));
}

// A rank lost mid-generation: every other rank stops with an error naming it (the root cause is
// what generate() throws), within the timeout, and nothing hangs.
TEST_CASE("a rank that fails or stalls mid-generation is named, in TP x PP", "[pipeline][faults]") {
  using namespace std::chrono_literals;
  EngineOptions o;
  o.tp_size = 2, o.pp_size = 2;
  o.comm.timeout = 300ms;
  o.tokenizer = kModels + "/stories260K/tok512.bin";
  SECTION("a rank fails") {
    o.comm.faults.push_back(Fault::fail_at(3, 40));
    Engine engine(kBin, o);
    REQUIRE_THROWS_AS(engine.generate(kPrompts, greedy()), InjectedFault);
    try {
      engine.generate(kPrompts, greedy());
    } catch (const InjectedFault& e) {
      REQUIRE_THAT(e.what(), Catch::Contains("world rank 3"));
    }
  }
  SECTION("a rank stalls longer than the timeout") {
    o.comm.faults.push_back(Fault::stall_at(1, 40, 1500ms));
    Engine engine(kBin, o);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE_THROWS_WITH(engine.generate(kPrompts, greedy()), Catch::Contains("world rank 1"));
    REQUIRE(std::chrono::steady_clock::now() - start < 10s);
  }
}
