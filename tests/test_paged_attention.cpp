// Paged KV cache: host paged attention over scattered blocks equals dense float64 attention
// (GQA heads mapped by a rank's HeadPartition); the allocator refuses cleanly when exhausted.
#include <algorithm>
#include <cmath>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/ops/host_ops.hpp"

using namespace tpkit;

TEMPLATE_TEST_CASE("paged attention equals dense attention", "[attention]", float, bfloat16) {
  using T = TestType;
  const int hd = 16, block = 4, positions = 23;
  // Rank 1 of 4 for 6 query heads over 2 KV heads: query heads 2, 3 read KV heads 0 and 1.
  const HeadPartition heads = partition_heads(6, 2, {1, 4});
  REQUIRE(heads.local_kv_heads() == 2);
  PagedKVCache<T, HostOps> cache({1, 16, block, heads.local_kv_heads(), hd});
  std::vector<std::int32_t> table = {9, 2, 14, 0, 7, 11};  // scattered blocks, in position order
  ref::Rng rng(3);
  const auto k = rng.uniform_vector(std::size_t(positions * heads.local_kv_heads() * hd));
  const auto v = rng.uniform_vector(std::size_t(positions * heads.local_kv_heads() * hd));
  const auto q = rng.uniform_vector(std::size_t(3 * heads.local_q_heads() * hd));
  for (int p = 0; p < positions; ++p)
    for (int i = 0; i < heads.local_kv_heads() * hd; ++i) {
      cache.key(0, cache.slot(table, p))[i] = T(k[std::size_t(p * heads.local_kv_heads() * hd + i)]);
      cache.value(0, cache.slot(table, p))[i] = T(v[std::size_t(p * heads.local_kv_heads() * hd + i)]);
    }
  const auto qs = test::to_storage<T>(q);
  const std::vector<AttentionQuery> queries = {{0, &table}, {11, &table}, {22, &table}};
  std::vector<T> out(q.size());
  std::vector<float> workspace;
  const float scale = 1.0f / std::sqrt(float(hd));
  paged_attention_host(cache, 0, heads, qs.data(), heads.local_q_heads() * hd, queries.data(), 3, scale, 0, out.data(),
                       heads.local_q_heads() * hd, workspace);
  for (int t = 0; t < 3; ++t)
    for (int h = 0; h < heads.local_q_heads(); ++h) {
      const int kvh = int(heads.q_heads.begin + h) / 3 - int(heads.kv_heads.begin);  // GQA rule, group 3
      const int n = int(queries[std::size_t(t)].position) + 1;
      std::vector<double> s(static_cast<std::size_t>(n));
      double top = -1e300, total = 0;
      for (int p = 0; p < n; ++p) {
        double dot = 0;
        for (int d = 0; d < hd; ++d)
          dot += test::as_double(qs[std::size_t((t * heads.local_q_heads() + h) * hd + d)]) *
                 double(float(T(k[std::size_t((p * heads.local_kv_heads() + kvh) * hd + d)])));
        s[std::size_t(p)] = dot * scale;
        top = std::max(top, s[std::size_t(p)]);
      }
      for (double& x : s) total += x = std::exp(x - top);
      for (int d = 0; d < hd; ++d) {
        double want = 0;
        for (int p = 0; p < n; ++p)
          want +=
              s[std::size_t(p)] / total * double(float(T(v[std::size_t((p * heads.local_kv_heads() + kvh) * hd + d)])));
        const double got = test::as_double(out[std::size_t((t * heads.local_q_heads() + h) * hd + d)]);
        // Softmax weights and the value sum each carry float error ~ n * 2^-24 (n <= 23, |v| < 1),
        // plus one rounding of the output to T.
        REQUIRE(std::fabs(got - want) <= 64 * 0x1p-24 * 23 + ref::roundoff<T>() * std::fabs(want) + 1e-6);
      }
    }
}

TEST_CASE("block allocator hands out, refuses and takes back blocks", "[kv]") {
  BlockAllocator a(3);
  const auto b0 = a.allocate(), b1 = a.allocate(), b2 = a.allocate();
  REQUIRE(b0 == 0);
  REQUIRE(b1 == 1);
  REQUIRE(b2 == 2);
  REQUIRE(a.allocate() == -1);  // exhausted: refused, nothing corrupted
  a.release(b1);
  REQUIRE(a.num_free() == 1);
  REQUIRE(a.allocate() == b1);
  REQUIRE_THROWS_WITH(a.release(7), Catch::Contains("block 7 is not allocated"));
  a.release(b0);
  REQUIRE_THROWS_AS(a.release(b0), InvalidArgument);  // double free
  PagedKVCache<float, HostOps> cache({1, 2, 4, 1, 8});
  REQUIRE_THROWS_WITH(cache.slot({0}, 4), Catch::Contains("position 4 is beyond the sequence's 1 blocks"));
}
