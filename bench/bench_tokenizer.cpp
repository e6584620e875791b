// Encode throughput of tokenizers, one thread: MB of UTF-8 per second over a corpus of
// documents (each file cut into documents of about 4 KB at line ends, each encoded by itself as a
// request's prompt would be). Medians of --reps runs after one warm-up. The token count is
// printed so a side-by-side run (bench/tokenizer_side_by_side.py) can check that both produced
// the same tokens.
//
//   bench_tokenizer --tokenizer NAME=PATH [--tokenizer ...] --corpus FILE [FILE ...] [--reps 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tpkit/tokenizer/load.hpp"

namespace {

std::vector<std::string> documents(const std::vector<std::string>& files) {
  std::vector<std::string> docs;
  for (const auto& path : files) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    std::stringstream s;
    s << f.rdbuf();
    const std::string text = s.str();
    for (std::size_t at = 0; at < text.size();) {
      std::size_t end = std::min(text.size(), at + 4096);
      const std::size_t newline = text.find('\n', end);
      end = newline == std::string::npos ? text.size() : newline + 1;
      docs.push_back(text.substr(at, end - at));
      at = end;
    }
  }
  return docs;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::pair<std::string, std::string>> tokenizers;
  std::vector<std::string> corpus;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokenizer" && i + 1 < argc) {
      const std::string spec = argv[++i];
      const auto eq = spec.find('=');
      tokenizers.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--corpus") {
      while (i + 1 < argc && std::strncmp(argv[i + 1], "--", 2) != 0) corpus.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s --tokenizer NAME=PATH ... --corpus FILE ... [--reps N]\n", argv[0]);
      return 2;
    }
  }
  if (tokenizers.empty() || corpus.empty()) {
    std::fprintf(stderr, "usage: %s --tokenizer NAME=PATH ... --corpus FILE ... [--reps N]\n", argv[0]);
    return 2;
  }
  const std::vector<std::string> docs = documents(corpus);
  std::size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  for (const auto& [name, path] : tokenizers) {
    const auto tokenizer = tpkit::load_tokenizer(path);
    std::size_t tokens = 0;
    std::vector<double> seconds;
    for (int r = 0; r <= reps; ++r) {
      std::size_t count = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const auto& d : docs) count += tokenizer->encode(d).size();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (r > 0) seconds.push_back(s);  // run 0 warms up
      tokens = count;
    }
    std::sort(seconds.begin(), seconds.end());
    const double median = seconds[seconds.size() / 2];
    std::printf("tpkit tokenizer=%s documents=%zu bytes=%zu tokens=%zu seconds=%.4f mb_per_s=%.2f\n", name.c_str(),
                docs.size(), bytes, tokens, median, double(bytes) / median / 1e6);
  }
  return 0;
}
