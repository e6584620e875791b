// The GQA QKV projection (including uneven head splits and replicated KV heads) and the merged
// gate/up projection, at TP 1..8, against the float64 reference.
#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/layers/gate_up.hpp"
#include "tpkit/layers/linear.hpp"
#include "tpkit/layers/qkv.hpp"

using namespace tpkit;

namespace {
struct HeadShape {
  int q, kv, head_dim, hidden;
};
}  // namespace

TEMPLATE_TEST_CASE("QKVParallelLinear equals the unsharded q, k and v projections", "[layers][qkv]", float, bfloat16,
                   half) {
  using T = TestType;
  // stories260K (8 q / 4 kv), Qwen2-7B's head counts (28 / 4), Qwen2-0.5B's (14 / 2).
  const HeadShape shape = GENERATE(HeadShape{8, 4, 8, 64}, HeadShape{28, 4, 4, 32}, HeadShape{14, 2, 4, 24});
  const int tp = GENERATE(range(1, 9));
  const int batch = GENERATE(1, 17);
  const bool with_bias = GENERATE(false, true);  // Qwen2 has QKV biases
  const int hd = shape.head_dim, H = shape.hidden, qn = shape.q * hd, kvn = shape.kv * hd;

  ref::Rng rng(400 + std::uint64_t(shape.q * 100 + tp * 4 + batch));
  const auto wq = rng.uniform_vector(std::size_t(qn) * H), wk = rng.uniform_vector(std::size_t(kvn) * H),
             wv = rng.uniform_vector(std::size_t(kvn) * H), x = rng.uniform_vector(std::size_t(batch) * H);
  std::vector<float> bq, bk, bv;
  if (with_bias)
    bq = rng.uniform_vector(std::size_t(qn)), bk = rng.uniform_vector(std::size_t(kvn)),
    bv = rng.uniform_vector(std::size_t(kvn));
  const auto xr = test::rounded<T>(x);
  const auto ref_q = ref::linear(xr, test::rounded<T>(wq), test::rounded<T>(bq), batch, qn, H);
  const auto ref_k = ref::linear(xr, test::rounded<T>(wk), test::rounded<T>(bk), batch, kvn, H);
  const auto ref_v = ref::linear(xr, test::rounded<T>(wv), test::rounded<T>(bv), batch, kvn, H);

  struct RankOut {
    std::vector<T> y;
    HeadPartition part;
    std::int64_t width;
  };
  std::vector<RankOut> outs(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    QKVWeights w{test::raw(wq, qn, H), test::raw(wk, kvn, H), test::raw(wv, kvn, H), {}, {}, {}};
    if (with_bias) w.q_bias = test::raw(bq, qn), w.k_bias = test::raw(bk, kvn), w.v_bias = test::raw(bv, kvn);
    QKVParallelLinear<T> layer(w, {shape.q, shape.kv, hd}, {comm.rank(), tp});
    const auto xs = test::to_storage<T>(x);
    std::vector<T> y(std::size_t(batch * layer.output_width()));
    layer.forward(comm, TensorView<const T>(xs.data(), {batch, H}),
                  TensorView<T>(y.data(), {batch, layer.output_width()}));
    outs[std::size_t(comm.rank())] = {std::move(y), layer.partition(), layer.output_width()};
  });

  // Each query head exactly once over the ranks; each rank's KV slots hold the KV heads its
  // query heads read under the GQA rule kv = q / (q_heads / kv_heads), written here afresh.
  std::vector<int> q_owner(std::size_t(shape.q), -1);
  std::vector<double> got_q(std::size_t(batch * qn));
  ref::DenseResult want_k{{}, {}}, want_v{{}, {}};
  std::vector<double> got_k, got_v;
  for (int r = 0; r < tp; ++r) {
    const RankOut& o = outs[std::size_t(r)];
    const int lq = o.part.local_q_heads(), lkv = o.part.local_kv_heads();
    REQUIRE(o.width == std::int64_t(lq + 2 * lkv) * hd);
    REQUIRE(lq >= 1);
    for (int h = 0; h < lq; ++h) {
      const int gq = int(o.part.q_heads.begin) + h;
      REQUIRE(q_owner[std::size_t(gq)] == -1);
      q_owner[std::size_t(gq)] = r;
      const int gkv = gq / (shape.q / shape.kv);
      const int slot = o.part.local_kv_for(h);
      REQUIRE(slot >= 0);
      REQUIRE(slot < lkv);
      for (int b = 0; b < batch; ++b)
        for (int d = 0; d < hd; ++d) {
          got_q[std::size_t(b * qn + gq * hd + d)] = test::as_double(o.y[std::size_t(b * o.width + h * hd + d)]);
          const std::size_t ref_at = std::size_t(b * kvn + gkv * hd + d);
          got_k.push_back(test::as_double(o.y[std::size_t(b * o.width + (lq + slot) * hd + d)]));
          got_v.push_back(test::as_double(o.y[std::size_t(b * o.width + (lq + lkv + slot) * hd + d)]));
          want_k.y.push_back(ref_k.y[ref_at]), want_k.magnitude.push_back(ref_k.magnitude[ref_at]);
          want_v.y.push_back(ref_v.y[ref_at]), want_v.magnitude.push_back(ref_v.magnitude[ref_at]);
        }
    }
  }
  for (int owner : q_owner) REQUIRE(owner >= 0);
  INFO(test::type_name<T>() << " heads " << shape.q << "/" << shape.kv << " tp " << tp << " batch " << batch);
  const auto cq = test::compare<T>(got_q, ref_q, H, 1, 1);
  const auto ck = test::compare<T>(got_k, want_k, H, 1, 1);
  const auto cv = test::compare<T>(got_v, want_v, H, 1, 1);
  INFO(cq.worst << " | " << ck.worst << " | " << cv.worst);
  REQUIRE(cq.violations == 0);
  REQUIRE(ck.violations == 0);
  REQUIRE(cv.violations == 0);
}

