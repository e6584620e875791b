// bench_serving: a load generator for tpkit-serve in the spirit of vLLM's benchmark_serving.
// Sends streamed /v1/completions requests with token-id prompts of chosen lengths (random ids,
// optionally a shared prefix), closed-loop at a fixed concurrency or open-loop at a Poisson
// rate, and reports request throughput, output tokens/s, and mean / p50 / p99 of
//   TTFT  time to first token: request sent -> first chunk with text
//   TPOT  time per output token after the first: (E2E - TTFT) / (output tokens - 1), per request
//   ITL   inter-token latency: the gaps between a request's consecutive chunks
//   E2E   request sent -> [DONE]
// (vLLM's definitions). A background class of requests (long prompts, say) can run alongside,
// reported separately. `--offline MODEL` runs the same requests through tpkit::Engine::generate in
// this process instead, for the server's efficiency ratio.
//
//   bench_serving --url http://127.0.0.1:8000 --concurrency 16 --num-requests 64 \
//       --input-len 128 --output-len 128
//   bench_serving --offline model.bin --tokenizer tok --tp 2 --num-requests 64 ...
#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <tpkit/engine/engine.hpp>

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Request {
  std::vector<std::int32_t> prompt;
  int output_len = 0;
};

struct Result {
  bool ok = false;
  std::string error;
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  std::int64_t output_tokens = 0;
  std::int64_t prompt_tokens = 0, cached_tokens = 0;  // from the usage
};

// One streamed completion over a raw HTTP/1.1 connection; times its chunks as they arrive. Once
// `stop` is set it hangs up (the server aborts the request).
Result run_one(const std::string& host, int port, const Request& r, const std::string& model,
               const std::atomic<bool>* stop = nullptr) {
  Result out;
  const json body = {{"model", model},
                     {"prompt", r.prompt},
                     {"max_tokens", r.output_len},
                     {"ignore_eos", true},
                     {"temperature", 0},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  const std::string payload = body.dump();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: " + host +
      "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(payload.size()) +
      "\r\n\r\n" + payload;
  addrinfo hints{}, *addresses = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses) != 0 || !addresses) {
    out.error = "cannot resolve " + host;
    return out;
  }
  const int fd = socket(addresses->ai_family, SOCK_STREAM, 0);
  const bool connected = fd >= 0 && connect(fd, addresses->ai_addr, addresses->ai_addrlen) == 0;
  freeaddrinfo(addresses);
  if (!connected) {
    if (fd >= 0) close(fd);
    out.error = "cannot connect";
    return out;
  }
  const Clock::time_point start = Clock::now();
  send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string raw;
  std::size_t scanned = 0;
  Clock::time_point last{};
  bool first = true, done = false;
  char buffer[8192];
  while (!done) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 100) == 0) {
      if (stop && *stop) break;
      continue;
    }
    const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    const Clock::time_point now = Clock::now();
    raw.append(buffer, std::size_t(n));
    // Events are "data: ...\n\n"; chunked framing may split them, so scan the raw bytes.
    for (std::size_t at; (at = raw.find("data: ", scanned)) != std::string::npos;) {
      const std::size_t end = raw.find("\n\n", at);
      if (end == std::string::npos) break;
      const std::string data = raw.substr(at + 6, end - at - 6);
      scanned = end + 2;
      if (data == "[DONE]") {
        done = true;
        break;
      }
      const json e = json::parse(data, nullptr, false);
      if (e.is_discarded() || e.contains("error")) {
        out.error = data;
        continue;
      }
      if (e.contains("usage")) {
        const json& u = e["usage"];
        out.output_tokens = u["completion_tokens"];
        out.prompt_tokens = u["prompt_tokens"];
        if (u.contains("prompt_tokens_details"))
          out.cached_tokens = u["prompt_tokens_details"].value("cached_tokens", 0);
      }
      if (e["choices"].empty() || e["choices"][0]["text"].get<std::string>().empty()) continue;
      if (first) {
        out.ttft = std::chrono::duration<double>(now - start).count();
        first = false;
      } else {
        out.itl.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
    }
  }
  close(fd);
  out.e2e = std::chrono::duration<double>(Clock::now() - start).count();
  if (raw.rfind("HTTP/1.1 200", 0) != 0 && out.error.empty()) out.error = raw.substr(0, raw.find("\r\n"));
  out.ok = done && out.error.empty() && !first;
  return out;
}

