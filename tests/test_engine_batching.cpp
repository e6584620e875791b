// Continuous batching, chunked prefill, preemption, sampling and stop rules of the engine,
// on the real stories260K weights.
#include "catch.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;

namespace {
const std::string kModels = TPKIT_TEST_MODELS;
const std::string kBin = kModels + "/stories260K/stories260K.bin";
const std::string kTokenizer = kModels + "/stories260K/tok512.bin";

const std::vector<std::string> kPrompts = {"Once upon a time", "Lily and Tom", "The little dog",
                                           "One day, a girl named Sue went to the park with her mom and dad", "Sam"};

SamplingParams greedy(int max_tokens = 40) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

std::vector<std::vector<std::int32_t>> tokens_of(const std::vector<GenerationResult>& results) {
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& r : results) out.push_back(r.token_ids);
  return out;
}

std::vector<std::vector<std::int32_t>> run(EngineOptions options, const std::vector<std::string>& prompts,
                                           const SamplingParams& params) {
  options.tokenizer = kTokenizer;
  Engine engine(kBin, options);
  return tokens_of(engine.generate(prompts, params));
}

std::vector<std::vector<std::int32_t>> one_by_one(int tp) {
  EngineOptions options;
  options.tp_size = tp;
  options.tokenizer = kTokenizer;
  Engine engine(kBin, options);
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& p : kPrompts) out.push_back(engine.generate(std::vector<std::string>{p}, greedy())[0].token_ids);
  return out;
}
}  // namespace

TEST_CASE("batched prompts give the same tokens as each prompt alone", "[engine][batching]") {
  const int tp = GENERATE(1, 2, 3);
  const auto alone = one_by_one(tp);
  EngineOptions options;
  options.tp_size = tp;
  REQUIRE(run(options, kPrompts, greedy()) == alone);
  // Two sequence slots: requests join as others leave (continuous batching).
  options.max_num_seqs = 2;
  REQUIRE(run(options, kPrompts, greedy()) == alone);
}

TEST_CASE("chunked prefill gives the same tokens as a single prefill", "[engine][batching]") {
  const auto alone = one_by_one(2);
  for (std::int64_t budget : {1, 3, 7}) {
    EngineOptions options;
    options.tp_size = 2;
    options.max_num_batched_tokens = budget;  // the 16-token prompt needs several steps
    INFO("max_num_batched_tokens " << budget);
    REQUIRE(run(options, kPrompts, greedy()) == alone);
  }
}

TEST_CASE("a long prefill capped per step lets the requests behind it start, tokens unchanged", "[engine][batching]") {
  // The scheduler: a 200-token prompt takes 16 tokens a step, and the 10-token prompt queued behind
  // it starts in the same step instead of waiting for the long one's whole prefill.
  BlockPool pool(64, 16, false);
  Scheduler scheduler({8, 64, 0, 16}, pool);
  Sequence long_one, short_one;
  long_one.tokens.assign(200, 7), long_one.prompt_length = 200;
  short_one.tokens.assign(10, 9), short_one.prompt_length = 10;
  scheduler.add(&long_one);
  scheduler.add(&short_one);
  std::vector<ScheduledChunk> step;
  scheduler.schedule(step);
  REQUIRE(step.size() == 2);
  CHECK(step[0].sequence == &long_one);
  CHECK(step[0].count == 16);
  CHECK(step[1].sequence == &short_one);
  CHECK(step[1].count == 10);
  CHECK(step[1].samples);
  scheduler.complete(step);
  short_one.tokens.push_back(3);  // its sampled token: next step it decodes beside the long prefill
  scheduler.schedule(step);
  REQUIRE(step.size() == 2);
  CHECK(step[0].count == 16);
  CHECK(step[1].count == 1);
  // The engine: the same tokens with any cap.
  const auto alone = one_by_one(2);
  for (std::int64_t cap : {1, 4, 100}) {
    EngineOptions options;
    options.tp_size = 2;
    options.max_num_batched_tokens = 8;
    options.long_prefill_token_threshold = cap;
    INFO("long_prefill_token_threshold " << cap);
    REQUIRE(run(options, kPrompts, greedy()) == alone);
  }
}

