// Communicator<MockBackend>: every collective against results computed in the test, bitwise
// reproducibility, and sub-communicators arranged as TP x PP groups.
#include <cstring>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"

using namespace tpkit;

namespace {
// Rank r's contribution: a fixed function of (seed, rank, index).
std::vector<float> contribution(int rank, std::size_t n, std::uint64_t seed = 11) {
  ref::Rng rng(seed * 1000 + std::uint64_t(rank));
  return rng.uniform_vector(n, 100.0);
}
}  // namespace

TEST_CASE("all_reduce sums in rank order and maxes, bitwise alike on every rank", "[comm]") {
  const int n = GENERATE(1, 2, 3, 5, 8);
  const std::size_t count = 1000;
  std::vector<std::vector<float>> results(static_cast<std::size_t>(n)), maxima(static_cast<std::size_t>(n));
  run_mock_ranks(n, [&](Communicator<MockBackend>& comm) {
    auto mine = contribution(comm.rank(), count);
    auto m = mine;
    comm.all_reduce(mine.data(), count);
    comm.all_reduce(m.data(), count, ReduceOp::max);
    results[std::size_t(comm.rank())] = mine;
    maxima[std::size_t(comm.rank())] = m;
  });
  for (std::size_t i = 0; i < count; ++i) {
    float expected = contribution(0, count)[i], largest = expected;
    for (int r = 1; r < n; ++r) {
      expected += contribution(r, count)[i];  // rank order, in float
      largest = std::max(largest, contribution(r, count)[i]);
    }
    for (int r = 0; r < n; ++r) {
      REQUIRE(std::memcmp(&results[std::size_t(r)][i], &expected, 4) == 0);
      REQUIRE(maxima[std::size_t(r)][i] == largest);
    }
  }
}

TEST_CASE("all_reduce of 16-bit types accumulates in float and rounds once", "[comm]") {
  std::vector<bfloat16> out;
  run_mock_ranks(3, [&](Communicator<MockBackend>& comm) {
    // 256 + 1 + 1: rounding after each addition would lose both ones in bf16 (8-bit significand).
    bfloat16 v(comm.rank() == 0 ? 256.0f : 1.0f);
    comm.all_reduce(&v, 1);
    if (comm.rank() == 0) out.push_back(v);
  });
  REQUIRE(float(out.at(0)) == 258.0f);
}