// `prefix_groups` shared prefixes: request i begins with prefix i % groups.
std::vector<Request> make_requests(int n, int input_len, int output_len, double range, int prefix_len, int vocab,
                                   std::uint64_t seed, int prefix_groups = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int32_t> token(10, vocab - 1);
  std::vector<std::vector<std::int32_t>> prefixes(std::size_t(std::max(1, prefix_groups)),
                                                  std::vector<std::int32_t>(std::size_t(std::max(0, prefix_len))));
  for (auto& prefix : prefixes)
    for (auto& t : prefix) t = token(rng);
  const auto length = [&](int mean) {
    const int lo = std::max(1, int(std::lround(mean * (1 - range)))),
              hi = std::max(lo, int(std::lround(mean * (1 + range))));
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  std::vector<Request> requests(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Request& r = requests[i];
    r.prompt = prefixes[i % prefixes.size()];
    for (int i = length(input_len); i > 0; --i) r.prompt.push_back(token(rng));
    r.output_len = length(output_len);
  }
  return requests;
}

struct Summary {
  double mean = 0, p50 = 0, p99 = 0;
};
Summary summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  const auto pct = [&](double p) {  // linear interpolation, as numpy.percentile
    const double at = p / 100 * double(v.size() - 1);
    const std::size_t i = std::size_t(at);
    return i + 1 < v.size() ? v[i] + (at - double(i)) * (v[i + 1] - v[i]) : v[i];
  };
  s.p50 = pct(50), s.p99 = pct(99);
  return s;
}

json report(const std::vector<Result>& results, double seconds) {
  std::vector<double> ttft, tpot, itl, e2e;
  std::int64_t tokens = 0, ok = 0, prompt = 0, cached = 0;
  for (const Result& r : results) {
    if (!r.ok) continue;
    ++ok;
    tokens += r.output_tokens;
    prompt += r.prompt_tokens, cached += r.cached_tokens;
    ttft.push_back(r.ttft), e2e.push_back(r.e2e);
    if (r.output_tokens > 1) tpot.push_back((r.e2e - r.ttft) / double(r.output_tokens - 1));
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
  }
  json j = {{"requests", results.size()},
            {"completed", ok},
            {"seconds", seconds},
            {"request_throughput", double(ok) / seconds},
            {"output_tokens", tokens},
            {"output_throughput", double(tokens) / seconds},
            {"prompt_tokens", prompt},
            {"cached_prompt_tokens", cached},
            {"prefix_cache_hit_rate", prompt ? double(cached) / double(prompt) : 0.0}};
  for (auto& [name, values] :
       {std::pair<const char*, std::vector<double>*>{"ttft", &ttft}, {"tpot", &tpot}, {"itl", &itl}, {"e2e", &e2e}}) {
    const Summary s = summarize(*values);
    j[name] = {{"mean_ms", s.mean * 1e3}, {"p50_ms", s.p50 * 1e3}, {"p99_ms", s.p99 * 1e3}};
  }
  return j;
}

