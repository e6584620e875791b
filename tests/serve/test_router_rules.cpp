// tpkit-router's rules without HTTP, on a clock the tests move: the routing policies, the health
// thresholds, the circuit breaker, the retry budget and the backoff.
#include <map>
#include <string>
#include <vector>

#include "catch.hpp"
#include "health.hpp"
#include "policy.hpp"

using namespace tpkit::router;

namespace {

std::vector<WorkerLoad> workers(const std::vector<std::int64_t>& in_flight) {
  static const std::vector<std::string> urls = {"http://a:1", "http://b:1", "http://c:1", "http://d:1"};
  std::vector<WorkerLoad> out;
  for (std::size_t i = 0; i < in_flight.size(); ++i) out.push_back({urls[i], in_flight[i]});
  return out;
}

const Clock::time_point t0 = Clock::time_point() + std::chrono::hours(1);
Clock::time_point at(double seconds) { return t0 + seconds_to_duration(seconds); }

}  // namespace

TEST_CASE("round_robin goes round, least_loaded takes the least and rotates ties", "[router_rules]") {
  RoundRobin rr;
  std::vector<std::size_t> picks;
  for (int k = 0; k < 7; ++k) picks.push_back(rr.choose({}, workers({0, 0, 0})));
  CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2, 0});

  LeastLoaded ll;
  CHECK(ll.choose({}, workers({3, 1, 2})) == 1);
  std::map<std::size_t, int> count;
  for (int k = 0; k < 9; ++k) ++count[ll.choose({}, workers({0, 0, 0}))];
  CHECK(count == std::map<std::size_t, int>{{0, 3}, {1, 3}, {2, 3}});  // never all to worker 0
  for (int k = 0; k < 4; ++k) CHECK(ll.choose({}, workers({1, 0, 1, 0})) % 2 == 1);

  // Blended with what the workers report: b's queue outweighs its lower in-flight count.
  LeastLoaded blended(LoadWeights{1.0, 0.0});
  std::vector<WorkerLoad> w = workers({2, 1});
  w[1].reported_waiting = 5;
  CHECK(blended.choose({}, w) == 0);
  LeastLoaded plain;
  CHECK(plain.choose({}, w) == 1);
}

TEST_CASE("power_of_two takes the less loaded of its two draws", "[router_rules]") {
  PowerOfTwo p(42);
  for (int k = 0; k < 50; ++k) CHECK(p.choose({}, workers({7, 0})) == 1);
  std::map<std::size_t, int> count;
  for (int k = 0; k < 3000; ++k) ++count[p.choose({}, workers({0, 0, 0, 0}))];
  for (const auto& [i, n] : count) CHECK(std::abs(n - 750) < 150);  // equal loads: every worker drawn alike
  // The most loaded of several is never chosen (it loses every pair it is in).
  for (int k = 0; k < 200; ++k) CHECK(p.choose({}, workers({1, 2, 9, 3})) != 2);
}

TEST_CASE("prefix_aware follows prefixes above the threshold, balances past the thresholds, forgets",
          "[router_rules]") {
  PrefixAwareOptions o;
  o.block_chars = 4;
  o.match_threshold = 0.5;
  o.balance_abs_threshold = 2;
  o.balance_rel_threshold = 1.5;
  PrefixAware p(o);
  const std::string shared = "You are a helpful assistant. ";  // 29 chars: 7 whole blocks
  // The first request is a miss: the least loaded (not the first) worker.
  CHECK(p.choose({shared + "Q1"}, workers({1, 0, 1})) == 1);
  // Later ones follow it while its load is within the thresholds.
  CHECK(p.choose({shared + "Q2"}, workers({0, 1, 0})) == 1);
  CHECK(p.choose({shared + "Q3"}, workers({0, 2, 0})) == 1);  // 2 - 0 is not beyond 2
  CHECK(p.matched_blocks("http://b:1", shared + "anything") == 7);
  CHECK(p.matched_blocks("http://a:1", shared) == 0);
  // Beyond both thresholds: the least loaded, and now it has seen the prefix too.
  CHECK(p.choose({shared + "Q4"}, workers({0, 3, 1})) == 0);
  CHECK(p.matched_blocks("http://a:1", shared) == 7);
  // Below the match threshold (7 of 30 blocks): a miss, so the least loaded.
  const std::string longer = shared + std::string(92, 'x');
  CHECK(p.choose({longer}, workers({2, 1, 0})) == 2);
  // A worker that left is forgotten.
  p.forget("http://b:1");
  CHECK(p.matched_blocks("http://b:1", shared) == 0);
  // Memory is bounded: only the most recent blocks stay.
  PrefixAwareOptions small = o;
  small.max_blocks_per_worker = 8;
  PrefixAware bounded(small);
  bounded.choose({std::string(400, 'a')}, workers({0}));
  CHECK(bounded.matched_blocks("http://a:1", std::string(400, 'a')) == 0);  // its first blocks went first
  bounded.choose({"abcdefgh"}, workers({0}));
  CHECK(bounded.matched_blocks("http://a:1", "abcdefgh") == 2);
}