TEST_CASE("running out of KV blocks preempts and recomputes without changing tokens", "[engine][batching]") {
  const auto alone = one_by_one(2);
  EngineOptions options;
  options.tp_size = 2;
  options.block_size = 4;
  options.num_kv_blocks = 24;  // 96 token slots for five sequences of up to 56 tokens
  options.tokenizer = kTokenizer;
  Engine engine(kBin, options);
  const auto results = engine.generate(kPrompts, greedy());
  REQUIRE(tokens_of(results) == alone);
  REQUIRE(engine.last_stats().preemptions > 0);
}

TEST_CASE("a request larger than the whole cache ends with an error, the others complete", "[engine][batching]") {
  EngineOptions options;
  options.block_size = 4;
  options.num_kv_blocks = 3;  // 12 slots: the 16-token prompt can never fit
  options.tokenizer = kTokenizer;
  Engine engine(kBin, options);
  const auto results = engine.generate(std::vector<std::string>{kPrompts[3], "Sam"}, greedy(5));
  REQUIRE(results[0].finish_reason.rfind("error:", 0) == 0);
  REQUIRE(results[0].token_ids.empty());
  REQUIRE(results[1].finish_reason == "length");
  REQUIRE(results[1].token_ids.size() == 5);
}

TEST_CASE("temperature 0 and top-k 1 equal greedy, seeded sampling repeats exactly", "[engine][sampling]") {
  const auto expected = one_by_one(1);
  SamplingParams topk1 = greedy();
  topk1.temperature = 0.9f;
  topk1.top_k = 1;
  REQUIRE(run({}, kPrompts, topk1) == expected);

  SamplingParams sampled;
  sampled.temperature = 1.0f;
  sampled.top_p = 0.9f;
  sampled.min_p = 0.05f;
  sampled.top_k = 40;
  sampled.max_tokens = 40;
  sampled.ignore_eos = true;
  sampled.seed = 1234;
  EngineOptions tp2;
  tp2.tp_size = 2;
  const auto a = run({}, kPrompts, sampled), b = run(tp2, kPrompts, sampled);
  REQUIRE(a == b);  // same seed, same tokens, whatever the TP size
  REQUIRE(a != expected);
  sampled.seed = 99;
  REQUIRE(run({}, kPrompts, sampled) != a);
}

