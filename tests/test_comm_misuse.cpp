// Misuse of the mock backend ends in an error that names the operation and the rank(s), within
// the configured timeout, never in a hang.
#include <chrono>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"

using namespace tpkit;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {
MockOptions with_timeout(std::chrono::milliseconds t) {
  MockOptions o;
  o.timeout = t;
  return o;
}

// Runs fn over n ranks expecting exception E whose message contains every one of `parts`, and
// returns how long the run took.
template <class E, class F>
std::chrono::milliseconds expect_failure(int n, F fn, MockOptions options, std::vector<std::string> parts) {
  const auto start = Clock::now();
  bool thrown = false;
  try {
    run_mock_ranks(n, fn, options);
  } catch (const E& e) {
    thrown = true;
    const std::string what = e.what();
    INFO(what);
    for (const auto& p : parts) CHECK(what.find(p) != std::string::npos);
  }
  REQUIRE(thrown);
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}
}  // namespace

TEST_CASE("ranks calling different collectives", "[comm][misuse]") {
  const auto took = expect_failure<CollectiveMismatch>(
      3,
      [](Communicator<MockBackend>& comm) {
        float x = 1;
        if (comm.rank() == 1)
          comm.broadcast(&x, 1, 0);
        else
          comm.all_reduce(&x, 1);
      },
      with_timeout(10s), {"rank 1 called broadcast", "rank 0 called all_reduce", "operation #0"});
  REQUIRE(took < 5s);  // detected when the last rank arrives, not by the timeout
}

TEST_CASE("ranks disagreeing on size, dtype, root or reduction", "[comm][misuse]") {
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       std::vector<float> x(4);
                                       comm.all_reduce(x.data(), comm.rank() == 0 ? 4 : 3);
                                     },
                                     with_timeout(10s), {"count=4", "count=3"});
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       if (comm.rank() == 0) {
                                         float x = 0;
                                         comm.all_reduce(&x, 1);
                                       } else {
                                         double x = 0;
                                         comm.all_reduce(&x, 1);
                                       }
                                     },
                                     with_timeout(10s), {"dtype=f32", "dtype=f64"});
  expect_failure<CollectiveMismatch>(3,
                                     [](Communicator<MockBackend>& comm) {
                                       int x = 0;
                                       comm.broadcast(&x, 1, comm.rank() == 2 ? 1 : 0);
                                     },
                                     with_timeout(10s), {"rank 2 called broadcast(count=1, dtype=i32, root=1)"});
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       int x = 0;
                                       comm.all_reduce(&x, 1, comm.rank() ? ReduceOp::max : ReduceOp::sum);
                                     },
                                     with_timeout(10s), {"op=max", "op=sum"});
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       std::vector<std::size_t> counts = {2, comm.rank() == 0 ? 2u : 3u};
                                       std::vector<float> in(3), out(5);
                                       comm.all_gather(in.data(), out.data(), counts);
                                     },
                                     with_timeout(10s), {"counts=[2,2]", "counts=[2,3]"});
}

TEST_CASE("a rank that never arrives is named within the timeout", "[comm][misuse]") {
  const auto took = expect_failure<CollectiveTimeout>(
      4,
      [](Communicator<MockBackend>& comm) {
        float x = 1;
        comm.all_reduce(&x, 1);
        if (comm.rank() != 2) comm.all_reduce(&x, 1);  // rank 2 skips the second one
      },
      with_timeout(300ms), {"all_reduce(count=1, dtype=f32, op=sum) #1", "rank 2 did not arrive within 300 ms"});
  REQUIRE(took >= 300ms);
  REQUIRE(took < 3s);
}

TEST_CASE("a missing rank in a sub-communicator is named with its world rank", "[comm][misuse]") {
  expect_failure<CollectiveTimeout>(4,
                                    [](Communicator<MockBackend>& world) {
                                      auto group = world.split(world.rank() % 2, world.rank());
                                      if (world.rank() != 3) group.barrier();
                                    },
                                    with_timeout(300ms),
                                    {"communicator 'world/1'", "rank 1 (world rank 3) did not arrive"});
}

