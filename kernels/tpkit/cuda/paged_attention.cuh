// tpkit/cuda/paged_attention.cuh: decode attention over a paged KV cache (one new query token
// per sequence), split over the sequence as in flash-decoding.
//
// The cache layout is PagedKVCache's: per layer, keys and values are [slots, kv_heads, head_dim]
// with slot = block_table[position / page_size] * page_size + position % page_size. Query head
// h of this rank reads KV head (q_head_begin + h) / group_size - kv_head_begin, so any group
// size works at run time, including the uneven head splits of partition_heads.
//
// A host-side plan (plan_paged_decode) fixes the grid and the workspace size for a batch; the
// launch then allocates nothing and can be captured in a CUDA graph. Each block handles one
// (sequence, query head, split) and walks its split's chunks of kChunk positions with an online
// softmax; a second kernel merges the splits. head_dim 64, 128 and 256 are supported; others
// return Status::unsupported. Scores, softmax and sums are in float.
//
// Status: compiled in CI; tests/cuda/test_paged_attention.cu has not yet run on a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "tpkit/core/dtype.hpp"
#include "tpkit/cuda/reduce.cuh"
#include "tpkit/cuda/status.cuh"

namespace tpkit::cuda {

struct PagedDecodePlan {
  static constexpr int kChunk = 256;     // positions per chunk (shared-memory scores)
  static constexpr int kThreads = 128;   // threads per block
  static constexpr int kMaxSplits = 32;  // splits per (sequence, head)
  int num_seqs = 0, num_q_heads = 0, head_dim = 0, num_splits = 1;
  std::size_t workspace_bytes = 0;  // float partials: [seqs, heads, splits, head_dim + 2]
};

// max_span: the longest attended span (positions) in the batch; it sets how many splits run in
// parallel. Longer spans still work (each split then walks several chunks).
inline Status plan_paged_decode(int num_seqs, int num_q_heads, int head_dim, std::int64_t max_span,
                                PagedDecodePlan* plan) {
  if (!plan || num_seqs < 0 || num_q_heads <= 0 || max_span < 0) return Status::invalid_argument;
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return Status::unsupported;
  PagedDecodePlan p;
  p.num_seqs = num_seqs, p.num_q_heads = num_q_heads, p.head_dim = head_dim;
  const std::int64_t chunks = (max_span + PagedDecodePlan::kChunk - 1) / PagedDecodePlan::kChunk;
  p.num_splits = int(chunks < 1 ? 1 : chunks > PagedDecodePlan::kMaxSplits ? PagedDecodePlan::kMaxSplits : chunks);
  p.workspace_bytes = std::size_t(num_seqs) * std::size_t(num_q_heads) * std::size_t(p.num_splits) *
                      std::size_t(head_dim + 2) * sizeof(float);
  *plan = p;
  return Status::ok;
}

struct PagedDecodeArgs {
  const void* q = nullptr;  // [num_seqs, ldq]: this rank's query heads, head_dim each
  std::int64_t ldq = 0;
  const void* k_cache = nullptr;                            // this layer's keys: [slots, kv_heads, head_dim]
  const void* v_cache = nullptr;                            // this layer's values
  int kv_heads = 0;                                         // this rank's KV heads (the cache's middle dimension)
  int q_head_begin = 0, kv_head_begin = 0, group_size = 1;  // global head indices, q heads per KV head
  const std::int32_t* block_tables = nullptr;               // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  const std::int32_t* context_lens = nullptr;  // [num_seqs]: positions 0..len-1 are attended (len >= 1)
  int page_size = 16;
  float scale = 1.0f;
  int window = 0;       // > 0: only the last `window` positions
  void* out = nullptr;  // [num_seqs, ldo]
  std::int64_t ldo = 0;
};

namespace detail {

template <class T>
__global__ void __launch_bounds__(PagedDecodePlan::kThreads)
    paged_decode_split_kernel(PagedDecodeArgs a, int head_dim, int num_splits, float* workspace) {
  constexpr int kChunk = PagedDecodePlan::kChunk, kPerThread = 256 / PagedDecodePlan::kThreads;
  __shared__ float q_s[256];
  __shared__ float scores[kChunk];
  __shared__ float reduce[PagedDecodePlan::kThreads / 32];
  const int seq = blockIdx.x, h = blockIdx.y, split = blockIdx.z, heads = gridDim.y;
  const int kv = (a.q_head_begin + h) / a.group_size - a.kv_head_begin;
  const std::int64_t kv_stride = std::int64_t(a.kv_heads) * head_dim;
  const T* q = static_cast<const T*>(a.q) + seq * a.ldq + std::int64_t(h) * head_dim;
  const T* keys = static_cast<const T*>(a.k_cache) + std::int64_t(kv) * head_dim;
  const T* values = static_cast<const T*>(a.v_cache) + std::int64_t(kv) * head_dim;
  const std::int32_t* table = a.block_tables + std::int64_t(seq) * a.max_blocks_per_seq;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) q_s[d] = to_float(q[d]);
  __syncthreads();

