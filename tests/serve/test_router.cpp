// tpkit-router over real tpkit-serve replicas of stories260K on loopback, all started, stopped,
// killed (SIGKILL) and hung (SIGSTOP) by the tests: round-robin spreads exactly, least-loaded
// avoids a hung replica, prefix-aware keeps a shared prefix on one replica within its balance
// thresholds; a replica killed under a 200-request mixed load costs no request and changes no byte
// of any answer against a fault-free run; a hung replica is marked unhealthy in time and healthy
// again after; retries, the breaker, admission, migration limits, disconnects and workers added and
// removed at run time. A client only: the references are the replicas' own answers.
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "processes.hpp"

using namespace serve_test;

namespace {

const std::string kModels = std::getenv("TPKIT_TEST_MODELS") ? std::getenv("TPKIT_TEST_MODELS") : TPKIT_TEST_MODELS;
const std::string kModel = kModels + "/stories260K/stories260K.bin";

class Replica : public ListeningProcess {
 public:
  Replica()
      : ListeningProcess({TPKIT_SERVE_BIN, "--model", kModel, "--port", "0", "--served-model-name", "stories", "--tp",
                          "1", "--threads-per-rank", "1"}) {}
};

class RouterProcess : public ListeningProcess {
 public:
  RouterProcess(const std::vector<const Replica*>& replicas, std::vector<std::string> extra)
      : ListeningProcess(arguments(replicas, std::move(extra))) {}

  json stats() const {
    auto c = client();
    auto res = c.Get("/stats");
    expect(res && res->status == 200, "GET /stats failed");
    return json::parse(res->body);
  }
  // /stats's entry of a worker.
  json worker(const ListeningProcess& replica) const {
    const json s = stats();
    for (const json& w : s["workers"])
      if (w["url"] == replica.url()) return w;
    throw std::runtime_error("no worker " + replica.url() + " in /stats");
  }
  // Polls until `pred(stats)` holds; false after `limit`.
  template <class Pred>
  bool wait_for(Pred pred, std::chrono::milliseconds limit) const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred(stats())) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

