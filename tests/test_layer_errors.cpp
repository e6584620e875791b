// Bad arguments to layers throw std::invalid_argument-derived errors naming the parameter and
// the values involved.
#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/tpkit.hpp"

using namespace tpkit;

TEST_CASE("impossible TP sizes and ranks", "[errors]") {
  const std::vector<float> wq(64 * 64), wkv(32 * 64);
  const QKVWeights w{test::raw(wq, 64, 64), test::raw(wkv, 32, 64), test::raw(wkv, 32, 64), {}, {}, {}};
  // 8 query heads cannot be spread over 9 ranks.
  REQUIRE_THROWS_WITH(QKVParallelLinear<float>(w, {8, 4, 8}, {0, 9}),
                      Catch::Contains("tp_size (9) exceeds num_q_heads (8)"));
  REQUIRE_THROWS_AS(QKVParallelLinear<float>(w, {8, 4, 8}, {0, 9}), std::invalid_argument);
  REQUIRE_THROWS_WITH(QKVParallelLinear<float>(w, {8, 3, 8}, {0, 2}), Catch::Contains("num_kv_heads (3)"));
  REQUIRE_THROWS_WITH(QKVParallelLinear<float>(w, {8, 4, 16}, {0, 2}),
                      Catch::Contains("q weight has 64 rows; expected 128"));
  REQUIRE_THROWS_WITH(ColumnParallelLinear<float>(test::raw(wq, 64, 64), {}, ShardSpec(4, 4)),
                      Catch::Contains("rank 4 is out of range for tp_size 4"));
  REQUIRE_THROWS_WITH(ColumnParallelLinear<float>(test::raw(wq, 4, 1024), {}, ShardSpec(0, 8)),
                      Catch::Contains("tp_size (8) exceeds the number of out_features units (4"));
}

TEST_CASE("shape, dtype and memory mismatches", "[errors]") {
  const std::vector<float> w(24 * 16), bias(10);
  const std::vector<std::int32_t> ints(24 * 16);
  REQUIRE_THROWS_WITH(ColumnParallelLinear<float>(test::raw(w, 24, 16), test::raw(bias, 10), ShardSpec(0, 2)),
                      Catch::Contains("ColumnParallelLinear bias must have shape [24]"));
  REQUIRE_THROWS_WITH(RowParallelLinear<float>(RawTensorView(ints.data(), DType::i32, {24, 16}), {}, ShardSpec(0, 2)),
                      Catch::Contains("dtype i32"));
  REQUIRE_THROWS_WITH(RowParallelLinear<float>(test::raw(w, 384), {}, ShardSpec(0, 1)), Catch::Contains("must be 2-D"));
  REQUIRE_THROWS_WITH(MergedGateUpLinear<float>(test::raw(w, 24, 16), test::raw(w, 16, 24), ShardSpec(0, 1)),
                      Catch::Contains("up weight has 16 rows; expected 24"));

  // One rank, so Catch2 asserts from a single thread.
  run_mock_ranks(1, [&](Communicator<MockBackend>& comm) {
    ColumnParallelLinear<float> layer(test::raw(w, 24, 16), {}, {0, 1});
    std::vector<float> x(3 * 17), y(3 * 24);
    REQUIRE_THROWS_WITH(
        layer.forward(comm, TensorView<const float>(x.data(), {3, 17}), TensorView<float>(y.data(), {3, 24})),
        Catch::Contains("ColumnParallelLinear input has 17 features; expected 16"));
    REQUIRE_THROWS_WITH(
        layer.forward(comm, TensorView<const float>(x.data(), {3, 16}), TensorView<float>(y.data(), {2, 24})),
        Catch::Contains("output has 2 rows; expected 3"));
    REQUIRE_THROWS_WITH(layer.forward(comm, TensorView<const float>(x.data(), {3, 16}, MemoryKind::device),
                                      TensorView<float>(y.data(), {3, 24})),
                        Catch::Contains("is in device memory but the layer runs on host"));
    // A layer sharded for another rank than the communicator's.
    ColumnParallelLinear<float> other(test::raw(w, 24, 16), {}, {1, 2});
    REQUIRE_THROWS_WITH(
        other.forward(comm, TensorView<const float>(x.data(), {3, 16}), TensorView<float>(y.data(), {3, 12})),
        Catch::Contains("was sharded for rank 1 of tp_size 2 but runs on rank 0 of a group of 1"));
  });
}
