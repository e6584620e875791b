// bench_router: what tpkit-router adds to a request. A trivial upstream (an HTTP server in this
// process that answers a streamed completion with one token, at once) is measured directly and
// through a tpkit::router::Router in front of it, side by side in one run:
//   latency  sequential requests, direct and routed alternately: p50 and p99 of each, and the
//            difference (what the router adds; the issue's target is <= 1 ms p50, <= 5 ms p99)
//   rate     requests per second that N concurrent clients sustain, direct and routed
// Every request opens its own connection on both paths (as the router does upstream).
//
//   bench_router [--requests 2000] [--clients 8] [--seconds 3] [--json out.json]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "router.hpp"

using tpkit::router::json;
using Clock = std::chrono::steady_clock;

namespace {

// Answers a streamed completion as tpkit-serve does when asked for token ids: one chunk with the
// token and its finish, a usage chunk, [DONE].
void trivial_upstream(httplib::Server& server) {
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("", "text/plain"); });
  server.Post("/v1/completions", [](const httplib::Request&, httplib::Response& res) {
    const json chunk = {
        {"id", "cmpl-1"},
        {"object", "text_completion"},
        {"created", 0},
        {"model", "m"},
        {"choices",
         {{{"index", 0}, {"text", " x"}, {"logprobs", nullptr}, {"finish_reason", "length"}, {"token_ids", {7}}}}}};
    json usage = chunk;
    usage["choices"] = json::array();
    usage["usage"] = {{"prompt_tokens", 3}, {"completion_tokens", 1}, {"total_tokens", 4}};
    const std::string body = "data: " + chunk.dump() + "\n\ndata: " + usage.dump() + "\n\ndata: [DONE]\n\n";
    res.set_chunked_content_provider("text/event-stream", [body](std::size_t, httplib::DataSink& sink) {
      sink.write(body.data(), body.size());
      sink.done();
      return true;
    });
  });
}

double one_request(int port) {
  const auto start = Clock::now();
  httplib::Client c("127.0.0.1", port);
  auto res = c.Post("/v1/completions",
                    R"({"prompt": "a b c", "max_tokens": 1, "stream": true, "return_token_ids": true, "seed": 1})",
                    "application/json");
  if (!res || res->status != 200 || res->body.find("[DONE]") == std::string::npos)
    throw std::runtime_error("a request failed on port " + std::to_string(port));
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double at = p / 100 * double(v.size() - 1);
  const std::size_t i = std::size_t(at);
  return i + 1 < v.size() ? v[i] + (at - double(i)) * (v[i + 1] - v[i]) : v[i];
}

double rate(int port, int clients, double seconds) {
  std::atomic<long> done{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      while (!stop) {
        one_request(port);
        ++done;
      }
    });
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  return double(done) / std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("What tpkit-router adds to a request, against a trivial upstream.", "bench_router");
  int requests = 2000, clients = 8;
  double seconds = 3;
  std::string json_out;
  app.add_option("--requests", requests, "sequential requests per path")->capture_default_str();
  app.add_option("--clients", clients, "concurrent clients for the rate")->capture_default_str();
  app.add_option("--seconds", seconds, "seconds per rate measurement")->capture_default_str();
  app.add_option("--json", json_out, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  httplib::Server upstream;
  trivial_upstream(upstream);
  const int upstream_port = upstream.bind_to_any_port("127.0.0.1");
  std::thread upstream_thread([&] { upstream.listen_after_bind(); });

  tpkit::router::RouterOptions options;
  options.port = 0;
  options.policy = "round_robin";
  tpkit::router::Router router(options);
  router.add_worker("http://127.0.0.1:" + std::to_string(upstream_port));
  const int router_port = router.bind();
  std::thread router_thread([&] { router.run(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  for (int k = 0; k < 100; ++k) one_request(upstream_port), one_request(router_port);  // warm-up
  std::vector<double> direct, routed;
  for (int k = 0; k < requests; ++k) {
    direct.push_back(one_request(upstream_port));
    routed.push_back(one_request(router_port));
  }
  const double d50 = percentile(direct, 50), d99 = percentile(direct, 99);
  const double r50 = percentile(routed, 50), r99 = percentile(routed, 99);
  const double direct_rate = rate(upstream_port, clients, seconds);
  const double routed_rate = rate(router_port, clients, seconds);
  std::printf("latency over %d sequential requests each (ms):\n", requests);
  std::printf("  direct  p50 %7.3f  p99 %7.3f\n  routed  p50 %7.3f  p99 %7.3f\n", d50 * 1e3, d99 * 1e3, r50 * 1e3,
              r99 * 1e3);
  std::printf("  added   p50 %7.3f  p99 %7.3f\n", (r50 - d50) * 1e3, (r99 - d99) * 1e3);
  std::printf("rate with %d clients: direct %.0f req/s, routed %.0f req/s (%.2f of direct)\n", clients, direct_rate,
              routed_rate, routed_rate / direct_rate);
  if (!json_out.empty()) {
    const json j = {{"requests", requests},
                    {"direct_ms", {{"p50", d50 * 1e3}, {"p99", d99 * 1e3}}},
                    {"routed_ms", {{"p50", r50 * 1e3}, {"p99", r99 * 1e3}}},
                    {"added_ms", {{"p50", (r50 - d50) * 1e3}, {"p99", (r99 - d99) * 1e3}}},
                    {"clients", clients},
                    {"direct_rate", direct_rate},
                    {"routed_rate", routed_rate}};
    std::ofstream(json_out) << j.dump(2) << "\n";
  }
  router.stop();
  upstream.stop();
  router_thread.join();
  upstream_thread.join();
  std::fflush(stdout);
  std::_Exit(0);  // the router's detached upstream loops have ended with their requests
}
