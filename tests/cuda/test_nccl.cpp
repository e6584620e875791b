// NcclBackend on the GPUs present: a world of 1 (which makes no NCCL call), and a world of 2
// when two GPUs are present (one thread per GPU). Skipped (exit 77) without a GPU, and the
// two-GPU part reports "skipped: needs 2 GPUs" on a one-GPU machine. The reference is computed
// on the host from the same inputs. all_to_all_v runs on device buffers (unequal counts, a zero
// count, a rank that sends nothing with a null buffer) and on host buffers (staged).
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

  // all_to_all_v: rank s sends rank d count(s, d) elements, element i being s * 1000 + d * 100 +
  // i; the last rank of a world of 2 or more sends nothing (a null send buffer).
  const auto a2a_count = [&](int s, int d) -> std::size_t {
    return n > 1 && s == n - 1 ? 0 : std::size_t(2 + s + 3 * d);
  };
  const auto a2a_value = [](int s, int d, std::size_t i) { return float(s * 1000 + d * 100) + float(i); };
  std::vector<std::size_t> send_counts, recv_counts;
  std::vector<float> packed;
  std::size_t received = 0;
  for (int q = 0; q < n; ++q) {
    send_counts.push_back(a2a_count(me, q));
    recv_counts.push_back(a2a_count(q, me));
    received += recv_counts.back();
    for (std::size_t i = 0; i < send_counts.back(); ++i) packed.push_back(a2a_value(me, q, i));
  }
  std::vector<float> want;
  for (int q = 0; q < n; ++q)
    for (std::size_t i = 0; i < a2a_count(q, me); ++i) want.push_back(a2a_value(q, me, i));
  float* ds = packed.empty() ? nullptr : to_device(packed);
  float* dr = nullptr;
  cudaMalloc(&dr, received * sizeof(float) + 1);
  comm.all_to_all_v(ds, send_counts, dr, recv_counts);
  comm.backend().synchronize();
  expect(to_host(dr, received) == want, "all_to_all_v on device buffers");
  std::vector<float> host_out(received, -1.0f);
  comm.all_to_all_v(packed.empty() ? nullptr : packed.data(), send_counts, host_out.data(), recv_counts);
  expect(host_out == want, "all_to_all_v on host buffers (staged)");

  comm.barrier();
  cudaFree(d), cudaFree(dp), cudaFree(dg), cudaFree(ds), cudaFree(dr);
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
