// router/policy.hpp: how tpkit-router picks a worker for a request. A policy sees the routable
// workers (healthy, breaker closed or admitting a trial) with their load and returns one; the
// router calls it under its lock, so a policy needs no locking of its own. Users plug in their own
// by deriving from RoutingPolicy and registering a factory (register_policy). Standard library
// only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tpkit::router {

// A routable worker as a policy sees it.
struct WorkerLoad {
  std::string_view url;           // stable for the worker's life: the key for a policy's own state
  std::int64_t in_flight = 0;     // requests the router has sent it that have not ended
  double reported_waiting = -1;   // the worker's own queue depth from its /metrics (-1: unknown)
  double reported_kv_usage = -1;  // its KV-cache usage, 0..1 (-1: unknown)
};

// What a policy may look at in a request.
struct RouteRequest {
  std::string_view text;  // the prompt (chat: the messages' roles and contents), for prefix matching
};

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  virtual std::string name() const = 0;
  // The position in `workers` (never empty) to send the request to.
  virtual std::size_t choose(const RouteRequest& request, std::span<const WorkerLoad> workers) = 0;
  // A worker left the router (removed at run time): forget what was kept about it.
  virtual void forget(std::string_view /*url*/) {}
};

// In order, wrapping round.
class RoundRobin final : public RoutingPolicy {
 public:
  std::string name() const override { return "round_robin"; }
  std::size_t choose(const RouteRequest&, std::span<const WorkerLoad> workers) override {
    return next_++ % workers.size();
  }

 private:
  std::size_t next_ = 0;
};

// The load a least-loaded choice compares: the router's in-flight count, optionally blended with
// what the worker reports (its waiting queue, its KV usage scaled to `kv_weight` requests).
struct LoadWeights {
  double waiting = 0;
  double kv_usage = 0;
  double of(const WorkerLoad& w) const {
    return double(w.in_flight) + (w.reported_waiting > 0 ? waiting * w.reported_waiting : 0) +
           (w.reported_kv_usage > 0 ? kv_usage * w.reported_kv_usage : 0);
  }
};

// Among the workers of least load, the first at or after a rotating cursor: equal loads take
// turns instead of all going to the first worker.
class LeastLoadedChoice {
 public:
  explicit LeastLoadedChoice(LoadWeights weights = {}) : weights_(weights) {}
  std::size_t choose(std::span<const WorkerLoad> workers) {
    double least = std::numeric_limits<double>::infinity();
    for (const WorkerLoad& w : workers) least = std::min(least, weights_.of(w));
    const std::size_t n = workers.size();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (cursor_ + k) % n;
      if (weights_.of(workers[i]) == least) {
        cursor_ = i + 1;
        return i;
      }
    }
    return 0;  // (unreachable: some worker has the least load)
  }
  const LoadWeights& weights() const { return weights_; }

 private:
  LoadWeights weights_;
  std::size_t cursor_ = 0;
};

class LeastLoaded final : public RoutingPolicy {
 public:
  explicit LeastLoaded(LoadWeights weights = {}) : least_(weights) {}
  std::string name() const override { return "least_loaded"; }
  std::size_t choose(const RouteRequest&, std::span<const WorkerLoad> workers) override {
    return least_.choose(workers);
  }

 private:
  LeastLoadedChoice least_;
};

// Two distinct workers drawn at random, the less loaded of them (a draw breaks a tie).
class PowerOfTwo final : public RoutingPolicy {
 public:
  explicit PowerOfTwo(std::uint64_t seed = std::random_device{}(), LoadWeights weights = {})
      : rng_(seed), weights_(weights) {}
  std::string name() const override { return "power_of_two"; }
  std::size_t choose(const RouteRequest&, std::span<const WorkerLoad> workers) override {
    if (workers.size() == 1) return 0;
    std::uniform_int_distribution<std::size_t> pick(0, workers.size() - 1);
    const std::size_t a = pick(rng_);
    std::size_t b = pick(rng_);
    while (b == a) b = pick(rng_);
    const double la = weights_.of(workers[a]), lb = weights_.of(workers[b]);
    return la < lb ? a : lb < la ? b : (rng_() & 1 ? a : b);
  }

 private:
  std::mt19937_64 rng_;
  LoadWeights weights_;
};

struct PrefixAwareOptions {
  double match_threshold = 0.5;                 // a request goes by prefix when this fraction of its text matched
  std::int64_t balance_abs_threshold = 32;      // the load is imbalanced when max - min exceeds this ...
  double balance_rel_threshold = 1.5;           // ... and max exceeds this times min: then least-loaded
  std::size_t block_chars = 16;                 // prefixes are remembered in blocks of this many chars
  std::size_t max_blocks_per_worker = 1 << 18;  // least recently used blocks are forgotten beyond it
  LoadWeights weights;                          // the load the balance and the misses go by
};

// An approximate prefix tree per worker: the text of every request a worker received is cut into
// blocks and each block is remembered by a hash chained over all blocks before it, so one hash
// names a whole prefix (as vLLM names KV blocks). A request's match on a worker is the number of
// its leading blocks that worker has seen. Memory per worker is bounded (least recently used
// blocks go first), and hash collisions can only misroute, never corrupt an answer.
class PrefixAware final : public RoutingPolicy {
 public:
  explicit PrefixAware(PrefixAwareOptions options = {}) : options_(options), least_(options.weights) {
    if (options_.block_chars == 0) throw std::invalid_argument("prefix_aware: the block size must be positive");
  }
  std::string name() const override { return "prefix_aware"; }

