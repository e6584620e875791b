// DeviceMockBackend: N ranks on one GPU with collectives done by device copies and the
// rank-order reduction kernel. Every result is compared bitwise with the reduction written
// here from the mock's contract (rank order 0..n-1; 16-bit types accumulated in float and
// rounded once; other types in their own type), over f32, f64, f16, bf16 and i32, group sizes
// 2, 3, 4 and 8, uneven counts (one rank contributing nothing), in place and not, with outputs
// poisoned first. A chain of back-to-back in-place collectives with growing sizes checks that a
// rank never refills a staging buffer its peers are still reading. all_to_all_v with unequal
// and zero counts, a rank that sends nothing and one that moves nothing (null buffers). Misuse:
// ranks that pass different counts (all_to_all counts that disagree between sender and
// receiver), or host memory where the others pass device memory, get CollectiveMismatch; a rank
// that never arrives is named by CollectiveTimeout. Skipped (exit 77) without a GPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_test_support.hpp"
#include "reference/reference.hpp"
#include "tpkit/gpu/device_mock.cuh"
#include "tpkit/kernels/fused_kernels.cuh"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;
using tpkit::gpu::DeviceMockBackend;

namespace {

template <class T>
constexpr bool is_16bit = std::is_same_v<T, tpkit::half> || std::is_same_v<T, bfloat16>;

// Random values of T; small integers for i32 so sums stay in range.
template <class T>
std::vector<T> random_values(ref::Rng& rng, std::size_t n) {
  std::vector<T> v(n);
  for (T& x : v) {
    const double u = rng.uniform();
    if constexpr (std::is_integral_v<T>)
      x = T(u * 1000);
    else if constexpr (is_16bit<T>)
      x = from_float<T>(float(u));
    else
      x = T(u);
  }
  return v;
}

// The mock's contract, written out: element i of the reduction of inputs[0..n-1] at offset.
template <class T>
T reduce_in_rank_order(const std::vector<std::vector<T>>& inputs, std::size_t i, bool sum) {
  if constexpr (is_16bit<T>) {
    float acc = to_float(inputs[0][i]);
    for (std::size_t r = 1; r < inputs.size(); ++r) {
      const float v = to_float(inputs[r][i]);
      acc = sum ? acc + v : (v > acc ? v : acc);
    }
    return from_float<T>(acc);
  } else {
    T acc = inputs[0][i];
    for (std::size_t r = 1; r < inputs.size(); ++r) {
      const T v = inputs[r][i];
      acc = sum ? T(acc + v) : (v > acc ? v : acc);
    }
    return acc;
  }
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
void collectives(int ranks, const char* type) {
  const std::string where = std::string(type) + ", " + std::to_string(ranks) + " ranks";
  ref::Rng rng(7000 + std::uint64_t(ranks));
  const std::size_t n = 3000;  // not a multiple of the block size
  std::vector<std::vector<T>> inputs;
  std::vector<std::size_t> counts;
  for (int r = 0; r < ranks; ++r) {
    inputs.push_back(random_values<T>(rng, n));
    counts.push_back(r == 1 ? 0 : std::size_t(100 + 37 * r));  // uneven; rank 1 contributes nothing
  }
  std::size_t total = 0;
  for (std::size_t c : counts) total += c;

  std::vector<std::vector<T>> sum_out(static_cast<std::size_t>(ranks)), max_in_place(static_cast<std::size_t>(ranks)),
      gathered(static_cast<std::size_t>(ranks)), scattered(static_cast<std::size_t>(ranks)),
      broadcast(static_cast<std::size_t>(ranks));
  auto contexts = tpkit::gpu::make_contexts(ranks);
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const int r = comm.rank();
    const std::vector<T>& mine = inputs[std::size_t(r)];
    T* in = to_device(mine);
    T* out = poisoned<T>(n);
    comm.all_reduce(in, out, n, ReduceOp::sum);
    sum_out[std::size_t(r)] = to_host(out, n);

    T* in_place = to_device(mine);
    comm.all_reduce(in_place, n, ReduceOp::max);
    max_in_place[std::size_t(r)] = to_host(in_place, n);

    T* all = poisoned<T>(total);
    comm.all_gather(in, all, counts);
    gathered[std::size_t(r)] = to_host(all, total);

    T* part = poisoned<T>(counts[std::size_t(r)]);
    comm.reduce_scatter(in, part, counts, ReduceOp::sum);
    scattered[std::size_t(r)] = to_host(part, counts[std::size_t(r)]);

    comm.broadcast(in_place, n, ranks - 1);  // every rank's in_place becomes the last rank's
    comm.broadcast(in, n, ranks - 1);
    broadcast[std::size_t(r)] = to_host(in, n);
    for (T* p : {in, out, in_place, all, part}) cudaFree(p);
  });

