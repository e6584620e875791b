// Tensor views, host buffers and the shard arithmetic every layer relies on.
#include <numeric>
#include <set>

#include "catch.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/parallel/shard.hpp"

using namespace tpkit;

TEST_CASE("tensor views carry shape, strides and memory kind", "[tensor]") {
  HostBuffer<float> buf(24);
  std::iota(buf.begin(), buf.end(), 0.0f);
  REQUIRE(reinterpret_cast<std::uintptr_t>(buf.data()) % 64 == 0);
  auto v = buf.view({4, 6});
  REQUIRE(v.rank() == 2);
  REQUIRE(v.stride(0) == 6);
  REQUIRE(v.is_contiguous());
  REQUIRE(v(2, 3) == 15.0f);
  auto r = v.rows(1, 3);
  REQUIRE(r.size(0) == 2);
  REQUIRE(r(0, 0) == 6.0f);
  TensorView<const float> c = v;
  REQUIRE(c.memory() == MemoryKind::host);
  TensorView<float> strided(buf.data(), {3, 4}, {8, 1});
  REQUIRE_FALSE(strided.is_contiguous());
  REQUIRE(strided.has_contiguous_rows());
  RawTensorView raw(c);
  REQUIRE(raw.dtype() == DType::f32);
  REQUIRE(raw.load(3, 5) == 23.0f);
  REQUIRE_THROWS_AS(buf.view({5, 6}), InvalidArgument);
  REQUIRE_THROWS_AS(v.rows(2, 5), InvalidArgument);
  REQUIRE_THROWS_AS(v.size(2), InvalidArgument);
}

TEST_CASE("raw views read every floating dtype as float", "[tensor]") {
  const std::vector<bfloat16> b = {bfloat16(1.5f), bfloat16(-2.0f)};
  const std::vector<half> h = {half(0.25f), half(3.0f)};
  const std::vector<double> d = {1e-3, 7.0};
  REQUIRE(RawTensorView(b.data(), DType::bf16, {2}).load(1) == -2.0f);
  REQUIRE(RawTensorView(h.data(), DType::f16, {2}).load(0) == 0.25f);
  REQUIRE(RawTensorView(d.data(), DType::f64, {1, 2}).load(0, 1) == 7.0f);
}

TEST_CASE("balanced splits cover a dimension exactly once", "[shard]") {
  for (std::int64_t total : {1, 7, 64, 172, 509, 512}) {
    for (int tp = 1; tp <= 8; ++tp) {
      if (tp > total) continue;
      std::int64_t next = 0, largest = 0, smallest = total;
      for (int r = 0; r < tp; ++r) {
        const Range part = split_dimension(total, {r, tp});
        REQUIRE(part.begin == next);
        next = part.end;
        largest = std::max(largest, part.size());
        smallest = std::min(smallest, part.size());
      }
      REQUIRE(next == total);
      REQUIRE(largest - smallest <= 1);
    }
  }
  REQUIRE(split_dimension(12, {1, 2}, 4) == Range{8, 12});  // 3 units of 4: ranks get 2 and 1
  REQUIRE_THROWS_AS(split_dimension(10, {0, 2}, 4), InvalidArgument);
  REQUIRE_THROWS_AS(split_dimension(3, {0, 4}), InvalidArgument);
}

TEST_CASE("head partitions: every query head once, with the KV heads it reads", "[shard]") {
  struct Case {
    int q, kv;
  };
  for (Case c : {Case{8, 4}, Case{28, 4}, Case{14, 2}, Case{32, 8}, Case{12, 12}, Case{6, 1}}) {
    for (int tp = 1; tp <= std::min(8, c.q); ++tp) {
      std::set<int> seen;
      for (int r = 0; r < tp; ++r) {
        const HeadPartition p = partition_heads(c.q, c.kv, {r, tp});
        REQUIRE(p.local_q_heads() >= 1);
        for (int lq = 0; lq < p.local_q_heads(); ++lq) {
          const int global_q = int(p.q_heads.begin) + lq;
          REQUIRE(seen.insert(global_q).second);
          const int global_kv = global_q / (c.q / c.kv);  // the GQA rule, written independently
          REQUIRE(p.kv_heads.contains(global_kv));
          REQUIRE(p.local_kv_for(lq) == global_kv - p.kv_heads.begin);
        }
        // No KV head is held that no local query head reads.
        REQUIRE(p.kv_heads.begin == p.q_heads.begin / (c.q / c.kv));
        REQUIRE(p.kv_heads.end - 1 == (p.q_heads.end - 1) / (c.q / c.kv));
      }
      REQUIRE(int(seen.size()) == c.q);
    }
  }
  // Qwen2-7B at TP 8: 28 query heads as 4,4,4,4,3,3,3,3.
  std::vector<int> sizes;
  for (int r = 0; r < 8; ++r) sizes.push_back(partition_heads(28, 4, {r, 8}).local_q_heads());
  REQUIRE(sizes == std::vector<int>{4, 4, 4, 4, 3, 3, 3, 3});
}

TEST_CASE("vocab partitions pad evenly and own every real id once", "[shard]") {
  for (std::int64_t vocab : {1, 5, 509, 512, 32000, 151936}) {
    for (int tp = 1; tp <= 8; ++tp) {
      std::int64_t next = 0;
      const auto rows = vocab_rows_per_rank(partition_vocab(vocab, {0, tp}), tp);
      for (int r = 0; r < tp; ++r) {
        const VocabPartition p = partition_vocab(vocab, {r, tp});
        REQUIRE(p.rows_per_rank % 16 == 0);
        REQUIRE(p.padded_vocab_size == p.rows_per_rank * tp);
        REQUIRE(p.padded_vocab_size >= vocab);
        REQUIRE(p.ids.begin == std::min(vocab, next));
        REQUIRE(p.local_real_rows() == rows[std::size_t(r)]);
        next = std::max(next, p.ids.end);
      }
      REQUIRE(next == vocab);
    }
  }
}

TEST_CASE("shard specs reject impossible ranks and sizes", "[shard][errors]") {
  REQUIRE_THROWS_AS(ShardSpec(2, 2), InvalidArgument);
  REQUIRE_THROWS_AS(ShardSpec(-1, 2), InvalidArgument);
  REQUIRE_THROWS_AS(ShardSpec(0, 0), InvalidArgument);
  REQUIRE_THROWS_WITH(partition_heads(8, 4, {0, 9}), Catch::Contains("tp_size (9) exceeds num_q_heads (8)"));
  REQUIRE_THROWS_WITH(partition_heads(10, 4, {0, 2}), Catch::Contains("num_q_heads (10)"));
  REQUIRE_THROWS_WITH(ShardSpec(3, 2), Catch::Contains("rank 3 is out of range for tp_size 2"));
}
