// tpkit/kernels/paged_attention.cuh: attention over a paged KV cache, and writing new K/V into it.
//
// The cache layout is PagedKVCache's: per layer, keys and values are [slots, kv_heads, head_dim]
// with slot = block_table[position / page_size] * page_size + position % page_size. Query head
// h of this rank reads KV head (q_head_begin + h) / group_size - kv_head_begin, so any group
// size works at run time, including the uneven head splits of partition_heads.
//
//   write_kv        copy each new token's K and V rows into its slot (slot < 0: skipped)
//   paged_decode    one query token per sequence, split over the sequence as in
//                   flash-decoding. A host-side plan (plan_paged_decode) fixes the grid and the
//                   workspace size; the launch then allocates nothing and can be captured in a
//                   CUDA graph. Each block handles one (sequence, query head, split) and walks
//                   its split's chunks of kChunk positions with an online softmax; a second
//                   kernel merges the splits.
//   paged_prefill   causal attention of several consecutive query tokens per sequence (a
//                   prompt, a prefill chunk after earlier chunks, or a decode token) over the
//                   K/V already in pages, variable lengths in one batch. The host cuts each
//                   sequence's queries into tiles (make_prefill_tiles); a block handles one
//                   (tile, query head), staging kKeys keys and values at a time in shared
//                   memory for all of the tile's queries.
//
// Any head_dim up to 256 works (kernels are compiled for head_dim bounds 64, 128 and 256);
// larger ones return Status::unsupported. Scores, softmax and sums are in float.
//
// Status: compiled in CI; tests/cuda/test_paged_attention.cu and test_paged_prefill.cu have not
// yet run on a GPU.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "tpkit/core/dtype.hpp"
#include "tpkit/kernels/reduce.cuh"
#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

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
  if (head_dim > 256) return Status::unsupported;
  if (head_dim < 1) return Status::invalid_argument;
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

// ---------------------------------------------------------------------------------------------
// Writing K/V.

namespace detail {
template <class T>
__global__ void write_kv_kernel(const T* k, const T* v, std::int64_t ld, const std::int64_t* slots, std::int64_t width,
                                T* k_cache, T* v_cache) {
  const std::int64_t t = blockIdx.x, slot = slots[t];
  if (slot < 0) return;  // a padding row
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) {
    k_cache[slot * width + c] = k[t * ld + c];
    v_cache[slot * width + c] = v[t * ld + c];
  }
}
}  // namespace detail

// k_cache[slots[t]] = k[t], v_cache[slots[t]] = v[t] for t < count; rows are `width` elements
// (kv_heads x head_dim) with stride ld in the source.
template <class T>
Status write_kv(const T* k, const T* v, std::int64_t ld, std::int64_t count, const std::int64_t* slots,
                std::int64_t width, T* k_cache, T* v_cache, cudaStream_t stream) {
  if (count < 0 || width <= 0 || ld < width || count > 0x7fffffff) return Status::invalid_argument;
  if (count == 0) return Status::ok;
  if (!k || !v || !slots || !k_cache || !v_cache) return Status::invalid_argument;
  detail::write_kv_kernel<T><<<unsigned(count), 128, 0, stream>>>(k, v, ld, slots, width, k_cache, v_cache);
  return launch_status();
}

// ---------------------------------------------------------------------------------------------
// Prefill (and mixed prefill + decode) attention.

// Up to kTileQ consecutive query rows of one sequence.
struct PrefillTile {
  std::int32_t seq = 0;             // row of the block table
  std::int32_t count = 0;           // query rows in this tile
  std::int64_t query_row = 0;       // first row of q and out
  std::int64_t first_position = 0;  // position of that row; row i is at first_position + i
};

// The prefill kernel's shape for head_dim up to MaxHeadDim (64, 128 or 256). Shared memory:
// the tile's queries and kKeys keys and values in float, about 41 KB for every bound.
template <int MaxHeadDim>
struct PrefillShape {
  static constexpr int kThreads = 128;
  static constexpr int kTileQ = MaxHeadDim == 256 ? 8 : 16;  // query rows per block
  static constexpr int kKeys = MaxHeadDim == 256 ? 16 : 32;  // keys staged per step (<= 32: a lane each)
  static constexpr int kDimsPerThread = (MaxHeadDim + kThreads - 1) / kThreads;
};

inline int prefill_head_dim_bound(int head_dim) {
  return head_dim < 1 || head_dim > 256 ? 0 : head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256;
}

// Whether the decode and prefill kernels take this rank's attention: head_dim up to 256 (within
// one of the compiled bounds), any GQA group size, at most 65535 local query heads (a grid
// dimension), any page size. Host code: an engine asks at load (CudaOps::check_model), so an
// unsupported model fails before its first step, in the sense of CUTLASS's can_implement.
inline Status can_implement_paged_attention(int head_dim, int num_q_heads, int kv_heads, int group_size,
                                            int page_size) {
  if (head_dim < 1 || num_q_heads < 1 || kv_heads < 1 || group_size < 1 || page_size < 1)
    return Status::invalid_argument;
  if (prefill_head_dim_bound(head_dim) == 0 || num_q_heads > 65535) return Status::unsupported;
  return Status::ok;
}