  std::vector<T> sum(n), max(n), all;
  for (std::size_t i = 0; i < n; ++i) {
    sum[i] = reduce_in_rank_order(inputs, i, true);
    max[i] = reduce_in_rank_order(inputs, i, false);
  }
  for (int r = 0; r < ranks; ++r)
    all.insert(all.end(), inputs[std::size_t(r)].begin(),
               inputs[std::size_t(r)].begin() + std::ptrdiff_t(counts[std::size_t(r)]));
  std::size_t offset = 0;
  for (int r = 0; r < ranks; ++r) {
    const std::string who = where + ", rank " + std::to_string(r);
    expect(bitwise_equal(sum_out[std::size_t(r)], sum), "all_reduce sum, " + who);
    expect(bitwise_equal(max_in_place[std::size_t(r)], max), "all_reduce max in place, " + who);
    expect(bitwise_equal(gathered[std::size_t(r)], all), "all_gather with uneven counts, " + who);
    const std::vector<T> segment(sum.begin() + std::ptrdiff_t(offset),
                                 sum.begin() + std::ptrdiff_t(offset + counts[std::size_t(r)]));
    expect(bitwise_equal(scattered[std::size_t(r)], segment), "reduce_scatter, " + who);
    expect(bitwise_equal(broadcast[std::size_t(r)], inputs[std::size_t(ranks - 1)]), "broadcast, " + who);
    offset += counts[std::size_t(r)];
  }
}

// all_to_all_v: rank s sends rank d count(s, d) elements of random data; rank 0 sends nothing
// and, from 3 ranks, the last rank moves nothing at all (both buffers null). Outputs are poisoned first and the
// element after the last is checked untouched.
template <class T>
void all_to_all(int ranks, const char* type) {
  const auto count = [&](int s, int d) -> std::size_t {
    const bool silent = ranks > 2 && (s == ranks - 1 || d == ranks - 1);
    return s == 0 || silent ? 0 : std::size_t((7 * s + 3 * d) % 5 * 31);
  };
  ref::Rng rng(9000 + std::uint64_t(ranks));
  std::vector<std::vector<std::vector<T>>> sent(static_cast<std::size_t>(ranks));  // [src][dst]
  for (int s = 0; s < ranks; ++s)
    for (int d = 0; d < ranks; ++d) sent[std::size_t(s)].push_back(random_values<T>(rng, count(s, d)));
  std::vector<std::vector<T>> got(static_cast<std::size_t>(ranks));
  auto contexts = tpkit::gpu::make_contexts(ranks);
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const int me = comm.rank();
    std::vector<std::size_t> send_counts, recv_counts;
    std::vector<T> packed;
    std::size_t received = 0;
    for (int q = 0; q < ranks; ++q) {
      send_counts.push_back(count(me, q));
      recv_counts.push_back(count(q, me));
      received += recv_counts.back();
      packed.insert(packed.end(), sent[std::size_t(me)][std::size_t(q)].begin(),
                    sent[std::size_t(me)][std::size_t(q)].end());
    }
    T* in = packed.empty() ? nullptr : to_device(packed);
    T* out = received ? poisoned<T>(received + 1) : nullptr;
    comm.all_to_all_v(in, send_counts, out, recv_counts);
    if (out) got[std::size_t(me)] = to_host(out, received + 1);
    cudaFree(in), cudaFree(out);
  });
  for (int d = 0; d < ranks; ++d) {
    std::vector<T> want;
    for (int s = 0; s < ranks; ++s)
      want.insert(want.end(), sent[std::size_t(s)][std::size_t(d)].begin(), sent[std::size_t(s)][std::size_t(d)].end());
    std::vector<T>& seen = got[std::size_t(d)];
    const std::string who = std::string(type) + ", " + std::to_string(ranks) + " ranks, rank " + std::to_string(d);
    if (want.empty()) {
      expect(seen.empty(), "all_to_all_v, nothing to receive, " + who);
      continue;
    }
    const std::vector<unsigned char> all_ones(sizeof(T), 0xff);
    expect(seen.size() == want.size() + 1 && std::memcmp(&seen.back(), all_ones.data(), sizeof(T)) == 0,
           "all_to_all_v wrote past its output, " + who);
    seen.resize(want.size());
    expect(bitwise_equal(seen, want), "all_to_all_v, " + who);
  }
}