TEST_CASE("sampling follows the requested distribution", "[engine][sampling]") {
  // Three candidates with probabilities 0.5, 0.3, 0.2 at temperature 1.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler;
  SamplingParams p;
  p.temperature = 1.0f;
  std::mt19937_64 rng(7);
  std::vector<int> counts(3, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[std::size_t(sampler.sample(logits.data(), 3, p, rng))];
  // Binomial standard deviation at n = 20000 is at most 0.0036: allow 5 of them.
  REQUIRE(std::fabs(counts[0] / double(n) - 0.5) < 0.018);
  REQUIRE(std::fabs(counts[1] / double(n) - 0.3) < 0.018);
  // top_p 0.6 keeps {0.5, 0.3}; min_p 0.5 keeps {0.5, 0.3}; top_k 1 keeps {0.5}.
  p.top_p = 0.6f;
  for (int i = 0; i < 2000; ++i) REQUIRE(sampler.sample(logits.data(), 3, p, rng) != 2);
  p.top_p = 1.0f;
  p.min_p = 0.5f;
  for (int i = 0; i < 2000; ++i) REQUIRE(sampler.sample(logits.data(), 3, p, rng) != 2);
  p.min_p = 0.0f;
  p.top_k = 1;
  for (int i = 0; i < 100; ++i) REQUIRE(sampler.sample(logits.data(), 3, p, rng) == 0);
}

TEST_CASE("stop strings, max_tokens and streaming", "[engine][stops]") {
  EngineOptions options;
  options.tp_size = 2;
  options.tokenizer = kTokenizer;
  Engine engine(kBin, options);
  SamplingParams p = greedy(60);
  const auto full = engine.generate(std::vector<std::string>{"Once upon a time"}, p)[0];
  REQUIRE(full.text.find("Lily") != std::string::npos);
  p.stop = {"Lily"};
  std::string streamed;
  const auto cut = engine.generate(std::vector<std::string>{"Once upon a time"}, p,
                                   [&](std::size_t, std::int32_t, std::string_view s) { streamed += s; })[0];
  REQUIRE(cut.finish_reason == "stop");
  REQUIRE(cut.text == full.text.substr(0, full.text.find("Lily")));
  REQUIRE(streamed == cut.text);  // nothing of the stop string was streamed
  REQUIRE(full.finish_reason == "length");
  REQUIRE(full.token_ids.size() == 60);
}

TEST_CASE("the engine rejects bad requests and impossible TP sizes clearly", "[engine][errors]") {
  EngineOptions options;
  options.tp_size = 9;
  REQUIRE_THROWS_WITH(Engine(kBin, options), Catch::Contains("tp_size (9) exceeds num_heads (8)"));
  EngineOptions with_tokenizer;
  with_tokenizer.tokenizer = kTokenizer;
  Engine engine(kBin, with_tokenizer);
  SamplingParams p = greedy(4);
  REQUIRE_THROWS_WITH(engine.generate(std::vector<std::vector<std::int32_t>>{{1, 600}}, {p}),
                      Catch::Contains("token id 600 outside the vocabulary"));
  p.top_p = 0;
  REQUIRE_THROWS_WITH(engine.generate(std::vector<std::string>{"x"}, p), Catch::Contains("top_p must be in (0, 1]"));
}

TEST_CASE("the automatic KV cache size respects kv_cache_bytes", "[engine][kv]") {
  EngineOptions options;
  options.kv_cache_bytes = 64 << 10;  // 64 KiB: 2 * 5 layers * 16 slots * (4 + 1) heads * 8 * 4 B = 25.6 KB a block
  Engine small(kBin, options);
  REQUIRE(small.options().num_kv_blocks == 2);
  REQUIRE(Engine(kBin).options().num_kv_blocks == 16 * 32);  // 16 sequences of 512 positions in 16-token blocks
  options.num_kv_blocks = -1;
  REQUIRE_THROWS_WITH(Engine(kBin, options), Catch::Contains("num_kv_blocks (-1) must be >= 0"));
}

TEST_CASE("threads per rank change neither greedy nor seeded tokens", "[engine][threads]") {
  SamplingParams sampled;
  sampled.temperature = 0.9f, sampled.top_k = 50, sampled.seed = 3, sampled.max_tokens = 30;
  for (int tp : {1, 2}) {
    EngineOptions options;
    options.tp_size = tp;
    options.threads_per_rank = 1;
    const auto greedy_one = run(options, kPrompts, greedy()), sampled_one = run(options, kPrompts, sampled);
    for (int threads : {2, 3}) {
      INFO("tp " << tp << " threads per rank " << threads);
      options.threads_per_rank = threads;
      REQUIRE(run(options, kPrompts, greedy()) == greedy_one);
      REQUIRE(run(options, kPrompts, sampled) == sampled_one);
    }
  }
  EngineOptions automatic;  // 0: this host's cores over its ranks, at least one
  automatic.tp_size = 2;
  REQUIRE(Engine(kBin, automatic).options().threads_per_rank == std::max(1, available_cores() / 2));
  automatic.threads_per_rank = -1;
  REQUIRE_THROWS_WITH(Engine(kBin, automatic), Catch::Contains("threads_per_rank must be in [0, 1024]"));
}
