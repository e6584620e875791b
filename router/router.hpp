// router/router.hpp: tpkit-router, one OpenAI endpoint in front of data-parallel tpkit-serve
// replicas ("workers"). It routes each request by a policy (policy.hpp), checks the workers'
// /health and watches their traffic (health.hpp), retries a request that failed before it
// produced anything, and moves a request whose worker failed mid-generation to another worker
// exactly: the router asks for the token ids with every chunk, and resumes on the next worker from
// the prompt plus the tokens it already has, with the same seed (the router assigns one), so the
// client receives the bytes it would have received without the failure.
//
// Each client request is an Exchange. Its upstream loop (attempts, retries, migrations) runs on a
// thread of its own and hands client-ready events to the HTTP thread, which writes them; either
// side may end it (the worker's answer finished, or the client left), and the load it holds on a
// worker is released exactly once, by the attempt's Lease. Needs cpp-httplib and nlohmann-json
// (application dependencies: never part of tpkit::tpkit).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "health.hpp"
#include "policy.hpp"
#include "serve/api_error.hpp"
#include "serve/histogram.hpp"
#include "serve/http_server.hpp"

namespace tpkit::router {

using serve::ApiError;
using serve::json;
using serve::reply;
using serve::reply_error;

struct RouterOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  std::string policy = "least_loaded";
  PolicyOptions policy_options;
  HealthOptions health;
  BreakerOptions breaker;
  int max_retries = 3;  // retries of a request that failed before it produced anything
  BackoffOptions backoff;
  RetryBudgetOptions retry_budget;
  double stream_idle_timeout = 60;  // seconds a worker may send nothing before the request moves on
  int migration_limit = 3;          // moves of one request after it produced something
  int max_concurrent_requests = 0;  // requests forwarded at once (0: no limit); more wait in a queue
  int queue_size = 256;             // requests waiting beyond which: 429
  double queue_timeout = 60;        // seconds a request may wait for its turn: then 408
  double connect_timeout = 2;       // seconds to connect to a worker
  int http_threads = 512;           // concurrent client connections
  std::size_t max_body_bytes = 4 << 20;
};

// A worker's base URL, "http://HOST:PORT".
struct WorkerAddress {
  std::string url, host;
  int port = 0;
  static WorkerAddress parse(std::string url) {
    while (!url.empty() && url.back() == '/') url.pop_back();
    const std::string scheme = "http://";
    if (url.rfind(scheme, 0) != 0)
      throw std::invalid_argument("a worker URL must look like http://HOST:PORT, not '" + url + "'");
    const std::string rest = url.substr(scheme.size());
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0 || rest.find('/') != std::string::npos)
      throw std::invalid_argument("a worker URL must look like http://HOST:PORT, not '" + url + "'");
    WorkerAddress a;
    a.url = url;
    a.host = rest.substr(0, colon);
    if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']')
      a.host = a.host.substr(1, a.host.size() - 2);
    const std::string port = rest.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
      throw std::invalid_argument("the worker URL '" + url + "' has no valid port");
    a.port = std::stoi(port);
    return a;
  }
};

// One upstream HTTP call, which another thread may cancel (the worker turned unhealthy, or the
// client left).
class Attempt {
 public:
  void cancel() {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
    if (client_) client_->stop();
  }
  bool cancelled() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return cancelled_;
  }
  // The client is registered for the call's length; false when the attempt was cancelled already.
  bool attach(httplib::Client* c) {
    std::lock_guard<std::mutex> lock(mutex_);
    client_ = c;
    return !cancelled_;
  }

 private:
  mutable std::mutex mutex_;
  httplib::Client* client_ = nullptr;
  bool cancelled_ = false;
};

// A worker and what the router knows of it; every field but the address is guarded by the
// router's mutex.
struct Worker {
  explicit Worker(WorkerAddress a, bool healthy) : address(std::move(a)), health(healthy) {}
  const WorkerAddress address;
  HealthState health;
  CircuitBreaker breaker;
  bool checking = false;  // a health check is on its way
  Clock::time_point next_check{};
  std::atomic<Clock::rep> last_data{0};  // when it last sent the router bytes (time_since_epoch)
  std::int64_t in_flight = 0, served = 0, failures = 0, retries = 0, migrations = 0, check_failures = 0;
  double reported_waiting = -1, reported_kv_usage = -1;
  std::set<std::shared_ptr<Attempt>> attempts;  // in flight: cancelled when it turns unhealthy
  std::string last_error;
  serve::Histogram ttft{
      {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}};
  serve::Histogram e2e{{0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}};
};

// Admission: at most `limit` requests forwarded at once (0: any number), the rest wait in FIFO
// order, at most `queue_size` of them, each at most until its deadline.
class Admission {
 public:
  enum class Result { admitted, queue_full, timed_out };
  Admission(int limit, int queue_size) : limit_(limit), queue_size_(queue_size) {}
  Result enter(Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (limit_ <= 0 || (active_ < limit_ && queue_.empty())) {
      ++active_;
      return Result::admitted;
    }
    if (std::int64_t(queue_.size()) >= queue_size_) return Result::queue_full;
    const std::uint64_t ticket = next_ticket_++;
    queue_.push_back(ticket);
    if (!turn_.wait_until(lock, deadline, [&] { return queue_.front() == ticket && active_ < limit_; })) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), ticket));
      turn_.notify_all();
      return Result::timed_out;
    }
    queue_.pop_front();
    ++active_;
    turn_.notify_all();
    return Result::admitted;
  }
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    --active_;
    turn_.notify_all();
  }
  std::int64_t waiting() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::int64_t(queue_.size());
  }

 private:
  const int limit_;
  const std::int64_t queue_size_;
  mutable std::mutex mutex_;
  std::condition_variable turn_;
  std::deque<std::uint64_t> queue_;
  std::uint64_t next_ticket_ = 0;
  int active_ = 0;
};

class Router {
 public:
  Router(RouterOptions options, std::unique_ptr<RoutingPolicy> policy = nullptr)
      : options_(std::move(options)),
        policy_(policy ? std::move(policy) : make_policy(options_.policy, options_.policy_options)),
        admission_(options_.max_concurrent_requests, options_.queue_size) {
    routes();
  }
  ~Router() {
    stop();
    if (monitor_.joinable()) monitor_.join();
    std::unique_lock<std::mutex> lock(mutex_);
    background_done_.wait(lock, [&] { return background_ == 0; });
  }

