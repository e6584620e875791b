// The running engine (engine/control.hpp, EngineRank::serve): requests submitted while others
// generate give exactly what they give alone, streams concatenate to the whole result, aborts
// and shutdowns end what they say and free the KV cache, an idle engine outlives its collective
// timeout, and a rank that fails ends every request in flight with an error that names it,
// after which the engine serves again. The reference is generate() on an engine of its own
// (itself checked against float64 in test_engine_stories).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "catch.hpp"
#include "stories.hpp"
#include "tpkit/engine/engine.hpp"

using namespace tpkit;
using namespace std::chrono_literals;
using stories::kBin, stories::kTokenizer, stories::kPrompts;

namespace {

// Collects one request's outputs as they arrive on the engine's thread.
struct Stream {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<RequestOutput> outputs;
  std::vector<std::int32_t> tokens;
  std::string text;
  bool finished = false;

  OutputCallback callback() {
    return [this](const RequestOutput& out) {
      std::lock_guard<std::mutex> lock(mutex);
      outputs.push_back(out);
      tokens.insert(tokens.end(), out.token_ids.begin(), out.token_ids.end());
      text += out.text;
      finished = out.finished;
      changed.notify_all();
    };
  }
  // Waits (bounded) until `n` tokens arrived or the request finished.
  void wait_tokens(std::size_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    REQUIRE(changed.wait_for(lock, 60s, [&] { return tokens.size() >= n || finished; }));
  }
  const RequestOutput& last() {
    std::unique_lock<std::mutex> lock(mutex);
    REQUIRE(changed.wait_for(lock, 60s, [&] { return finished; }));
    return outputs.back();
  }
};

EngineOptions options(int tp, int pp) {
  EngineOptions o;
  o.tp_size = tp, o.pp_size = pp;
  o.tokenizer = kTokenizer;
  return o;
}

SamplingParams sampled(std::uint64_t seed, int tokens) {
  SamplingParams p = stories::greedy(tokens);
  p.temperature = 0.9f, p.top_p = 0.9f, p.seed = seed;
  return p;
}

// Waits (bounded) until the engine's status satisfies `ok`.
template <class Ok>
EngineStatus wait_status(const Engine& engine, Ok ok) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    const EngineStatus s = engine.status();
    if (ok(s)) return s;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(2ms);
  }
}

}  // namespace

TEST_CASE("the control message survives its encoding, and a corrupt one is refused", "[engine][service]") {
  engine_detail::ControlMessage m;
  SamplingParams p = sampled(42, 17);
  p.stop = {"x", "stop here"};
  p.stop_token_ids = {3, 9};
  p.min_p = 0.05f, p.top_k = 7, p.skip_special_tokens = false;
  m.added.push_back({7, {1, 2, 3}, p, 42, {4, 5}});
  m.added.push_back({8, {5}, stories::greedy(3), 0, {}});
  m.aborted = {1, 99};
  const std::vector<std::uint8_t> bytes = m.encode();
  const auto back =
      engine_detail::ControlMessage::decode(engine_detail::ControlMessage::run, bytes.data(), bytes.size());
  REQUIRE(back.added.size() == 2);
  CHECK(back.added[0].id == 7);
  CHECK(back.added[0].prompt == std::vector<std::int32_t>{1, 2, 3});
  CHECK(back.added[0].seed == 42);
  const SamplingParams& q = back.added[0].params;
  CHECK(q.temperature == p.temperature);
  CHECK(q.top_p == p.top_p);
  CHECK(q.top_k == 7);
  CHECK(q.min_p == p.min_p);
  CHECK(q.max_tokens == 17);
  CHECK(q.ignore_eos);
  CHECK_FALSE(q.skip_special_tokens);
  CHECK(q.stop == p.stop);
  CHECK(q.stop_token_ids == p.stop_token_ids);
  CHECK(back.added[0].generated == std::vector<std::int32_t>{4, 5});
  CHECK(back.added[1].prompt == std::vector<std::int32_t>{5});
  CHECK(back.added[1].generated.empty());
  CHECK(back.aborted == m.aborted);
  for (std::size_t cut : {std::size_t(1), bytes.size() / 2, bytes.size() - 1})
    CHECK_THROWS_AS(engine_detail::ControlMessage::decode(engine_detail::ControlMessage::run, bytes.data(), cut),
                    FormatError);
  std::vector<std::uint8_t> longer = bytes;
  longer.push_back(0);
  CHECK_THROWS_WITH(
      engine_detail::ControlMessage::decode(engine_detail::ControlMessage::run, longer.data(), longer.size()),
      Catch::Contains("trailing"));
  std::vector<std::uint8_t> huge = bytes;
  huge[0] = 0xff, huge[7] = 0x7f;  // a request count far beyond the message
  CHECK_THROWS_WITH(engine_detail::ControlMessage::decode(engine_detail::ControlMessage::run, huge.data(), huge.size()),
                    Catch::Contains("overruns"));
}