TEST_CASE("an injected failure is rethrown and does not hang the others", "[comm][misuse][faults]") {
  MockOptions o = with_timeout(20s);
  o.faults.push_back(Fault::fail_at(1, 3));
  const auto took = expect_failure<InjectedFault>(4,
                                                  [](Communicator<MockBackend>& comm) {
                                                    for (int i = 0; i < 10; ++i) comm.barrier();
                                                  },
                                                  o, {"world rank 1", "operation #3"});
  REQUIRE(took < 5s);  // the others were woken, not left to time out
}

TEST_CASE("a stalled rank longer than the timeout is reported, a shorter stall is tolerated", "[comm][faults]") {
  MockOptions o = with_timeout(200ms);
  o.faults.push_back(Fault::stall_at(2, 1, 800ms));
  expect_failure<CollectiveTimeout>(3,
                                    [](Communicator<MockBackend>& comm) {
                                      int x = 1;
                                      comm.all_reduce(&x, 1);
                                      comm.all_reduce(&x, 1);
                                    },
                                    o, {"rank 2 did not arrive within 200 ms"});

  MockOptions ok = with_timeout(2s);
  ok.faults.push_back(Fault::stall_at(0, 0, 100ms));
  test::RankChecks checks;
  run_mock_ranks(
      3,
      [&](Communicator<MockBackend>& comm) {
        int x = 1;
        comm.all_reduce(&x, 1);
        RANK_CHECK(checks, x == 3);
      },
      ok);
  REQUIRE_RANK_CHECKS(checks);
}

TEST_CASE("point-to-point misuse", "[comm][misuse]") {
  expect_failure<CollectiveTimeout>(2,
                                    [](Communicator<MockBackend>& comm) {
                                      float x = 0;
                                      if (comm.rank() == 1) comm.recv(&x, 1, 0, 5);
                                    },
                                    with_timeout(200ms), {"recv(from rank 0, tag 5, 1 x f32)", "rank 0 sent nothing"});
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       std::vector<float> x(4);
                                       if (comm.rank() == 0)
                                         comm.send(x.data(), 4, 1);
                                       else
                                         comm.recv(x.data(), 2, 0);
                                     },
                                     with_timeout(2s),
                                     {"rank 1 called recv(from rank 0, tag 0, 2 x f32)", "sent 4 x f32"});
  expect_failure<CommError>(2,
                            [](Communicator<MockBackend>& comm) {
                              float x = 0;
                              if (comm.rank() == 0) comm.send(&x, 1, 1, 9);
                            },
                            with_timeout(2s), {"rank 0 sent 1 x f32 to rank 1 (tag 9) that was never received"});
}

TEST_CASE("locally invalid arguments throw InvalidArgument naming them", "[comm][errors]") {
  // Checked on one rank (the checks are local and Catch2 asserts on one thread only).
  run_mock_ranks(1, [](Communicator<MockBackend>& comm) {
    float x = 0;
    REQUIRE_THROWS_WITH(comm.broadcast(&x, 1, 2), Catch::Contains("broadcast root 2 is out of range for a group of 1"));
    REQUIRE_THROWS_AS(comm.send(&x, 1, comm.rank()), InvalidArgument);
    REQUIRE_THROWS_WITH(comm.recv(&x, 1, -1), Catch::Contains("recv peer -1"));
    std::vector<std::size_t> counts(3, 1);
    REQUIRE_THROWS_WITH(comm.all_gather(&x, &x, counts), Catch::Contains("counts has 3 entries"));
    REQUIRE_THROWS_AS(comm.split(-1, 0), InvalidArgument);
  });
  REQUIRE_THROWS_AS(run_mock_ranks(0, [](Communicator<MockBackend>&) {}), InvalidArgument);
}

