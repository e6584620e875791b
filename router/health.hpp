// router/health.hpp: the rules by which tpkit-router judges a worker, apart from any HTTP: the
// active health state (thresholds over /health checks), the circuit breaker over real traffic, the
// retry budget and the backoff. Time is passed in, so the rules are tested without waiting.
// Standard library only.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <random>
#include <string>

namespace tpkit::router {

using Clock = std::chrono::steady_clock;

inline Clock::duration seconds_to_duration(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The outcome of one /health check. `busy`: it timed out while the worker was sending the router
// data, so it is working, not sick: such a check counts neither way.
enum class CheckResult { success, failure, busy };

struct HealthOptions {
  double interval = 5;        // seconds between checks of a worker
  double timeout = 5;         // seconds a check may take
  int failure_threshold = 3;  // consecutive failed checks that make a healthy worker unhealthy
  int success_threshold = 2;  // consecutive good checks that make an unhealthy worker healthy
};

class HealthState {
 public:
  explicit HealthState(bool healthy = true) : healthy_(healthy) {}
  bool healthy() const { return healthy_; }
  // True when the check changed the state.
  bool record(CheckResult r, const HealthOptions& o) {
    if (r == CheckResult::busy) return false;
    if (r == CheckResult::success) {
      failures_ = 0;
      if (!healthy_ && ++successes_ >= o.success_threshold) return set(true);
    } else {
      successes_ = 0;
      if (healthy_ && ++failures_ >= o.failure_threshold) return set(false);
    }
    return false;
  }
  int consecutive_failures() const { return failures_; }

 private:
  bool set(bool healthy) {
    healthy_ = healthy, failures_ = 0, successes_ = 0;
    return true;
  }
  bool healthy_;
  int failures_ = 0, successes_ = 0;
};

struct BreakerOptions {
  int failure_threshold = 5;  // consecutive failed requests that open the breaker
  double open_seconds = 30;   // how long it stays open before it admits a trial request
  int success_threshold = 2;  // successful trials that close it again
};

// Passive health from real traffic. Closed: all requests pass. Open: none, until `open_seconds`
// passed. Half-open: one trial request at a time; `success_threshold` successful trials close it,
// a failed one opens it again. Only the trial's outcome moves a half-open breaker: requests sent
// before it opened may still be ending, and say nothing of the worker now.
class CircuitBreaker {
 public:
  enum class State { closed, open, half_open };

  State state(Clock::time_point now, const BreakerOptions& o) {
    if (state_ == State::open && now - opened_at_ >= seconds_to_duration(o.open_seconds)) move(State::half_open);
    return state_;
  }
  // May a request be sent now?
  bool admits(Clock::time_point now, const BreakerOptions& o) {
    const State s = state(now, o);
    return s == State::closed || (s == State::half_open && !trial_in_flight_);
  }
  // A request was sent (after admits()); true when it is the half-open breaker's trial, which the
  // caller passes back with its outcome.
  bool started() {
    if (state_ != State::half_open) return false;
    trial_in_flight_ = true;
    return true;
  }
  void succeeded(bool trial, const BreakerOptions& o) {
    if (state_ == State::closed) failures_ = 0;
    if (state_ == State::half_open && trial) {
      trial_in_flight_ = false;
      if (++successes_ >= o.success_threshold) move(State::closed);
    }
  }
  void failed(bool trial, Clock::time_point now, const BreakerOptions& o) {
    if ((state_ == State::half_open && trial) || (state_ == State::closed && ++failures_ >= o.failure_threshold)) {
      opened_at_ = now;
      move(State::open);
    }
  }
  // A request that ended neither way (the client left): the trial slot is free again.
  void abandoned(bool trial) {
    if (state_ == State::half_open && trial) trial_in_flight_ = false;
  }
  // Times the breaker entered each state (for the metrics): closed, open, half-open.
  const std::uint64_t* transitions() const { return transitions_; }

  static const char* name(State s) { return s == State::closed ? "closed" : s == State::open ? "open" : "half_open"; }

 private:
  void move(State to) {
    if (to == state_) return;
    state_ = to, failures_ = 0, successes_ = 0, trial_in_flight_ = false;
    ++transitions_[int(to)];
  }
  State state_ = State::closed;
  int failures_ = 0, successes_ = 0;
  bool trial_in_flight_ = false;
  Clock::time_point opened_at_{};
  std::uint64_t transitions_[3] = {0, 0, 0};
};

// Retries may add at most `ratio` of the requests of the last `window` seconds, plus
// `min_per_second` (so a quiet router can still retry): a sick cluster gets no retry storm.
struct RetryBudgetOptions {
  double ratio = 0.2;
  double min_per_second = 1;
  double window = 10;
};

class RetryBudget {
 public:
  void request(Clock::time_point now) { requests_.push_back(now); }
  // Spends one retry if the budget allows it.
  bool try_retry(Clock::time_point now, const RetryBudgetOptions& o) {
    expire(now, o);
    const double allowed = o.min_per_second * o.window + o.ratio * double(requests_.size());
    if (double(retries_.size()) + 1 > allowed) return false;
    retries_.push_back(now);
    return true;
  }

 private:
  void expire(Clock::time_point now, const RetryBudgetOptions& o) {
    const Clock::time_point horizon = now - seconds_to_duration(o.window);
    while (!requests_.empty() && requests_.front() < horizon) requests_.pop_front();
    while (!retries_.empty() && retries_.front() < horizon) retries_.pop_front();
  }
  std::deque<Clock::time_point> requests_, retries_;
};

struct BackoffOptions {
  double base = 0.05;  // seconds before the first retry (before jitter)
  double max = 2;      // the longest wait
};

// Exponential backoff with jitter: the k-th retry (k >= 1) waits a uniform draw from
// [d/2, d], d = min(max, base * 2^(k-1)).
inline double backoff_seconds(int retry, const BackoffOptions& o, std::mt19937_64& rng) {
  const double d = std::min(o.max, o.base * std::ldexp(1.0, std::max(0, retry - 1)));
  return std::uniform_real_distribution<double>(d / 2, d)(rng);
}

}  // namespace tpkit::router