TEST_CASE("requests that join a running engine get what they get alone, streamed", "[engine][service]") {
  const auto [tp, pp] = GENERATE(std::pair{1, 1}, std::pair{2, 1}, std::pair{2, 2});
  INFO("tp " << tp << " x pp " << pp);
  // Alone: each request on a fresh engine of its own, one at a time.
  const std::vector<SamplingParams> params = {stories::greedy(90), sampled(5, 40), stories::greedy(25), sampled(11, 60),
                                              stories::greedy(48)};
  std::vector<GenerationResult> alone;
  {
    Engine reference(kBin, options(1, 1));
    for (std::size_t i = 0; i < kPrompts.size(); ++i) alone.push_back(reference.generate({kPrompts[i]}, params[i])[0]);
  }
  Engine engine(kBin, options(tp, pp));
  std::vector<Stream> streams(kPrompts.size());
  // The first starts alone; each next one joins once the previous one has streamed a few tokens.
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    engine.submit(kPrompts[i], params[i], streams[i].callback());
    streams[i].wait_tokens(3);
  }
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    INFO("request " << i);
    const RequestOutput last = streams[i].last();
    CHECK(last.finish_reason == alone[i].finish_reason);
    CHECK(streams[i].tokens == alone[i].token_ids);
    CHECK(streams[i].text == alone[i].text);  // the deltas concatenate to the whole text
    CHECK(last.prompt_tokens == std::int64_t(alone[i].prompt_ids.size()));
    CHECK(last.completion_tokens == std::int64_t(alone[i].token_ids.size()));
    CHECK(last.queue_seconds >= 0);
    // One output per token (an EOS adds none), the last one finished.
    for (std::size_t k = 0; k + 1 < streams[i].outputs.size(); ++k) CHECK_FALSE(streams[i].outputs[k].finished);
  }
  const EngineStatus s = wait_status(engine, [](const EngineStatus& s) { return s.running == 0; });
  CHECK(s.waiting == 0);
  CHECK(s.kv_blocks_used == 0);
  CHECK(s.requests_finished == std::int64_t(kPrompts.size()));
  CHECK(s.kv_blocks_total ==
        engine.options().num_kv_blocks / engine.options().micro_batches * engine.options().micro_batches);
}

TEST_CASE("generate() from several threads at once: each caller gets what it gets alone", "[engine][service]") {
  Engine engine(kBin, options(2, 1));
  const auto want = stories::token_ids(engine.generate(kPrompts, stories::greedy(40)));
  std::vector<std::vector<std::vector<std::int32_t>>> got(4);
  std::vector<std::thread> callers;
  for (std::size_t c = 0; c < got.size(); ++c)
    callers.emplace_back([&, c] { got[c] = stories::token_ids(engine.generate(kPrompts, stories::greedy(40))); });
  for (auto& t : callers) t.join();
  for (const auto& g : got) CHECK(g == want);
}

TEST_CASE("an aborted request ends with finish reason abort and frees its blocks, the others go on",
          "[engine][service]") {
  Engine engine(kBin, options(2, 2));
  const GenerationResult alone = engine.generate({kPrompts[1]}, stories::greedy(50))[0];
  Stream doomed, kept;
  const RequestId id = engine.submit(kPrompts[0], stories::greedy(200), doomed.callback());
  engine.submit(kPrompts[1], stories::greedy(50), kept.callback());
  doomed.wait_tokens(5);
  CHECK(engine.status().kv_blocks_used > 0);
  CHECK(engine.abort(id));
  const RequestOutput last = doomed.last();
  CHECK(last.finish_reason == "abort");
  CHECK(doomed.tokens.size() < 200);
  CHECK(last.completion_tokens == std::int64_t(doomed.tokens.size()));
  CHECK_FALSE(engine.abort(id));  // already finished
  CHECK_FALSE(engine.abort(123456));
  kept.last();
  CHECK(kept.tokens == alone.token_ids);
  const EngineStatus s = wait_status(engine, [](const EngineStatus& s) { return s.running == 0; });
  CHECK(s.kv_blocks_used == 0);
}

