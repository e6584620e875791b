// router/cli.hpp: tpkit-router's command line as a function, so that a program of one's own can
// register its policies and then run the same router (router/custom_policy.cpp does).
//
// Prints `listening on http://HOST:PORT` on stdout once it accepts requests. SIGTERM or SIGINT:
// /health turns 503, new requests get 503, those in flight finish (at most --drain-timeout
// seconds), and it exits 0.
#pragma once

#include <CLI/CLI.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "router.hpp"

namespace tpkit::router {

namespace cli_detail {
inline std::atomic<bool> stop{false};
inline void on_signal(int) { stop = true; }
}  // namespace cli_detail

// tpkit-router's command line, with every policy registered so far (register_policy first to add
// one's own).
inline int router_main(int argc, char** argv) {
  namespace r = tpkit::router;
  using cli_detail::on_signal;
  auto& g_stop = cli_detail::stop;
  CLI::App app("An OpenAI-compatible router over data-parallel tpkit-serve replicas.", "tpkit-router");
  r::RouterOptions o;
  std::vector<std::string> workers;
  double drain_timeout = 30;
  std::string known;
  for (const auto& [name, factory] : r::policy_registry()) known += (known.empty() ? "" : ", ") + name;
  app.add_option("--worker", workers, "a replica's base URL, http://HOST:PORT (repeatable; more with POST /workers)");
  app.add_option("--host", o.host, "address to listen on")->capture_default_str();
  app.add_option("--port", o.port, "port to listen on; 0 picks a free one")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--policy", o.policy, "routing policy: " + known)->capture_default_str();
  app.add_option("--load-waiting-weight", o.policy_options.weights.waiting,
                 "least_loaded, power_of_two, prefix_aware: add this times the queue a worker reports (its /metrics)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--load-kv-weight", o.policy_options.weights.kv_usage,
                 "... and this times the KV-cache usage (0..1) it reports")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--prefix-match-threshold", o.policy_options.prefix.match_threshold,
                 "prefix_aware: the fraction of a prompt that must match a worker's prefixes to follow them")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--balance-abs-threshold", o.policy_options.prefix.balance_abs_threshold,
                 "prefix_aware: load imbalance (max - min in-flight) beyond which requests go to the least loaded ...")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--balance-rel-threshold", o.policy_options.prefix.balance_rel_threshold,
                 "... when max also exceeds this times min")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--prefix-block-chars", o.policy_options.prefix.block_chars,
                 "prefix_aware: prompts are matched in blocks of this many characters")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--prefix-max-blocks", o.policy_options.prefix.max_blocks_per_worker,
                 "prefix_aware: blocks remembered per worker (least recently used ones go)")
      ->capture_default_str();
  app.add_option("--health-check-interval", o.health.interval, "seconds between health checks of a worker")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--health-check-timeout", o.health.timeout, "seconds a health check may take")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--health-failure-threshold", o.health.failure_threshold,
                 "failed checks in a row that make a worker unhealthy")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--health-success-threshold", o.health.success_threshold,
                 "good checks in a row that make it healthy again")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--breaker-failure-threshold", o.breaker.failure_threshold,
                 "failed requests in a row that open a worker's circuit breaker")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--breaker-open-seconds", o.breaker.open_seconds, "seconds it stays open before a trial request")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--breaker-success-threshold", o.breaker.success_threshold, "good trials that close it")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--max-retries", o.max_retries, "retries of a request that failed before it produced anything")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--retry-backoff", o.backoff.base, "seconds before the first retry (doubling, with jitter)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--retry-backoff-max", o.backoff.max, "the longest wait between retries")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--retry-budget-ratio", o.retry_budget.ratio,
                 "retries may add at most this fraction of the last 10 s of requests ...")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--retry-budget-min", o.retry_budget.min_per_second, "... plus this many per second")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stream-idle-timeout", o.stream_idle_timeout,
                 "seconds a worker may send nothing before its request moves to another worker")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--migration-limit", o.migration_limit, "moves of one request mid-generation before it fails")
      ->capture_default_str()
      ->check(CLI::Range(0, 100));
  app.add_option("--max-concurrent-requests", o.max_concurrent_requests,
                 "generation requests forwarded at once (0: no limit); more wait in the queue")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--queue-size", o.queue_size, "requests waiting for their turn beyond which: 429")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("--queue-timeout", o.queue_timeout, "seconds a request may wait for its turn: then 408")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--connect-timeout", o.connect_timeout, "seconds to connect to a worker")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--http-threads", o.http_threads, "concurrent client connections (each stream holds one)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-body-bytes", o.max_body_bytes, "larger request bodies get 413")->capture_default_str();
  app.add_option("--drain-timeout", drain_timeout, "on SIGTERM, seconds the requests in flight may take to finish")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!r::policy_registry().count(o.policy)) {
    std::fprintf(stderr, "tpkit-router: --policy: unknown policy '%s' (known: %s)\n", o.policy.c_str(), known.c_str());
    return 2;
  }
  if (o.health.timeout > o.health.interval) o.health.timeout = o.health.interval;

  signal(SIGPIPE, SIG_IGN);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  try {
    auto router = std::make_unique<r::Router>(o);
    for (const std::string& url : workers)
      if (!router->add_worker(url)) std::fprintf(stderr, "tpkit-router: %s is given twice\n", url.c_str());
    const int port = router->bind();
    std::thread http([&] { router->run(); });
    std::printf("listening on http://%s:%d\n",
                o.host.find(':') != std::string::npos ? ("[" + o.host + "]").c_str() : o.host.c_str(), port);
    std::fflush(stdout);
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::fprintf(stderr, "tpkit-router: draining (at most %.0f s)\n", drain_timeout);
    router->begin_drain();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(drain_timeout);
    while (router->active() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (router->active() > 0)
      std::fprintf(stderr, "tpkit-router: drain timeout: %d response(s) cut\n", router->active());
    router->stop();
    http.join();
    std::fflush(stderr);
    // Upstream loops still running end with their workers' streams; the process need not wait.
    std::_Exit(0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-router: %s\n", e.what());
    return 1;
  }
}

}  // namespace tpkit::router
