// Threads inside one rank: the ThreadPool runs every part and reports a failure, and HostOps with
// n threads computes bitwise what HostOps with one thread computes (every output element is
// computed by one thread, in the one-thread order), for the linear layer (the LM head's float
// output included) and attention, at shapes whose tiles and head counts do not divide evenly.
// Outputs are poisoned with NaN first, so an element that no thread writes fails.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/core/thread_pool.hpp"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/ops/ops_policy.hpp"

using namespace tpkit;

#if TPKIT_HAS_CONCEPTS
static_assert(ops_policy<HostOps>, "HostOps satisfies ops_policy");
#endif

namespace {
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
std::vector<T> poisoned(std::size_t n) {
  return std::vector<T>(n, from_float<T>(std::numeric_limits<float>::quiet_NaN()));
}
}  // namespace

TEST_CASE("a thread pool runs every part once per call and rethrows a part's failure", "[ops][threads]") {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    REQUIRE(pool.size() == threads);
    for (int call = 0; call < 200; ++call) {  // reused, never recreated
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(threads));
      pool.run([&](int part) { hits[std::size_t(part)]++; });
      for (auto& h : hits) REQUIRE(h.load() == 1);
    }
    REQUIRE_THROWS_WITH(pool.run([&](int part) {
      if (part == threads - 1) throw std::runtime_error("part failed");
    }),
                        "part failed");
    int after = 0;  // still usable after a failure
    pool.run([&](int part) {
      if (part == 0) after = 1;
    });
    REQUIRE(after == 1);
  }
  {  // two callers at once: the second is refused, never a race
    ThreadPool pool(2);
    std::atomic<bool> inside{false}, release{false};
    std::string refused;
    std::thread first([&] {
      pool.run([&](int part) {
        if (part != 0) return;
        inside = true;
        while (!release) std::this_thread::yield();
      });
    });
    while (!inside) std::this_thread::yield();
    try {
      pool.run([](int) {});
    } catch (const InvalidArgument& e) {
      refused = e.what();
    }
    release = true;
    first.join();
    REQUIRE_THAT(refused, Catch::Contains("used by two threads at once"));
  }
  REQUIRE_THROWS_AS(ThreadPool(0), InvalidArgument);
  REQUIRE_THROWS_AS(HostOps(0), InvalidArgument);
  REQUIRE(HostOps().threads() == 1);
  REQUIRE(HostOps(3).threads() == 3);
}

TEMPLATE_TEST_CASE("HostOps::linear is bitwise the same at any thread count", "[ops][threads]", float, bfloat16, half) {
  using T = TestType;
  ref::Rng rng(41);
  // Batch 1 and 3 (4-column and 2-column tiles), 67 (past the 64-row batch block); N not a
  // multiple of a tile or of the thread count; K with a tail past the 8-wide vectors.
  for (const auto& [batch, N, K] : std::vector<std::tuple<std::int64_t, std::int64_t, std::int64_t>>{
           {1, 1031, 259}, {3, 517, 130}, {67, 99, 64}, {1, 3, 5}, {2, 4096, 33}}) {
    const auto x = test::to_storage<T>(rng.uniform_vector(std::size_t(batch * K)));
    const auto w = test::to_storage<T>(rng.uniform_vector(std::size_t(N * K)));
    const auto bias = test::to_storage<T>(rng.uniform_vector(std::size_t(N)));
    std::vector<T> want = poisoned<T>(std::size_t(batch * N));
    std::vector<float> want_logits = poisoned<float>(std::size_t(batch * N));
    HostOps one;
    one.linear(x.data(), K, batch, w.data(), K, N, K, bias.data(), want.data(), N);
    one.linear(x.data(), K, batch, w.data(), K, N, K, static_cast<const T*>(nullptr), want_logits.data(), N);
    REQUIRE(std::none_of(want.begin(), want.end(), [](T v) { return std::isnan(to_float(v)); }));
    for (int threads : {2, 3, 4, 7}) {
      INFO("batch " << batch << " N " << N << " K " << K << " threads " << threads);
      HostOps many(threads);
      std::vector<T> got = poisoned<T>(want.size());
      std::vector<float> got_logits = poisoned<float>(want_logits.size());
      many.linear(x.data(), K, batch, w.data(), K, N, K, bias.data(), got.data(), N);
      many.linear(x.data(), K, batch, w.data(), K, N, K, static_cast<const T*>(nullptr), got_logits.data(), N);
      REQUIRE(same_bits(got, want));
      REQUIRE(same_bits(got_logits, want_logits));
    }
  }
}