TEST_CASE("a callback that throws disturbs no other request", "[engine][service]") {
  Engine engine(kBin, options(2, 1));
  const GenerationResult alone = engine.generate({kPrompts[1]}, stories::greedy(30))[0];
  std::atomic<int> thrown{0};
  Stream kept;
  engine.submit(kPrompts[0], stories::greedy(30), [&](const RequestOutput&) {
    ++thrown;
    throw std::runtime_error("a careless client");
  });
  engine.submit(kPrompts[1], stories::greedy(30), kept.callback());
  kept.last();
  CHECK(kept.tokens == alone.token_ids);
  CHECK(thrown > 0);
  // generate(): the requests of a callback that throws are aborted, and generate() rethrows.
  CHECK_THROWS_WITH(
      engine.generate(kPrompts, stories::greedy(200),
                      [](std::size_t, std::int32_t, std::string_view) { throw std::runtime_error("gone"); }),
      "gone");
  const EngineStatus s = wait_status(engine, [](const EngineStatus& s) { return s.unfinished == 0; });
  CHECK(s.generation_tokens < 30 + 30 + 30 + 5 * 200);  // aborted, not run to the end
  CHECK(s.kv_blocks_used == 0);
}

TEST_CASE("a request waits while the running ones hold every slot, the queue limit is enforced", "[engine][service]") {
  EngineOptions o = options(1, 1);
  o.max_num_seqs = 1;
  Engine engine(kBin, o);
  // The first request's first output holds the engine's thread until the test lets it go, so what
  // is queued meanwhile stays queued.
  std::mutex m;
  std::condition_variable cv;
  bool entered = false, released = false;
  std::atomic<bool> first_done{false}, second_started_after_first{false};
  Stream first, second;
  OutputCallback first_cb = first.callback();
  engine.submit(kPrompts[0], stories::greedy(40), [&](const RequestOutput& out) {
    if (out.finished) first_done = true;
    first_cb(out);
    std::unique_lock<std::mutex> lock(m);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  });
  {
    std::unique_lock<std::mutex> lock(m);
    REQUIRE(cv.wait_for(lock, 60s, [&] { return entered; }));
  }
  OutputCallback second_cb = second.callback();
  engine.submit(kPrompts[1], stories::greedy(5), [&](const RequestOutput& out) {
    if (second.outputs.empty()) second_started_after_first = first_done.load();
    second_cb(out);
  });
  const EngineStatus s = engine.status();
  CHECK(s.running == 1);
  CHECK(s.waiting == 1);
  Stream refused;
  CHECK_THROWS_AS(engine.submit(kPrompts[2], stories::greedy(5), refused.callback(), 1), Overloaded);
  CHECK_NOTHROW(engine.abort(engine.submit(kPrompts[2], stories::greedy(5), refused.callback(), 2)));
  {
    std::lock_guard<std::mutex> lock(m);
    released = true;
    cv.notify_all();
  }
  CHECK(first.last().finish_reason == "length");
  CHECK(second.last().finish_reason == "length");
  CHECK(second_started_after_first);  // max_num_seqs 1: it ran only once the first had finished
  CHECK(refused.last().finish_reason == "abort");
  CHECK(refused.tokens.empty());
}

TEST_CASE("bad requests are refused at submit with a clear error", "[engine][service]") {
  Engine engine(kBin, options(1, 1));
  Stream s;
  CHECK_THROWS_WITH(engine.submit(std::vector<std::int32_t>{}, stories::greedy(5), s.callback()),
                    Catch::Contains("is empty"));
  CHECK_THROWS_WITH(engine.submit(std::vector<std::int32_t>{1, 100000}, stories::greedy(5), s.callback()),
                    Catch::Contains("outside the vocabulary"));
  SamplingParams p = stories::greedy(5);
  p.top_p = 0;
  CHECK_THROWS_WITH(engine.submit(kPrompts[0], p, s.callback()), Catch::Contains("top_p"));
  CHECK(s.outputs.empty());
  CHECK(engine.generate({kPrompts[0]}, stories::greedy(5))[0].token_ids.size() == 5);  // still serving
}

TEST_CASE("shutdown drains or aborts what is in flight, then refuses requests", "[engine][service]") {
  const bool drain = GENERATE(true, false);
  Engine engine(kBin, options(2, 2));
  std::vector<Stream> streams(3);
  for (std::size_t i = 0; i < streams.size(); ++i)
    engine.submit(kPrompts[i], stories::greedy(drain ? 30 : 400), streams[i].callback());
  streams[0].wait_tokens(2);
  engine.shutdown(drain ? ShutdownMode::drain : ShutdownMode::abort);  // returns once the ranks stopped
  for (Stream& s : streams) {
    REQUIRE(s.finished);
    CHECK(s.outputs.back().finish_reason == (drain ? "length" : "abort"));
    if (drain) CHECK(s.tokens.size() == 30);
  }
  Stream late;
  CHECK_THROWS_AS(engine.submit(kPrompts[0], stories::greedy(5), late.callback()), Unavailable);
  CHECK_THROWS_AS(engine.generate({kPrompts[0]}, stories::greedy(5)), Unavailable);
  CHECK_FALSE(engine.status().accepting);
}