// The tile size make_prefill_tiles uses for this head_dim (0 when unsupported).
inline int prefill_tile_rows(int head_dim) {
  switch (prefill_head_dim_bound(head_dim)) {
    case 64:
      return PrefillShape<64>::kTileQ;
    case 128:
      return PrefillShape<128>::kTileQ;
    case 256:
      return PrefillShape<256>::kTileQ;
  }
  return 0;
}

// Cuts sequence s's query rows [query_row[s], query_row[s] + count[s]), at positions
// start_position[s].., into tiles. Host code; the caller copies `tiles` to the device.
inline Status make_prefill_tiles(int head_dim, int num_seqs, const std::int64_t* query_row, const std::int64_t* count,
                                 const std::int64_t* start_position, std::vector<PrefillTile>& tiles) {
  const int rows = prefill_tile_rows(head_dim);
  if (rows == 0) return Status::unsupported;
  tiles.clear();
  for (int s = 0; s < num_seqs; ++s) {
    if (count[s] < 0 || start_position[s] < 0) return Status::invalid_argument;
    for (std::int64_t i = 0; i < count[s]; i += rows)
      tiles.push_back(
          {s, std::int32_t(count[s] - i < rows ? count[s] - i : rows), query_row[s] + i, start_position[s] + i});
  }
  return Status::ok;
}

struct PagedPrefillArgs {
  const void* q = nullptr;  // [rows, ldq]: this rank's query heads, head_dim each
  std::int64_t ldq = 0;
  const void* k_cache = nullptr;  // this layer's keys: [slots, kv_heads, head_dim]
  const void* v_cache = nullptr;
  int kv_heads = 0;
  int q_head_begin = 0, kv_head_begin = 0, group_size = 1;
  const std::int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  const PrefillTile* tiles = nullptr;  // device array of num_tiles
  int num_tiles = 0;
  int num_q_heads = 0;  // this rank's query heads
  int page_size = 16;
  float scale = 1.0f;
  int window = 0;       // > 0: a query at position p attends to p - window + 1 .. p
  void* out = nullptr;  // [rows, ldo]
  std::int64_t ldo = 0;
};