TEST_CASE("repeated runs give identical bits", "[comm]") {
  auto run = [] {
    std::vector<float> out;
    run_mock_ranks(7, [&](Communicator<MockBackend>& comm) {
      auto v = contribution(comm.rank(), 4096, 3);
      comm.all_reduce(v.data(), v.size());
      if (comm.rank() == 4) out = v;
    });
    return out;
  };
  const auto a = run(), b = run();
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

TEST_CASE("all_gather with equal and unequal counts, reduce_scatter, broadcast", "[comm]") {
  test::RankChecks checks;
  const int n = GENERATE(1, 3, 4, 8);
  run_mock_ranks(n, [&](Communicator<MockBackend>& comm) {
    const int r = comm.rank();
    // Equal counts.
    std::vector<std::int32_t> mine = {r * 10, r * 10 + 1};
    std::vector<std::int32_t> all(std::size_t(2 * n));
    comm.all_gather(mine.data(), 2, all.data());
    for (int q = 0; q < n; ++q) {
      RANK_CHECK(checks, all[std::size_t(2 * q)] == q * 10);
      RANK_CHECK(checks, all[std::size_t(2 * q + 1)] == q * 10 + 1);
    }
    // Unequal counts: rank q contributes q + 1 copies of q (an uneven shard).
    std::vector<std::size_t> counts;
    for (int q = 0; q < n; ++q) counts.push_back(std::size_t(q + 1));
    std::vector<double> piece(std::size_t(r + 1), double(r));
    std::vector<double> gathered(std::size_t(n * (n + 1) / 2));
    comm.all_gather(piece.data(), gathered.data(), counts);
    std::size_t at = 0;
    for (int q = 0; q < n; ++q)
      for (int j = 0; j <= q; ++j) RANK_CHECK(checks, gathered[at++] == double(q));
    // reduce_scatter: element i of every rank's send is (rank + 1) * i; rank q gets segment q.
    std::vector<std::int64_t> send(std::size_t(3 * n));
    for (std::size_t i = 0; i < send.size(); ++i) send[i] = std::int64_t(r + 1) * std::int64_t(i);
    std::vector<std::int64_t> seg(3);
    comm.reduce_scatter(send.data(), seg.data(), 3);
    const std::int64_t ranks_sum = std::int64_t(n) * (n + 1) / 2;
    for (int j = 0; j < 3; ++j) RANK_CHECK(checks, seg[std::size_t(j)] == ranks_sum * (3 * r + j));
    // Unequal reduce_scatter.
    std::vector<float> send2(std::size_t(n * (n + 1) / 2), 1.0f);
    std::vector<float> seg2(std::size_t(r + 1));
    comm.reduce_scatter(send2.data(), seg2.data(), counts);
    for (float v : seg2) RANK_CHECK(checks, v == float(n));
    // Broadcast from the last rank.
    std::vector<half> b(4, half(float(r)));
    comm.broadcast(b.data(), 4, n - 1);
    for (half h : b) RANK_CHECK(checks, float(h) == float(n - 1));
    comm.barrier();
  });
  REQUIRE_RANK_CHECKS(checks);
}

TEST_CASE("send and recv pair up by peer and tag", "[comm]") {
  test::RankChecks checks;
  run_mock_ranks(4, [&](Communicator<MockBackend>& comm) {
    const int r = comm.rank(), next = (r + 1) % 4, prev = (r + 3) % 4;
    std::vector<float> out = {float(r), float(r) + 0.5f}, in(2);
    std::int32_t tagged = r * 100, got = -1;
    comm.send(out.data(), 2, next);
    comm.send(&tagged, 1, next, 7);
    comm.recv(&got, 1, prev, 7);  // received out of sending order: tags keep them apart
    comm.recv(in.data(), 2, prev);
    RANK_CHECK(checks, in[0] == float(prev));
    RANK_CHECK(checks, in[1] == float(prev) + 0.5f);
    RANK_CHECK(checks, got == prev * 100);
  });
  REQUIRE_RANK_CHECKS(checks);
}

TEST_CASE("split arranges a world as TP x PP groups", "[comm]") {
  test::RankChecks checks;
  const int tp = 4, pp = 2;
  run_mock_ranks(tp * pp, [&](Communicator<MockBackend>& world) {
    const int r = world.rank();
    auto tp_group = world.split(r / tp, r);  // ranks of one pipeline stage
    auto pp_group = world.split(r % tp, r);  // the same TP position across stages
    RANK_CHECK(checks, tp_group.size() == tp);
    RANK_CHECK(checks, tp_group.rank() == r % tp);
    RANK_CHECK(checks, pp_group.size() == pp);
    RANK_CHECK(checks, pp_group.rank() == r / tp);
    int v = r;
    tp_group.all_reduce(&v, 1);
    const int stage = r / tp;
    RANK_CHECK(checks, v == tp * stage * tp + tp * (tp - 1) / 2);
    // Point-to-point inside a sub-group: stage 0 sends to stage 1.
    float x = float(r);
    if (pp_group.rank() == 0)
      pp_group.send(&x, 1, 1);
    else {
      pp_group.recv(&x, 1, 0);
      RANK_CHECK(checks, x == float(r - tp));
    }
    // Keys reorder ranks: reverse order within the TP group.
    auto reversed = tp_group.split(0, -tp_group.rank());
    RANK_CHECK(checks, reversed.rank() == tp - 1 - tp_group.rank());
    // Interleaved collectives on different groups do not confuse each other.
    for (int i = 0; i < 10; ++i) {
      int a = 1, b = 1;
      tp_group.all_reduce(&a, 1);
      world.all_reduce(&b, 1);
      RANK_CHECK(checks, a == tp);
      RANK_CHECK(checks, b == tp * pp);
    }
  });
  REQUIRE_RANK_CHECKS(checks);
}

namespace {
// What rank `src` sends rank `dst` as its element i: distinct for every (src, dst, i) with
// src, dst < 4 and i < 16, and an integer below 256, so exact in bf16 and f16 too.
template <class T>
T a2a_value(int src, int dst, std::size_t i) {
  return T(float(src * 64 + dst * 16 + int(i)));
}
// How many elements rank src sends rank dst: unequal, some zero, below 16. With `silent`, the
// last rank sends nothing at all and rank 0 receives nothing at all.
std::size_t a2a_count(int src, int dst, int n, bool silent) {
  if (silent && (src == n - 1 || dst == 0)) return 0;
  return std::size_t(3 * src + dst + 2) % 5 * 2;  // 0 to 8; at 2 ranks, rank 1's displacements differ
}
}  // namespace

TEMPLATE_TEST_CASE("all_to_all and all_to_all_v deliver every segment to its rank, in rank order", "[comm]", float,
                   bfloat16, half) {
  const int n = GENERATE(1, 2, 3, 4);
  const bool silent = GENERATE(false, true);
  const TestType guard(-1.0f);  // after the last element received: must stay untouched
  std::vector<std::vector<TestType>> equal(static_cast<std::size_t>(n)), uneven(static_cast<std::size_t>(n));
  run_mock_ranks(n, [&](Communicator<MockBackend>& comm) {
    const int me = comm.rank();
    const std::size_t count = 5;
    std::vector<TestType> send, recv(std::size_t(n) * count + 1, guard);
    for (int dst = 0; dst < n; ++dst)
      for (std::size_t i = 0; i < count; ++i) send.push_back(a2a_value<TestType>(me, dst, i));
    comm.all_to_all(send.data(), recv.data(), count);
    equal[std::size_t(me)] = recv;

    std::vector<std::size_t> send_counts, recv_counts;
    std::vector<TestType> packed;
    for (int q = 0; q < n; ++q) {
      send_counts.push_back(a2a_count(me, q, n, silent));
      recv_counts.push_back(a2a_count(q, me, n, silent));
      for (std::size_t i = 0; i < send_counts.back(); ++i) packed.push_back(a2a_value<TestType>(me, q, i));
    }
    std::size_t received = 0;
    for (std::size_t c : recv_counts) received += c;
    std::vector<TestType> got(received + 1, guard);
    // A rank that moves nothing in one direction passes null there.
    comm.all_to_all_v(packed.empty() ? nullptr : packed.data(), send_counts, received ? got.data() : nullptr,
                      recv_counts);
    uneven[std::size_t(me)] = got;
  });
  for (int dst = 0; dst < n; ++dst) {
    INFO("rank " << dst << " of " << n << (silent ? ", the last rank silent" : ""));
    std::vector<float> want_equal, want_uneven, seen_equal, seen_uneven;
    for (int src = 0; src < n; ++src) {
      for (std::size_t i = 0; i < 5; ++i) want_equal.push_back(float(a2a_value<TestType>(src, dst, i)));
      for (std::size_t i = 0; i < a2a_count(src, dst, n, silent); ++i)
        want_uneven.push_back(float(a2a_value<TestType>(src, dst, i)));
    }
    want_equal.push_back(-1.0f), want_uneven.push_back(-1.0f);  // the guards
    for (TestType v : equal[std::size_t(dst)]) seen_equal.push_back(float(v));
    for (TestType v : uneven[std::size_t(dst)]) seen_uneven.push_back(float(v));
    REQUIRE(seen_equal == want_equal);
    REQUIRE(seen_uneven == want_uneven);
  }
}