 private:
  static std::vector<std::string> arguments(const std::vector<const Replica*>& replicas,
                                            std::vector<std::string> extra) {
    std::vector<std::string> args = {TPKIT_ROUTER_BIN, "--port", "0"};
    for (const Replica* r : replicas) args.insert(args.end(), {"--worker", r->url()});
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
};

struct Reply {
  int status = 0;
  std::string body;  // whole, or the stream's events joined
};

// A completion or chat request to `port`; a stream is read to its end.
Reply request(int port, const std::string& path, const json& body) {
  RawStream s(port, path, body);
  s.read_all();
  Reply r;
  r.status = s.status();
  r.body = s.body();
  return r;
}

// A reply with what must differ between two runs taken out: the response id, the creation time
// and how many prompt tokens the prefix cache held. Everything else must be byte-identical.
std::string comparable(const Reply& r) {
  const auto strip = [](json j) {
    j.erase("id");
    j.erase("created");
    if (j.contains("usage") && j["usage"].is_object()) j["usage"].erase("prompt_tokens_details");
    return j.dump();
  };
  std::string out = std::to_string(r.status) + "\n";
  if (r.body.rfind("data: ", 0) != 0) return out + strip(json::parse(r.body));
  for (std::size_t at = 0; (at = r.body.find("data: ", at)) != std::string::npos;) {
    const std::size_t end = r.body.find("\n\n", at);
    expect(end != std::string::npos, "an unterminated event: " + r.body);
    const std::string data = r.body.substr(at + 6, end - at - 6);
    out += (data == "[DONE]" ? data : strip(json::parse(data))) + "\n";
    at = end + 2;
  }
  return out;
}

const std::vector<std::string> kPrompts = {"Once upon a time",
                                           "Lily and Tom",
                                           "The little dog",
                                           "One day, a girl named Sue",
                                           "Sam wanted a big red ball because",
                                           "The sun was"};

// Request k of the mixed load: completions and chat-free (stories260K has no chat template),
// streamed or not, greedy or seeded sampling, some with stop strings, some that ignore EOS.
json mixed_request(int k) {
  json r = {{"model", "stories"}, {"prompt", kPrompts[std::size_t(k) % kPrompts.size()]}};
  r["max_tokens"] = 60 + (k * 37) % 200;
  r["stream"] = k % 2 == 0;
  if (k % 4 == 1) r["stream_options"] = {{"include_usage", true}}, r["stream"] = true;
  if (k % 3 == 0) {
    r["temperature"] = 0;
  } else {
    r["temperature"] = 0.9;
    r["top_p"] = 0.95;
    r["seed"] = 1000 + k;
  }
  if (k % 5 == 2) r["stop"] = json::array({"Lily", "\n\n"});
  if (k % 7 == 3) r["ignore_eos"] = true;
  return r;
}

// Runs `count` requests from `threads` clients; the replies by request number.
std::vector<Reply> load(int port, int count, int threads, const std::function<json(int)>& make) {
  std::vector<Reply> replies(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::vector<std::thread> clients;
  std::mutex errors_mutex;
  std::string errors;
  for (int t = 0; t < threads; ++t)
    clients.emplace_back([&] {
      for (int k; (k = next++) < count;) try {
          replies[std::size_t(k)] = request(port, "/v1/completions", make(k));
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(errors_mutex);
          errors += "request " + std::to_string(k) + ": " + e.what() + "\n";
        }
    });
  for (auto& c : clients) c.join();
  INFO(errors);
  REQUIRE(errors.empty());
  return replies;
}

std::int64_t served(const json& stats, const ListeningProcess& replica) {
  for (const json& w : stats["workers"])
    if (w["url"] == replica.url()) return w["served"];
  return -1;
}

}  // namespace

TEST_CASE("round_robin spreads requests exactly and answers as a replica does", "[router]") {
  Replica a, b, c;
  RouterProcess router({&a, &b, &c}, {"--policy", "round_robin", "--load-waiting-weight", "1", "--load-kv-weight", "1",
                                      "--health-check-interval", "0.2"});
  // With weights given, each check also reads the worker's queue and KV use from its /metrics.
  CHECK(router.wait_for(
      [](const json& s) {
        for (const json& w : s["workers"])
          if (w["reported_waiting"] != 0.0 || w["reported_kv_usage"].get<double>() < 0) return false;
        return true;
      },
      5s));
  for (int k = 0; k < 30; ++k) {
    const json body = {{"prompt", kPrompts[std::size_t(k) % kPrompts.size()]}, {"max_tokens", 30}, {"temperature", 0}};
    const Reply via = request(router.port, "/v1/completions", body);
    const Reply direct = request(a.port, "/v1/completions", body);
    REQUIRE(via.status == 200);
    CHECK(json::parse(via.body)["choices"] == json::parse(direct.body)["choices"]);
    CHECK(json::parse(via.body)["usage"]["completion_tokens"] ==
          json::parse(direct.body)["usage"]["completion_tokens"]);
  }
  const json s = router.stats();
  for (const Replica* r : {&a, &b, &c}) CHECK(served(s, *r) == 10);
  CHECK(s["totals"]["healthy"] == 3);
  CHECK(s["policy"] == "round_robin");
  // The pass-through endpoints.
  auto client = router.client();
  auto models = client.Get("/v1/models");
  REQUIRE(models);
  CHECK(json::parse(models->body)["data"][0]["id"] == "stories");
  auto ids = client.Post("/tokenize", R"({"prompt": "Once upon a time"})", "application/json");
  REQUIRE(ids);
  CHECK(json::parse(ids->body)["count"] == 5);
  CHECK(router.terminate() == 0);
}

TEST_CASE("least_loaded sends nothing more to a hung replica, and ties take turns", "[router]") {
  Replica a, b, c;
  RouterProcess router({&a, &b, &c}, {"--policy", "least_loaded", "--health-check-interval", "60"});
  // Idle and equal: turns, never all to the first.
  for (int k = 0; k < 6; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  json s = router.stats();
  for (const Replica* r : {&a, &b, &c}) CHECK(served(s, *r) == 2);
  // Hang a: the request it gets stays in flight, so least-loaded avoids it from then on.
  a.signal(SIGSTOP);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int k = 0; k < 12; ++k) {
    std::atomic<bool> done{false};
    clients.emplace_back([&router, &ok, k] {
      if (request(router.port, "/v1/completions", {{"prompt", kPrompts[std::size_t(k) % 6]}, {"max_tokens", 8}})
              .status == 200)
        ++ok;
    });
    std::this_thread::sleep_for(150ms);  // each ends before the next, unless it went to a
  }
  s = router.stats();
  CHECK(router.worker(a)["in_flight"] == 1);
  CHECK(served(s, b) + served(s, c) == 4 + 11);
  a.signal(SIGCONT);
  for (auto& t : clients) t.join();
  CHECK(ok == 12);
  CHECK(router.terminate() == 0);
}

TEST_CASE("prefix_aware keeps requests that share a prefix on one replica while the balance holds", "[router]") {
  Replica a, b, c;
  RouterProcess router({&a, &b, &c}, {"--policy", "prefix_aware", "--balance-abs-threshold", "1",
                                      "--balance-rel-threshold", "1", "--health-check-interval", "60"});
  const std::vector<std::string> systems = {
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. ",
      "Tom had a big red ball. He liked to throw the ball high in the sky and catch it with both of his hands. ",
      "The little dog was very happy. He ran to the garden and saw a big tree with many green leaves on it. "};
  const std::vector<std::string> questions = {"One day", "She said", "Then", "After that", "At night", "Mom"};
  std::map<std::string, std::set<std::string>> placed;  // system prompt -> workers
  for (int round = 0; round < 6; ++round)
    for (const std::string& system : systems) {
      const json before = router.stats();
      REQUIRE(request(router.port, "/v1/completions",
                      {{"prompt", system + questions[std::size_t(round)]}, {"max_tokens", 8}, {"temperature", 0}})
                  .status == 200);
      const json after = router.stats();
      for (const Replica* r : {&a, &b, &c})
        if (served(after, *r) > served(before, *r)) placed[system].insert(r->url());
    }
  std::set<std::string> used;
  for (const auto& [system, workers] : placed) {
    CHECK(workers.size() == 1);  // every request of a group on the same replica
    used.insert(workers.begin(), workers.end());
  }
  CHECK(used.size() == 3);  // the misses spread by load: each group on a replica of its own
  // The replicas' prefix caches show it: each found most of its later prompts cached.
  for (const Replica* r : {&a, &b, &c}) {
    auto res = r->client().Get("/metrics");
    REQUIRE(res);
    const std::regex hits("tpkit:prefix_cache_hits_total\\{[^}]*\\} ([0-9]+)");
    std::smatch m;
    REQUIRE(std::regex_search(res->body, m, hits));
    CHECK(std::stoi(m[1]) >= 5 * 16);  // 5 later prompts, each with at least one whole 16-token block
  }
  // Imbalance: with a's group's replica hung, its requests pile up there only until max - min > 1.
  const std::string system = systems[0];
  const ListeningProcess* home = nullptr;
  for (const Replica* r : {&a, &b, &c})
    if (placed[system].count(r->url())) home = r;
  REQUIRE(home);
  home->signal(SIGSTOP);
  std::vector<std::thread> clients;
  for (int k = 0; k < 5; ++k) {
    clients.emplace_back([&router, &system, k] {
      request(router.port, "/v1/completions", {{"prompt", system + "Again " + std::to_string(k)}, {"max_tokens", 8}});
    });
    std::this_thread::sleep_for(200ms);
  }
  CHECK(router.worker(*home)["in_flight"] == 2);  // 1 - 0 is within the threshold, 2 - 0 is not
  home->signal(SIGCONT);
  for (auto& t : clients) t.join();
  CHECK(router.terminate() == 0);
}

TEST_CASE("a replica killed under a 200-request mixed load loses no request and changes no byte", "[router]") {
  Replica a, b, c;
  std::vector<Reply> reference;
  {
    RouterProcess router({&a, &b, &c}, {"--policy", "least_loaded"});
    reference = load(router.port, 200, 24, mixed_request);
    CHECK(router.terminate() == 0);
  }
  RouterProcess router({&a, &b, &c},
                       {"--policy", "least_loaded", "--health-check-interval", "1", "--health-check-timeout", "0.5"});
  std::thread killer([&] {
    // Once the load is well under way, b dies (SIGKILL: no goodbye).
    router.wait_for(
        [&](const json& s) {
          for (const json& w : s["workers"])
            if (w["url"] == b.url()) return s["totals"]["served"].get<int>() >= 40 && w["in_flight"].get<int>() >= 4;
          return false;
        },
        60s);
    b.kill_now();
  });
  const std::vector<Reply> replies = load(router.port, 200, 24, mixed_request);
  killer.join();
  int failed = 0, different = 0;
  for (std::size_t k = 0; k < replies.size(); ++k) {
    failed += replies[k].status != 200 || replies[k].body.find("\"error\"") != std::string::npos;
    if (comparable(replies[k]) != comparable(reference[k])) {
      ++different;
      UNSCOPED_INFO("request " << k << " (" << mixed_request(int(k)).dump() << ")\n  got:  " << comparable(replies[k])
                               << "\n  want: " << comparable(reference[k]));
    }
  }
  CHECK(failed == 0);
  CHECK(different == 0);
  REQUIRE(router.wait_for(
      [&](const json& s) {
        for (const json& w : s["workers"])
          if (w["url"] == b.url()) return w["health"] == "unhealthy";
        return false;
      },
      10s));
  const json s = router.stats();
  INFO(s.dump(2));
  CHECK(s["totals"]["migrations"].get<int>() + s["totals"]["retries"].get<int>() > 0);
  CHECK(router.worker(b)["migrations"].get<int>() > 0);  // some requests were mid-stream on b
  CHECK(s["totals"]["unhealthy"] == 1);
  CHECK(s["totals"]["failed"] == 0);
  CHECK(router.terminate() == 0);
}

TEST_CASE("a stalled stream moves to another replica exactly, and past the migration limit ends with an error event",
          "[router]") {
  Replica a, b;
  const json body = {{"prompt", "Once upon a time"},
                     {"max_tokens", 300},
                     {"ignore_eos", true},
                     {"temperature", 0.8},
                     {"seed", 7},
                     {"stream", true},
                     {"stop", "Lily"}};
  json long_body = body;
  long_body.erase("stop");
  const Reply want = request(a.port, "/v1/completions", long_body);
  for (int limit : {1, 0}) {
    DYNAMIC_SECTION("--migration-limit " << limit) {
      RouterProcess router({&a, &b}, {"--policy", "round_robin", "--stream-idle-timeout", "1",
                                      "--health-check-interval", "60", "--migration-limit", std::to_string(limit)});
      RawStream s(router.port, "/v1/completions", long_body);
      REQUIRE(s.read_until([](const std::string& raw) { return raw.find("data: ") != std::string::npos; }));
      a.signal(SIGSTOP);  // round robin's first request went to a
      s.read_all();
      a.signal(SIGCONT);
      const Reply got{s.status(), s.body()};
      if (limit == 1) {
        CHECK(comparable(got) == comparable(want));
        CHECK(router.worker(a)["migrations"] == 1);
      } else {
        const std::vector<std::string> events = s.events();
        REQUIRE(events.size() >= 2);
        CHECK(events.back() == "[DONE]");
        CHECK(json::parse(events[events.size() - 2])["error"]["code"] == "migration_limit");
      }
      CHECK(router.terminate() == 0);
    }
  }
}

TEST_CASE("a hung replica turns unhealthy within interval x threshold, gets no work, and recovers", "[router]") {
  Replica a, b;
  RouterProcess router({&a, &b}, {"--policy", "round_robin", "--health-check-interval", "0.5", "--health-check-timeout",
                                  "0.25", "--health-failure-threshold", "3", "--health-success-threshold", "2"});
  a.signal(SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  REQUIRE(router.wait_for([&](const json&) { return router.worker(a)["health"] == "unhealthy"; }, 5s));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  CHECK(took <= 0.5 * 3 + 0.5);  // interval x threshold, plus the poll and a check's own time
  for (int k = 0; k < 6; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  CHECK(served(router.stats(), a) == 0);
  CHECK(served(router.stats(), b) == 6);
  a.signal(SIGCONT);
  const auto resumed = std::chrono::steady_clock::now();
  REQUIRE(router.wait_for([&](const json&) { return router.worker(a)["health"] == "healthy"; }, 5s));
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - resumed).count() <= 0.5 * 2 + 0.6);
  for (int k = 0; k < 4; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  CHECK(served(router.stats(), a) == 2);
  CHECK(router.terminate() == 0);
}

TEST_CASE(
    "a dead replica still thought healthy costs retries until its breaker opens, and with all dead a 503 comes at once",
    "[router]") {
  Replica a, b, c;
  RouterProcess router({&a, &b, &c}, {"--policy", "round_robin", "--health-check-interval", "60",
                                      "--breaker-failure-threshold", "5", "--retry-backoff", "0.001"});
  a.kill_now();
  for (int k = 0; k < 30; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  const json w = router.worker(a);
  CHECK(w["failures"] == 5);
  CHECK(w["retries"] == 5);
  CHECK(w["breaker"] == "open");
  CHECK(w["health"] == "healthy");  // the checks have not run yet: the breaker alone kept traffic away
  b.kill_now();
  c.kill_now();
  const auto start = std::chrono::steady_clock::now();
  const Reply r = request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}});
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(r.status == 502);  // retried on each, then the last failure is answered
  for (int k = 0; k < 10; ++k) request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}});
  const Reply down = request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}});
  CHECK(down.status == 503);
  CHECK(json::parse(down.body)["error"]["message"].get<std::string>().find("no healthy worker") != std::string::npos);
  auto health = router.client().Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);
  CHECK(router.terminate() == 0);
}