namespace detail {

template <class T, int D>
__global__ void __launch_bounds__(PrefillShape<D>::kThreads) paged_prefill_kernel(PagedPrefillArgs a, int hd) {
  using Shape = PrefillShape<D>;  // D bounds the run-time head_dim hd
  constexpr int kTileQ = Shape::kTileQ, kKeys = Shape::kKeys, kDims = Shape::kDimsPerThread;
  __shared__ float q_s[kTileQ][D];
  __shared__ float k_s[kKeys][D + 1];  // +1: the lanes of a warp read different keys' same dim
  __shared__ float v_s[kKeys][D];
  __shared__ float p_s[kTileQ][kKeys];
  __shared__ float m_s[kTileQ], l_s[kTileQ], correction_s[kTileQ];
  const PrefillTile tile = a.tiles[blockIdx.x];
  const int h = blockIdx.y;
  const int kv = (a.q_head_begin + h) / a.group_size - a.kv_head_begin;
  const std::int64_t kv_stride = std::int64_t(a.kv_heads) * hd;
  const T* keys = static_cast<const T*>(a.k_cache) + std::int64_t(kv) * hd;
  const T* values = static_cast<const T*>(a.v_cache) + std::int64_t(kv) * hd;
  const std::int32_t* table = a.block_tables + std::int64_t(tile.seq) * a.max_blocks_per_seq;

  for (int idx = threadIdx.x; idx < kTileQ * hd; idx += blockDim.x) {
    const int i = idx / hd, d = idx % hd;
    q_s[i][d] = i < tile.count ? to_float(static_cast<const T*>(a.q)[(tile.query_row + i) * a.ldq + h * hd + d]) : 0.0f;
  }
  if (threadIdx.x < kTileQ) m_s[threadIdx.x] = -INFINITY, l_s[threadIdx.x] = 0.0f;
  float acc[kTileQ][kDims];
  for (int i = 0; i < kTileQ; ++i)
    for (int j = 0; j < kDims; ++j) acc[i][j] = 0.0f;

  const std::int64_t p_first = tile.first_position, p_last = tile.first_position + tile.count - 1;
  const std::int64_t k_begin = a.window > 0 && p_first + 1 > a.window ? p_first + 1 - a.window : 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (std::int64_t c0 = k_begin; c0 <= p_last; c0 += kKeys) {
    __syncthreads();  // the previous step's k_s, v_s and p_s are no longer read (and q_s is written)
    for (int idx = threadIdx.x; idx < kKeys * hd; idx += blockDim.x) {
      const int j = idx / hd, d = idx % hd;
      const std::int64_t pos = c0 + j;
      float kval = 0.0f, vval = 0.0f;
      if (pos <= p_last) {
        const std::int64_t slot = std::int64_t(table[pos / a.page_size]) * a.page_size + pos % a.page_size;
        kval = to_float(keys[slot * kv_stride + d]);
        vval = to_float(values[slot * kv_stride + d]);
      }
      k_s[j][d] = kval;
      v_s[j][d] = vval;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTileQ * kKeys; idx += blockDim.x) {
      const int i = idx / kKeys, j = idx % kKeys;
      const std::int64_t pos = c0 + j, qpos = p_first + i;
      const bool valid = i < tile.count && pos <= qpos && (a.window <= 0 || pos > qpos - a.window);
      float dot = 0.0f;
      if (valid)
        for (int d = 0; d < hd; ++d) dot += q_s[i][d] * k_s[j][d];
      p_s[i][j] = valid ? dot * a.scale : -INFINITY;
    }
    __syncthreads();
    for (int i = warp; i < kTileQ; i += warps) {  // online softmax: a warp per query row, a lane per key
      const float s = lane < kKeys ? p_s[i][lane] : -INFINITY;
      const float m_old = m_s[i];
      const float m_new = fmaxf(m_old, warp_reduce(s, MaxOp{}));
      // A row with no valid key yet keeps m = -inf: its weights are 0 and nothing is rescaled.
      const float e = m_new == -INFINITY ? 0.0f : expf(s - m_new);
      const float correction = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
      const float sum = warp_sum(e);
      if (lane < kKeys) p_s[i][lane] = e;
      if (lane == 0) m_s[i] = m_new, l_s[i] = l_s[i] * correction + sum, correction_s[i] = correction;
    }
    __syncthreads();
    for (int jd = 0; jd < kDims; ++jd) {
      const int d = threadIdx.x + jd * blockDim.x;
      if (d >= hd) break;
      for (int i = 0; i < kTileQ; ++i) {
        float sum = acc[i][jd] * correction_s[i];
        for (int j = 0; j < kKeys; ++j) sum += p_s[i][j] * v_s[j][d];
        acc[i][jd] = sum;
      }
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  for (int jd = 0; jd < kDims; ++jd) {
    const int d = threadIdx.x + jd * blockDim.x;
    if (d >= hd) break;
    for (int i = 0; i < kTileQ; ++i)  // a constant trip count keeps acc in registers
      if (i < tile.count) out[(tile.query_row + i) * a.ldo + h * hd + d] = from_float<T>(acc[i][jd] / l_s[i]);
  }
}

}  // namespace detail

// out[row, h] = softmax(q[row, h] . K^T * scale) V over positions 0..p of the row's sequence
// (the last `window` of them when window > 0), for every row of every tile. The K/V of every
// attended position, the rows' own included, must already be in the cache (write_kv first).
template <class T>
Status paged_prefill(const PagedPrefillArgs& a, int head_dim, cudaStream_t stream) {
  if (a.num_tiles == 0) return Status::ok;
  if (!a.q || !a.k_cache || !a.v_cache || !a.block_tables || !a.tiles || !a.out || a.num_tiles < 0 ||
      a.num_q_heads <= 0 || a.num_q_heads > 65535 || a.ldq < std::int64_t(a.num_q_heads) * head_dim ||
      a.ldo < std::int64_t(a.num_q_heads) * head_dim || a.kv_heads <= 0 || a.group_size <= 0 || a.page_size <= 0 ||
      a.max_blocks_per_seq <= 0 || a.window < 0)
    return Status::invalid_argument;
  const int kv_first = a.q_head_begin / a.group_size - a.kv_head_begin;
  const int kv_last = (a.q_head_begin + a.num_q_heads - 1) / a.group_size - a.kv_head_begin;
  if (kv_first < 0 || kv_last >= a.kv_heads) return Status::invalid_argument;
  const dim3 grid(unsigned(a.num_tiles), unsigned(a.num_q_heads));
  switch (prefill_head_dim_bound(head_dim)) {
    case 64:
      detail::paged_prefill_kernel<T, 64><<<grid, PrefillShape<64>::kThreads, 0, stream>>>(a, head_dim);
      break;
    case 128:
      detail::paged_prefill_kernel<T, 128><<<grid, PrefillShape<128>::kThreads, 0, stream>>>(a, head_dim);
      break;
    case 256:
      detail::paged_prefill_kernel<T, 256><<<grid, PrefillShape<256>::kThreads, 0, stream>>>(a, head_dim);
      break;
    default:
      return Status::unsupported;
  }
  return launch_status();
}

}  // namespace tpkit::gpu