  // Adds a worker (checked once at once: healthy if it answers, else it must pass the success
  // threshold). False when it is there already.
  bool add_worker(const std::string& url) {
    WorkerAddress a = WorkerAddress::parse(url);
    const CheckResult first = check(a, nullptr);
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& w : workers_)
      if (w->address.url == a.url) return false;
    auto w = std::make_shared<Worker>(a, first == CheckResult::success);
    w->next_check = Clock::now() + seconds_to_duration(options_.health.interval);
    if (first != CheckResult::success) w->last_error = "not answering /health when added";
    workers_.push_back(std::move(w));
    return true;
  }
  // Removes a worker: it gets no new requests; those in flight finish there. False if unknown.
  bool remove_worker(const std::string& url) {
    std::string key = url;
    while (!key.empty() && key.back() == '/') key.pop_back();
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = workers_.begin(); it != workers_.end(); ++it)
      if ((*it)->address.url == key) {
        policy_->forget(key);
        workers_.erase(it);
        return true;
      }
    return false;
  }

  int bind() {
    const int port = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                        : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0) throw std::runtime_error("cannot listen on " + options_.host + ":" + std::to_string(options_.port));
    return port;
  }
  // Serves until stop(); call after bind(). Health checks run meanwhile.
  void run() {
    monitor_ = std::thread([this] { monitor(); });
    http_.listen_after_bind();
  }
  // SIGTERM: /health turns 503 and new requests get 503; those in flight go on.
  void begin_drain() { draining_ = true; }
  int active() const { return active_.load(); }
  // Stops serving: requests still in flight are cancelled (their clients get an error).
  void stop() {
    stopping_ = true;
    std::vector<std::shared_ptr<Attempt>> cancel;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& w : workers_) cancel.insert(cancel.end(), w->attempts.begin(), w->attempts.end());
    }
    for (const auto& a : cancel) a->cancel();
    http_.stop();
  }

  json stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    const Clock::time_point now = Clock::now();
    json list = json::array();
    std::int64_t healthy = 0, routable = 0, served = 0, in_flight = 0, retries = 0, migrations = 0, failures = 0;
    for (const auto& w : workers_) served += w->served;
    json distribution = json::object();
    for (const auto& w : workers_) {
      const bool ok = w->health.healthy();
      healthy += ok;
      routable += ok && w->breaker.state(now, options_.breaker) != CircuitBreaker::State::open;
      in_flight += w->in_flight, retries += w->retries, migrations += w->migrations, failures += w->failures;
      list.push_back({{"url", w->address.url},
                      {"health", ok ? "healthy" : "unhealthy"},
                      {"breaker", CircuitBreaker::name(w->breaker.state(now, options_.breaker))},
                      {"in_flight", w->in_flight},
                      {"served", w->served},
                      {"failures", w->failures},
                      {"retries", w->retries},
                      {"migrations", w->migrations},
                      {"health_check_failures", w->check_failures},
                      {"last_error", w->last_error},
                      {"reported_waiting", w->reported_waiting},
                      {"reported_kv_usage", w->reported_kv_usage}});
      distribution[w->address.url] = served ? double(w->served) / double(served) : 0.0;
    }
    return {{"policy", policy_->name()},
            {"workers", list},
            {"totals",
             {{"workers", workers_.size()},
              {"healthy", healthy},
              {"unhealthy", std::int64_t(workers_.size()) - healthy},
              {"routable", routable},
              {"in_flight", in_flight},
              {"queued", admission_.waiting()},
              {"requests", requests_},
              {"served", served},
              {"failed", failed_},
              {"failures", failures},
              {"retries", retries},
              {"migrations", migrations}}},
            {"load_distribution", distribution}};
  }

 private:
  // ---------------------------------------------------------------- one client request
  struct Exchange {
    // What the client asked.
    std::string path;
    json upstream;  // the body sent to workers: the client's, streamed, with ids, usage and a seed
    bool chat = false, stream = false, include_usage = false, return_ids = false;
    bool migratable = true;  // one prompt: it can resume elsewhere; else it is retried whole
    std::vector<std::int32_t> client_resume;
    std::string route_text, authorization;
    std::string id;
    std::int64_t created = 0;
    Clock::time_point arrival = Clock::now();
    // What came back so far (from every attempt).
    std::vector<std::int32_t> tokens;
    bool finished = false, role_sent = false, first_token = false;
    std::string text, finish_reason, model;
    json usage;
    std::string raw;  // a request that is not migratable: the response as the worker sent it
    int raw_status = 0;
    std::string raw_type;
    int retries = 0, migrations = 0;
    std::set<std::string> failed_on;
    // The hand-over to the client's HTTP thread.
    std::mutex mutex;
    std::condition_variable changed;
    std::deque<std::string> events;  // SSE events ready to write
    bool closed = false;             // the upstream loop ended
    bool sent = false;               // something went to the client (its status is 200 then)
    std::optional<ApiError> error;   // the error to answer when nothing was sent
    std::atomic<bool> client_gone{false};
    std::shared_ptr<Attempt> attempt;  // the current one
    std::function<void()> on_end;      // releases the admission, once

    ~Exchange() {
      if (on_end) on_end();
    }
    void emit(std::string event) {
      std::lock_guard<std::mutex> lock(mutex);
      events.push_back(std::move(event));
      sent = true;
      changed.notify_all();
    }
    void close() {
      std::lock_guard<std::mutex> lock(mutex);
      closed = true;
      changed.notify_all();
    }
    void client_left() {
      client_gone = true;
      std::shared_ptr<Attempt> a;
      {
        std::lock_guard<std::mutex> lock(mutex);
        a = attempt;
      }
      if (a) a->cancel();
    }
    bool progressed() const { return sent || !tokens.empty() || finished; }
  };

  // The outcome of one attempt on one worker.
  struct Outcome {
    enum Kind { done, client_gone, client_error, failed } kind = done;
    std::optional<ApiError> error;  // client_error: what to pass on; failed: why
    std::string why;
  };

  // Holds a worker's load for one attempt: taken when it is chosen, released exactly once.
  class Lease {
   public:
    Lease(Router& r, std::shared_ptr<Worker> w, std::shared_ptr<Attempt> a)
        : router_(r), worker_(std::move(w)), attempt_(std::move(a)) {}
    ~Lease() {
      std::lock_guard<std::mutex> lock(router_.mutex_);
      --worker_->in_flight;
      worker_->attempts.erase(attempt_);
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    Router& router_;
    std::shared_ptr<Worker> worker_;
    std::shared_ptr<Attempt> attempt_;
  };

  // A routable worker for the exchange (preferring those it did not fail on), its load taken;
  // null when none is routable.
  // `trial`: whether it is the trial request of the worker's half-open breaker.
  std::shared_ptr<Worker> pick(Exchange& ex, const std::shared_ptr<Attempt>& attempt, bool& trial) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Clock::time_point now = Clock::now();
    std::vector<std::shared_ptr<Worker>> routable, fresh;
    for (const auto& w : workers_)
      if (w->health.healthy() && w->breaker.admits(now, options_.breaker)) {
        routable.push_back(w);
        if (!ex.failed_on.count(w->address.url)) fresh.push_back(w);
      }
    const auto& pool = fresh.empty() ? routable : fresh;
    if (pool.empty()) return nullptr;
    std::vector<WorkerLoad> loads;
    for (const auto& w : pool)
      loads.push_back({w->address.url, w->in_flight, w->reported_waiting, w->reported_kv_usage});
    std::size_t i = policy_->choose(RouteRequest{ex.route_text}, loads);
    if (i >= pool.size()) i = 0;  // a user's policy out of range: the first rather than a crash
    const std::shared_ptr<Worker>& w = pool[i];
    ++w->in_flight;
    trial = w->breaker.started();
    w->attempts.insert(attempt);
    return w;
  }

  std::string no_worker_message() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (workers_.empty()) return "no workers are registered with the router";
    return "no healthy worker: all " + std::to_string(workers_.size()) +
           " workers are unhealthy or have their circuit breaker open";
  }

  void record(Worker& w, const Outcome& o, bool trial) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (o.kind == Outcome::failed) {
      ++w.failures;
      w.last_error = o.why;
      w.breaker.failed(trial, Clock::now(), options_.breaker);
    } else if (o.kind == Outcome::client_gone) {
      w.breaker.abandoned(trial);
    } else {
      w.breaker.succeeded(trial, options_.breaker);
    }
  }

  // The upstream loop of one exchange: attempts until it is answered, retried (nothing produced
  // yet) or migrated (something produced), within the limits.
  void forward(const std::shared_ptr<Exchange>& exp) {
    try {
      attempts(*exp);
    } catch (const std::exception& e) {  // a defect, or no memory: the client hears of it all the same
      fail(*exp, ApiError(500, std::string("the router failed: ") + e.what()));
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (exp->error) ++failed_;
    }
    exp->close();
  }

  void attempts(Exchange& ex) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      retry_budget_.request(Clock::now());
    }
    std::mt19937_64 jitter(std::random_device{}());
    std::string last_why;
    for (;;) {
      auto attempt = std::make_shared<Attempt>();
      {
        std::lock_guard<std::mutex> lock(ex.mutex);
        ex.attempt = attempt;
      }
      if (ex.client_gone) break;
      if (stopping_) {
        fail(ex, ApiError(503, "the router is shutting down", "", "unavailable"));
        break;
      }
      bool trial = false;
      std::shared_ptr<Worker> w = pick(ex, attempt, trial);
      if (!w) {
        fail(ex, ApiError(503, no_worker_message() + (last_why.empty() ? "" : " (last failure: " + last_why + ")"), "",
                          "no_healthy_worker"));
        break;
      }
      Outcome o;
      {
        Lease lease(*this, w, attempt);
        o = ex.migratable ? stream_from(ex, w, *attempt) : relay_from(ex, *w, *attempt);
      }
      record(*w, o, trial);
      if (o.kind == Outcome::done) {
        finish(ex, w);
        break;
      }
      if (o.kind == Outcome::client_gone) break;
      if (o.kind == Outcome::client_error) {
        fail(ex, *o.error);
        break;
      }
      if (ex.migratable && ex.finished && !ex.usage.is_null()) {  // it failed after its answer was whole
        complete(ex);
        finish(ex, w);
        break;
      }
      // The worker failed this request.
      last_why = w->address.url + ": " + o.why;
      std::fprintf(stderr, "tpkit-router: %s\n", last_why.c_str());
      ex.failed_on.insert(w->address.url);
      if (ex.migratable && ex.progressed()) {
        {
          std::lock_guard<std::mutex> lock(mutex_);
          ++w->migrations;
          ++migrations_total_;
        }
        if (++ex.migrations > options_.migration_limit) {
          fail(ex, ApiError(502,
                            "the request failed on " + std::to_string(ex.migrations) +
                                " workers in turn (--migration-limit " + std::to_string(options_.migration_limit) +
                                "); last: " + last_why,
                            "", "migration_limit"));
          break;
        }
        continue;  // at once: the answer so far is kept, and another worker continues it
      }
      if (ex.progressed()) {  // a relayed stream that already reached the client cannot be redone
        fail(ex, ApiError(502, "the worker failed mid-stream: " + last_why, "", "worker_failed"));
        break;
      }
      bool budget = false;
      if (ex.retries < options_.max_retries) {
        std::lock_guard<std::mutex> lock(mutex_);
        budget = retry_budget_.try_retry(Clock::now(), options_.retry_budget);
        if (budget) ++w->retries, ++retries_total_;
      }
      if (ex.retries >= options_.max_retries || !budget) {
        ApiError e = o.error ? *o.error : ApiError(502, "the worker failed: " + last_why, "", "worker_failed");
        if (ex.retries < options_.max_retries)
          e = ApiError(e.status, std::string(e.what()) + " (the retry budget is spent)", e.param, e.code);
        fail(ex, e);
        break;
      }
      ++ex.retries;
      const double wait = backoff_seconds(ex.retries, options_.backoff, jitter);
      const auto until = Clock::now() + seconds_to_duration(wait);
      while (Clock::now() < until && !ex.client_gone) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  void fail(Exchange& ex, const ApiError& e) {
    if (ex.sent) {  // the client has a 200 stream: the error is its last event
      ex.emit("data: " + dump(e.body()) + "\n\n");
      ex.emit("data: [DONE]\n\n");
    }
    std::lock_guard<std::mutex> lock(ex.mutex);
    ex.error = e;
  }

  void finish(Exchange& ex, const std::shared_ptr<Worker>& w) {
    const double e2e = std::chrono::duration<double>(Clock::now() - ex.arrival).count();
    std::lock_guard<std::mutex> lock(mutex_);
    ++w->served;
    w->e2e.observe(e2e);
  }

  static std::string seconds_text(double s) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", s);
    return buffer;
  }

  static std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

  httplib::Client connect(const Worker& w, double read_timeout) const {
    httplib::Client c(w.address.host, w.address.port);
    c.set_connection_timeout(seconds_to_duration(options_.connect_timeout));
    c.set_read_timeout(seconds_to_duration(read_timeout));
    c.set_write_timeout(seconds_to_duration(read_timeout));
    return c;
  }

  // Sends the exchange's request to `w`; `on_data` gets the body of a 200 as it arrives.
  template <class OnData>
  Outcome call(Exchange& ex, Worker& w, Attempt& attempt, const std::string& body, OnData on_data) {
    httplib::Client c = connect(w, options_.stream_idle_timeout);
    Outcome out;
    if (!attempt.attach(&c)) {
      attempt.attach(nullptr);
      out.kind = ex.client_gone ? Outcome::client_gone : Outcome::failed;
      out.why = "cancelled: the worker became unhealthy";
      return out;
    }
    httplib::Request req;
    req.method = "POST";
    req.path = ex.path;
    req.body = body;
    req.set_header("Content-Type", "application/json");
    if (!ex.authorization.empty()) req.set_header("Authorization", ex.authorization);
    int status = 0;
    std::string error_body, content_type;
    bool stop_reading = false;
    req.response_handler = [&](const httplib::Response& r) {
      status = r.status;
      content_type = r.get_header_value("Content-Type");
      return true;
    };
    req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
      w.last_data = Clock::now().time_since_epoch().count();
      if (ex.client_gone || attempt.cancelled()) return false;
      if (status != 200) {
        error_body.append(data, n);
        return error_body.size() < (1u << 20);
      }
      try {
        if (on_data(data, n, content_type, out)) return true;
      } catch (const std::exception& e) {  // a chunk not as tpkit-serve sends them
        out = {Outcome::failed, std::nullopt, std::string("it sent a malformed event: ") + e.what()};
      }
      stop_reading = true;
      return false;
    };
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    const Clock::time_point start = Clock::now();
    const bool ok = c.send(req, res, err);
    attempt.attach(nullptr);
    if (ex.client_gone) return {Outcome::client_gone, std::nullopt, "the client left"};
    if (stop_reading) return out;  // on_data decided
    if (attempt.cancelled()) return {Outcome::failed, std::nullopt, "cancelled: the worker became unhealthy"};
    // A read error is a stall when nothing came for the idle timeout, else a broken connection.
    const bool stalled = err == httplib::Error::Read &&
                         Clock::now() - std::max(start, Clock::time_point(Clock::duration(w.last_data.load()))) >=
                             seconds_to_duration(options_.stream_idle_timeout * 0.9);
    const std::string idle = seconds_text(options_.stream_idle_timeout) + " s (--stream-idle-timeout)";
    if (!ok && status == 0)
      return {Outcome::failed, std::nullopt,
              stalled                       ? "no answer within " + idle
              : err == httplib::Error::Read ? "the connection broke before an answer"
                                            : "cannot reach it: " + httplib::to_string(err)};
    if (status != 200) {
      std::optional<ApiError> passed = upstream_error(status, error_body);
      const bool retriable = status == 408 || status == 429 || status >= 500;
      return {retriable ? Outcome::failed : Outcome::client_error, passed,
              "HTTP " + std::to_string(status) + (passed ? std::string(": ") + passed->what() : "")};
    }
    if (!ok) {
      return {Outcome::failed, std::nullopt,
              stalled ? "its stream stalled for " + idle : "its stream broke: " + httplib::to_string(err)};
    }
    return out;
  }

  // A worker's error body as an ApiError with its status (its message kept when it is OpenAI's
  // error object).
  static std::optional<ApiError> upstream_error(int status, const std::string& body) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
      const json& e = j["error"];
      return ApiError(status,
                      e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "error",
                      e.contains("param") && e["param"].is_string() ? e["param"].get<std::string>() : "",
                      e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "");
    }
    return ApiError(status, "the worker answered HTTP " + std::to_string(status));
  }

  // A migratable request: streamed from the worker with token ids; each chunk is checked against
  // what the client already has, rewritten under the router's id and passed on (or kept for the
  // whole answer). After a migration, the resumed worker's chunks for tokens the client already
  // has are dropped.
  Outcome stream_from(Exchange& ex, const std::shared_ptr<Worker>& worker, Attempt& attempt) {
    json body = ex.upstream;
    // Resume after what the client has; when its finish was seen, one token earlier, so that the
    // worker produces the end again (and its usage).
    std::size_t resume_at = ex.tokens.size();
    if (ex.finished && resume_at > 0) --resume_at;
    std::size_t skip = ex.tokens.size() - resume_at;
    if (resume_at > 0 || !ex.client_resume.empty() || ex.finished) {
      std::vector<std::int32_t> resume = ex.client_resume;
      resume.insert(resume.end(), ex.tokens.begin(), ex.tokens.begin() + std::ptrdiff_t(resume_at));
      body["resume_token_ids"] = resume;
    }
    std::string buffer;
    bool done = false;
    Outcome out = call(ex, *worker, attempt, dump(body),
                       [&](const char* data, std::size_t n, const std::string&, Outcome& result) {
                         buffer.append(data, n);
                         for (std::size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
                           const std::string event = buffer.substr(0, end);
                           buffer.erase(0, end + 2);
                           if (event.rfind("data: ", 0) != 0) continue;
                           if (!on_event(ex, worker, event.substr(6), skip, done, result)) return false;
                         }
                         return true;
                       });
    if (out.kind == Outcome::done && !done) return {Outcome::failed, std::nullopt, "its stream ended before [DONE]"};
    return out;
  }

  // One event of a worker's stream; false ends the attempt with `result`.
  bool on_event(Exchange& ex, const std::shared_ptr<Worker>& w, const std::string& data, std::size_t& skip, bool& done,
                Outcome& result) {
    if (data == "[DONE]") {
      if (!ex.finished) {
        result = {Outcome::failed, std::nullopt, "its stream ended without a finish reason"};
        return false;
      }
      done = true;
      complete(ex);
      return true;
    }
    json e = json::parse(data, nullptr, false);
    if (!e.is_object()) {
      result = {Outcome::failed, std::nullopt, "it sent an event that is not JSON"};
      return false;
    }
    if (e.contains("error")) {
      const std::optional<ApiError> err = upstream_error(500, dump(e));
      const std::string type = e["error"].is_object() ? e["error"].value("type", std::string()) : "";
      if (type == "invalid_request_error") {  // the request's own fault: any worker would say so
        ApiError passed(400, err->what(), err->param, err->code);
        result = {Outcome::client_error, passed, passed.what()};
      } else if (err->code == "timeout") {  // the worker's --request-timeout: the client's limit, not a failure
        ApiError passed(504, err->what(), "", err->code);
        result = {Outcome::client_error, passed, passed.what()};
      } else {
        result = {Outcome::failed, std::nullopt, std::string("it failed the request: ") + err->what()};
      }
      return false;
    }
    if (ex.model.empty() && e.contains("model") && e["model"].is_string()) ex.model = e["model"];
    if (!e.contains("choices") || !e["choices"].is_array()) return true;
    if (e["choices"].empty()) {  // the usage chunk: kept, and sent after the finish
      if (e.contains("usage")) ex.usage = e["usage"];
      return true;
    }
    json& c = e["choices"][0];
    std::vector<std::int32_t> ids;
    if (c.contains("token_ids") && c["token_ids"].is_array()) ids = c["token_ids"].get<std::vector<std::int32_t>>();
    if (!ex.return_ids) c.erase("token_ids");
    const json reason = c.value("finish_reason", json(nullptr));
    if (reason == "error") return true;  // the error event that follows decides
    // Not asked for by the router (it hangs up instead): the worker ended it, a drain that timed out.
    if (reason == "abort") {
      result = {Outcome::failed, std::nullopt, "it aborted the request (shutting down?)"};
      return false;
    }
    if (ex.chat && c.contains("delta") && c["delta"].contains("role")) {
      if (ex.role_sent) return true;
      ex.role_sent = true;
    } else {
      if (skip > 0 && !ids.empty()) {  // the client has it already
        skip -= std::min(skip, ids.size());
        return true;
      }
      if (!reason.is_null()) {
        if (ex.finished) return true;
        ex.finished = true;
        ex.finish_reason = reason;
      }
      ex.tokens.insert(ex.tokens.end(), ids.begin(), ids.end());
      if (!ids.empty() && !ex.first_token) {
        ex.first_token = true;
        const double ttft = std::chrono::duration<double>(Clock::now() - ex.arrival).count();
        std::lock_guard<std::mutex> lock(mutex_);
        w->ttft.observe(ttft);
      }
      const std::string piece = ex.chat
                                    ? (c["delta"].contains("content") ? c["delta"]["content"].get<std::string>() : "")
                                    : c.value("text", std::string());
      ex.text += piece;
      // Without token ids a client gets a chunk only when text or the finish came (as from a
      // worker not asked for ids).
      if (!ex.return_ids && piece.empty() && reason.is_null()) return true;
    }
    if (ex.stream) {
      e["id"] = ex.id;
      e["created"] = ex.created;
      ex.emit("data: " + dump(e) + "\n\n");
    }
    return true;
  }

  // The end of a whole answer's stream: the usage (when asked for) and [DONE].
  void complete(Exchange& ex) {
    if (!ex.stream) return;
    if (ex.include_usage && !ex.usage.is_null()) {
      json last = {{"id", ex.id},
                   {"object", ex.chat ? "chat.completion.chunk" : "text_completion"},
                   {"created", ex.created},
                   {"model", ex.model},
                   {"choices", json::array()},
                   {"usage", ex.usage}};
      ex.emit("data: " + dump(last) + "\n\n");
    }
    ex.emit("data: [DONE]\n\n");
  }

  // A request that cannot resume elsewhere (several prompts): relayed as the worker answers it;
  // retried on another worker only while nothing reached the client.
  Outcome relay_from(Exchange& ex, Worker& w, Attempt& attempt) {
    ex.raw.clear();
    // A stream is passed on whole events at a time, so that an error event never follows half of one.
    Outcome out = call(ex, w, attempt, dump(ex.upstream),
                       [&](const char* data, std::size_t n, const std::string& type, Outcome&) {
                         ex.raw_type = type;
                         ex.raw.append(data, n);
                         const std::size_t end = ex.raw.rfind("\n\n");
                         if (ex.stream && end != std::string::npos) {
                           ex.emit(ex.raw.substr(0, end + 2));
                           ex.raw.erase(0, end + 2);
                         }
                         return true;
                       });
    if (out.kind == Outcome::done) {
      ex.raw_status = 200;
      if (ex.stream && !ex.raw.empty()) ex.emit(std::move(ex.raw));
    }
    return out;
  }

  // ---------------------------------------------------------------- health
  // One /health check (and, where the policy weighs them, the worker's reported queue and KV use).
  CheckResult check(const WorkerAddress& a, Worker* w) {
    httplib::Client c(a.host, a.port);
    c.set_connection_timeout(seconds_to_duration(std::min(options_.connect_timeout, options_.health.timeout)));
    c.set_read_timeout(seconds_to_duration(options_.health.timeout));
    auto res = c.Get("/health");
    if (res && res->status == 200) {
      const LoadWeights& lw = options_.policy_options.weights;
      if (w && (lw.waiting > 0 || lw.kv_usage > 0)) read_load(c, *w);
      return CheckResult::success;
    }
    if (!res && res.error() == httplib::Error::Read && w) {
      // Timed out: busy, if it sent the router data within the last interval.
      const Clock::time_point last{Clock::duration(w->last_data.load())};
      if (Clock::now() - last < seconds_to_duration(options_.health.interval + options_.health.timeout))
        return CheckResult::busy;
    }
    return CheckResult::failure;
  }

  void read_load(httplib::Client& c, Worker& w) {
    auto res = c.Get("/metrics");
    if (!res || res->status != 200) return;
    const auto value = [&](const std::string& name) {
      const std::size_t at = res->body.find("\n" + name + "{");
      if (at == std::string::npos) return -1.0;
      const std::size_t space = res->body.find("} ", at);
      return space == std::string::npos ? -1.0 : std::atof(res->body.c_str() + space + 2);
    };
    const double waiting = value("tpkit:num_requests_waiting"), kv = value("tpkit:kv_cache_usage_perc");
    std::lock_guard<std::mutex> lock(mutex_);
    w.reported_waiting = waiting, w.reported_kv_usage = kv;
  }

  // Checks each worker every interval, each on a thread of its own (a hung worker delays no
  // other); a worker turning unhealthy has its requests cancelled, which moves them elsewhere.
  void monitor() {
    while (!stopping_) {
      std::vector<std::shared_ptr<Worker>> due;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        const Clock::time_point now = Clock::now();
        for (const auto& w : workers_)
          if (!w->checking && now >= w->next_check) {
            w->checking = true;
            w->next_check = now + seconds_to_duration(options_.health.interval);
            due.push_back(w);
            ++background_;
          }
      }
      for (auto& w : due) try {
          std::thread([this, w] { health_check(w); }).detach();
        } catch (const std::system_error&) {  // no thread now: the next round checks it
          std::lock_guard<std::mutex> lock(mutex_);
          w->checking = false;
          --background_;
          background_done_.notify_all();
        }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  void health_check(const std::shared_ptr<Worker>& w) {
    const CheckResult r = check(w->address, w.get());
    std::vector<std::shared_ptr<Attempt>> cancel;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      w->checking = false;
      if (r == CheckResult::failure) ++w->check_failures;
      if (w->health.record(r, options_.health)) {
        std::fprintf(stderr, "tpkit-router: worker %s is %s\n", w->address.url.c_str(),
                     w->health.healthy() ? "healthy again" : "unhealthy (failed its health checks)");
        if (!w->health.healthy()) {
          w->last_error = "failed " + std::to_string(options_.health.failure_threshold) + " health checks";
          cancel.assign(w->attempts.begin(), w->attempts.end());
        }
      }
    }
    // Outside the lock: stopping a connection may wait for its connect.
    for (const auto& a : cancel) a->cancel();
    std::lock_guard<std::mutex> lock(mutex_);
    --background_;
    background_done_.notify_all();
  }

  // ---------------------------------------------------------------- HTTP
  struct Active {
    std::atomic<int>& n;
    explicit Active(std::atomic<int>& a) : n(a) { ++n; }
    ~Active() { --n; }
  };

  void routes() {
    serve::configure_server(http_, options_.http_threads, options_.max_body_bytes);
    http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const json s = stats();
      // Ready while some worker can take a request (healthy, its breaker not open).
      const std::int64_t routable = s["totals"]["routable"];
      const bool ok = !draining_ && routable > 0;
      reply(res,
            {{"status", draining_ ? "draining"
                        : ok      ? "ok"
                                  : "no healthy worker"},
             {"healthy_workers", s["totals"]["healthy"]},
             {"routable_workers", routable}},
            ok ? 200 : 503);
    });
    http_.Get("/stats", [this](const httplib::Request&, httplib::Response& res) { reply(res, stats()); });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/workers", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, {{"workers", stats()["workers"]}});
    });
    http_.Post("/workers", [this](const httplib::Request& req, httplib::Response& res) {
      const json body = json::parse(req.body, nullptr, false);
      if (!body.is_object() || !body.contains("url") || !body["url"].is_string())
        return reply_error(res, ApiError(400, "send {\"url\": \"http://HOST:PORT\"}", "url"));
      try {
        if (!add_worker(body["url"]))
          return reply_error(
              res, ApiError(409, "the worker " + body["url"].get<std::string>() + " is registered already", "url",
                            "worker_exists"));
      } catch (const std::invalid_argument& e) {
        return reply_error(res, ApiError(400, e.what(), "url"));
      }
      reply(res, {{"added", WorkerAddress::parse(body["url"]).url}}, 201);
    });
    http_.Delete(R"(/workers/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string url = httplib::detail::decode_url(req.matches[1], false);
      if (!remove_worker(url))
        return reply_error(res, ApiError(404, "no worker " + url + " is registered", "url", "worker_not_found"));
      reply(res, {{"removed", url}});
    });
    for (const char* path : {"/v1/completions", "/v1/chat/completions"})
      http_.Post(path, [this, path](const httplib::Request& req, httplib::Response& res) {
        Active active(active_);
        try {
          generate(req, res, path);
        } catch (const ApiError& e) {
          reply_error(res, e);
        }
      });
    for (const char* path : {"/tokenize", "/detokenize"})
      http_.Post(path, [this, path](const httplib::Request& req, httplib::Response& res) {
        Active active(active_);
        pass(req, res, "POST", path);
      });
    http_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      Active active(active_);
      pass(req, res, "GET", "/v1/models");
    });
  }

  // A small request any worker answers alike: sent to one, to another if it cannot be reached.
  void pass(const httplib::Request& req, httplib::Response& res, const std::string& method, const std::string& path) {
    std::set<std::string> tried;
    for (int k = 0; k <= options_.max_retries; ++k) {
      std::shared_ptr<Worker> w;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        const Clock::time_point now = Clock::now();
        for (const auto& c : workers_)
          if (c->health.healthy() && c->breaker.admits(now, options_.breaker) && !tried.count(c->address.url)) {
            w = c;
            break;
          }
      }
      if (!w) break;
      tried.insert(w->address.url);
      httplib::Client c = connect(*w, 30);
      httplib::Headers headers;
      if (req.has_header("Authorization")) headers.emplace("Authorization", req.get_header_value("Authorization"));
      auto r =
          method == "GET" ? c.Get(path.c_str(), headers) : c.Post(path.c_str(), headers, req.body, "application/json");
      if (!r || r->status >= 500) continue;
      res.status = r->status;
      res.set_content(r->body, r->get_header_value("Content-Type").c_str());
      return;
    }
    reply_error(res, ApiError(503, no_worker_message(), "", "no_healthy_worker"));
  }

  // Checks what the router itself acts on, and makes the body the workers get.
  std::shared_ptr<Exchange> read_request(const httplib::Request& req, const std::string& path) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    auto ex = std::make_shared<Exchange>();
    ex->path = path;
    ex->chat = path == "/v1/chat/completions";
    const auto flag = [&](const json& v, const char* name) {
      if (!v.is_boolean()) throw ApiError(400, std::string("'") + name + "' must be true or false", name);
      return v.get<bool>();
    };
    if (body.contains("stream") && !body["stream"].is_null()) ex->stream = flag(body["stream"], "stream");
    if (body.contains("stream_options") && !body["stream_options"].is_null()) {
      const json& so = body["stream_options"];
      if (!so.is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options");
      if (so.contains("include_usage") && !so["include_usage"].is_null())
        ex->include_usage = flag(so["include_usage"], "include_usage");
    }
    if (body.contains("return_token_ids") && !body["return_token_ids"].is_null())
      ex->return_ids = flag(body["return_token_ids"], "return_token_ids");
    if (body.contains("seed") && !body["seed"].is_null() && !body["seed"].is_number_integer())
      throw ApiError(400, "'seed' must be an integer", "seed");
    if (body.contains("resume_token_ids") && !body["resume_token_ids"].is_null()) {
      const json& r = body["resume_token_ids"];
      if (!r.is_array()) throw ApiError(400, "'resume_token_ids' must be a list of token ids", "resume_token_ids");
      for (const json& t : r)
        if (!t.is_number_integer() || t.get<std::int64_t>() < 0 || t.get<std::int64_t>() > INT32_MAX)
          throw ApiError(400, "'resume_token_ids' must be a list of token ids", "resume_token_ids");
      ex->client_resume = r.get<std::vector<std::int32_t>>();
      // As a worker would: a sampled answer continues only from the seed it started with.
      const bool sampled =
          !body.contains("temperature") || !body["temperature"].is_number() || body["temperature"].get<double>() != 0;
      if (!ex->client_resume.empty() && sampled && (!body.contains("seed") || body["seed"].is_null()))
        throw ApiError(400, "'resume_token_ids' with sampling needs the 'seed' the request started with",
                       "resume_token_ids");
    }
    // What a prefix-aware policy matches: the prompt, or the messages' roles and contents.
    if (ex->chat) {
      if (body.contains("messages") && body["messages"].is_array())
        for (const json& m : body["messages"])
          if (m.is_object()) {
            if (m.contains("role") && m["role"].is_string()) ex->route_text += m["role"].get<std::string>() + "\n";
            if (m.contains("content") && m["content"].is_string())
              ex->route_text += m["content"].get<std::string>() + "\n";
          }
    } else if (body.contains("prompt")) {
      const json& p = body["prompt"];
      if (p.is_string()) {
        ex->route_text = p;
      } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
        for (const json& t : p) ex->route_text += dump(t) + ",";
      } else {
        ex->migratable = false;  // several prompts
      }
    }
    ex->authorization = req.get_header_value("Authorization");
    if (ex->migratable) {
      body["stream"] = true;
      body["stream_options"] = {{"include_usage", true}};
      body["return_token_ids"] = true;
      if (!body.contains("seed") || body["seed"].is_null()) {
        std::lock_guard<std::mutex> lock(mutex_);
        body["seed"] = std::int64_t(seed_rng_() >> 1);  // so that a sampled answer can resume elsewhere
      }
      body.erase("resume_token_ids");
    }
    ex->upstream = std::move(body);
    ex->id = new_id(ex->chat ? "chatcmpl-" : "cmpl-");
    ex->created =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    return ex;
  }

  std::string new_id(const char* prefix) {
    std::lock_guard<std::mutex> lock(mutex_);
    char hex[33];
    std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(seed_rng_()),
                  static_cast<unsigned long long>(seed_rng_()));
    return std::string(prefix) + hex;
  }

  bool any_routable() {
    std::lock_guard<std::mutex> lock(mutex_);
    const Clock::time_point now = Clock::now();
    for (const auto& w : workers_)
      if (w->health.healthy() && w->breaker.admits(now, options_.breaker)) return true;
    return false;
  }

  void count_request(int status) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++responses_[status];
  }

  void generate(const httplib::Request& req, httplib::Response& res, const std::string& path) {
    if (draining_) throw ApiError(503, "the router is shutting down", "", "unavailable");
    std::shared_ptr<Exchange> ex = read_request(req, path);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++requests_;
    }
    if (!any_routable()) {
      count_request(503);
      throw ApiError(503, no_worker_message(), "", "no_healthy_worker");
    }
    switch (admission_.enter(Clock::now() + seconds_to_duration(options_.queue_timeout))) {
      case Admission::Result::queue_full:
        count_request(429);
        throw ApiError(429, "the router's queue is full (--queue-size " + std::to_string(options_.queue_size) + ")", "",
                       "queue_full");
      case Admission::Result::timed_out:
        count_request(408);
        throw ApiError(408, "the request waited longer than the router's --queue-timeout for its turn", "",
                       "queue_timeout");
      case Admission::Result::admitted:
        break;
    }
    ex->on_end = [this] { admission_.leave(); };
    // The upstream loop runs on its own thread; this one waits for the first event (or the end).
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++background_;
    }
    try {
      std::thread([this, ex]() mutable {
        forward(ex);
        ex.reset();  // (perhaps the last reference, which gives back the admission: while the router lives)
        std::lock_guard<std::mutex> lock(mutex_);
        --background_;
        background_done_.notify_all();
      }).detach();
    } catch (const std::system_error&) {
      std::lock_guard<std::mutex> lock(mutex_);
      --background_;
      background_done_.notify_all();
      throw ApiError(503, "the router cannot start another request now", "", "unavailable");
    }
    {
      // Meanwhile a client that leaves (its socket closed) cancels the request.
      int socket = -1;
      const Clock::time_point waiting_since = Clock::now();
      std::unique_lock<std::mutex> lock(ex->mutex);
      while (!ex->changed.wait_for(lock, std::chrono::milliseconds(50),
                                   [&] { return ex->closed || (ex->stream && !ex->events.empty()); })) {
        if (ex->client_gone || Clock::now() - waiting_since < std::chrono::milliseconds(100)) continue;
        lock.unlock();
        if (socket < 0) socket = client_socket(req);
        if (socket >= 0 && peer_closed(socket)) ex->client_left();
        lock.lock();
      }
      if (ex->client_gone) return;
      if (ex->closed && ex->error && !ex->sent) {
        count_request(ex->error->status);
        return reply_error(res, *ex->error);
      }
    }
    if (!ex->stream) {
      count_request(ex->raw_status ? ex->raw_status : 200);
      if (!ex->migratable) return res.set_content(ex->raw, ex->raw_type.c_str());
      return reply(res, whole_response(*ex));
    }
    count_request(200);
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ex](std::size_t, httplib::DataSink& sink) {
          Active active(active_);
          for (;;) {
            std::string event;
            {
              std::unique_lock<std::mutex> lock(ex->mutex);
              ex->changed.wait_for(lock, std::chrono::milliseconds(50),
                                   [&] { return ex->closed || !ex->events.empty(); });
              if (!ex->events.empty()) {
                event = std::move(ex->events.front());
                ex->events.pop_front();
              } else if (ex->closed) {
                sink.done();
                return true;
              }
            }
            if (event.empty()) {
              if (!sink.is_writable() || stopping_) break;
              continue;
            }
            if (!sink.write(event.data(), event.size())) break;
          }
          ex->client_left();
          return false;
        },
        [ex](bool success) {
          if (!success) ex->client_left();
        });
  }

  // The socket of the connection `req` came on (cpp-httplib does not tell a handler): the one of
  // this process's sockets whose two ends are the request's. It stays this connection's while the
  // handler runs.
  static int client_socket(const httplib::Request& req) {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
      int fd = -1;
      try {
        fd = std::stoi(entry.path().filename().string());
      } catch (...) {
        continue;
      }
      sockaddr_storage local{}, peer{};
      socklen_t local_size = sizeof local, peer_size = sizeof peer;
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_size) != 0 ||
          getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0)
        continue;
      if (port_of(local) == req.local_port && port_of(peer) == req.remote_port && address_of(peer) == req.remote_addr)
        return fd;
    }
    return -1;
  }
  static int port_of(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
    return -1;
  }
  static std::string address_of(const sockaddr_storage& a) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, text, sizeof text);
    if (a.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, text, sizeof text);
    return text;
  }
  // Whether the peer closed the connection (read end: 0 bytes, or reset).
  static bool peer_closed(int fd) {
    char byte;
    const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

  json whole_response(const Exchange& ex) const {
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", ex.finish_reason}};
    if (ex.chat)
      choice["message"] = {{"role", "assistant"}, {"content", ex.text}};
    else
      choice["text"] = ex.text;
    if (ex.return_ids) choice["token_ids"] = ex.tokens;
    json body = {{"id", ex.id},
                 {"object", ex.chat ? "chat.completion" : "text_completion"},
                 {"created", ex.created},
                 {"model", ex.model},
                 {"choices", json::array({choice})}};
    if (!ex.usage.is_null()) body["usage"] = ex.usage;
    return body;
  }

  // ---------------------------------------------------------------- metrics
  std::string metrics() {
    std::lock_guard<std::mutex> lock(mutex_);
    const Clock::time_point now = Clock::now();
    std::string out;
    const auto head = [&](const char* name, const char* type, const char* help) {
      out +=
          std::string("# HELP tpkit_router:") + name + " " + help + "\n# TYPE tpkit_router:" + name + " " + type + "\n";
    };
    const auto label = [](const Worker& w) { return "worker=\"" + w.address.url + "\""; };
    head("requests_total", "counter", "Generation requests the router answered, by HTTP status.");
    for (const auto& [status, n] : responses_)
      out += "tpkit_router:requests_total{status=\"" + std::to_string(status) + "\"} " + std::to_string(n) + "\n";
    head("retries_total", "counter", "Requests retried on another worker before they produced anything.");
    out += "tpkit_router:retries_total " + std::to_string(retries_total_) + "\n";
    head("migrations_total", "counter", "Requests moved mid-generation to another worker.");
    out += "tpkit_router:migrations_total " + std::to_string(migrations_total_) + "\n";
    head("queued_requests", "gauge", "Requests waiting for admission.");
    out += "tpkit_router:queued_requests " + std::to_string(admission_.waiting()) + "\n";
    head("worker_healthy", "gauge", "1 when the worker passes its health checks.");
    for (const auto& w : workers_)
      out += "tpkit_router:worker_healthy{" + label(*w) + "} " + (w->health.healthy() ? "1" : "0") + "\n";
    head("worker_breaker_state", "gauge", "The worker's circuit breaker: 0 closed, 1 open, 2 half-open.");
    for (const auto& w : workers_)
      out += "tpkit_router:worker_breaker_state{" + label(*w) + "} " +
             std::to_string(int(w->breaker.state(now, options_.breaker))) + "\n";
    head("worker_breaker_transitions_total", "counter", "Times the worker's breaker entered a state.");
    for (const auto& w : workers_)
      for (int s = 0; s < 3; ++s)
        out += "tpkit_router:worker_breaker_transitions_total{" + label(*w) + ",to=\"" +
               CircuitBreaker::name(CircuitBreaker::State(s)) + "\"} " + std::to_string(w->breaker.transitions()[s]) +
               "\n";
    const auto per_worker = [&](const char* name, const char* type, const char* help, auto field) {
      head(name, type, help);
      for (const auto& w : workers_)
        out += std::string("tpkit_router:") + name + "{" + label(*w) + "} " + std::to_string(field(*w)) + "\n";
    };
    per_worker("worker_in_flight", "gauge", "Requests the router has in flight on the worker.",
               [](const Worker& w) { return w.in_flight; });
    per_worker("worker_requests_total", "counter", "Requests the worker answered through the router.",
               [](const Worker& w) { return w.served; });
    per_worker("worker_failures_total", "counter", "Attempts that failed on the worker.",
               [](const Worker& w) { return w.failures; });
    per_worker("worker_retries_total", "counter", "Retries caused by the worker's failures.",
               [](const Worker& w) { return w.retries; });
    per_worker("worker_migrations_total", "counter", "Requests moved away from the worker mid-generation.",
               [](const Worker& w) { return w.migrations; });
    head("time_to_first_token_seconds", "histogram", "Time from the router's arrival to the first token, by worker.");
    for (const auto& w : workers_) w->ttft.write(out, "tpkit_router:time_to_first_token_seconds", label(*w));
    head("e2e_request_latency_seconds", "histogram", "Time from the router's arrival to the answer's end, by worker.");
    for (const auto& w : workers_) w->e2e.write(out, "tpkit_router:e2e_request_latency_seconds", label(*w));
    return out;
  }

  RouterOptions options_;
  std::unique_ptr<RoutingPolicy> policy_;
  Admission admission_;
  httplib::Server http_;
  std::thread monitor_;
  std::atomic<bool> draining_{false}, stopping_{false};
  std::atomic<int> active_{0};

  std::mutex mutex_;  // guards the workers, the policy and the counters
  std::condition_variable background_done_;
  int background_ = 0;  // upstream loops and health checks running
  std::vector<std::shared_ptr<Worker>> workers_;
  RetryBudget retry_budget_;
  std::mt19937_64 seed_rng_{std::random_device{}()};
  std::int64_t requests_ = 0, failed_ = 0, retries_total_ = 0, migrations_total_ = 0;
  std::map<int, std::int64_t> responses_;
};

}  // namespace tpkit::router