TEMPLATE_TEST_CASE("MergedGateUpLinear equals the unsharded gate and up projections", "[layers][mlp]", float, bfloat16,
                   half) {
  using T = TestType;
  const int tp = GENERATE(range(1, 9));
  const int batch = GENERATE(1, 17);
  const int H = 64, I = 172;
  ref::Rng rng(500 + std::uint64_t(tp * 4 + batch));
  const auto wg = rng.uniform_vector(std::size_t(I) * H), wu = rng.uniform_vector(std::size_t(I) * H),
             wd = rng.uniform_vector(std::size_t(H) * I), x = rng.uniform_vector(std::size_t(batch) * H);
  const auto xr = test::rounded<T>(x);
  const auto ref_g = ref::linear(xr, test::rounded<T>(wg), {}, batch, I, H);
  const auto ref_u = ref::linear(xr, test::rounded<T>(wu), {}, batch, I, H);
  std::vector<std::vector<T>> outs(static_cast<std::size_t>(tp));
  std::vector<Range> ranges(static_cast<std::size_t>(tp)), down_ranges(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    MergedGateUpLinear<T> layer(test::raw(wg, I, H), test::raw(wu, I, H), {comm.rank(), tp});
    // The down projection over the same dimension must take exactly this rank's slice.
    RowParallelLinear<T> down(test::raw(wd, H, I), {}, {comm.rank(), tp});
    const auto xs = test::to_storage<T>(x);
    std::vector<T> y(std::size_t(batch * layer.output_width()));
    layer.forward(comm, TensorView<const T>(xs.data(), {batch, H}),
                  TensorView<T>(y.data(), {batch, layer.output_width()}));
    outs[std::size_t(comm.rank())] = std::move(y);
    ranges[std::size_t(comm.rank())] = layer.intermediate_range();
    down_ranges[std::size_t(comm.rank())] = down.input_range();
  });
  std::vector<double> got_g(std::size_t(batch * I)), got_u(std::size_t(batch * I));
  std::int64_t next = 0;
  for (int r = 0; r < tp; ++r) {
    const Range range = ranges[std::size_t(r)];
    REQUIRE(range == down_ranges[std::size_t(r)]);
    REQUIRE(range.begin == next);
    next = range.end;
    const std::int64_t n = range.size();
    for (int b = 0; b < batch; ++b)
      for (std::int64_t i = 0; i < n; ++i) {
        got_g[std::size_t(b * I + range.begin + i)] = test::as_double(outs[std::size_t(r)][std::size_t(b * 2 * n + i)]);
        got_u[std::size_t(b * I + range.begin + i)] =
            test::as_double(outs[std::size_t(r)][std::size_t(b * 2 * n + n + i)]);
      }
  }
  REQUIRE(next == I);
  const auto cg = test::compare<T>(got_g, ref_g, H, 1, 1), cu = test::compare<T>(got_u, ref_u, H, 1, 1);
  INFO(cg.worst << " | " << cu.worst);
  REQUIRE(cg.violations == 0);
  REQUIRE(cu.violations == 0);
}
