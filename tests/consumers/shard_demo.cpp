// A consumer's program: shard a linear layer over two mock ranks and check it against the
// unsharded product. Built by each consumer project (add_subdirectory, FetchContent,
// find_package); exits non-zero on a wrong answer.
#include <cmath>
#include <cstdio>
#include <vector>

#include <tpkit/tpkit.hpp>

int main() {
  const int out = 6, in = 4;
  std::vector<float> w(out * in), x = {1, -2, 3, 0.5f};
  for (int i = 0; i < out * in; ++i) w[i] = float(i % 7) - 3;
  std::vector<float> y(out);
  tpkit::run_mock_ranks(2, [&](tpkit::Communicator<tpkit::MockBackend>& comm) {
    tpkit::ColumnParallelLinear<float> layer(tpkit::RawTensorView(w.data(), tpkit::DType::f32, {out, in}), {},
                                             {comm.rank(), comm.size()}, {/*gather_output=*/true});
    std::vector<float> mine(out);
    layer.forward(comm, tpkit::TensorView<const float>(x.data(), {1, in}),
                  tpkit::TensorView<float>(mine.data(), {1, out}));
    if (comm.rank() == 0) y = mine;
  });
  for (int n = 0; n < out; ++n) {
    float expected = 0;
    for (int k = 0; k < in; ++k) expected += w[n * in + k] * x[k];
    if (std::fabs(y[n] - expected) > 1e-5f) {
      std::printf("row %d: %g != %g\n", n, y[n], expected);
      return 1;
    }
  }
  std::printf("tpkit %d.%d.%d: sharded layer OK\n", TPKIT_VERSION_MAJOR, TPKIT_VERSION_MINOR, TPKIT_VERSION_PATCH);
  return 0;
}
