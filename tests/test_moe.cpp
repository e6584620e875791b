// The mixture-of-experts layer: transformers' routing rule, and MoELayer in its three layouts
// (tp, ep, ep-dispatch) at 1-4 ranks, against a float64 reference written here from the
// Mixtral / Qwen-MoE definition; bitwise agreement between the expert layouts; statistics; and
// that a rank never touches the weights of experts it does not hold.
#include <algorithm>
#include <cmath>
#include <numeric>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "catch.hpp"
#include "reference/moe_reference.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/engine/placement.hpp"
#include "tpkit/layers/moe.hpp"

using namespace tpkit;
using moe_ref::Problem, moe_ref::Reference, moe_ref::RefRoute, moe_ref::ref_route, moe_ref::reference;

namespace {

struct LayerRun {
  std::vector<std::vector<float>> y;  // per rank, widened
  std::vector<std::vector<std::int64_t>> counts;
  std::vector<std::vector<bool>> computes;
};

template <class T>
LayerRun run_layer(const Problem& p, const std::vector<float>& x, int n, int ranks, MoEOptions options,
                   const std::vector<std::int64_t>& positions = {}, const std::vector<std::uint8_t>& counted = {}) {
  LayerRun out;
  out.y.resize(std::size_t(ranks));
  out.counts.resize(std::size_t(ranks));
  out.computes.resize(std::size_t(ranks));
  run_mock_ranks(ranks, [&](Communicator<MockBackend>& comm) {
    MoELayer<T> layer(HostOps(), p.weights(), {p.top_k, p.normalize}, {comm.rank(), ranks}, options);
    const auto xs = test::to_storage<T>(x);
    std::vector<T> y(static_cast<std::size_t>(n * p.H));
    for (int repeat = 0; repeat < 2; ++repeat)  // the second call reuses every workspace
      layer.forward(comm, TensorView<const T>(xs.data(), {n, p.H}), TensorView<T>(y.data(), {n, p.H}),
                    positions.empty() ? nullptr : positions.data(), counted.empty() ? nullptr : counted.data());
    std::vector<float>& mine = out.y[std::size_t(comm.rank())];
    for (T v : y) mine.push_back(float(v));
    out.counts[std::size_t(comm.rank())] = layer.tokens_per_expert();
    for (int e = 0; e < p.E; ++e) out.computes[std::size_t(comm.rank())].push_back(layer.computes(e));
  });
  return out;
}

template <class T>
void require_within(const LayerRun& run, const Reference<T>& want) {
  for (std::size_t r = 0; r < run.y.size(); ++r) {
    double worst = 0;
    for (std::size_t i = 0; i < want.y.size(); ++i)
      worst = std::max(worst, std::fabs(double(run.y[r][i]) - want.y[i]) / want.bound[i]);
    INFO("rank " << r << ": worst error / bound = " << worst);
    REQUIRE(worst <= 1.0);
  }
}

constexpr MoELayout kLayouts[] = {MoELayout::tensor_parallel, MoELayout::expert_parallel, MoELayout::expert_dispatch};

}  // namespace

TEST_CASE("route_token is transformers' softmax, top-k and renormalisation", "[moe][routing]") {
  ref::Rng rng(17);
  for (int trial = 0; trial < 200; ++trial) {
    const int E = 2 + trial % 9, k = 1 + trial % E;
    const bool normalize = trial % 2 == 0;
    std::vector<float> logits = rng.uniform_vector(std::size_t(E), 6.0);
    if (trial % 5 == 0) logits[std::size_t(E - 1)] = logits[0];  // an exact tie: the lower index wins
    std::vector<float> probs(static_cast<std::size_t>(E)), weights(static_cast<std::size_t>(k));
    std::vector<std::int32_t> experts(static_cast<std::size_t>(k));
    route_token(logits.data(), E, {k, normalize}, probs.data(), experts.data(), weights.data());
    const RefRoute want = ref_route(std::vector<double>(logits.begin(), logits.end()), k, normalize);
    if (want.boundary_gap < 1e-5 && trial % 5 != 0) continue;  // a near-tie float may order either way
    INFO("trial " << trial << " E " << E << " k " << k);
    for (int j = 0; j < k; ++j) {
      REQUIRE(experts[std::size_t(j)] == want.experts[std::size_t(j)]);
      REQUIRE(std::fabs(weights[std::size_t(j)] - want.weights[std::size_t(j)]) <= 1e-6);
    }
  }
  SECTION("equal logits choose the lowest indices, in order") {
    const std::vector<float> logits = {1.0f, 3.0f, 1.0f, 3.0f, 3.0f};
    std::vector<float> probs(5), weights(3);
    std::vector<std::int32_t> experts(3);
    route_token(logits.data(), 5, {3, false}, probs.data(), experts.data(), weights.data());
    REQUIRE(experts == std::vector<std::int32_t>{1, 3, 4});
    route_token(logits.data(), 5, {3, true}, probs.data(), experts.data(), weights.data());
    REQUIRE(std::fabs(weights[0] - 1.0f / 3) <= 1e-7);
  }
}

