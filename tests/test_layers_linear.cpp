// Column-parallel, row-parallel and replicated linear layers at TP 1..8 equal the unsharded
// float64 product (on the same T-rounded inputs) within test::linear_tolerance.
#include <mutex>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/layers/linear.hpp"

using namespace tpkit;

namespace {
struct Problem {
  int batch, in, out;
  std::vector<float> w, bias, x;
  ref::DenseResult expected;
};
template <class T>
Problem make_problem(int batch, int in, int out, bool with_bias, std::uint64_t seed) {
  ref::Rng rng(seed);
  Problem p{batch, in, out, rng.uniform_vector(std::size_t(out) * in), {}, rng.uniform_vector(std::size_t(batch) * in),
            {}};
  if (with_bias) p.bias = rng.uniform_vector(std::size_t(out));
  p.expected = ref::linear(test::rounded<T>(p.x), test::rounded<T>(p.w), test::rounded<T>(p.bias), batch, out, in);
  return p;
}
RawTensorView bias_view(const Problem& p) { return p.bias.empty() ? RawTensorView{} : test::raw(p.bias, p.out); }
}  // namespace

TEMPLATE_TEST_CASE("ColumnParallelLinear equals the unsharded product", "[layers][column]", float, bfloat16, half) {
  using T = TestType;
  const int tp = GENERATE(range(1, 9));
  const int batch = GENERATE(1, 17);
  const bool gather = GENERATE(false, true);
  const bool with_bias = GENERATE(false, true);
  // 64 -> 172: the stories260K MLP shape; 172 is not divisible by 3, 5, 6, 7 or 8.
  const Problem p = make_problem<T>(batch, 64, 172, with_bias, 100 + std::uint64_t(tp * 4 + batch));
  std::vector<std::vector<T>> outputs(static_cast<std::size_t>(tp));
  std::vector<Range> ranges(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    ColumnParallelLinear<T> layer(test::raw(p.w, p.out, p.in), bias_view(p), {comm.rank(), tp}, {gather});
    const auto x = test::to_storage<T>(p.x);
    std::vector<T> y(std::size_t(batch * layer.output_width()));
    layer.forward(comm, TensorView<const T>(x.data(), {batch, p.in}),
                  TensorView<T>(y.data(), {batch, layer.output_width()}));
    outputs[std::size_t(comm.rank())] = std::move(y);
    ranges[std::size_t(comm.rank())] = layer.output_range();
  });
  std::vector<double> assembled(std::size_t(batch * p.out));
  std::int64_t next = 0;
  for (int r = 0; r < tp; ++r) {
    const Range range = ranges[std::size_t(r)];
    REQUIRE(range.begin == next);  // the ranks' output columns tile [0, out)
    next = range.end;
    for (int b = 0; b < batch; ++b)
      for (std::int64_t n = range.begin; n < range.end; ++n) {
        const T v = gather ? outputs[std::size_t(r)][std::size_t(b * p.out + n)]
                           : outputs[std::size_t(r)][std::size_t(b * range.size() + n - range.begin)];
        assembled[std::size_t(b * p.out + n)] = test::as_double(v);
      }
    if (gather)
      REQUIRE(std::memcmp(outputs[std::size_t(r)].data(), outputs[0].data(), outputs[0].size() * sizeof(T)) == 0);
  }
  REQUIRE(next == p.out);
  const auto c = test::compare<T>(assembled, p.expected, p.in, tp, 1);
  INFO(test::type_name<T>() << " tp " << tp << " batch " << batch << ": " << c.worst);
  REQUIRE(c.violations == 0);
}

