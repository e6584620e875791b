// serve/metrics.hpp: tpkit-serve's Prometheus metrics, with vLLM's names and meanings under the
// `tpkit:` prefix. Gauges and token counters come from the engine's EngineStatus when scraped;
// the request histograms are recorded by the server as each request finishes.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <tpkit/engine/request.hpp>

#include "histogram.hpp"

namespace tpkit::serve {

class Metrics {
 public:
  explicit Metrics(std::string model_name) : labels_("model_name=\"" + escape(std::move(model_name)) + "\"") {}

  // One finished request: its finish reason, and its latencies in seconds (ttft < 0: no token).
  void finished(const std::string& reason, double ttft, const std::vector<double>& inter_token, double e2e,
                double queue) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++finished_[reason];
    if (ttft >= 0) ttft_.observe(ttft);
    for (double gap : inter_token) itl_.observe(gap);
    e2e_.observe(e2e);
    queue_.observe(queue);
  }

  std::string render(const EngineStatus& s) const {
    std::string out;
    const auto metric = [&](const char* name, const char* type, const char* help, const std::string& value) {
      out += std::string("# HELP tpkit:") + name + " " + help + "\n# TYPE tpkit:" + name + " " + type + "\n";
      out += std::string("tpkit:") + name + "{" + labels_ + "} " + value + "\n";
    };
    metric("num_requests_running", "gauge", "Number of requests in model execution batches.",
           std::to_string(s.running));
    metric("num_requests_waiting", "gauge", "Number of requests waiting to be processed (preempted ones included).",
           std::to_string(s.waiting));
    metric("kv_cache_usage_perc", "gauge",
           "KV-cache usage: the fraction of blocks held by requests (1 means 100 percent).",
           Histogram::format(s.kv_cache_usage()));
    metric("prefix_cache_queries_total", "counter", "Prefix-cache queries, in prompt tokens looked up.",
           std::to_string(s.prefix_cache_queries));
    metric("prefix_cache_hits_total", "counter", "Prefix-cache hits, in prompt tokens found.",
           std::to_string(s.prefix_cache_hits));
    metric("prompt_tokens_total", "counter", "Number of prefill tokens processed.", std::to_string(s.prompt_tokens));
    metric("generation_tokens_total", "counter", "Number of generation tokens processed.",
           std::to_string(s.generation_tokens));
    metric("num_preemptions_total", "counter", "Cumulative number of preemptions.", std::to_string(s.preemptions));
    std::lock_guard<std::mutex> lock(mutex_);
    out +=
        "# HELP tpkit:request_success_total Count of finished requests, by finish reason.\n"
        "# TYPE tpkit:request_success_total counter\n";
    for (const char* reason : {"stop", "length", "abort", "error"}) {
      auto it = finished_.find(reason);
      out += std::string("tpkit:request_success_total{") + labels_ + ",finished_reason=\"" + reason + "\"} " +
             std::to_string(it == finished_.end() ? 0 : it->second) + "\n";
    }
    const auto histogram = [&](const char* name, const char* help, const Histogram& h) {
      out += std::string("# HELP tpkit:") + name + " " + help + "\n# TYPE tpkit:" + name + " histogram\n";
      h.write(out, std::string("tpkit:") + name, labels_);
    };
    histogram("time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttft_);
    histogram("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itl_);
    histogram("e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", e2e_);
    histogram("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", queue_);
    if (!s.expert_load.empty()) {
      out +=
          "# HELP tpkit:moe_expert_tokens_total Tokens routed to each expert of each mixture-of-experts layer.\n"
          "# TYPE tpkit:moe_expert_tokens_total counter\n";
      for (const ExpertLoad& l : s.expert_load)
        for (std::size_t e = 0; e < l.tokens.size(); ++e)
          out += std::string("tpkit:moe_expert_tokens_total{") + labels_ + ",layer=\"" + std::to_string(l.layer) +
                 "\",expert=\"" + std::to_string(e) + "\"} " + std::to_string(l.tokens[e]) + "\n";
      out +=
          "# HELP tpkit:moe_expert_imbalance The busiest expert's tokens over the mean, per layer (1: balanced).\n"
          "# TYPE tpkit:moe_expert_imbalance gauge\n";
      for (const ExpertLoad& l : s.expert_load)
        out += std::string("tpkit:moe_expert_imbalance{") + labels_ + ",layer=\"" + std::to_string(l.layer) + "\"} " +
               Histogram::format(l.imbalance()) + "\n";
    }
    return out;
  }

 private:
  static std::string escape(std::string s) {
    std::string out;
    for (char c : s) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  }

  std::string labels_;
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> finished_;
  Histogram ttft_{{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}};
  Histogram itl_{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5}};
  Histogram e2e_{{0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}};
  Histogram queue_{{0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 60, 120}};
};

}  // namespace tpkit::serve