void print(const char* title, const json& j) {
  std::printf("%s: %lld/%lld requests in %.2f s: %.3f req/s, %.1f output tok/s\n", title,
              static_cast<long long>(j["completed"]), static_cast<long long>(j["requests"]), double(j["seconds"]),
              double(j["request_throughput"]), double(j["output_throughput"]));
  if (j.contains("prefix_cache_hit_rate") && double(j["prefix_cache_hit_rate"]) > 0)
    std::printf("  prefix cache: %.1f%% of prompt tokens cached\n", 100 * double(j["prefix_cache_hit_rate"]));
  for (const char* m : {"ttft", "tpot", "itl", "e2e"})
    if (j.contains(m))
      std::printf("  %-4s mean %9.2f ms  p50 %9.2f ms  p99 %9.2f ms\n", m, double(j[m]["mean_ms"]),
                  double(j[m]["p50_ms"]), double(j[m]["p99_ms"]));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Load generator for tpkit-serve (vLLM benchmark_serving's metrics).", "bench_serving");
  std::string url = "http://127.0.0.1:8000", model, offline, json_out;
  int num_requests = 64, concurrency = 16, input_len = 128, output_len = 128, prefix_len = 0, vocab = 32000,
      prefix_groups = 1;
  double request_rate = 0, range = 0;
  std::uint64_t seed = 0;
  int bg_concurrency = 0, bg_input_len = 2048, bg_output_len = 1;
  tpkit::EngineOptions options;
  app.add_option("--url", url, "the server")->capture_default_str();
  app.add_option("--model", model, "the model name to send (default: none)");
  app.add_option("--num-requests", num_requests)->capture_default_str();
  app.add_option("--concurrency", concurrency, "closed loop: requests in flight")->capture_default_str();
  app.add_option("--request-rate", request_rate, "open loop: Poisson arrivals per second (0: closed loop)");
  app.add_option("--input-len", input_len, "prompt tokens (after the shared prefix)")->capture_default_str();
  app.add_option("--output-len", output_len, "generated tokens (EOS ignored)")->capture_default_str();
  app.add_option("--range-ratio", range, "lengths uniform in [len(1-r), len(1+r)]")->capture_default_str();
  app.add_option("--prefix-len", prefix_len, "tokens of a prefix every prompt shares")->capture_default_str();
  app.add_option("--prefix-groups", prefix_groups, "distinct shared prefixes (request i has prefix i mod groups)")
      ->capture_default_str();
  app.add_option("--vocab", vocab, "prompt ids are drawn from [10, vocab)")->capture_default_str();
  app.add_option("--seed", seed, "the requests' seed")->capture_default_str();
  app.add_option("--background-concurrency", bg_concurrency, "background requests kept in flight meanwhile");
  app.add_option("--background-input-len", bg_input_len)->capture_default_str();
  app.add_option("--background-output-len", bg_output_len)->capture_default_str();
  app.add_option("--offline", offline, "run the requests through tpkit::Engine on this model instead of HTTP");
  app.add_option("--tokenizer", options.tokenizer, "--offline: the tokenizer (text is decoded, as the server does)");
  app.add_option("--tp", options.tp_size, "--offline: tensor-parallel ranks")->capture_default_str();
  app.add_option("--max-num-seqs", options.max_num_seqs, "--offline: sequences batched")->capture_default_str();
  app.add_option("--max-num-batched-tokens", options.max_num_batched_tokens, "--offline: tokens per step")
      ->capture_default_str();
  app.add_option("--json", json_out, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  const std::vector<Request> requests =
      make_requests(num_requests, input_len, output_len, range, prefix_len, vocab, seed, prefix_groups);
  json result;
  if (!offline.empty()) {
    tpkit::Engine engine(offline, options);
    std::vector<std::vector<std::int32_t>> prompts;
    std::vector<tpkit::SamplingParams> params;
    for (const Request& r : requests) {
      prompts.push_back(r.prompt);
      tpkit::SamplingParams p;
      p.temperature = 0, p.ignore_eos = true, p.max_tokens = r.output_len;
      params.push_back(p);
    }
    engine.generate({prompts[0]}, {params[0]});  // warm-up
    const auto start = Clock::now();
    const auto results = engine.generate(prompts, params);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    std::int64_t tokens = 0;
    for (const auto& r : results) tokens += std::int64_t(r.token_ids.size());
    result = {{"mode", "offline"},
              {"requests", results.size()},
              {"completed", results.size()},
              {"seconds", seconds},
              {"request_throughput", double(results.size()) / seconds},
              {"output_tokens", tokens},
              {"output_throughput", double(tokens) / seconds}};
    print("offline engine", result);
  } else {
    const std::string prefix = "http://";
    std::string host = url.rfind(prefix, 0) == 0 ? url.substr(prefix.size()) : url;
    if (host.back() == '/') host.pop_back();
    const std::size_t colon = host.rfind(':');
    const int port = colon == std::string::npos ? 80 : std::stoi(host.substr(colon + 1));
    host = host.substr(0, colon);
    // Background load: its own requests, kept in flight until the measured ones are done.
    std::atomic<bool> stop{false};
    std::vector<Result> background;
    std::mutex bg_mutex;
    std::vector<std::thread> bg_threads;
    const std::vector<Request> bg_requests = make_requests(64, bg_input_len, bg_output_len, 0, 0, vocab, seed + 1);
    for (int t = 0; t < bg_concurrency; ++t)
      bg_threads.emplace_back([&, t] {
        for (std::size_t k = std::size_t(t); !stop; k += std::size_t(bg_concurrency)) {
          Result r = run_one(host, port, bg_requests[k % bg_requests.size()], model, &stop);
          if (stop) break;  // cut short: not counted
          std::lock_guard<std::mutex> lock(bg_mutex);
          background.push_back(std::move(r));
        }
      });
    if (bg_concurrency > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let them start
    std::vector<Result> results(requests.size());
    const auto start = Clock::now();
    if (request_rate > 0) {  // open loop: Poisson arrivals
      std::mt19937_64 rng(seed + 2);
      std::exponential_distribution<double> gap(request_rate);
      std::vector<std::thread> clients;
      auto at = start;
      for (std::size_t i = 0; i < requests.size(); ++i) {
        std::this_thread::sleep_until(at);
        clients.emplace_back([&, i] { results[i] = run_one(host, port, requests[i], model); });
        at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
      }
      for (auto& c : clients) c.join();
    } else {  // closed loop
      std::atomic<std::size_t> next{0};
      std::vector<std::thread> clients;
      for (int c = 0; c < concurrency; ++c)
        clients.emplace_back([&] {
          for (std::size_t i; (i = next++) < requests.size();) results[i] = run_one(host, port, requests[i], model);
        });
      for (auto& c : clients) c.join();
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    stop = true;
    for (auto& t : bg_threads) t.join();
    result = report(results, seconds);
    result["mode"] = "http";
    print("measured", result);
    for (const Result& r : results)
      if (!r.ok) {
        std::fprintf(stderr, "a request failed: %s\n", r.error.c_str());
        break;
      }
    if (bg_concurrency > 0) {
      result["background"] = report(background, seconds);
      print("background", result["background"]);
    }
  }
  if (!json_out.empty()) {
    std::FILE* f = std::fopen(json_out.c_str(), "w");
    if (f) {
      std::fputs(result.dump(2).c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
