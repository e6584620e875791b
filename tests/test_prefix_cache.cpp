// Automatic prefix caching: the block pool alone (exact hits, reference counts, the LRU order,
// generations that retire stale entries), then the engine on the real stories260K weights: a
// request that shares a prefix with an earlier one computes only its suffix, and every output is
// the same with the cache on and off, at TP and PP sizes above 1 and under preemption.
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "tpkit/engine/engine.hpp"
#include "tpkit/kv/block_pool.hpp"

using namespace tpkit;

namespace {
const std::string kModels = TPKIT_TEST_MODELS;
const std::string kBin = kModels + "/stories260K/stories260K.bin";
const std::string kTokenizer = kModels + "/stories260K/tok512.bin";

std::vector<std::int32_t> iota(std::int32_t first, std::size_t n) {
  std::vector<std::int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

// Allocates and caches the blocks of `tokens` (whole blocks of 4), as a sequence would; returns them.
std::vector<std::int32_t> fill(BlockPool& pool, const std::vector<std::int32_t>& tokens) {
  std::vector<std::int32_t> blocks;
  for (std::size_t i = 0; i + 4 <= tokens.size(); i += 4) {
    const std::int32_t b = pool.allocate();
    REQUIRE(b >= 0);
    pool.cache(b, blocks.empty() ? -1 : blocks.back(), tokens.data() + i);
    blocks.push_back(b);
  }
  return blocks;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

std::string story(int sentences) {
  const char* kSentences[] = {"Once upon a time there was a little girl named Lily. ",
                              "She liked to play in the park with her big red ball. ",
                              "One day she saw a dog under a tree. ", "The dog was sad and alone. "};
  std::string s;
  for (int i = 0; i < sentences; ++i) s += kSentences[i % 4];
  return s;
}
}  // namespace

TEST_CASE("block pool: a hit needs the same tokens after the same blocks", "[prefix_cache]") {
  BlockPool pool(8, 4, true);
  const std::vector<std::int32_t> a = iota(100, 12);
  const std::vector<std::int32_t> blocks = fill(pool, a);
  REQUIRE(pool.num_cached() == 3);
  CHECK(pool.match(a, 3) == blocks);
  CHECK(pool.match(a, 2) == std::vector<std::int32_t>(blocks.begin(), blocks.begin() + 2));
  std::vector<std::int32_t> b = a;
  b[5] = 7;  // the second block differs: only the first matches
  CHECK(pool.match(b, 3) == std::vector<std::int32_t>{blocks[0]});
  b = a;
  b[0] = 7;  // the first differs: the later blocks, equal as tokens, follow another prefix
  CHECK(pool.match(b, 3).empty());

  BlockPool off(8, 4, false);
  fill(off, a);
  CHECK(off.match(a, 3).empty());
  CHECK(off.num_cached() == 0);
}

TEST_CASE("block pool: hits are exact even when every key collides", "[prefix_cache]") {
  struct Collide {
    std::uint64_t operator()(std::int32_t, std::uint64_t, const std::int32_t*, std::int64_t) const { return 42; }
  };
  BasicBlockPool<Collide> pool(16, 4, true);
  const std::vector<std::int32_t> a = iota(100, 12), b = iota(200, 12);
  std::vector<std::int32_t> blocks_a, blocks_b;
  for (std::size_t i = 0; i < 12; i += 4) {
    blocks_a.push_back(pool.allocate());
    pool.cache(blocks_a.back(), i ? blocks_a[i / 4 - 1] : -1, a.data() + i);
    blocks_b.push_back(pool.allocate());
    pool.cache(blocks_b.back(), i ? blocks_b[i / 4 - 1] : -1, b.data() + i);
  }
  CHECK(pool.match(a, 3) == blocks_a);
  CHECK(pool.match(b, 3) == blocks_b);
  std::vector<std::int32_t> c = b;  // a's first block, then b's tokens: b's blocks follow another parent
  std::copy(a.begin(), a.begin() + 4, c.begin());
  CHECK(pool.match(c, 3) == std::vector<std::int32_t>{blocks_a[0]});
}

TEST_CASE("block pool: shared blocks are counted, released cached blocks wait in LRU order", "[prefix_cache]") {
  BlockPool pool(4, 4, true);
  const std::vector<std::int32_t> a = iota(0, 8), b = iota(50, 8);
  const std::vector<std::int32_t> blocks_a = fill(pool, a);  // blocks 0, 1
  REQUIRE(pool.match(a, 2) == blocks_a);                     // shared: two references each
  for (std::int32_t x : blocks_a) pool.release(x);
  CHECK(pool.num_free() == 2);  // still held by the match
  for (auto it = blocks_a.rbegin(); it != blocks_a.rend(); ++it) pool.release(*it);
  CHECK(pool.num_free() == 4);
  CHECK(pool.num_cached() == 2);
  CHECK_THROWS_AS(pool.release(blocks_a[0]), InvalidArgument);  // a double free is refused

  // New content takes never-cached blocks first, then the least recently released cached one.
  const std::vector<std::int32_t> blocks_b = fill(pool, b);  // blocks 2, 3
  CHECK(pool.num_cached() == 4);
  const std::int32_t reused = pool.allocate();
  CHECK(reused == blocks_a[1]);         // released first (a sequence releases its last block first)
  CHECK(pool.match(a, 2).size() == 1);  // a's first block is still there
  pool.release(blocks_a[0]);
  // Reusing a's first block retires every entry made after it: a's second block, cached again
  // under the old first block, must not be found behind new content.
  pool.cache(reused, blocks_a[0], a.data() + 4);
  const std::int32_t first_again = pool.allocate();
  CHECK(first_again == blocks_a[0]);
  CHECK(pool.match(a, 2).empty());
  (void)blocks_b;
}

TEST_CASE("block pool: a block's new content retires what was cached after its old content", "[prefix_cache]") {
  // Two sequences admitted together compute the same first block twice; the second copy stays
  // uncached, but the block after it is cached behind it. When that copy is freed and filled with
  // other tokens, the block behind it must not be found after the new tokens.
  BlockPool pool(4, 4, true);
  const std::vector<std::int32_t> x = iota(10, 4), y = iota(20, 4), z = iota(30, 4);
  const std::int32_t first = pool.allocate(), copy = pool.allocate(), after = pool.allocate();
  pool.cache(first, -1, x.data());
  pool.cache(copy, -1, x.data());  // an equal block is cached: the copy stays uncached
  pool.cache(after, copy, y.data());
  pool.release(after);
  pool.release(copy);  // uncached: back to the free list
  const std::int32_t reused = pool.allocate();
  REQUIRE(reused == copy);
  pool.cache(reused, -1, z.data());
  std::vector<std::int32_t> zy = z;
  zy.insert(zy.end(), y.begin(), y.end());
  CHECK(pool.match(zy, 2) == std::vector<std::int32_t>{reused});
}

TEST_CASE("prefix cache: a generate() whose callback throws ends its requests and leaves the engine usable",
          "[prefix_cache][engine]") {
  for (const int tp : {1, 2}) {
    EngineOptions options;
    options.tokenizer = kTokenizer;
    options.tp_size = tp;
    options.num_kv_blocks = 8;  // the thrown request's blocks would starve the next one if leaked
    options.comm.timeout = std::chrono::milliseconds(3000);
    Engine engine(kBin, options);
    Engine fresh(kBin, options);
    const std::vector<std::string> first = {story(4)}, second = {story(3) + "Tom"};
    CHECK_THROWS_WITH(
        engine.generate(first, greedy(16),
                        [](std::size_t, std::int32_t, std::string_view) { throw std::runtime_error("client gone"); }),
        Catch::Contains("client gone"));
    const auto after = engine.generate(second, greedy(16));
    const auto expected = fresh.generate(second, greedy(16));
    INFO("tp " << tp);
    CHECK(after[0].finish_reason == expected[0].finish_reason);
    CHECK(after[0].token_ids == expected[0].token_ids);
  }
}

TEST_CASE("prefix cache: a shared prefix is not computed again, and outputs do not change", "[prefix_cache][engine]") {
  const std::string prefix = story(6);
  const std::vector<std::string> first = {prefix + "Lily went"}, second = {prefix + "The dog ran", prefix + "Sam"};
  EngineOptions options;
  options.tokenizer = kTokenizer;
  Engine cached(kBin, options);
  options.enable_prefix_caching = false;
  Engine plain(kBin, options);

  const auto a1 = cached.generate(first, greedy(8));
  CHECK(cached.last_stats().prefix_cache_hits == 0);
  const auto a2 = cached.generate(second, greedy(8));
  const GenerationStats warm = cached.last_stats();
  const auto b1 = plain.generate(first, greedy(8));
  const auto b2 = plain.generate(second, greedy(8));
  const GenerationStats none = plain.last_stats();

  // Each later prompt reuses the whole 16-token blocks it shares with the first (its tokens may
  // part from the first's a little before the text does, where the suffix merges), never its
  // last token.
  const auto ids = [&](const std::string& text) { return cached.tokenizer().encode(text, {true, false}); };
  const std::vector<std::int32_t> first_ids = ids(first[0]);
  std::int64_t expected = 0;
  for (const std::string& p : second) {
    const std::vector<std::int32_t> mine = ids(p);
    std::int64_t common = 0;
    while (common < std::int64_t(std::min(mine.size(), first_ids.size())) &&
           mine[std::size_t(common)] == first_ids[std::size_t(common)])
      ++common;
    expected += std::min(common / 16, (std::int64_t(mine.size()) - 1) / 16) * 16;
  }
  REQUIRE(expected >= 2 * 48);
  CHECK(warm.prefix_cache_hits == expected);
  CHECK(warm.computed_tokens == none.computed_tokens - expected);
  CHECK(none.prefix_cache_hits == 0);
  REQUIRE(a1[0].token_ids == b1[0].token_ids);
  REQUIRE(a2[0].token_ids == b2[0].token_ids);
  REQUIRE(a2[1].token_ids == b2[1].token_ids);
  CHECK(a2[0].text == b2[0].text);
}

TEST_CASE("prefix cache: the same tokens on and off at TP 2 x PP 2, in one batch and under preemption",
          "[prefix_cache][engine]") {
  const std::string prefix = story(5);
  std::vector<std::string> prompts;
  for (const char* end : {"Lily", "The dog", "She saw", "One day", "Lily", "Tom and"}) prompts.push_back(prefix + end);
  prompts.push_back(story(3));  // a prefix of the others' prefix
  for (const bool small_cache : {false, true}) {
    std::vector<std::vector<std::int32_t>> outputs[2];
    for (const bool caching : {true, false}) {
      EngineOptions options;
      options.tokenizer = kTokenizer;
      options.tp_size = 2;
      options.pp_size = 2;
      options.enable_prefix_caching = caching;
      options.max_num_batched_tokens = 64;          // chunked prefill
      if (small_cache) options.num_kv_blocks = 24;  // 12 per micro-batch: sequences are preempted
      Engine engine(kBin, options);
      for (int round = 0; round < 2; ++round)
        for (const auto& r : engine.generate(prompts, greedy(24))) outputs[caching].push_back(r.token_ids);
      if (caching && !small_cache) CHECK(engine.last_stats().prefix_cache_hits > 0);
      if (small_cache) CHECK(engine.last_stats().preemptions > 0);
    }
    INFO("small cache: " << small_cache);
    REQUIRE(outputs[1] == outputs[0]);
  }
}
