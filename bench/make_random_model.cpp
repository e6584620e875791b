// Writes a llama2.c checkpoint with random weights of a given shape, for benchmarks.
//   make_random_model OUT.bin [dim hidden layers heads kv_heads vocab seq_len]
// Default: the stories110M shape (768, 2048, 12, 12, 12, 32000, 256), shared classifier.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2 && argc != 9) {
    std::fprintf(stderr, "usage: make_random_model OUT.bin [dim hidden layers heads kv_heads vocab seq_len]\n");
    return 2;
  }
  std::int32_t h[7] = {768, 2048, 12, 12, 12, 32000, 256};
  if (argc == 9)
    for (int i = 0; i < 7; ++i) h[i] = std::int32_t(std::atoi(argv[i + 2]));
  const std::int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv = h[4], vocab = h[5], seq = h[6];
  const std::int64_t hd = dim / heads, kvd = kv * hd;
  const std::int64_t floats =
      vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kvd * dim + 3 * dim * hidden) + dim + seq * hd;
  std::FILE* f = std::fopen(argv[1], "wb");
  if (!f) return 1;
  std::fwrite(h, 4, 7, f);
  std::vector<float> chunk(1 << 20);
  std::uint64_t state = 42;
  for (std::int64_t written = 0; written < floats;) {
    const std::int64_t n = std::min<std::int64_t>(std::int64_t(chunk.size()), floats - written);
    for (std::int64_t i = 0; i < n; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      chunk[std::size_t(i)] = (float(state >> 40) / float(1 << 24) - 0.5f) * 0.05f;
    }
    std::fwrite(chunk.data(), 4, std::size_t(n), f);
    written += n;
  }
  std::fclose(f);
  std::printf("%s: %lld parameters\n", argv[1], static_cast<long long>(floats - seq * hd));
}