  const std::int64_t n = a.context_lens[seq];
  const std::int64_t first = a.window > 0 && n > a.window ? n - a.window : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float m = -INFINITY, l = 0.0f, acc[kPerThread];
  for (int i = 0; i < kPerThread; ++i) acc[i] = 0.0f;
  const auto slot_of = [&](std::int64_t pos) {
    return std::int64_t(table[pos / a.page_size]) * a.page_size + pos % a.page_size;
  };
  for (std::int64_t c0 = first + std::int64_t(split) * kChunk; c0 < n; c0 += std::int64_t(num_splits) * kChunk) {
    const int len = int(n - c0 < kChunk ? n - c0 : kChunk);
    for (int t = warp; t < len; t += warps) {  // a warp per position: q . k
      const T* k = keys + slot_of(c0 + t) * kv_stride;
      float dot = 0.0f;
      for (int d = lane; d < head_dim; d += 32) dot += q_s[d] * to_float(k[d]);
      dot = warp_sum(dot);
      if (lane == 0) scores[t] = dot * a.scale;
    }
    __syncthreads();
    float chunk_max = -INFINITY;
    for (int t = threadIdx.x; t < len; t += blockDim.x) chunk_max = fmaxf(chunk_max, scores[t]);
    const float m_new = fmaxf(m, block_max(chunk_max, reduce));
    const float correction = expf(m - m_new);  // 0 for the first chunk (m = -inf)
    float chunk_sum = 0.0f;
    for (int t = threadIdx.x; t < len; t += blockDim.x) {
      const float e = expf(scores[t] - m_new);
      scores[t] = e;
      chunk_sum += e;
    }
    l = l * correction + block_sum(chunk_sum, reduce);  // its barriers publish scores[]
    for (int i = 0; i < kPerThread; ++i) {
      const int d = threadIdx.x + i * blockDim.x;
      if (d >= head_dim) break;
      float sum = acc[i] * correction;
      for (int t = 0; t < len; ++t) sum += scores[t] * to_float(values[slot_of(c0 + t) * kv_stride + d]);
      acc[i] = sum;
    }
    m = m_new;
    __syncthreads();  // scores[] is rewritten by the next chunk
  }
  float* part = workspace + ((std::int64_t(seq) * heads + h) * num_splits + split) * (head_dim + 2);
  for (int i = 0; i < kPerThread; ++i) {
    const int d = threadIdx.x + i * blockDim.x;
    if (d < head_dim) part[d] = acc[i];
  }
  if (threadIdx.x == 0) part[head_dim] = m, part[head_dim + 1] = l;
}

// out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the splits that saw positions.
template <class T>
__global__ void paged_decode_merge_kernel(const float* workspace, int head_dim, int num_splits, void* out,
                                          std::int64_t ldo) {
  const int seq = blockIdx.x, h = blockIdx.y, heads = gridDim.y;
  const float* base = workspace + (std::int64_t(seq) * heads + h) * num_splits * (head_dim + 2);
  float M = -INFINITY, L = 0.0f;
  for (int s = 0; s < num_splits; ++s) M = fmaxf(M, base[s * (head_dim + 2) + head_dim]);
  for (int s = 0; s < num_splits; ++s) {
    const float m = base[s * (head_dim + 2) + head_dim];
    if (m != -INFINITY) L += expf(m - M) * base[s * (head_dim + 2) + head_dim + 1];
  }
  T* o = static_cast<T*>(out) + seq * ldo + std::int64_t(h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      const float m = base[s * (head_dim + 2) + head_dim];
      if (m != -INFINITY) sum += expf(m - M) * base[s * (head_dim + 2) + d];
    }
    o[d] = from_float<T>(sum / L);
  }
}

}  // namespace detail

// out[seq, h] = softmax(q[seq, h] . K^T * scale) V over the sequence's attended positions.
// `workspace` must hold plan.workspace_bytes (caller-owned, reused across steps).
template <class T>
Status paged_decode(const PagedDecodePlan& plan, const PagedDecodeArgs& a, void* workspace, cudaStream_t stream) {
  if (plan.num_seqs == 0) return Status::ok;
  if (!a.q || !a.k_cache || !a.v_cache || !a.block_tables || !a.context_lens || !a.out || !workspace ||
      a.ldq < std::int64_t(plan.num_q_heads) * plan.head_dim ||
      a.ldo < std::int64_t(plan.num_q_heads) * plan.head_dim || a.kv_heads <= 0 || a.group_size <= 0 ||
      a.page_size <= 0 || a.max_blocks_per_seq <= 0 || a.window < 0 || plan.num_seqs > 0x7fffffff ||
      plan.num_q_heads > 65535)
    return Status::invalid_argument;
  // Every local query head must map to one of this rank's KV heads.
  const int kv_first = a.q_head_begin / a.group_size - a.kv_head_begin;
  const int kv_last = (a.q_head_begin + plan.num_q_heads - 1) / a.group_size - a.kv_head_begin;
  if (kv_first < 0 || kv_last >= a.kv_heads) return Status::invalid_argument;
  const dim3 grid(unsigned(plan.num_seqs), unsigned(plan.num_q_heads), unsigned(plan.num_splits));
  auto* partials = static_cast<float*>(workspace);
  detail::paged_decode_split_kernel<T>
      <<<grid, PagedDecodePlan::kThreads, 0, stream>>>(a, plan.head_dim, plan.num_splits, partials);
  if (launch_status() != Status::ok) return Status::launch_failed;
  detail::paged_decode_merge_kernel<T>
      <<<dim3(unsigned(plan.num_seqs), unsigned(plan.num_q_heads)), PagedDecodePlan::kThreads, 0, stream>>>(
          partials, plan.head_dim, plan.num_splits, a.out, a.ldo);
  return launch_status();
}

}  // namespace tpkit::cuda
