// tpkit/kernels/sampling.cuh: greedy, temperature, top-k, top-p (nucleus) and min-p sampling of a
// batch of logit rows on the GPU, the same rule as tpkit::Sampler (tpkit/sampling/sampler.hpp):
//
//   candidates in descending logit order, the lower id first on ties;
//   greedy (temperature 0 or top_k 1): the first candidate;
//   otherwise p_i = exp(l_i / T - l_0 / T) in double over the first top_k candidates, cut to the
//   shortest prefix whose mass reaches top_p of the total, then to the candidates with
//   p_i >= min_p * p_0; the token is the first candidate whose running mass exceeds u times the
//   kept mass, where u in [0, 1) is the request's draw (tpkit::uniform_draw on its generator).
//
// The draw comes from the host, so a seeded request consumes its generator exactly as on the
// host path. The sums run in a different order from the host's, so a token can differ from the
// host's only when u falls within a few units of roundoff of a boundary between two candidates.
//
// How: one device-wide radix sort of (row, descending logit) keys with the column ids as values
// (stable, so equal logits keep ascending ids), then one block per row scans the sorted row.
// plan_sampling sizes a caller-owned workspace; sample_rows neither allocates nor synchronises,
// so it can be captured in a CUDA graph.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_radix_sort.cuh>

#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

// One row's parameters, as in tpkit::SamplingParams, and its draw u (unused when greedy).
struct SamplingRow {
  float temperature = 0;  // 0: greedy
  int top_k = 0;          // 0: off
  float top_p = 1;        // 1: off
  float min_p = 0;        // 0: off
  double u = 0;
};

struct SamplingPlan {
  int rows = 0;
  std::int64_t vocab = 0;
  int end_bit = 0;             // key bits the sort looks at: 32 for the logit, then the row
  std::size_t sort_bytes = 0;  // CUB's temporary storage
  std::size_t workspace_bytes = 0;
};

namespace detail {

constexpr int kSampleThreads = 256;

inline std::size_t align_up(std::size_t n) { return (n + 255) / 256 * 256; }

// A float's bits turned into an unsigned key that sorts descending logit first (-0 as +0).
__device__ inline std::uint32_t descending_key(float f) {
  const std::uint32_t b = __float_as_uint(f + 0.0f);
  const std::uint32_t ascending = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ~ascending;
}
__device__ inline float key_logit(std::uint64_t key) {
  const std::uint32_t ascending = ~std::uint32_t(key);
  return __uint_as_float((ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending);
}

__global__ void sampling_keys_kernel(const float* logits, std::int64_t ld, int rows, std::int64_t vocab,
                                     std::uint64_t* keys, std::int32_t* ids) {
  const std::int64_t n = std::int64_t(rows) * vocab;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / vocab, col = i % vocab;
    keys[i] = (std::uint64_t(row) << 32) | descending_key(logits[row * ld + col]);
    ids[i] = std::int32_t(col);
  }
}

// One block per row of the sorted keys.
__global__ void sampling_select_kernel(const std::uint64_t* keys, const std::int32_t* ids, std::int64_t vocab,
                                       const SamplingRow* params, std::int32_t* tokens) {
  using Scan = cub::BlockScan<double, kSampleThreads>;
  using Reduce = cub::BlockReduce<double, kSampleThreads>;
  __shared__ union {
    typename Scan::TempStorage scan;
    typename Reduce::TempStorage reduce;
  } temp;
  __shared__ double shared_total;
  __shared__ unsigned long long shared_first;

  const std::int64_t row = blockIdx.x;
  const SamplingRow p = params[row];
  const std::uint64_t* key = keys + row * vocab;
  const std::int32_t* id = ids + row * vocab;
  if (p.temperature == 0.0f || p.top_k == 1) {
    if (threadIdx.x == 0) tokens[row] = id[0];
    return;
  }
  const double t = p.temperature, top = double(key_logit(key[0])) / t;
  const auto prob = [&](std::int64_t i) { return exp(double(key_logit(key[i])) / t - top); };

  // The sum of prob over [0, end).
  const auto mass = [&](std::int64_t end) {
    double sum = 0;
    for (std::int64_t i = threadIdx.x; i < end; i += blockDim.x) sum += prob(i);
    sum = Reduce(temp.reduce).Sum(sum);
    if (threadIdx.x == 0) shared_total = sum;
    __syncthreads();
    const double total = shared_total;
    __syncthreads();
    return total;
  };
  // The first i < end whose running mass (inclusive) satisfies reached(mass), or end.
  const auto first_reaching = [&](std::int64_t end, auto reached) {
    if (threadIdx.x == 0) shared_first = (unsigned long long)end;
    __syncthreads();
    double carry = 0;
    for (std::int64_t base = 0; base < end; base += blockDim.x) {
      const std::int64_t i = base + threadIdx.x;
      double inclusive = 0, chunk = 0;
      Scan(temp.scan).InclusiveSum(i < end ? prob(i) : 0.0, inclusive, chunk);
      if (i < end && reached(carry + inclusive)) atomicMin(&shared_first, (unsigned long long)i);
      carry += chunk;
      __syncthreads();  // the atomicMins are seen, and temp.scan may be reused
      if (shared_first != (unsigned long long)end) break;
    }
    const std::int64_t first = std::int64_t(shared_first);
    __syncthreads();
    return first;
  };

  std::int64_t keep = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  if (p.top_p < 1.0f) {
    const double threshold = double(p.top_p) * mass(keep);
    const std::int64_t first = first_reaching(keep, [&](double m) { return m >= threshold; });
    keep = first < keep ? first + 1 : keep;
  }
  if (p.min_p > 0.0f) {  // p_0 is exp(0) = 1; p_i does not increase with i
    if (threadIdx.x == 0) shared_first = (unsigned long long)keep;
    __syncthreads();
    for (std::int64_t i = 1 + threadIdx.x; i < keep; i += blockDim.x)
      if (prob(i) < double(p.min_p)) atomicMin(&shared_first, (unsigned long long)i);
    __syncthreads();
    keep = std::int64_t(shared_first);
    __syncthreads();
  }
  const double target = p.u * mass(keep);
  const std::int64_t chosen = first_reaching(keep, [&](double m) { return target < m; });
  if (threadIdx.x == 0) tokens[row] = id[chosen < keep ? chosen : keep - 1];
}

}  // namespace detail

