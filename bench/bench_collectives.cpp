// Collective bandwidth of the mock backend (ranks as threads in one process), nccl-tests style.
//   bench_collectives [ranks=2] [max_bytes=268435456]
#include <cstdlib>
#include <cstring>
#include <thread>

#include <tpkit/comm/mock.hpp>

#include "collectives.hpp"

int main(int argc, char** argv) {
  const int ranks = argc > 1 ? std::atoi(argv[1]) : 2;
  const std::size_t max_bytes = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : std::size_t(256) << 20;
  // The machine's own limit, same run: one thread's memcpy of 256 MiB (bytes copied per second).
  {
    std::vector<char> src(std::size_t(256) << 20, 1), dst(src.size(), 2);
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(dst.data(), src.data(), src.size());
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("# memcpy, 1 thread: %.2f GB/s; %u hardware threads\n", double(src.size()) / best / 1e9,
                std::thread::hardware_concurrency());
  }
  tpkit::run_mock_ranks(ranks, [&](tpkit::Communicator<tpkit::MockBackend>& comm) {
    bench::collective_sweep(comm, max_bytes, "mock backend (threads)");
  });
}