TEMPLATE_TEST_CASE("MoELayer equals the float64 reference in every layout at 1-4 ranks", "[moe][layers]", float,
                   bfloat16) {
  using T = TestType;
  const int top_k = GENERATE(2, 3);
  const bool shared = GENERATE(false, true);
  const int n = GENERATE(1, 2, 9);
  const Problem p(6, top_k, 32, 24, shared ? 20 : 0, top_k == 2, 900 + std::uint64_t(top_k * 10 + shared));
  ref::Rng rng(77 + std::uint64_t(n));
  const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
  for (int ranks = 1; ranks <= 4; ++ranks) {
    const Reference<T> want = reference<T>(p, x, n, ranks);
    REQUIRE(want.min_gap > 1e-4);  // the inputs route decisively (else pick another seed)
    for (MoELayout layout : kLayouts) {
      INFO(test::type_name<T>() << " " << moe_layout_name(layout) << " at " << ranks << " ranks, top " << top_k
                                << (shared ? " with a shared expert" : "") << ", " << n << " tokens");
      const LayerRun run = run_layer<T>(p, x, n, ranks, {layout, {}});
      require_within(run, want);
      for (int r = 0; r < ranks; ++r) {
        REQUIRE(run.y[std::size_t(r)] == run.y[0]);  // replicated outputs agree bitwise
        std::vector<std::int64_t> doubled = want.counts;
        for (auto& c : doubled) c *= 2;  // two forward calls
        REQUIRE(run.counts[std::size_t(r)] == doubled);
      }
    }
  }
}

TEST_CASE("the expert layouts agree bitwise in float, and with the tp layout at one rank", "[moe][layers]") {
  const int top_k = GENERATE(2, 3);
  const Problem p(6, top_k, 32, 24, 0, false, 950 + std::uint64_t(top_k));
  ref::Rng rng(5);
  const int n = 11;
  const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
  const auto one = run_layer<float>(p, x, n, 1, {MoELayout::tensor_parallel, {}});
  for (MoELayout layout : {MoELayout::expert_parallel, MoELayout::expert_dispatch})
    REQUIRE(run_layer<float>(p, x, n, 1, {layout, {}}).y[0] == one.y[0]);
  // At more ranks the ranks' partial sums are added in rank order by both: the same bits.
  for (int ranks = 2; ranks <= 4; ++ranks) {
    INFO(ranks << " ranks, top " << top_k);
    const auto ep = run_layer<float>(p, x, n, ranks, {MoELayout::expert_parallel, {}});
    const auto dispatch = run_layer<float>(p, x, n, ranks, {MoELayout::expert_dispatch, {}});
    REQUIRE(ep.y[0] == dispatch.y[0]);
  }
}

TEST_CASE("expert placements: balanced splits, uneven counts, redundant copies", "[moe][placement]") {
  SECTION("6 experts on 4 ranks hold 2, 2, 1, 1; 2 experts on 4 ranks leave two ranks none") {
    const ExpertPlacement p = balanced_expert_placement(6, 4);
    REQUIRE(p.experts_of(0) == std::vector<int>{0, 1});
    REQUIRE(p.experts_of(1) == std::vector<int>{2, 3});
    REQUIRE(p.experts_of(2) == std::vector<int>{4});
    REQUIRE(p.experts_of(3) == std::vector<int>{5});
    const ExpertPlacement q = balanced_expert_placement(2, 4);
    REQUIRE(q.experts_of(2).empty());
    REQUIRE(q.experts_of(3).empty());
  }
  SECTION("bad placements are refused by name") {
    ExpertPlacement p = balanced_expert_placement(4, 2);
    p.holders[1].clear();
    REQUIRE_THROWS_WITH(p.validate(4, 2), Catch::Contains("expert 1 no rank"));
    p = balanced_expert_placement(4, 2);
    p.holders[3] = {1, 0};
    REQUIRE_THROWS_WITH(p.validate(4, 2), Catch::Contains("out of order"));
    p.holders[3] = {2};
    REQUIRE_THROWS_WITH(p.validate(4, 2), Catch::Contains("outside the group"));
    REQUIRE_THROWS_WITH(balanced_expert_placement(4, 2).validate(4, 3), Catch::Contains("for 2 ranks"));
  }
  SECTION("a hot expert copied on every rank: copies take turns by position, answers unchanged") {
    const Problem p(6, 2, 32, 24, 0, true, 971);
    ref::Rng rng(9);
    const int n = 8, ranks = 3;
    const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
    ExpertPlacement placement = balanced_expert_placement(6, ranks);
    placement.holders[0] = {0, 1, 2};
    std::vector<std::int64_t> positions(static_cast<std::size_t>(n));
    std::iota(positions.begin(), positions.end(), 5);
    const Reference<float> want = reference<float>(p, x, n, ranks);
    for (MoELayout layout : {MoELayout::expert_parallel, MoELayout::expert_dispatch}) {
      const LayerRun run = run_layer<float>(p, x, n, ranks, {layout, placement}, positions);
      require_within(run, want);
      REQUIRE(run.computes[1] == std::vector<bool>{true, false, true, true, false, false});
      REQUIRE(run.computes[2] == std::vector<bool>{true, false, false, false, true, true});
    }
    const auto ep = run_layer<float>(p, x, n, ranks, {MoELayout::expert_parallel, placement}, positions);
    const auto dispatch = run_layer<float>(p, x, n, ranks, {MoELayout::expert_dispatch, placement}, positions);
    REQUIRE(ep.y[0] == dispatch.y[0]);
  }
}

