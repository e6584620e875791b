// The sweep shared by the collective benchmarks, in the style of nccl-tests: for each size
// from 8 B to max_bytes (x2 steps), the time of all_reduce (sum, f32) and all_gather, their
// algorithm bandwidth (bytes / time) and bus bandwidth (algbw x 2(n-1)/n for all_reduce,
// x (n-1)/n for all_gather: the traffic each link carries in a ring, comparable across world
// sizes). Times are the median of several timed repetitions after a warm-up.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <tpkit/comm/communicator.hpp>

namespace bench {

// a, b: max_bytes each, in the memory the backend works on; wait() returns when the last
// operation has completed (a device backend's stream synchronize), and is part of the timing.
template <class Backend, class Wait>
void collective_sweep(tpkit::Communicator<Backend>& comm, std::size_t max_bytes, const char* backend_name, float* a,
                      float* b, Wait&& wait) {
  const int n = comm.size();
  const bool print = comm.rank() == 0;
  if (print) {
    std::printf("# %s, %d ranks\n", backend_name, n);
    std::printf("%12s %14s %10s %10s %10s %14s %10s %10s\n", "bytes", "all_reduce us", "algbw GB/s", "busbw GB/s", "",
                "all_gather us", "algbw GB/s", "busbw GB/s");
  }
  for (std::size_t bytes = 8; bytes <= max_bytes; bytes *= 2) {
    const std::size_t count = bytes / 4;
    const auto time = [&](auto&& enqueue) {
      const auto op = [&] {
        enqueue();
        wait();
      };
      op();  // warm-up
      // Enough repetitions for ~0.1 s, agreed by all ranks (rank 0's estimate).
      comm.barrier();
      auto t0 = std::chrono::steady_clock::now();
      op();
      double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      comm.broadcast(&once, 1, 0);
      const int reps = std::clamp(int(0.1 / std::max(once, 1e-7)), 3, 2000);
      std::vector<double> times;
      for (int r = 0; r < reps; ++r) {
        comm.barrier();
        t0 = std::chrono::steady_clock::now();
        op();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      // The slowest rank's median decides.
      std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
      double median = times[std::size_t(reps / 2)];
      comm.all_reduce(&median, 1, tpkit::ReduceOp::max);
      return median;
    };
    const double ar = time([&] { comm.all_reduce(a, b, count); });
    const std::size_t part = std::max<std::size_t>(1, count / std::size_t(n));
    const double ag = time([&] { comm.all_gather(a, part, b); });
    if (print) {
      const double ar_alg = double(bytes) / ar / 1e9, ag_alg = double(part * 4 * std::size_t(n)) / ag / 1e9;
      std::printf("%12zu %14.1f %10.3f %10.3f %10s %14.1f %10.3f %10.3f\n", bytes, ar * 1e6, ar_alg,
                  ar_alg * 2.0 * (n - 1) / n, "", ag * 1e6, ag_alg, ag_alg * double(n - 1) / n);
      std::fflush(stdout);
    }
  }
}

// Host buffers, for the host backends (mock, MPI): their operations complete on return.
template <class Backend>
void collective_sweep(tpkit::Communicator<Backend>& comm, std::size_t max_bytes, const char* backend_name) {
  std::vector<float> a(max_bytes / 4), b(max_bytes / 4);
  collective_sweep(comm, max_bytes, backend_name, a.data(), b.data(), [] {});
}

}  // namespace bench
