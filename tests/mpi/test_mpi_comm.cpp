// Communicator<MpiBackend> under mpirun (2 and 4 processes): every collective against a
// reference each process computes on its own, sub-communicators, point-to-point, and calls
// that disagree across ranks. Inputs are a fixed function of (rank, index), so every process
// knows every other process's data.
#include <cmath>

#include "catch.hpp"
#include "tpkit/comm/mpi.hpp"
#include "tpkit/parallel/pipeline.hpp"

using namespace tpkit;

namespace {
Communicator<MpiBackend> world(MpiOptions options = {}) { return Communicator<MpiBackend>(MpiBackend::world(options)); }

// Rank r's element i: distinct, with a fractional part, positive and negative.
double input(int rank, std::size_t i) { return std::sin(0.37 * double(i) + 1.3 * rank) * (1 + rank) + 0.125 * rank; }

template <class T>
T as(double v) {
  return T(float(v));
}
template <>
double as<double>(double v) {
  return v;
}
template <>
std::int32_t as<std::int32_t>(double v) {
  return std::int32_t(std::lround(v * 100));
}
template <class T>
double value(T v) {
  return double(float(v));
}
template <>
double value<double>(double v) {
  return v;
}
template <>
double value<std::int32_t>(std::int32_t v) {
  return v;
}

// The tolerance of a reduction over `ranks` values of type T, each rounded to T on input and
// the running sum rounded to T after each pairwise step (MPI's order is unspecified): at most
// ranks roundings of relative size u_T of the sum of magnitudes.
template <class T>
double tolerance(int ranks, double magnitude) {
  return ranks * unit_roundoff<T>() * magnitude + 1e-300;  // 0 for integers: exact
}
}  // namespace

TEMPLATE_TEST_CASE("MPI all_reduce sum and max equal the reference", "[mpi]", float, double, half, bfloat16,
                   std::int32_t) {
  auto comm = world();
  const int n = comm.size();
  const std::size_t count = GENERATE(1, 7, 1000);
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
    std::vector<TestType> data(count);
    for (std::size_t i = 0; i < count; ++i) data[i] = as<TestType>(input(comm.rank(), i));
    std::vector<TestType> out(count);
    comm.all_reduce(data.data(), out.data(), count, op);
    comm.all_reduce(data.data(), count, op);  // in place
    for (std::size_t i = 0; i < count; ++i) {
      double want = op == ReduceOp::sum ? 0 : -1e300, magnitude = 0;
      for (int r = 0; r < n; ++r) {
        const double v = value(as<TestType>(input(r, i)));
        want = op == ReduceOp::sum ? want + v : std::max(want, v);
        magnitude += std::fabs(v);
      }
      INFO("op " << reduce_op_name(op) << " element " << i);
      REQUIRE(std::fabs(value(out[i]) - want) <= tolerance<TestType>(n, magnitude));
      REQUIRE(value(data[i]) == value(out[i]));
    }
  }
}

TEST_CASE("MPI all_gather and reduce_scatter with unequal counts, broadcast from every root", "[mpi]") {
  auto comm = world();
  const int n = comm.size(), me = comm.rank();
  std::vector<std::size_t> counts;
  for (int r = 0; r < n; ++r) counts.push_back(std::size_t(3 + 2 * r));  // 3, 5, 7, ...
  std::size_t total = 0, offset = 0;
  for (int r = 0; r < n; ++r) (r < me ? offset : total) += counts[std::size_t(r)];
  total += offset;

  std::vector<float> mine(counts[std::size_t(me)]), gathered(total);
  for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = float(input(me, i));
  comm.all_gather(mine.data(), gathered.data(), counts);
  for (int r = 0, at = 0; r < n; ++r)
    for (std::size_t i = 0; i < counts[std::size_t(r)]; ++i, ++at)
      REQUIRE(gathered[std::size_t(at)] == float(input(r, i)));

  std::vector<double> full(total), part(counts[std::size_t(me)]);
  for (std::size_t i = 0; i < total; ++i) full[i] = input(me, i);
  comm.reduce_scatter(full.data(), part.data(), counts);
  for (std::size_t i = 0; i < part.size(); ++i) {
    double want = 0, magnitude = 0;
    for (int r = 0; r < n; ++r) want += input(r, offset + i), magnitude += std::fabs(input(r, offset + i));
    REQUIRE(std::fabs(part[i] - want) <= tolerance<double>(n, magnitude));
  }

  for (int root = 0; root < n; ++root) {
    std::vector<std::int64_t> data(5, me == root ? 1000 + root : -1);
    comm.broadcast(data.data(), data.size(), root);
    for (std::int64_t v : data) REQUIRE(v == 1000 + root);
  }
  comm.barrier();
}