TEST_CASE("expert statistics count the group's routed tokens on every rank, padding rows excluded", "[moe][stats]") {
  const Problem p(6, 2, 32, 24, 0, true, 990);
  ref::Rng rng(3);
  const int n = 7;
  const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
  const std::vector<std::uint8_t> counted = {1, 1, 0, 1, 1, 1, 0};
  const Reference<float> want = reference<float>(p, x, n, 1, counted);
  REQUIRE(std::accumulate(want.counts.begin(), want.counts.end(), std::int64_t(0)) == 5 * 2);
  for (MoELayout layout : kLayouts)
    for (int ranks : {1, 3, 4}) {
      const LayerRun run = run_layer<float>(p, x, n, ranks, {layout, {}}, {}, counted);
      for (int r = 0; r < ranks; ++r) {
        INFO(moe_layout_name(layout) << " rank " << r << " of " << ranks);
        std::vector<std::int64_t> doubled = want.counts;
        for (auto& c : doubled) c *= 2;
        REQUIRE(run.counts[std::size_t(r)] == doubled);
      }
    }
}

#if defined(__linux__)
TEST_CASE("a rank reads only the experts it holds: the others' weights are unreadable memory", "[moe][loading]") {
  const Problem p(6, 2, 32, 24, 0, true, 995);
  const long page = sysconf(_SC_PAGESIZE);
  void* forbidden = mmap(nullptr, std::size_t(page) * 16, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(forbidden != MAP_FAILED);
  ref::Rng rng(4);
  const int n = 5, ranks = 4;
  const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
  const Reference<float> want = reference<float>(p, x, n, ranks);
  for (MoELayout layout : {MoELayout::expert_parallel, MoELayout::expert_dispatch}) {
    std::vector<std::vector<float>> outs(static_cast<std::size_t>(ranks));
    run_mock_ranks(ranks, [&](Communicator<MockBackend>& comm) {
      MoEWeights w = p.weights();
      const ExpertPlacement placement = balanced_expert_placement(p.E, ranks);
      for (int e = 0; e < p.E; ++e)
        if (!placement.holds(comm.rank(), e)) {  // any read of these would fault
          const RawTensorView none(forbidden, DType::f32, {p.I, p.H});
          w.experts[std::size_t(e)] = {none, none, RawTensorView(forbidden, DType::f32, {p.H, p.I})};
        }
      MoELayer<float> layer(HostOps(), w, {p.top_k, p.normalize}, {comm.rank(), ranks}, {layout, {}});
      std::vector<float> y(static_cast<std::size_t>(n * p.H));
      layer.forward(comm, TensorView<const float>(x.data(), {n, p.H}), TensorView<float>(y.data(), {n, p.H}));
      outs[std::size_t(comm.rank())] = y;
    });
    LayerRun run;
    run.y = outs;
    require_within(run, want);
  }
  munmap(forbidden, std::size_t(page) * 16);
}
#endif

TEST_CASE("MoE misuse is refused by name", "[moe][errors]") {
  const Problem p(4, 2, 16, 8, 0, true, 999);
  REQUIRE_THROWS_WITH((MoELayer<float>(HostOps(), p.weights(), {5, true}, {0, 1})),
                      Catch::Contains("top_k (5) must be in [1, 4]"));
  REQUIRE_THROWS_WITH((MoELayer<float>(HostOps(), p.weights(), {2, true}, {0, 9})),
                      Catch::Contains("exceeds the number of MoE expert 0 intermediate size units"));
  MoEWeights w = p.weights();
  w.experts.pop_back();
  REQUIRE_THROWS_WITH((MoELayer<float>(HostOps(), w, {2, true}, {0, 1})),
                      Catch::Contains("scores 4 experts but 3 are given"));
  REQUIRE_THROWS_WITH(parse_moe_layout("dp"), Catch::Contains("expected tp, ep or ep-dispatch"));
  REQUIRE(parse_moe_layout("ep-dispatch") == MoELayout::expert_dispatch);
}

TEST_CASE("placement_for_load balances a recorded load, with and without redundant copies", "[moe][placement]") {
  const std::vector<std::int64_t> load = {100, 10, 10, 10, 10, 10};
  const ExpertPlacement plain = placement_for_load(load, 2);
  REQUIRE(plain.experts_of(0) == std::vector<int>{0, 4, 5});  // heaviest first, least-loaded rank, 3 slots each
  REQUIRE(plain.experts_of(1) == std::vector<int>{1, 2, 3});
  const ExpertPlacement copied = placement_for_load(load, 2, 1);
  REQUIRE(copied.holders[0] == std::vector<int>{0, 1});  // the hot expert on both ranks
  REQUIRE(copied.experts_of(0) == std::vector<int>{0, 1, 3, 5});
  REQUIRE(copied.experts_of(1) == std::vector<int>{0, 2, 4});
  REQUIRE_THROWS_WITH(placement_for_load(load, 2, 7), Catch::Contains("redundant copies must be in [0, 6]"));
  // More ranks than experts: each expert once, the rest idle.
  REQUIRE(placement_for_load({5, 3}, 4).experts_of(3).empty());
}

TEST_CASE("placement and statistics files: written, read back, and refused when malformed", "[moe][placement]") {
  std::map<std::int64_t, ExpertPlacement> placements;
  placements[1] = placement_for_load({100, 10, 10, 10, 10, 10}, 2, 1);
  placements[3] = balanced_expert_placement(6, 2);
  const auto back = parse_expert_placements(expert_placements_json(placements), "test");
  REQUIRE(back.size() == 2);
  REQUIRE(back.at(1).holders == placements[1].holders);
  REQUIRE(back.at(3).holders == placements[3].holders);
  REQUIRE_THROWS_WITH(
      parse_expert_placements(R"({"ranks": 2, "num_experts": 2, "layers": {"0": [[0], []]}})", "p.json"),
      Catch::Contains("p.json: layer 0: the expert placement gives expert 1 no rank"));
  REQUIRE_THROWS_WITH(parse_expert_placements(R"({"ranks": 2, "num_experts": 2, "layers": {"x": []}})", "p.json"),
                      Catch::Contains("layer \"x\" is not a layer index"));
  REQUIRE_THROWS_WITH(parse_expert_placements(R"({"num_experts": 2, "layers": {}})", "p.json"),
                      Catch::Contains("missing the number \"ranks\""));

  const std::vector<ExpertLoad> loads = {{1, {3, 0, 9}}, {4, {1, 1, 1}}};
  const auto json = parse_expert_load(expert_load_json(loads), "stats.json");
  REQUIRE(json.size() == 2);
  REQUIRE(json[0].tokens == loads[0].tokens);
  REQUIRE(json[1].layer == 4);
  const std::string metrics =
      "# TYPE tpkit:moe_expert_tokens_total counter\n"
      "tpkit:moe_expert_tokens_total{model_name=\"m\",layer=\"1\",expert=\"0\"} 3\n"
      "tpkit:moe_expert_tokens_total{model_name=\"m\",layer=\"1\",expert=\"2\"} 9\n"
      "tpkit:moe_expert_tokens_total{model_name=\"m\",layer=\"1\",expert=\"1\"} 0\n";
  // Malformed statistics are errors that name the sample or the layer, never a wrong count.
  for (const char* bad : {"tpkit:moe_expert_tokens_total{layer=\"x\",expert=\"0\"} 3\n",
                          "tpkit:moe_expert_tokens_total{layer=\"1\",expert=\"0\"} NaN\n",
                          "tpkit:moe_expert_tokens_total{layer=\"1\",expert=\"0\"} -4\n",
                          "tpkit:moe_expert_tokens_total{layer=\"1\",expert=\"99999\"} 4\n",
                          "tpkit:moe_expert_tokens_total{layer=\"1\"} 4\n"})
    REQUIRE_THROWS_AS(parse_expert_load(bad, "metrics"), FormatError);
  REQUIRE_THROWS_WITH(parse_expert_load(R"({"layers": {"1": [3, -1]}})", "s.json"), Catch::Contains("s.json"));
  REQUIRE_THROWS_WITH(parse_expert_load(R"({"layers": {"one": [3]}})", "s.json"),
                      Catch::Contains("layer \"one\" is not a layer index"));
  const auto scraped = parse_expert_load(metrics, "metrics");
  REQUIRE(scraped.size() == 1);
  REQUIRE(scraped[0].tokens == std::vector<std::int64_t>{3, 0, 9});
  REQUIRE(std::fabs(scraped[0].imbalance() - 9.0 * 3 / 12) < 1e-12);
}
