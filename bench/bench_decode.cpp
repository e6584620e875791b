// CPU decode throughput of the example engine on a llama2.c checkpoint (by default a random
// model of stories110M shape, see make_random_model): TP 1 with one thread, TP 1 with two
// threads inside the rank, and TP 2 with one thread per rank, at batch 1 and 16. Prints
// tokens/s and the effective weight-streaming bandwidth (weight bytes x decode steps / time)
// next to the machine's memcpy bandwidth measured in the same run, with one and with two
// threads, and each two-thread row's speed-up over TP 1 with one thread.
// Each configuration runs seven times, in turns with the others; each row is its median run.
//   bench_decode MODEL.bin [decode_tokens]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include <tpkit/engine/engine.hpp>

namespace {
// memcpy rate: bytes copied per second (the read + write traffic is twice this), best of 5,
// with `threads` threads each copying its own 256 MiB.
double memcpy_rate(int threads) {
  const std::size_t bytes = std::size_t(256) << 20;
  std::vector<std::vector<char>> src(std::size_t(threads), std::vector<char>(bytes, 1)),
      dst(std::size_t(threads), std::vector<char>(bytes, 2));
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { std::memcpy(dst[std::size_t(t)].data(), src[std::size_t(t)].data(), bytes); });
    for (auto& p : pool) p.join();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return double(bytes) * threads / best;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_decode MODEL.bin [decode_tokens]\n");
    return 2;
  }
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 32;
  const double copy1 = memcpy_rate(1), copy2 = memcpy_rate(2);
  std::printf("memcpy: %.2f GB/s with 1 thread, %.2f GB/s with 2 (bytes copied; read + write is twice this)\n",
              copy1 / 1e9, copy2 / 1e9);
  const tpkit::ModelConfig config = tpkit::Checkpoint::open(argv[1]).config();
  const double weight_bytes = 4.0 * double(config.vocab_size * config.hidden_size +
                                           config.num_layers * (2 * config.hidden_size * config.q_size() +
                                                                2 * config.hidden_size * config.kv_size() +
                                                                3 * config.hidden_size * config.intermediate_size));
  std::printf("model: dim %lld, %lld layers, vocab %lld; %.1f MB of weights streamed per decode step\n",
              static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_layers),
              static_cast<long long>(config.vocab_size), weight_bytes / 1e6);
  // Every configuration is built once and run `repeats` times, the configurations taking turns,
  // so that a slow or fast phase of a shared machine hits them alike; each row reports its
  // median run.
  struct Config {
    int tp, threads_per_rank, batch;
    std::unique_ptr<tpkit::Engine> engine;
    std::vector<double> seconds;  // per run
    std::int64_t generated = 0, steps = 0;
    double median_seconds() const {
      std::vector<double> s = seconds;
      std::sort(s.begin(), s.end());
      return s[s.size() / 2];
    }
  };
  std::vector<Config> configs;
  for (const auto& [tp, threads_per_rank] : {std::pair{1, 1}, std::pair{1, 2}, std::pair{2, 1}})
    for (int batch : {1, 16}) {
      tpkit::EngineOptions options;
      options.tp_size = tp;
      options.threads_per_rank = threads_per_rank;
      options.max_num_seqs = batch;
      configs.push_back({tp, threads_per_rank, batch, std::make_unique<tpkit::Engine>(argv[1], options)});
    }
  const int repeats = 7;
  for (int r = 0; r < repeats; ++r)
    for (Config& c : configs) {
      tpkit::SamplingParams p;
      p.temperature = 0;
      p.ignore_eos = true;
      // Warm-up (page in the weights, size the workspaces), then the measured run. Prompts are
      // one token (BOS), so every step but the first is a decode step.
      const std::vector<std::vector<std::int32_t>> prompts(std::size_t(c.batch), {1});
      p.max_tokens = 2;
      c.engine->generate(prompts, std::vector<tpkit::SamplingParams>(std::size_t(c.batch), p));
      p.max_tokens = tokens;
      c.engine->generate(prompts, std::vector<tpkit::SamplingParams>(std::size_t(c.batch), p));
      const auto& s = c.engine->last_stats();
      c.seconds.push_back(s.seconds), c.generated = s.generated_tokens, c.steps = s.steps;
    }
  double one_thread[2] = {0, 0};  // TP 1, one thread: batch 1 and 16
  for (const Config& c : configs) {
    const int threads = c.tp * c.threads_per_rank;
    const double tok_s = double(c.generated) / c.median_seconds();
    const double bandwidth = weight_bytes * double(c.steps) / c.median_seconds();
    const double copy = threads == 1 ? copy1 : copy2;
    double& base = one_thread[c.batch == 1 ? 0 : 1];
    if (threads == 1) base = tok_s;
    std::printf(
        "tp %d x %d thread(s) per rank, batch %2d: %7.1f tok/s  %6.2f GB/s of weights = %5.1f%% of %d-thread "
        "memcpy",
        c.tp, c.threads_per_rank, c.batch, tok_s, bandwidth / 1e9, 100.0 * bandwidth / copy, threads);
    if (threads == 2) std::printf("  (%.2fx TP 1 with one thread)", tok_s / base);
    std::printf("\n");
  }
}