TEST_CASE("admission gives a full queue a 429 and a long wait a 408, and a client that leaves releases its load",
          "[router]") {
  Replica a;
  RouterProcess router({&a}, {"--max-concurrent-requests", "1", "--queue-size", "1", "--queue-timeout", "1",
                              "--health-check-interval", "60"});
  a.signal(SIGSTOP);
  RawStream first(router.port, "/v1/completions",
                  {{"prompt", "Once upon a time"}, {"max_tokens", 200}, {"stream", true}});
  REQUIRE(router.wait_for([&](const json& s) { return s["totals"]["in_flight"] == 1; }, 5s));
  std::thread queued_client([&] {
    const Reply r = request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}});
    expect(r.status == 408, "the queued request got " + std::to_string(r.status));
    expect(json::parse(r.body)["error"]["code"] == "queue_timeout", r.body);
  });
  REQUIRE(router.wait_for([&](const json& s) { return s["totals"]["queued"] == 1; }, 5s));
  const Reply full = request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}});
  CHECK(full.status == 429);
  CHECK(json::parse(full.body)["error"]["type"] == "rate_limit_error");
  queued_client.join();
  // The first client leaves while its worker is hung: the router gives up the upstream request.
  first.close_now();
  CHECK(router.wait_for([&](const json& s) { return s["totals"]["in_flight"] == 0; }, 5s));
  a.signal(SIGCONT);
  // The replica saw its request aborted (the router closed the connection).
  CHECK(router.wait_for(
      [&](const json&) {
        auto res = a.client().Get("/metrics");
        return res && res->body.find("finished_reason=\"abort\"} 1") != std::string::npos;
      },
      10s));
  CHECK(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  CHECK(router.terminate() == 0);
}

