// Collective bandwidth of the NCCL backend, nccl-tests style (bench/collectives.hpp): one
// thread per GPU of this machine in one world, device buffers, each operation timed up to its
// stream's completion. The machine's own limit in the same run: GPU 0's device-to-device copy
// bandwidth (read + write bytes per second, 1 GiB, best of 5).
//   bench_collectives_nccl [gpus=all] [max_bytes=268435456]
// Needs two GPUs or more (a world of one makes no NCCL call).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include <tpkit/comm/nccl.hpp>

#include "collectives.hpp"

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 77;
  }
  const int gpus = argc > 1 ? std::atoi(argv[1]) : devices;
  const std::size_t max_bytes = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : std::size_t(256) << 20;
  if (gpus < 2 || gpus > devices) {
    std::printf("needs 2 to %d GPUs (this machine has %d): nothing to measure\n", devices, devices);
    return 77;
  }
  {
    const std::size_t bytes = std::size_t(1) << 30;
    void *src = nullptr, *dst = nullptr;
    cudaSetDevice(0);
    cudaMalloc(&src, bytes), cudaMalloc(&dst, bytes);
    cudaEvent_t start, stop;
    cudaEventCreate(&start), cudaEventCreate(&stop);
    float best = 1e30f;
    for (int rep = 0; rep < 5; ++rep) {
      cudaEventRecord(start);
      cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      best = std::min(best, ms);
    }
    std::printf("# GPU 0 device copy (read + write): %.0f GB/s\n", 2.0 * double(bytes) / (best / 1e3) / 1e9);
    cudaFree(src), cudaFree(dst);
  }
  const ncclUniqueId id = tpkit::NcclBackend::unique_id();
  std::vector<std::thread> ranks;
  for (int r = 0; r < gpus; ++r)
    ranks.emplace_back([&, r] {
      try {
        cudaSetDevice(r);
        cudaStream_t stream;
        cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        tpkit::Communicator<tpkit::NcclBackend> comm(tpkit::NcclBackend::create(id, r, gpus, stream));
        float *a = nullptr, *b = nullptr;
        cudaMalloc(&a, max_bytes), cudaMalloc(&b, max_bytes);
        cudaMemset(a, 0, max_bytes);
        bench::collective_sweep(comm, max_bytes, "NCCL backend (one thread per GPU)", a, b,
                                [&] { comm.backend().synchronize(); });
        cudaFree(a), cudaFree(b);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        std::exit(1);
      }
    });
  for (std::thread& t : ranks) t.join();
}