TEST_CASE("MPI send and recv around a ring, buffered, in order per tag", "[mpi]") {
  auto comm = world();
  const int n = comm.size(), me = comm.rank();
  if (n < 2) return;
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  // Several messages sent before any is received: sends must not block.
  for (int k = 0; k < 3; ++k) {
    std::vector<bfloat16> msg(4 + std::size_t(k), bfloat16(float(me * 10 + k)));
    comm.send(msg.data(), msg.size(), next, 7);
  }
  for (int k = 0; k < 3; ++k) {
    std::vector<bfloat16> got(4 + std::size_t(k));
    comm.recv(got.data(), got.size(), prev, 7);
    for (bfloat16 v : got) REQUIRE(float(v) == float(prev * 10 + k));
  }
  std::vector<float> wrong(3);
  comm.send(wrong.data(), 2, next, 8);
  REQUIRE_THROWS_AS(comm.recv(wrong.data(), 3, prev, 8), CollectiveMismatch);
  comm.barrier();
}

TEST_CASE("MPI sub-communicators arrange TP x PP groups", "[mpi]") {
  auto comm = world();
  const int n = comm.size();
  for (int tp = 1; tp <= n; ++tp) {
    if (n % tp != 0) continue;
    const ParallelLayout layout{tp, n / tp};
    ParallelGroups<MpiBackend> groups(comm, layout);
    const int w = comm.rank();
    REQUIRE(groups.tp().size() == tp);
    REQUIRE(groups.pp().size() == n / tp);
    std::vector<int> tp_members(static_cast<std::size_t>(tp)), pp_members(static_cast<std::size_t>(n / tp));
    groups.tp().all_gather(&w, 1, tp_members.data());
    groups.pp().all_gather(&w, 1, pp_members.data());
    for (int r = 0; r < tp; ++r) REQUIRE(tp_members[std::size_t(r)] == layout.world_rank(w / tp, r));
    for (int s = 0; s < n / tp; ++s) REQUIRE(pp_members[std::size_t(s)] == layout.world_rank(s, w % tp));
    // A reduction inside each TP group sums only that group.
    int one = 1, sum = 0;
    groups.tp().all_reduce(&one, &sum, 1);
    REQUIRE(sum == tp);
  }
}

TEST_CASE("MPI collectives that disagree across ranks are reported on every rank, naming them", "[mpi]") {
  auto comm = world();
  if (comm.size() < 2) return;
  std::vector<float> x(4, 1.0f);
  const std::size_t count = comm.rank() == 1 ? 3 : 4;
  REQUIRE_THROWS_WITH(comm.all_reduce(x.data(), count),
                      Catch::Contains("rank 1 (world rank 1) called all_reduce(count 3, f32)") ||
                          Catch::Contains("but rank 0 (world rank 0) called all_reduce(count 4, f32)"));
  if (comm.rank() == 0)
    REQUIRE_THROWS_WITH(comm.broadcast(x.data(), 4, 0), Catch::Contains("called barrier"));
  else
    REQUIRE_THROWS_AS(comm.barrier(), CollectiveMismatch);
  // The mismatch was caught before any data moved: the communicator still works.
  comm.all_reduce(x.data(), 4);
  REQUIRE(x[0] == float(comm.size()));
}

// Per-rank counts are part of a collective's signature: ranks whose all_gather counts differ
// while their totals agree are a mismatch (MPI_Iallgatherv would otherwise read and write past
// the buffers), reported on every rank with each rank's counts.
TEST_CASE("MPI all_gather and reduce_scatter with equal totals of unequal counts are mismatches", "[mpi]") {
  auto comm = world();
  if (comm.size() < 2) return;
  std::vector<std::size_t> counts(static_cast<std::size_t>(comm.size()), 2);
  if (comm.rank() == 1) counts[0] = 3, counts[1] = 1;  // the same total as everyone else's
  std::vector<float> in(3, 1.0f), out(2 * std::size_t(comm.size()) + 1);
  REQUIRE_THROWS_WITH(comm.all_gather(in.data(), out.data(), counts),
                      Catch::Contains("rank 1 (world rank 1) called all_gather(counts [3, 1") ||
                          Catch::Contains("but rank 0 (world rank 0) called all_gather(counts [2, 2"));
  std::vector<float> big(2 * std::size_t(comm.size()) + 1, 1.0f), mine(3);
  REQUIRE_THROWS_AS(comm.reduce_scatter(big.data(), mine.data(), counts), CollectiveMismatch);
  // Caught before any data moved: the communicator still works.
  std::vector<std::size_t> equal(static_cast<std::size_t>(comm.size()), 2);
  comm.all_gather(in.data(), out.data(), equal);
  REQUIRE(out[0] == 1.0f);
}