TEST_CASE("HostOps row kernels and attention are bitwise the same at any thread count", "[ops][threads]") {
  using T = bfloat16;
  ref::Rng rng(7);
  const std::int64_t rows = 300, cols = 256, hd = 16;
  const auto x = test::to_storage<T>(rng.uniform_vector(std::size_t(rows * cols)));
  const auto gate_up = test::to_storage<T>(rng.uniform_vector(std::size_t(rows * 2 * cols)));
  const std::vector<float> weight = rng.uniform_vector(std::size_t(cols));
  std::vector<float> cos(std::size_t(rows * hd / 2)), sin(cos.size());
  for (std::size_t i = 0; i < cos.size(); ++i) cos[i] = std::cos(float(i)), sin[i] = std::sin(float(i));
  // Rank 1 of 3 of 10 query heads over 5 KV heads: 3 local query heads reading 2 KV heads.
  const HeadPartition heads = partition_heads(10, 5, {1, 3});
  PagedKVCache<T, HostOps> cache({1, 64, 4, heads.local_kv_heads(), hd});
  for (std::int64_t s = 0; s < 64 * 4; ++s)
    for (std::int64_t i = 0; i < heads.local_kv_heads() * hd; ++i) {
      cache.key(0, s)[i] = T(rng.uniform());
      cache.value(0, s)[i] = T(rng.uniform());
    }
  std::vector<std::vector<std::int32_t>> tables = {{5, 9, 1, 60, 33, 2}, {7, 8}, {40, 41, 42, 43, 44, 45, 46}};
  StepLayout layout;
  for (std::int64_t t = 0; t < 50; ++t) {  // 50 rows over three sequences, long and short
    const auto& table = tables[std::size_t(t % 3)];
    layout.queries.push_back({(t * 7) % std::int64_t(table.size() * 4), &table});
  }
  const std::int64_t q_width = heads.local_q_heads() * hd;
  const auto q = test::to_storage<T>(rng.uniform_vector(std::size_t(50 * q_width)));

  const auto run = [&](const HostOps& ops) {
    std::vector<T> normed = poisoned<T>(x.size()), act = poisoned<T>(x.size()), roped = x, summed = x,
                   attended = poisoned<T>(q.size());
    ops.rms_norm(x.data(), cols, rows, cols, weight.data(), 1e-5f, normed.data(), cols);
    ops.silu_and_mul(gate_up.data(), rows, cols, act.data());
    ops.rope(roped.data(), cols, rows, int(cols / hd), hd, cos.data(), sin.data(), false);
    ops.add(summed.data(), normed.data(), rows * cols);
    HostOps::StepState state;
    ops.prepare_step(state, layout, cache.shape());
    ops.paged_attention(cache, 0, heads, q.data(), q_width, state, 0.25f, 11, attended.data(), q_width);
    std::vector<T> all;
    for (const auto* v : {&normed, &act, &roped, &summed, &attended}) all.insert(all.end(), v->begin(), v->end());
    return all;
  };
  const std::vector<T> want = run(HostOps());
  REQUIRE(std::none_of(want.begin(), want.end(), [](T v) { return std::isnan(to_float(v)); }));
  for (int threads : {2, 3, 8}) {
    INFO("threads " << threads);
    REQUIRE(same_bits(run(HostOps(threads)), want));
  }
}