TEST_CASE("policies are made by name, a user's too", "[router_rules]") {
  struct Last final : RoutingPolicy {
    std::string name() const override { return "last"; }
    std::size_t choose(const RouteRequest&, std::span<const WorkerLoad> w) override { return w.size() - 1; }
  };
  register_policy("last", [](const PolicyOptions&) { return std::make_unique<Last>(); });
  auto p = make_policy("last", {});
  CHECK(p->name() == "last");
  CHECK(p->choose({}, workers({0, 0, 0})) == 2);
  for (const char* n : {"round_robin", "least_loaded", "power_of_two", "prefix_aware"})
    CHECK(make_policy(n, {})->name() == n);
  CHECK_THROWS_WITH(make_policy("random", {}), Catch::Contains("unknown routing policy 'random'") &&
                                                   Catch::Contains("least_loaded") && Catch::Contains("last"));
}

TEST_CASE("health turns after the thresholds of consecutive checks, and a busy worker's timeout counts neither way",
          "[router_rules]") {
  HealthOptions o;  // 3 failures, 2 successes
  HealthState h;
  CHECK_FALSE(h.record(CheckResult::failure, o));
  CHECK_FALSE(h.record(CheckResult::failure, o));
  CHECK_FALSE(h.record(CheckResult::success, o));  // the run is broken
  CHECK_FALSE(h.record(CheckResult::failure, o));
  CHECK_FALSE(h.record(CheckResult::busy, o));
  CHECK_FALSE(h.record(CheckResult::failure, o));
  CHECK(h.healthy());
  CHECK(h.record(CheckResult::failure, o));
  CHECK_FALSE(h.healthy());
  CHECK_FALSE(h.record(CheckResult::success, o));
  CHECK_FALSE(h.record(CheckResult::failure, o));
  CHECK_FALSE(h.record(CheckResult::success, o));
  CHECK(h.record(CheckResult::success, o));
  CHECK(h.healthy());
}

TEST_CASE(
    "the circuit breaker opens after consecutive failures, admits one trial after the wait, closes after "
    "successes",
    "[router_rules]") {
  BreakerOptions o;  // 5 failures, 30 s, 2 successes
  CircuitBreaker b;
  for (int k = 0; k < 4; ++k) b.failed(b.started(), at(0), o);
  b.succeeded(false, o);  // resets the count
  for (int k = 0; k < 4; ++k) b.failed(false, at(1), o);
  CHECK(b.admits(at(1), o));
  CHECK_FALSE(b.started());  // closed: no trial
  b.failed(false, at(2), o);
  CHECK(b.state(at(2), o) == CircuitBreaker::State::open);
  b.succeeded(false, o);  // a request sent before it opened: says nothing now
  CHECK(b.state(at(3), o) == CircuitBreaker::State::open);
  CHECK_FALSE(b.admits(at(31.9), o));
  CHECK(b.admits(at(32), o));  // half-open: one trial
  CHECK(b.state(at(32), o) == CircuitBreaker::State::half_open);
  CHECK(b.started());
  CHECK_FALSE(b.admits(at(32), o));  // while it runs, no other
  b.succeeded(false, o);             // an old request ending does not free the slot or count
  b.abandoned(false);
  CHECK_FALSE(b.admits(at(32), o));
  b.failed(true, at(33), o);  // the trial failed: open again, for another 30 s
  CHECK_FALSE(b.admits(at(62), o));
  CHECK(b.admits(at(63), o));
  CHECK(b.started());
  b.abandoned(true);  // the client left: the slot is free, nothing learned
  CHECK(b.admits(at(63), o));
  b.succeeded(b.started(), o);
  CHECK(b.state(at(64), o) == CircuitBreaker::State::half_open);
  b.succeeded(b.started(), o);
  CHECK(b.state(at(64), o) == CircuitBreaker::State::closed);
  CHECK(b.transitions()[int(CircuitBreaker::State::open)] == 2);
  CHECK(b.transitions()[int(CircuitBreaker::State::half_open)] == 2);
  CHECK(b.transitions()[int(CircuitBreaker::State::closed)] == 1);
}

TEST_CASE("the retry budget bounds retries to a share of recent requests, and backoff doubles with jitter",
          "[router_rules]") {
  RetryBudgetOptions o;
  o.ratio = 0.2, o.min_per_second = 0, o.window = 10;
  RetryBudget budget;
  for (int k = 0; k < 100; ++k) budget.request(at(0));
  int granted = 0;
  while (budget.try_retry(at(1), o)) ++granted;
  CHECK(granted == 20);
  CHECK_FALSE(budget.try_retry(at(10.5), o));  // the retries of t=1 still count
  for (int k = 0; k < 10; ++k) budget.request(at(10.5));
  CHECK(budget.try_retry(at(11.5), o));  // all of t<=1 expired: 10 requests allow 2
  CHECK(budget.try_retry(at(11.5), o));
  CHECK_FALSE(budget.try_retry(at(11.5), o));
  RetryBudgetOptions floor = o;
  floor.min_per_second = 1;
  RetryBudget quiet;
  int quiet_granted = 0;
  while (quiet.try_retry(at(0), floor)) ++quiet_granted;
  CHECK(quiet_granted == 10);  // no requests, yet 1 a second over the window

  BackoffOptions b{0.1, 1.0};
  std::mt19937_64 rng(1);
  for (int retry = 1; retry <= 8; ++retry) {
    const double d = std::min(1.0, 0.1 * std::ldexp(1.0, retry - 1));
    for (int k = 0; k < 100; ++k) {
      const double w = backoff_seconds(retry, b, rng);
      CHECK(w >= d / 2);
      CHECK(w <= d);
    }
  }
}