TEMPLATE_TEST_CASE("RowParallelLinear equals the unsharded product", "[layers][row]", float, bfloat16, half) {
  using T = TestType;
  const int tp = GENERATE(range(1, 9));
  const int batch = GENERATE(1, 17);
  const bool input_is_parallel = GENERATE(true, false);
  const bool with_bias = GENERATE(false, true);
  // 172 -> 64: the stories260K down projection; in_features split unevenly.
  const Problem p = make_problem<T>(batch, 172, 64, with_bias, 200 + std::uint64_t(tp * 4 + batch));
  std::vector<std::vector<T>> outputs(static_cast<std::size_t>(tp));
  std::vector<Range> ranges(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    RowParallelOptions options;
    options.input_is_parallel = input_is_parallel;
    RowParallelLinear<T> layer(test::raw(p.w, p.out, p.in), bias_view(p), {comm.rank(), tp}, options);
    const Range in = layer.input_range();
    std::vector<float> x_local;  // what the previous (column-parallel) layer would hand this rank
    for (int b = 0; b < batch; ++b)
      for (std::int64_t k = input_is_parallel ? in.begin : 0; k < (input_is_parallel ? in.end : p.in); ++k)
        x_local.push_back(p.x[std::size_t(b * p.in + k)]);
    const auto x = test::to_storage<T>(x_local);
    std::vector<T> y(std::size_t(batch * p.out));
    layer.forward(comm, TensorView<const T>(x.data(), {batch, layer.input_width()}),
                  TensorView<T>(y.data(), {batch, p.out}));
    outputs[std::size_t(comm.rank())] = std::move(y);
    ranges[std::size_t(comm.rank())] = in;
  });
  std::int64_t next = 0;
  for (int r = 0; r < tp; ++r) {
    REQUIRE(ranges[std::size_t(r)].begin == next);
    next = ranges[std::size_t(r)].end;
    // The all-reduce is deterministic: every rank holds the same bits.
    REQUIRE(std::memcmp(outputs[std::size_t(r)].data(), outputs[0].data(), outputs[0].size() * sizeof(T)) == 0);
  }
  REQUIRE(next == p.in);
  std::vector<double> assembled;
  for (T v : outputs[0]) assembled.push_back(test::as_double(v));
  // Roundings to T: the partial sum, the reduced sum, the bias add.
  const auto c = test::compare<T>(assembled, p.expected, p.in, tp, 3);
  INFO(test::type_name<T>() << " tp " << tp << " batch " << batch << ": " << c.worst);
  REQUIRE(c.violations == 0);
}

TEMPLATE_TEST_CASE("ReplicatedLinear equals the unsharded product on every rank", "[layers]", float, bfloat16, half) {
  using T = TestType;
  const int tp = GENERATE(1, 3, 8);
  const int batch = GENERATE(1, 17);
  const Problem p = make_problem<T>(batch, 40, 24, true, 300 + std::uint64_t(tp + batch));
  std::vector<std::vector<T>> outputs(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    ReplicatedLinear<T> layer(test::raw(p.w, p.out, p.in), bias_view(p));
    const auto x = test::to_storage<T>(p.x);
    std::vector<T> y(std::size_t(batch * p.out));
    layer.forward(comm, TensorView<const T>(x.data(), {batch, p.in}), TensorView<T>(y.data(), {batch, p.out}));
    outputs[std::size_t(comm.rank())] = std::move(y);
  });
  for (const auto& out : outputs) {
    std::vector<double> got;
    for (T v : out) got.push_back(test::as_double(v));
    const auto c = test::compare<T>(got, p.expected, p.in, 1, 1);
    INFO(c.worst);
    REQUIRE(c.violations == 0);
  }
}

TEST_CASE("the tolerance is far below the effect of a misplaced slice", "[layers][tolerance]") {
  const Problem p = make_problem<float>(3, 172, 8, false, 5);
  for (double m : p.expected.magnitude) {
    REQUIRE(test::linear_tolerance<float>(m, 172, 8, 3) < 1e-4 * m);
    REQUIRE(test::linear_tolerance<bfloat16>(m, 172, 8, 3) < 0.02 * m);
  }
  // A weight slice read one column off (a classic shard off-by-one) fails in every storage type.
  std::vector<double> shifted(p.expected.y.size());
  for (int b = 0; b < 3; ++b)
    for (int n = 0; n < 8; ++n) {
      double s = 0;
      for (int k = 0; k < 172; ++k)
        s += double(p.x[std::size_t(b * 172 + k)]) * p.w[std::size_t(n * 172 + (k + 1) % 172)];
      shifted[std::size_t(b * 8 + n)] = s;
    }
  REQUIRE(test::compare<float>(shifted, p.expected, 172, 8, 3).violations > 0);
  REQUIRE(test::compare<bfloat16>(shifted, p.expected, 172, 8, 3).violations > 0);
}
