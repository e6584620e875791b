// CPU decode throughput of the example engine on a llama2.c checkpoint (by default a random
// model of stories110M shape, see make_random_model), at TP 1 and 2, batch 1 and 16.
// Prints tokens/s and the effective weight-streaming bandwidth (weight bytes x decode steps /
// time) next to the machine's memcpy bandwidth measured in the same run, with one and with
// two threads.
//   bench_decode MODEL.bin [decode_tokens]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
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
  double tp1_batch1 = 0;
  for (int tp : {1, 2})
    for (int batch : {1, 16}) {
      tpkit::EngineOptions options;
      options.tp_size = tp;
      options.max_num_seqs = batch;
      tpkit::Engine engine(argv[1], options);
      tpkit::SamplingParams p;
      p.temperature = 0;
      p.ignore_eos = true;
      // Warm-up (page in the weights, size the workspaces), then the measured run. Prompts are
      // one token (BOS), so every step but the first is a decode step.
      p.max_tokens = 2;
      engine.generate(std::vector<std::vector<std::int32_t>>(std::size_t(batch), {1}),
                      std::vector<tpkit::SamplingParams>(std::size_t(batch), p));
      p.max_tokens = tokens;
      engine.generate(std::vector<std::vector<std::int32_t>>(std::size_t(batch), {1}),
                      std::vector<tpkit::SamplingParams>(std::size_t(batch), p));
      const auto& s = engine.last_stats();
      const double tok_s = double(s.generated_tokens) / s.seconds;
      const double bandwidth = weight_bytes * double(s.steps) / s.seconds;
      const double copy = tp == 1 ? copy1 : copy2;
      if (tp == 1 && batch == 1) tp1_batch1 = tok_s;
      std::printf("tp %d batch %2d: %7.1f tok/s  %6.2f GB/s of weights = %5.1f%% of %d-thread memcpy", tp, batch, tok_s,
                  bandwidth / 1e9, 100.0 * bandwidth / copy, tp);
      if (batch == 1 && tp == 2) std::printf("  (%.2fx TP 1)", tok_s / tp1_batch1);
      std::printf("\n");
    }
}