TEST_CASE("workers added and removed at run time take and stop taking traffic", "[router]") {
  Replica a, b;
  RouterProcess router({&a}, {"--policy", "round_robin"});
  auto client = router.client();
  const auto post_worker = [&](const std::string& url) {
    auto res = client.Post("/workers", json{{"url", url}}.dump(), "application/json");
    REQUIRE(res);
    return res->status;
  };
  CHECK(post_worker(b.url()) == 201);
  CHECK(post_worker(b.url()) == 409);
  CHECK(post_worker("ftp://nowhere") == 400);
  for (int k = 0; k < 10; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  CHECK(served(router.stats(), a) == 5);
  CHECK(served(router.stats(), b) == 5);
  auto removed = client.Delete(("/workers/" + a.url()).c_str());
  REQUIRE(removed);
  CHECK(removed->status == 200);
  auto again = client.Delete(("/workers/" + a.url()).c_str());
  REQUIRE(again);
  CHECK(again->status == 404);
  for (int k = 0; k < 6; ++k)
    REQUIRE(request(router.port, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 4}}).status == 200);
  CHECK(served(router.stats(), b) == 11);
  auto list = client.Get("/workers");
  REQUIRE(list);
  CHECK(json::parse(list->body)["workers"].size() == 1);
  // The metrics name the worker left.
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("tpkit_router:worker_requests_total{worker=\"" + b.url() + "\"} 11") != std::string::npos);
  CHECK(metrics->body.find("tpkit_router:requests_total{status=\"200\"} 16") != std::string::npos);
  CHECK(router.terminate() == 0);
}