// Sizes the workspace for `rows` rows of `vocab` logits.
inline Status plan_sampling(int rows, std::int64_t vocab, SamplingPlan* plan) {
  if (rows < 0 || vocab <= 0 || vocab > 0x7fffffff || std::int64_t(rows) * vocab > (std::int64_t(1) << 40))
    return Status::invalid_argument;
  SamplingPlan p;
  p.rows = rows, p.vocab = vocab;
  int row_bits = 0;
  while ((std::int64_t(1) << row_bits) < rows) ++row_bits;
  p.end_bit = 32 + row_bits;
  const std::int64_t n = std::int64_t(rows) * vocab;
  if (cub::DeviceRadixSort::SortPairs(nullptr, p.sort_bytes, static_cast<const std::uint64_t*>(nullptr),
                                      static_cast<std::uint64_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
                                      static_cast<std::int32_t*>(nullptr), n, 0, p.end_bit) != cudaSuccess)
    return Status::launch_failed;
  p.workspace_bytes = 2 * detail::align_up(std::size_t(n) * 8) + 2 * detail::align_up(std::size_t(n) * 4) +
                      detail::align_up(p.sort_bytes);
  *plan = p;
  return Status::ok;
}

// tokens[r] = the token sampled from row r of `logits` (float, leading dimension ld) under
// params[r]. params and tokens are device memory; workspace holds plan.workspace_bytes,
// 256-byte aligned.
inline Status sample_rows(const SamplingPlan& plan, const float* logits, std::int64_t ld, const SamplingRow* params,
                          void* workspace, std::int32_t* tokens, cudaStream_t stream) {
  if (ld < plan.vocab) return Status::invalid_argument;
  if (reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0) return Status::misaligned;
  if (plan.rows == 0) return Status::ok;
  const std::int64_t n = std::int64_t(plan.rows) * plan.vocab;
  auto* bytes = static_cast<unsigned char*>(workspace);
  auto* keys_in = reinterpret_cast<std::uint64_t*>(bytes);
  auto* keys_out = reinterpret_cast<std::uint64_t*>(bytes + detail::align_up(std::size_t(n) * 8));
  auto* ids_in = reinterpret_cast<std::int32_t*>(bytes + 2 * detail::align_up(std::size_t(n) * 8));
  auto* ids_out =
      reinterpret_cast<std::int32_t*>(reinterpret_cast<unsigned char*>(ids_in) + detail::align_up(std::size_t(n) * 4));
  void* sort_temp = reinterpret_cast<unsigned char*>(ids_out) + detail::align_up(std::size_t(n) * 4);

  const std::int64_t blocks = (n + 255) / 256;
  detail::sampling_keys_kernel<<<int(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(logits, ld, plan.rows,
                                                                                         plan.vocab, keys_in, ids_in);
  if (launch_status() != Status::ok) return Status::launch_failed;
  std::size_t sort_bytes = plan.sort_bytes;
  if (cub::DeviceRadixSort::SortPairs(sort_temp, sort_bytes, keys_in, keys_out, ids_in, ids_out, n, 0, plan.end_bit,
                                      stream) != cudaSuccess)
    return Status::launch_failed;
  detail::sampling_select_kernel<<<plan.rows, detail::kSampleThreads, 0, stream>>>(keys_out, ids_out, plan.vocab,
                                                                                   params, tokens);
  return launch_status();
}

}  // namespace tpkit::gpu