TEST_CASE("after a failed collective the group refuses further work instead of hanging", "[comm][misuse]") {
  std::vector<std::string> seen(2);
  try {
    run_mock_ranks(
        2,
        [&](Communicator<MockBackend>& comm) {
          float x = 0;
          try {
            comm.all_reduce(&x, comm.rank() == 0 ? 1 : 0);
          } catch (const CollectiveMismatch&) {
          }
          try {
            comm.barrier();
          } catch (const CommError& e) {
            seen[std::size_t(comm.rank())] = e.what();
          }
        },
        with_timeout(5s));
  } catch (...) {
  }
  for (const auto& s : seen) REQUIRE(s.find("an earlier collective failed") != std::string::npos);
}

// MockBackend::rendezvous, which the one-GPU mock (tpkit/gpu/device_mock.cuh) builds on: each
// rank's token reaches every rank in rank order, and a rank passing host memory to a collective
// where its peers pass device memory (a rendezvous) is a mismatch, not a misread token.
TEST_CASE("rendezvous exchanges tokens in rank order and is checked like the collective it stands for",
          "[comm][misuse]") {
  std::vector<std::vector<int>> seen(3);
  run_mock_ranks(3, [&](Communicator<MockBackend>& comm) {
    const int token = 100 + comm.rank();
    comm.backend().rendezvous(CallSignature::all_reduce(8, DType::f32, ReduceOp::sum), &token, sizeof token,
                              [&](const std::vector<mock_detail::Entry>& all) {
                                for (const auto& e : all) {
                                  int t = 0;
                                  std::memcpy(&t, e.staged.data(), sizeof t);
                                  seen[std::size_t(comm.rank())].push_back(t);
                                }
                              });
  });
  for (const auto& s : seen) CHECK(s == std::vector<int>{100, 101, 102});

  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       float x[8] = {};
                                       if (comm.rank() == 0)
                                         comm.backend().rendezvous(
                                             CallSignature::all_reduce(8, DType::f32, ReduceOp::sum), &x, sizeof(void*),
                                             [](const std::vector<mock_detail::Entry>&) {});
                                       else
                                         comm.all_reduce(x, 8);
                                     },
                                     with_timeout(5000ms),
                                     {"rank 0 called all_reduce(count=8, dtype=f32, op=sum, device memory)",
                                      "rank 1 called all_reduce(count=8, dtype=f32, op=sum)"});
  expect_failure<CollectiveMismatch>(
      2,
      [](Communicator<MockBackend>& comm) {
        const std::size_t counts[2] = {3, std::size_t(4 + comm.rank())};
        int token = 0;
        comm.backend().rendezvous(CallSignature::all_gather(counts, 2, DType::bf16), &token, sizeof token,
                                  [](const std::vector<mock_detail::Entry>&) {});
      },
      with_timeout(5000ms), {"all_gather(counts=[3,4], dtype=bf16, device memory)", "counts=[3,5]"});
}