TEST_CASE("the router refuses what it cannot route, with OpenAI's error object", "[router]") {
  Replica a;
  RouterProcess router({&a}, {});
  const auto status_of = [&](const std::string& body) {
    auto res = router.client().Post("/v1/completions", body, "application/json");
    REQUIRE(res);
    CHECK(json::parse(res->body).contains("error"));
    return res->status;
  };
  CHECK(status_of("{not json") == 400);
  CHECK(status_of("[1, 2]") == 400);
  CHECK(status_of(R"({"prompt": "x", "stream": "yes"})") == 400);
  CHECK(status_of(R"({"prompt": "x", "seed": "one"})") == 400);
  CHECK(status_of(R"({"prompt": "x", "n": 2})") == 400);            // the worker's own 400, passed on
  CHECK(status_of(R"({"prompt": "x", "model": "gpt-4"})") == 404);  // likewise
  // Several prompts are relayed whole (they cannot resume elsewhere).
  auto res =
      router.client().Post("/v1/completions", R"({"prompt": ["Once", "Lily"], "max_tokens": 3})", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(json::parse(res->body)["choices"].size() == 2);
  CHECK(router.terminate() == 0);
}

TEST_CASE("a worker that sends malformed events or aborts a request is failed over, and the router lives on",
          "[router]") {
  Replica good;
  // The reference: the good replica's own stream, and its first chunk with the token id.
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 30}, {"temperature", 0}, {"stream", true}};
  const Reply want = request(good.port, "/v1/completions", body);
  json with_ids = body;
  with_ids["return_token_ids"] = true;
  const std::string ids_stream = request(good.port, "/v1/completions", with_ids).body;
  const std::string first_chunk = ids_stream.substr(0, ids_stream.find("\n\n") + 2);
  REQUIRE(first_chunk.find("token_ids") != std::string::npos);
  // A worker that answers /health, then sends `events` for every completion.
  std::string events;
  int status = 200;
  httplib::Server bad;
  bad.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("", "text/plain"); });
  bad.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    if (status != 200) {
      res.status = status;
      res.set_content(R"({"error": {"message": "busy", "type": "server_error"}})", "application/json");
      return;
    }
    res.set_chunked_content_provider("text/event-stream", [&](std::size_t, httplib::DataSink& sink) {
      sink.write(events.data(), events.size());
      sink.done();
      return true;
    });
  });
  const int bad_port = bad.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { bad.listen_after_bind(); });
  const std::string bad_url = "http://127.0.0.1:" + std::to_string(bad_port);
  // Each case on a router of its own, whose round robin starts with the bad worker.
  const auto through_router = [&](const std::string& sent) {
    events = sent;
    RouterProcess router(
        {}, {"--policy", "round_robin", "--worker", bad_url, "--worker", good.url(), "--health-check-interval", "60"});
    const Reply got = request(router.port, "/v1/completions", body);
    CHECK(comparable(got) == comparable(want));
    CHECK(router.worker(good)["failures"] == 0);
    json bad_stats;
    const json stats = router.stats();
    for (const json& w : stats["workers"])
      if (w["url"] == bad_url) bad_stats = w;
    CHECK(bad_stats["failures"] == 1);
    CHECK(router.terminate() == 0);
    return bad_stats;
  };
  for (const std::string& malformed :
       {std::string(R"(data: {"choices": [{"index": 0, "text": null, "token_ids": ["a"], "finish_reason": 1}]})"),
        std::string(R"(data: {"error": {"message": null, "type": 7}})"), std::string("data: not json")}) {
    INFO(malformed);
    CHECK(through_router(malformed + "\n\n")["retries"] == 1);
  }
  // Statuses that are the worker's, not the request's: retried elsewhere.
  for (int code : {429, 503, 500, 408}) {
    INFO(code);
    status = code;
    CHECK(through_router("")["retries"] == 1);
  }
  status = 200;
  // After one good token the worker aborts the request: it continues on the good replica exactly.
  const json aborted = through_router(
      first_chunk + "data: " +
      json{{"choices", {{{"index", 0}, {"text", ""}, {"finish_reason", "abort"}, {"logprobs", nullptr}}}}}.dump() +
      "\n\n");
  CHECK(aborted["migrations"] == 1);
  CHECK(aborted["last_error"].get<std::string>().find("aborted") != std::string::npos);
  bad.stop();
  serving.join();
}