  std::size_t choose(const RouteRequest& request, std::span<const WorkerLoad> workers) override {
    const std::vector<std::uint64_t> chain = hashes(request.text);
    const std::size_t chosen = pick(request, chain, workers);
    remember(workers[chosen].url, chain);
    return chosen;
  }
  void forget(std::string_view url) override { trees_.erase(std::string(url)); }

  // Blocks of `text` the worker `url` has seen, from the start.
  std::size_t matched_blocks(std::string_view url, std::string_view text) {
    auto it = trees_.find(std::string(url));
    return it == trees_.end() ? 0 : it->second.match(hashes(text));
  }

 private:
  // One worker's remembered prefixes, least recently used last.
  class Tree {
   public:
    std::size_t match(const std::vector<std::uint64_t>& chain) const {
      std::size_t n = 0;
      while (n < chain.size() && blocks_.count(chain[n])) ++n;
      return n;
    }
    void insert(const std::vector<std::uint64_t>& chain, std::size_t limit) {
      for (std::uint64_t h : chain) {
        auto it = blocks_.find(h);
        if (it != blocks_.end()) {
          order_.splice(order_.begin(), order_, it->second);
          continue;
        }
        order_.push_front(h);
        blocks_.emplace(h, order_.begin());
      }
      while (blocks_.size() > limit) {
        blocks_.erase(order_.back());
        order_.pop_back();
      }
    }

   private:
    std::list<std::uint64_t> order_;
    std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> blocks_;
  };

  std::size_t pick(const RouteRequest& request, const std::vector<std::uint64_t>& chain,
                   std::span<const WorkerLoad> workers) {
    double most = 0, least = std::numeric_limits<double>::infinity();
    for (const WorkerLoad& w : workers) {
      const double load = options_.weights.of(w);
      most = std::max(most, load), least = std::min(least, load);
    }
    const bool imbalanced =
        most - least > double(options_.balance_abs_threshold) && most > options_.balance_rel_threshold * least;
    if (imbalanced || chain.empty()) return least_.choose(workers);
    std::size_t best = 0, best_blocks = 0;
    for (std::size_t i = 0; i < workers.size(); ++i) {
      auto it = trees_.find(std::string(workers[i].url));
      const std::size_t blocks = it == trees_.end() ? 0 : it->second.match(chain);
      if (blocks > best_blocks ||
          (blocks == best_blocks && blocks > 0 && options_.weights.of(workers[i]) < options_.weights.of(workers[best])))
        best = i, best_blocks = blocks;
    }
    const double rate = double(best_blocks * options_.block_chars) / double(request.text.size());
    if (best_blocks > 0 && rate >= options_.match_threshold) return best;
    return least_.choose(workers);  // a miss: the least loaded, not the one that has seen least
  }

  void remember(std::string_view url, const std::vector<std::uint64_t>& chain) {
    trees_[std::string(url)].insert(chain, options_.max_blocks_per_worker);
  }

  // The chained hash of each whole block of `text` (FNV-1a over the previous hash and the block).
  std::vector<std::uint64_t> hashes(std::string_view text) const {
    std::vector<std::uint64_t> out;
    std::uint64_t h = 14695981039346656037ull;
    for (std::size_t at = 0; at + options_.block_chars <= text.size(); at += options_.block_chars) {
      for (std::size_t i = 0; i < options_.block_chars; ++i) {
        h ^= std::uint8_t(text[at + i]);
        h *= 1099511628211ull;
      }
      out.push_back(h);
    }
    return out;
  }

  PrefixAwareOptions options_;
  LeastLoadedChoice least_;
  std::map<std::string, Tree> trees_;
};

// Options a policy factory may read (those of the built-in policies).
struct PolicyOptions {
  LoadWeights weights;
  PrefixAwareOptions prefix;
  std::uint64_t seed = std::random_device{}();
};

using PolicyFactory = std::function<std::unique_ptr<RoutingPolicy>(const PolicyOptions&)>;

// The policies --policy can name: the built-in ones and those a program registered.
inline std::map<std::string, PolicyFactory>& policy_registry() {
  static std::map<std::string, PolicyFactory> registry = {
      {"round_robin", [](const PolicyOptions&) { return std::make_unique<RoundRobin>(); }},
      {"least_loaded", [](const PolicyOptions& o) { return std::make_unique<LeastLoaded>(o.weights); }},
      {"power_of_two", [](const PolicyOptions& o) { return std::make_unique<PowerOfTwo>(o.seed, o.weights); }},
      {"prefix_aware",
       [](const PolicyOptions& o) {
         PrefixAwareOptions p = o.prefix;
         p.weights = o.weights;
         return std::make_unique<PrefixAware>(p);
       }},
  };
  return registry;
}

// Makes a user's policy selectable by `--policy NAME`; call before the router starts.
inline void register_policy(const std::string& name, PolicyFactory factory) {
  policy_registry()[name] = std::move(factory);
}

inline std::unique_ptr<RoutingPolicy> make_policy(const std::string& name, const PolicyOptions& options) {
  auto it = policy_registry().find(name);
  if (it == policy_registry().end()) {
    std::string known;
    for (const auto& [n, f] : policy_registry()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown routing policy '" + name + "' (known: " + known + ")");
  }
  return it->second(options);
}

}  // namespace tpkit::router
