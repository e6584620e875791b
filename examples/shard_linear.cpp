// The README's example: shard one linear layer over four in-process ranks.
#include <cstdio>
#include <vector>

#include <tpkit/tpkit.hpp>

int main() {
  std::vector<float> weight(512 * 256, 0.01f), x(256, 1.0f);  // full [out, in] weight, one input row
  tpkit::run_mock_ranks(4, [&](tpkit::Communicator<tpkit::MockBackend>& comm) {
    tpkit::ColumnParallelLinear<tpkit::bfloat16> layer(
        tpkit::RawTensorView(weight.data(), tpkit::DType::f32, {512, 256}), /*bias=*/{}, {comm.rank(), comm.size()},
        {/*gather_output=*/true});
    std::vector<tpkit::bfloat16> xb(x.begin(), x.end()), y(512);  // this rank keeps rows 128r..128r+127
    layer.forward(comm, tpkit::TensorView<const tpkit::bfloat16>(xb.data(), {1, 256}),
                  tpkit::TensorView<tpkit::bfloat16>(y.data(), {1, 512}));
    if (comm.rank() == 0) std::printf("y[0] = %g, y[511] = %g\n", float(y[0]), float(y[511]));
  });
}
