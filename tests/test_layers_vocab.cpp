// VocabParallelEmbedding and ParallelLMHead (tied and untied; full logits and sharded greedy)
// at TP 1..8 with vocabularies TP does not divide.
#include <cstring>

#include "catch.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/layers/embedding.hpp"

using namespace tpkit;

TEMPLATE_TEST_CASE("VocabParallelEmbedding returns each token's row exactly", "[layers][vocab]", float, bfloat16,
                   half) {
  using T = TestType;
  const int tp = GENERATE(range(1, 9));
  const int count = GENERATE(1, 17);
  const int vocab = GENERATE(509, 512);  // 509 is prime: no TP size > 1 divides it
  const int H = 64;
  ref::Rng rng(600 + std::uint64_t(tp * 4 + count + vocab));
  const auto table = rng.uniform_vector(std::size_t(vocab) * H);
  std::vector<std::int32_t> ids = {0, vocab - 1};
  while (int(ids.size()) < count) ids.push_back(std::int32_t(rng.next() % std::uint64_t(vocab)));
  ids.resize(std::size_t(count));
  std::vector<std::vector<T>> outs(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    VocabParallelEmbedding<T> emb(test::raw(table, vocab, H), {comm.rank(), tp});
    std::vector<T> y(std::size_t(count * H));
    emb.forward(comm, ids.data(), count, TensorView<T>(y.data(), {count, H}));
    outs[std::size_t(comm.rank())] = std::move(y);
  });
  // One non-zero term per element, zeros elsewhere: the sum is exact, so the rows are bitwise.
  for (const auto& out : outs)
    for (int i = 0; i < count; ++i)
      for (int d = 0; d < H; ++d) {
        const T expected(table[std::size_t(ids[std::size_t(i)]) * H + std::size_t(d)]);
        REQUIRE(std::memcmp(&out[std::size_t(i * H + d)], &expected, sizeof(T)) == 0);
      }
}

TEMPLATE_TEST_CASE("ParallelLMHead logits and greedy tokens equal the unsharded head", "[layers][lm_head]", float,
                   bfloat16, half) {
  using T = TestType;
  const int tp = GENERATE(range(1, 9));
  const int batch = GENERATE(1, 17);
  const bool tied = GENERATE(true, false);
  const int vocab = 509, H = 64;
  ref::Rng rng(700 + std::uint64_t(tp * 4 + batch));
  const auto table = rng.uniform_vector(std::size_t(vocab) * H);
  const auto hidden = rng.uniform_vector(std::size_t(batch) * H);
  const auto expected = ref::linear(test::rounded<T>(hidden), test::rounded<T>(table), {}, batch, vocab, H);

  std::vector<std::vector<float>> logits(static_cast<std::size_t>(tp));
  std::vector<std::vector<std::int32_t>> greedy(static_cast<std::size_t>(tp));
  run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
    const ShardSpec shard{comm.rank(), tp};
    VocabParallelEmbedding<T> emb(test::raw(table, vocab, H), shard);
    ParallelLMHead<T> head =
        tied ? ParallelLMHead<T>::tied_to(emb) : ParallelLMHead<T>(test::raw(table, vocab, H), shard);
    const auto hs = test::to_storage<T>(hidden);
    std::vector<float> out(std::size_t(batch * vocab));
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(batch));
    const TensorView<const T> h(hs.data(), {batch, H});
    head.forward(comm, h, TensorView<float>(out.data(), {batch, vocab}));
    head.greedy(comm, h, tokens.data());
    logits[std::size_t(comm.rank())] = std::move(out);
    greedy[std::size_t(comm.rank())] = std::move(tokens);
  });
  std::vector<double> got(logits[0].begin(), logits[0].end());
  const auto c = test::compare<float>(got, expected, H, 1, 0);  // float logits: no 16-bit rounding
  INFO(test::type_name<T>() << " tp " << tp << ": " << c.worst);
  REQUIRE(c.violations == 0);
  for (int r = 0; r < tp; ++r) {
    REQUIRE(logits[std::size_t(r)] == logits[0]);
    REQUIRE(greedy[std::size_t(r)] == greedy[0]);
  }
  for (int b = 0; b < batch; ++b) {
    // The sharded argmax is the argmax of the full logits (first index on ties) ...
    const float* row = logits[0].data() + std::size_t(b * vocab);
    REQUIRE(greedy[0][std::size_t(b)] == std::int32_t(std::max_element(row, row + vocab) - row));
    // ... and of the float64 logits wherever the top two are further apart than the error bound.
    const double* ref_row = expected.y.data() + std::size_t(b * vocab);
    const int best = int(std::max_element(ref_row, ref_row + vocab) - ref_row);
    double second = -1e300;
    for (int v = 0; v < vocab; ++v)
      if (v != best) second = std::max(second, ref_row[v]);
    const double margin = 2 * test::linear_tolerance<float>(expected.magnitude[std::size_t(b * vocab + best)], H, 1, 0);
    if (ref_row[best] - second > margin) REQUIRE(greedy[0][std::size_t(b)] == best);
  }
}

TEST_CASE("greedy breaks exact ties toward the lowest id across ranks", "[layers][lm_head]") {
  const int vocab = 300, H = 8;
  std::vector<float> table(std::size_t(vocab) * H, 0.0f);
  for (int d = 0; d < H; ++d) {
    table[std::size_t(250 * H + d)] = 1.0f;  // rows 250 and 40 are identical and the largest
    table[std::size_t(40 * H + d)] = 1.0f;
  }
  const std::vector<float> hidden(H, 1.0f);
  for (int tp = 1; tp <= 8; ++tp) {
    std::vector<std::int32_t> got(static_cast<std::size_t>(tp));
    run_mock_ranks(tp, [&](Communicator<MockBackend>& comm) {
      ParallelLMHead<float> head(test::raw(table, vocab, H), {comm.rank(), tp});
      std::int32_t token = -1;
      head.greedy(comm, TensorView<const float>(hidden.data(), {1, H}), &token);
      got[std::size_t(comm.rank())] = token;
    });
    for (std::int32_t t : got) REQUIRE(t == 40);
  }
}

TEST_CASE("token ids outside the vocabulary are an error on every rank, not a hang", "[layers][vocab][errors]") {
  const std::vector<float> table(100 * 4, 1.0f);
  for (std::int32_t bad : {-1, 100, 1 << 30}) {
    MockOptions o;
    o.timeout = std::chrono::milliseconds(2000);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE_THROWS_WITH(
        run_mock_ranks(
            3,
            [&](Communicator<MockBackend>& comm) {
              VocabParallelEmbedding<float> emb(test::raw(table, 100, 4), {comm.rank(), 3});
              std::vector<std::int32_t> ids = {5, bad};
              std::vector<float> y(8);
              emb.forward(comm, ids.data(), 2, TensorView<float>(y.data(), {2, 4}));
            },
            o),
        Catch::Contains("token id " + std::to_string(bad) + " at position 1 is outside the vocabulary [0, 100)"));
    REQUIRE(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1500));
  }
}