// A split is checked as a split: a rank that calls barrier where its peers split is a named
// mismatch, not a hang in MPI_Comm_split.
TEST_CASE("MPI split against a barrier is a mismatch, not a hang", "[mpi]") {
  auto comm = world();
  if (comm.size() < 2) return;
  if (comm.rank() == 0)
    REQUIRE_THROWS_WITH(comm.split(0, 0), Catch::Contains("called split") && Catch::Contains("called barrier"));
  else
    REQUIRE_THROWS_AS(comm.barrier(), CollectiveMismatch);
  comm.barrier();  // nothing was started: the communicator still works
}

namespace {
// What rank src sends rank dst as its element i (exact in bf16: integers below 256 for up to 4
// ranks and counts below 16; distinct per (src, dst, i) there).
float a2a_value(int src, int dst, std::size_t i) { return float(src * 64 + dst * 16 + int(i)); }
// Unequal, some zero; with `silent` the last rank sends nothing and rank 0 receives nothing.
std::size_t a2a_count(int src, int dst, int n, bool silent) {
  if (silent && (src == n - 1 || dst == 0)) return 0;
  return std::size_t(3 * src + dst + 2) % 5 * 2;  // 0 to 8; at 2 ranks, rank 1's displacements differ
}
}  // namespace

TEMPLATE_TEST_CASE("MPI all_to_all and all_to_all_v equal the reference, with unequal and zero counts", "[mpi]", float,
                   bfloat16) {
  auto comm = world();
  const int n = comm.size(), me = comm.rank();
  const std::size_t count = 5;
  std::vector<TestType> send, recv(std::size_t(n) * count + 1, TestType(-1.0f));
  for (int dst = 0; dst < n; ++dst)
    for (std::size_t i = 0; i < count; ++i) send.push_back(TestType(a2a_value(me, dst, i)));
  comm.all_to_all(send.data(), recv.data(), count);
  for (int src = 0, at = 0; src < n; ++src)
    for (std::size_t i = 0; i < count; ++i, ++at) REQUIRE(float(recv[std::size_t(at)]) == a2a_value(src, me, i));
  REQUIRE(float(recv.back()) == -1.0f);

  for (bool silent : {false, true}) {
    INFO((silent ? "the last rank sends nothing, rank 0 receives nothing" : "unequal counts"));
    std::vector<std::size_t> send_counts, recv_counts;
    std::vector<TestType> packed;
    std::size_t received = 0;
    for (int q = 0; q < n; ++q) {
      send_counts.push_back(a2a_count(me, q, n, silent));
      recv_counts.push_back(a2a_count(q, me, n, silent));
      received += recv_counts.back();
      for (std::size_t i = 0; i < send_counts.back(); ++i) packed.push_back(TestType(a2a_value(me, q, i)));
    }
    std::vector<TestType> got(received + 1, TestType(-1.0f));
    comm.all_to_all_v(packed.empty() ? nullptr : packed.data(), send_counts, received ? got.data() : nullptr,
                      recv_counts);
    std::size_t at = 0;
    for (int src = 0; src < n; ++src)
      for (std::size_t i = 0; i < a2a_count(src, me, n, silent); ++i, ++at)
        REQUIRE(float(got[at]) == a2a_value(src, me, i));
    REQUIRE(at == received);
    REQUIRE(float(got.back()) == -1.0f);
  }
}

// Counts that disagree between sender and receiver are found from the exchanged signatures
// before any data moves, on every rank, naming both; so is all_to_all against another collective.
TEST_CASE("MPI all_to_all counts that disagree are reported on every rank before data moves", "[mpi]") {
  auto comm = world();
  const int n = comm.size();
  if (n < 2) return;
  std::vector<std::size_t> send_counts(static_cast<std::size_t>(n), 2), recv_counts = send_counts;
  if (comm.rank() == 1) recv_counts[0] = 3;  // rank 0 sends 2
  std::vector<float> send(2 * std::size_t(n), 1.0f), recv(2 * std::size_t(n) + 1, -1.0f);
  REQUIRE_THROWS_WITH(comm.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts),
                      Catch::Contains("all_to_all #") && Catch::Contains("counts disagree") &&
                          Catch::Contains("rank 0 (world rank 0) sends 2 x f32 to rank 1 (world rank 1), which "
                                          "expects 3 from it"));
  REQUIRE(recv[0] == -1.0f);  // nothing moved
  if (comm.rank() == 0)
    REQUIRE_THROWS_WITH(comm.all_to_all(send.data(), recv.data(), 2),
                        Catch::Contains("called all_to_all(send counts [2") && Catch::Contains("called all_gather"));
  else
    REQUIRE_THROWS_AS(comm.all_gather(send.data(), 2, recv.data()), CollectiveMismatch);
  // The communicator still works.
  comm.all_to_all(send.data(), recv.data(), 2);
  REQUIRE(recv[0] == 1.0f);
}