// The signature the MPI backend exchanges: every field survives the words, per-rank counts
// included, and two calls whose counts differ but sum the same do not match.
TEST_CASE("call signatures: encoded, decoded, and compared with their per-rank counts", "[comm][misuse]") {
  const std::size_t a_counts[3] = {3, 1, 2}, b_counts[3] = {2, 2, 2};
  const std::vector<CallSignature> calls = {CallSignature::all_reduce(7, DType::bf16, ReduceOp::max),
                                            CallSignature::all_gather(a_counts, 3, DType::f32),
                                            CallSignature::reduce_scatter(b_counts, 3, DType::f16, ReduceOp::sum),
                                            CallSignature::broadcast(5, DType::i64, 2),
                                            CallSignature::barrier(),
                                            CallSignature::all_to_all(a_counts, b_counts, 3, DType::bf16)};
  for (const CallSignature& c : calls) {
    std::vector<std::int64_t> words(CallSignature::words(3));
    c.encode(words.data(), 3);
    const CallSignature back = CallSignature::decode(words.data(), 3);
    INFO(c.describe() << " came back as " << back.describe());
    REQUIRE(back.same_call(c));
    REQUIRE(back.describe() == c.describe());
  }
  const CallSignature a = CallSignature::all_gather(a_counts, 3, DType::f32),
                      b = CallSignature::all_gather(b_counts, 3, DType::f32);
  REQUIRE(!a.same_call(b));
  REQUIRE(a.brief() == "all_gather(counts [3, 1, 2], f32)");
  // all_to_all's counts differ between ranks by design: equal dtypes are the same call, and the
  // counts are compared as a transpose (what 0 sends 1 is what 1 expects from 0).
  const std::size_t rank0_sends[2] = {2, 4}, rank1_expects[2] = {4, 2}, rank1_expects_wrong[2] = {5, 2};
  const std::vector<CallSignature> agree = {CallSignature::all_to_all(rank0_sends, b_counts, 2, DType::f32),
                                            CallSignature::all_to_all(b_counts, rank1_expects, 2, DType::f32)};
  REQUIRE(agree[0].same_call(agree[1]));
  const auto label = [](int r) { return "rank " + std::to_string(r); };
  REQUIRE(CallSignature::all_to_all_disagreements(
              2, [&](int r) -> const CallSignature& { return agree[std::size_t(r)]; }, label) == "");
  const std::vector<CallSignature> disagree = {agree[0],
                                               CallSignature::all_to_all(b_counts, rank1_expects_wrong, 2, DType::f32)};
  REQUIRE(CallSignature::all_to_all_disagreements(
              2, [&](int r) -> const CallSignature& { return disagree[std::size_t(r)]; }, label) ==
          "rank 0 sends 4 x f32 to rank 1, which expects 5 from it");
  REQUIRE(agree[0].brief() == "all_to_all(send counts [2, 4], recv counts [2, 2], f32)");
  std::vector<std::int64_t> garbage(CallSignature::words(3), 99);
  REQUIRE(!CallSignature::decode(garbage.data(), 3).same_call(a));  // words from a foreign build match nothing

  expect_failure<CollectiveMismatch>(
      2,
      [](Communicator<MockBackend>& comm) {
        std::vector<std::size_t> counts = {comm.rank() == 0 ? 3u : 2u, comm.rank() == 0 ? 1u : 2u};
        std::vector<float> in(3), out(4);
        comm.all_gather(in.data(), out.data(), counts);
      },
      with_timeout(10s), {"counts=[3,1]", "counts=[2,2]"});
}

// all_to_all: the counts differ between ranks by design; what must agree is rank a's send count
// to b with b's receive count from a. A disagreement is reported on every rank, naming both.
TEST_CASE("all_to_all counts that disagree between sender and receiver are named on every rank", "[comm][misuse]") {
  std::vector<std::string> seen(3);
  const auto start = Clock::now();
  try {
    run_mock_ranks(
        3,
        [&](Communicator<MockBackend>& comm) {
          // Each rank sends 2 to every rank and expects 2 from each, except that rank 1
          // expects 3 from rank 0.
          std::vector<std::size_t> send_counts(3, 2), recv_counts(3, 2);
          if (comm.rank() == 1) recv_counts[0] = 3;
          std::vector<float> send(6, 1.0f), recv(7);
          try {
            comm.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts);
          } catch (const CollectiveMismatch& e) {
            seen[std::size_t(comm.rank())] = e.what();
          }
        },
        with_timeout(10s));
  } catch (...) {
  }
  REQUIRE(Clock::now() - start < 5s);  // detected when the last rank arrives, not by the timeout
  for (const auto& s : seen) {
    INFO(s);
    CHECK(s.find("all_to_all counts disagree") != std::string::npos);
    CHECK(s.find("rank 0 sends 2 x f32 to rank 1, which expects 3 from it") != std::string::npos);
    CHECK(s.find("operation #0") != std::string::npos);
    CHECK(s.find("rank 2 sends") == std::string::npos);  // only the pair that disagrees
  }
}