TEST_CASE("a worker whose health check times out while it streams is busy, not unhealthy", "[router]") {
  // A worker that streams a token every 100 ms for 3 s, and whose /health hangs from then on.
  std::atomic<bool> streaming{false}, hung{false};
  httplib::Server slow;
  slow.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    if (hung) std::this_thread::sleep_for(1s);
    res.set_content("", "text/plain");
  });
  slow.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& res) {
    res.set_chunked_content_provider("text/event-stream", [&](std::size_t, httplib::DataSink& sink) {
      streaming = true, hung = true;
      for (int k = 0; k < 30; ++k) {
        const json chunk = {{"choices",
                             {{{"index", 0},
                               {"text", " x"},
                               {"token_ids", {7}},
                               {"finish_reason", k == 29 ? json("length") : json(nullptr)},
                               {"logprobs", nullptr}}}}};
        const std::string event = "data: " + chunk.dump() + "\n\n";
        if (!sink.write(event.data(), event.size())) return false;
        std::this_thread::sleep_for(100ms);
      }
      const std::string end =
          "data: " + json{{"choices", json::array()}, {"usage", {{"completion_tokens", 30}}}}.dump() +
          "\n\ndata: [DONE]\n\n";
      sink.write(end.data(), end.size());
      sink.done();
      streaming = false;
      return true;
    });
  });
  const int port = slow.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { slow.listen_after_bind(); });
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  {
    RouterProcess router({}, {"--worker", url, "--health-check-interval", "0.5", "--health-check-timeout", "0.25"});
    std::thread client([&] {
      const Reply r = request(router.port, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 30}, {"stream", true}});
      expect(r.status == 200 && r.body.find("[DONE]") != std::string::npos, "the stream did not finish: " + r.body);
    });
    // 3 s of streaming: 6 checks time out, each while data flows, so none counts.
    for (int k = 0; k < 500 && !streaming; ++k) std::this_thread::sleep_for(10ms);
    REQUIRE(streaming);
    bool stayed_healthy = true;
    while (streaming) {
      const json s = router.stats();
      stayed_healthy = stayed_healthy && s["workers"][0]["health"] == "healthy";
      std::this_thread::sleep_for(100ms);
    }
    client.join();
    CHECK(stayed_healthy);
    CHECK(router.stats()["workers"][0]["migrations"] == 0);
    // Idle, the same timeouts are failures: unhealthy after 3 of them.
    CHECK(router.wait_for([](const json& s) { return s["workers"][0]["health"] == "unhealthy"; }, 5s));
    CHECK(router.terminate() == 0);
  }
  slow.stop();
  serving.join();
}