TEST_CASE("an idle engine outlives its collective timeout", "[engine][service]") {
  EngineOptions o = options(2, 2);
  o.comm.timeout = 150ms;
  Engine engine(kBin, o);
  const auto want = stories::token_ids(engine.generate(kPrompts, stories::greedy(20)));
  std::this_thread::sleep_for(600ms);  // parked: no collective is waiting
  CHECK(stories::token_ids(engine.generate(kPrompts, stories::greedy(20))) == want);
}

TEST_CASE("a rank that fails ends every request in flight with an error naming it, then the engine serves again",
          "[engine][service][faults]") {
  EngineOptions o = options(2, 2);
  o.comm.timeout = 300ms;
  o.comm.faults.push_back(Fault::fail_at(3, 60));  // world rank 3's 60th operation: mid-generation
  Engine engine(kBin, o);
  std::vector<Stream> streams(3);
  for (std::size_t i = 0; i < streams.size(); ++i)
    engine.submit(kPrompts[i], stories::greedy(100), streams[i].callback());
  for (Stream& s : streams) {
    const RequestOutput last = s.last();
    CHECK_THAT(last.finish_reason, Catch::StartsWith("error: ") && Catch::Contains("world rank 3"));
    CHECK(last.error);
    CHECK(s.tokens.size() < 100);
  }
  const EngineStatus failed = engine.status();
  CHECK_THAT(failed.failure, Catch::Contains("world rank 3"));
  CHECK(failed.running == 0);
  // The ranks start again on a fresh world (whose rank 3 would fail again at its 60th operation,
  // long after this two-token request is done).
  Engine reference(kBin, options(1, 1));
  CHECK(stories::token_ids(engine.generate({kPrompts[0]}, stories::greedy(2))) ==
        stories::token_ids(reference.generate({kPrompts[0]}, stories::greedy(2))));
}

TEST_CASE("a request preempted for blocks is recomputed and streams on unchanged", "[engine][service]") {
  EngineOptions o = options(1, 1);
  o.num_kv_blocks = 12, o.block_size = 8;  // 96 positions for five requests of up to 70
  Engine engine(kBin, o);
  Engine reference(kBin, options(1, 1));
  const auto want = reference.generate(kPrompts, stories::greedy(60));
  std::vector<Stream> streams(kPrompts.size());
  for (std::size_t i = 0; i < kPrompts.size(); ++i)
    engine.submit(kPrompts[i], stories::greedy(60), streams[i].callback());
  for (std::size_t i = 0; i < kPrompts.size(); ++i) {
    streams[i].last();
    CHECK(streams[i].tokens == want[i].token_ids);
    CHECK(streams[i].text == want[i].text);
  }
  CHECK(engine.status().preemptions > 0);
}

TEST_CASE("a resumed request continues exactly where another engine left it", "[engine][service]") {
  Engine engine(kBin, options(2, 2));
  SamplingParams with_stop = sampled(3, 60);
  with_stop.ignore_eos = false, with_stop.stop = {"the park"};
  for (const SamplingParams& p : {stories::greedy(60), sampled(9, 60), with_stop}) {
    Stream whole;
    engine.submit(kPrompts[3], p, whole.callback());
    whole.last();
    EncodeOptions e;
    e.add_special_tokens = true;
    const std::vector<std::int32_t> prompt = engine.tokenizer().encode(kPrompts[3], e);
    std::string sent;  // the text the first stream had delivered after k tokens
    for (std::size_t k = 1; k < whole.tokens.size(); k += 7) {
      INFO("temperature " << p.temperature << ", resumed after " << k << " tokens");
      sent.clear();
      for (std::size_t j = 0; j < k; ++j) sent += whole.outputs[j].text;
      Stream rest;
      engine.resume(prompt, std::vector<std::int32_t>(whole.tokens.begin(), whole.tokens.begin() + std::ptrdiff_t(k)),
                    p, rest.callback());
      const RequestOutput last = rest.last();
      CHECK(rest.tokens == std::vector<std::int32_t>(whole.tokens.begin() + std::ptrdiff_t(k), whole.tokens.end()));
      CHECK(sent + rest.text == whole.text);
      CHECK(last.finish_reason == whole.outputs.back().finish_reason);
      CHECK(last.completion_tokens == std::int64_t(whole.tokens.size()));
    }
  }
  Stream s;
  CHECK_THROWS_WITH(engine.resume({1, 2}, std::vector<std::int32_t>(8, 5), stories::greedy(8), s.callback()),
                    Catch::Contains("max_tokens"));
}