// 200 in-place all_reduce(max) steps, each followed on every rank by x += (rank + 1), with the
// size growing every 20 steps (so staging buffers are replaced mid-run). Every value stays an
// integer below 2^24, so float is exact and the expected values follow from the algebra.
void back_to_back(int ranks) {
  auto contexts = tpkit::gpu::make_contexts(ranks);
  std::vector<std::vector<float>> final_values(static_cast<std::size_t>(ranks));
  const int steps = 200;
  const std::size_t max_n = 1 << 16;
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const int r = comm.rank();
    std::vector<float> init(max_n), bump(max_n, float(r + 1));
    for (std::size_t i = 0; i < max_n; ++i) init[i] = float(i % 13) * float(r + 1);
    float* x = to_device(init);
    float* increment = to_device(bump);
    for (int step = 0; step < steps; ++step) {
      const std::size_t n = std::size_t(1024) << (step / 20 % 7);
      comm.all_reduce(x, n, ReduceOp::max);
      tpkit::gpu::check_status(tpkit::gpu::add(x, increment, std::int64_t(n), contexts[std::size_t(r)]->stream()),
                               "add");
    }
    final_values[std::size_t(r)] = to_host(x, max_n);
    cudaFree(x), cudaFree(increment);
  });
  // Simulated on the host in double: the same steps, exactly.
  std::vector<std::vector<double>> x(static_cast<std::size_t>(ranks), std::vector<double>(max_n));
  for (int r = 0; r < ranks; ++r)
    for (std::size_t i = 0; i < max_n; ++i) x[std::size_t(r)][i] = double(i % 13) * (r + 1);
  for (int step = 0; step < steps; ++step) {
    const std::size_t n = std::size_t(1024) << (step / 20 % 7);
    for (std::size_t i = 0; i < n; ++i) {
      double m = x[0][i];
      for (int r = 1; r < ranks; ++r) m = std::max(m, x[std::size_t(r)][i]);
      for (int r = 0; r < ranks; ++r) x[std::size_t(r)][i] = m + (r + 1);
    }
  }
  for (int r = 0; r < ranks; ++r) {
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < max_n; ++i) wrong += double(final_values[std::size_t(r)][i]) != x[std::size_t(r)][i];
    expect(wrong == 0, "back-to-back in-place collectives, " + std::to_string(ranks) + " ranks, rank " +
                           std::to_string(r) + ": " + std::to_string(wrong) + " wrong values");
  }
}

template <class E, class F>
void expect_error(const char* what, const std::string& needle, F&& body) {
  try {
    body();
    expect(false, std::string(what) + ": no error");
  } catch (const E& e) {
    expect(std::string(e.what()).find(needle) != std::string::npos,
           std::string(what) + ": the message \"" + e.what() + "\" lacks \"" + needle + "\"");
  } catch (const std::exception& e) {
    expect(false, std::string(what) + ": wrong error type: " + e.what());
  }
}

void misuse() {
  auto contexts = tpkit::gpu::make_contexts(2);
  expect_error<CollectiveMismatch>("different counts", "rank 1 called all_reduce(count=9", [&] {
    tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
      float* x = poisoned<float>(16);
      comm.all_reduce(x, 8 + std::size_t(comm.rank()));
      cudaFree(x);
    });
  });
  expect_error<CollectiveMismatch>("host memory against device memory", "device memory", [&] {
    tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
      std::vector<float> host(8, 1.0f);
      float* device = to_device(host);
      comm.all_reduce(comm.rank() == 0 ? device : host.data(), 8);
      cudaFree(device);
    });
  });
  expect_error<CollectiveMismatch>(
      "all_to_all counts that disagree", "rank 0 sends 2 x f32 to rank 1, which expects 3", [&] {
        tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
          std::vector<std::size_t> send_counts(2, 2), recv_counts(2, 2);
          if (comm.rank() == 1) recv_counts[0] = 3;
          float* x = poisoned<float>(16);
          comm.all_to_all_v(x, send_counts, x + 8, recv_counts);
          cudaFree(x);
        });
      });
  MockOptions quick;
  quick.timeout = std::chrono::milliseconds(300);
  expect_error<CollectiveTimeout>("a rank that never arrives", "rank 1 did not arrive", [&] {
    tpkit::gpu::run_device_mock_ranks(
        contexts,
        [&](Communicator<DeviceMockBackend>& comm) {
          float* x = poisoned<float>(8);
          if (comm.rank() == 0) comm.all_reduce(x, 8);
          cudaFree(x);
        },
        quick);
  });
  // Host memory still works (the engine's small messages), through the host mock.
  std::vector<std::vector<std::int32_t>> got(2);
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    std::vector<std::int32_t> v{comm.rank() + 1, 10 * (comm.rank() + 1)};
    comm.all_reduce(v.data(), v.size());
    got[std::size_t(comm.rank())] = v;
  });
  for (const auto& v : got) expect(v == std::vector<std::int32_t>{3, 30}, "all_reduce on host memory");
}

}  // namespace

int main() {
  if (!have_gpu()) return 77;
  try {
    for (int ranks : {2, 3, 4, 8}) {
      collectives<float>(ranks, "f32");
      collectives<double>(ranks, "f64");
      collectives<tpkit::half>(ranks, "f16");
      collectives<bfloat16>(ranks, "bf16");
      collectives<std::int32_t>(ranks, "i32");
    }
    for (int ranks : {2, 3, 4, 8}) {
      all_to_all<float>(ranks, "f32");
      all_to_all<bfloat16>(ranks, "bf16");
    }
    for (int ranks : {2, 4, 8}) back_to_back(ranks);
    misuse();
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
  if (failures) return 1;
  std::printf("device mock collectives: all passed\n");
  return 0;
}
