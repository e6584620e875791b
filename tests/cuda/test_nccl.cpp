// NcclBackend on the GPUs present: a world of 1 (which makes no NCCL call), and a world of 2
// when two GPUs are present (one thread per GPU). Skipped (exit 77) without a GPU, and the
// two-GPU part reports "skipped: needs 2 GPUs" on a one-GPU machine. The reference is computed
// on the host from the same inputs.
#include <cstdio>
#include <thread>
#include <vector>

#include "cuda_test_support.hpp"
#include "tpkit/comm/nccl.hpp"

using namespace tpkit;

namespace {
int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) std::printf("FAILED: %s\n", what), ++failures;
}

// Each rank's data is rank + i / 8; sums and gathers are exact in float.
void exercise(Communicator<NcclBackend>& comm) {
  const int n = comm.size(), me = comm.rank();
  const std::size_t count = 1000;
  std::vector<float> mine(count);
  for (std::size_t i = 0; i < count; ++i) mine[i] = float(me) + float(i % 64) / 8;
  float* d = to_device(mine);
  comm.all_reduce(d, count);
  comm.backend().synchronize();
  const auto sum = to_host(d, count);
  bool ok = true;
  for (std::size_t i = 0; i < count; ++i) ok &= sum[i] == float(n * (n - 1) / 2) + float(n) * float(i % 64) / 8;
  expect(ok, "all_reduce sum");

  std::vector<std::size_t> counts;
  for (int r = 0; r < n; ++r) counts.push_back(std::size_t(3 + r));  // unequal shards
  std::size_t total = 0;
  for (auto c : counts) total += c;
  std::vector<float> part(counts[std::size_t(me)], float(me + 1));
  float* dp = to_device(part);
  float* dg = nullptr;
  cudaMalloc(&dg, total * sizeof(float));
  comm.all_gather(dp, dg, counts);
  comm.backend().synchronize();
  const auto gathered = to_host(dg, total);
  ok = true;
  for (int r = 0, at = 0; r < n; ++r)
    for (std::size_t i = 0; i < counts[std::size_t(r)]; ++i) ok &= gathered[std::size_t(at++)] == float(r + 1);
  expect(ok, "all_gather with unequal counts");
  comm.barrier();
  cudaFree(d), cudaFree(dp), cudaFree(dg);
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  int devices = 0;
  cudaGetDeviceCount(&devices);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  {
    Communicator<NcclBackend> one(NcclBackend::create(NcclBackend::unique_id(), 0, 1, stream));
    exercise(one);
  }
  if (devices < 2) {
    std::printf("world of 1: %s; world of 2: skipped: needs 2 GPUs\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
  }
  const ncclUniqueId id = NcclBackend::unique_id();
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      cudaSetDevice(r);
      cudaStream_t s;
      cudaStreamCreate(&s);
      Communicator<NcclBackend> comm(NcclBackend::create(id, r, 2, s));
      exercise(comm);
    });
  for (auto& t : ranks) t.join();
  std::printf("worlds of 1 and 2: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