TEST_CASE("all_to_all with a rank that never arrives is named within the timeout", "[comm][misuse]") {
  const auto took = expect_failure<CollectiveTimeout>(
      3,
      [](Communicator<MockBackend>& comm) {
        std::vector<float> send(3), recv(3);
        if (comm.rank() != 2) comm.all_to_all(send.data(), recv.data(), 1);
      },
      with_timeout(300ms),
      {"all_to_all(send_counts=[1,1,1], recv_counts=[1,1,1], dtype=f32) #0", "rank 2 did not arrive within 300 ms"});
  REQUIRE(took >= 300ms);
  REQUIRE(took < 3s);
}

TEST_CASE("all_to_all against another collective is a mismatch", "[comm][misuse]") {
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       std::vector<float> send(2), recv(2);
                                       if (comm.rank() == 0)
                                         comm.all_to_all(send.data(), recv.data(), 1);
                                       else
                                         comm.all_gather(send.data(), 1, recv.data());
                                     },
                                     with_timeout(10s),
                                     {"rank 0 called all_to_all(send_counts=[1,1], recv_counts=[1,1], dtype=f32)",
                                      "rank 1 called all_gather(counts=[1,1], dtype=f32)"});
  expect_failure<CollectiveMismatch>(2,
                                     [](Communicator<MockBackend>& comm) {
                                       if (comm.rank() == 0) {
                                         std::vector<float> x(4);
                                         comm.all_to_all(x.data(), x.data() + 2, 1);
                                       } else {
                                         std::vector<bfloat16> x(4);
                                         comm.all_to_all(x.data(), x.data() + 2, 1);
                                       }
                                     },
                                     with_timeout(10s), {"dtype=f32", "dtype=bf16"});
}

TEST_CASE("all_to_all takes injected faults like every collective", "[comm][misuse][faults]") {
  MockOptions o = with_timeout(20s);
  o.faults.push_back(Fault::fail_at(1, 1));
  const auto took = expect_failure<InjectedFault>(3,
                                                  [](Communicator<MockBackend>& comm) {
                                                    std::vector<int> send(6), recv(6);
                                                    for (int i = 0; i < 3; ++i)
                                                      comm.all_to_all(send.data(), recv.data(), 2);
                                                  },
                                                  o, {"world rank 1", "operation #1 (all_to_all)"});
  REQUIRE(took < 5s);
  MockOptions stall = with_timeout(200ms);
  stall.faults.push_back(Fault::stall_at(0, 0, 800ms));
  expect_failure<CollectiveTimeout>(2,
                                    [](Communicator<MockBackend>& comm) {
                                      std::vector<int> send(2), recv(2);
                                      comm.all_to_all(send.data(), recv.data(), 1);
                                    },
                                    stall, {"all_to_all", "rank 0 did not arrive within 200 ms"});
}

TEST_CASE("all_to_all_v arguments wrong on one rank throw InvalidArgument naming them", "[comm][errors]") {
  run_mock_ranks(1, [](Communicator<MockBackend>& comm) {
    std::vector<float> send(4), recv(4);
    const std::vector<std::size_t> one = {2}, two = {1, 1};
    REQUIRE_THROWS_WITH(comm.all_to_all_v(send.data(), two, recv.data(), one),
                        Catch::Contains("all_to_all_v: send_counts has 2 entries but the group has 1 ranks"));
    REQUIRE_THROWS_WITH(comm.all_to_all_v(send.data(), one, recv.data(), two),
                        Catch::Contains("all_to_all_v: recv_counts has 2 entries but the group has 1 ranks"));
    REQUIRE_THROWS_WITH(comm.all_to_all_v(send.data(), one, recv.data(), std::vector<std::size_t>{3}),
                        Catch::Contains("rank 0 sends 2 elements to itself but expects 3 from itself"));
    REQUIRE_THROWS_WITH(comm.all_to_all_v(send.data(), one, send.data() + 1, one),
                        Catch::Contains("send and recv overlap"));
    REQUIRE_THROWS_AS(comm.all_to_all(send.data(), send.data(), 1), InvalidArgument);
    // Adjacent, not overlapping; and null buffers with nothing to move.
    comm.all_to_all(send.data(), send.data() + 2, 2);
    comm.all_to_all_v<float>(nullptr, {0}, nullptr, {0});
  });
}
