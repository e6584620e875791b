// tpkit/ops/host_ops.hpp: HostOps, the execution policy that runs tpkit's layers on the CPU.
//
// A layer is `Layer<T, Ops>` and holds an Ops instance: Ops says where the layer's memory lives
// (Ops::memory), what owns it (Ops::Buffer<T>) and how each primitive runs (the requirements
// are the ops_policy concept, tpkit/ops/ops_policy.hpp). HostOps is a cheap handle to a thread
// pool: a default-constructed one runs on the calling thread; HostOps(n) runs the linear
// layers (the LM head included) and attention on n threads, each output element computed by
// one thread in the order one thread would use, so results are bitwise identical at any
// thread count. Copies share the pool. CudaOps (tpkit/gpu/cuda_ops.cuh) provides the same
// members over device memory.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "tpkit/config.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/core/thread_pool.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/ops/host_attention.hpp"
#include "tpkit/ops/host_kernels.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/shard.hpp"
#include "tpkit/sampling/sampler.hpp"

namespace tpkit {

// dst (row stride dst_ld) = the block rows x cols of a host tensor of any floating dtype,
// converted to T. Only this block of the source is read. (CudaOps stages through it too.)
template <class T>
void load_host_block(const RawTensorView& src, Range rows, Range cols, T* dst, std::int64_t dst_ld) {
  TPKIT_REQUIRE(src.memory() == MemoryKind::host, "weights are loaded from host memory");
  const bool same_type = src.dtype() == dtype_of_v<T> && (src.rank() == 1 || src.stride(1) == 1);
  for (std::int64_t r = rows.begin; r < rows.end; ++r) {
    T* out = dst + (r - rows.begin) * dst_ld;
    if (same_type) {
      const auto* base = static_cast<const T*>(src.data());
      std::memcpy(out, base + r * src.stride(0) + cols.begin, std::size_t(cols.size()) * sizeof(T));
      continue;
    }
    for (std::int64_t c = cols.begin; c < cols.end; ++c)
      out[c - cols.begin] = from_float<T>(src.rank() == 1 ? src.load(r) : src.load(r, c));
  }
}

}  // namespace tpkit

TPKIT_SIMD_BEGIN
namespace host_detail {

#if TPKIT_HAS_VECTOR_EXTENSIONS
typedef float f32x8 __attribute__((vector_size(32)));
typedef std::uint16_t u16x8 __attribute__((vector_size(16)));
typedef std::uint32_t u32x8 __attribute__((vector_size(32)));

// Vectors travel by reference: passing them by value would change the ABI with the ISA flags.
template <class T>
inline void load8(const T* p, f32x8& v) {
  for (int i = 0; i < 8; ++i) v[i] = to_float(p[i]);
}
inline void load8(const float* p, f32x8& v) { std::memcpy(&v, p, sizeof v); }
inline void load8(const bfloat16* p, f32x8& v) {
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  const u32x8 w = __builtin_convertvector(h, u32x8) << 16;
  std::memcpy(&v, &w, sizeof v);
}
inline float sum8(const f32x8& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
#endif

// The instruction set this translation unit's host SIMD code is compiled for.
inline const char* simd_isa() { return TPKIT_SIMD_STRINGIFY(TPKIT_SIMD_NAMESPACE); }

// out[i][j] = dot(x row i, w row j) over k in [0, K), for an MB x NB tile. Each weight element
// is loaded once per tile and used for all MB rows of x.
template <int MB, int NB, class T>
void dot_tile(const T* x, std::int64_t ldx, const T* w, std::int64_t ldw, std::int64_t K, float (&out)[4][4]) {
  std::int64_t k = 0;
#if TPKIT_HAS_VECTOR_EXTENSIONS
  f32x8 acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = f32x8{};
  for (; k + 8 <= K; k += 8) {
    f32x8 wv[NB];
    for (int j = 0; j < NB; ++j) load8(w + j * ldw + k, wv[j]);
    for (int i = 0; i < MB; ++i) {
      f32x8 xv;
      load8(x + i * ldx + k, xv);
      for (int j = 0; j < NB; ++j) acc[i][j] += xv * wv[j];
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) out[i][j] = sum8(acc[i][j]);
#else
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) out[i][j] = 0.0f;
#endif
  for (; k < K; ++k)
    for (int i = 0; i < MB; ++i)
      for (int j = 0; j < NB; ++j) out[i][j] += to_float(x[i * ldx + k]) * to_float(w[j * ldw + k]);
}

template <class T>
using DotTileFn = void (*)(const T*, std::int64_t, const T*, std::int64_t, std::int64_t, float (&)[4][4]);

template <class T, int MB>
constexpr DotTileFn<T> dot_tile_for(int nb) {
  switch (nb) {
    case 1:
      return &dot_tile<MB, 1, T>;
    case 2:
      return &dot_tile<MB, 2, T>;
    case 3:
      return &dot_tile<MB, 3, T>;
    default:
      return &dot_tile<MB, 4, T>;
  }
}
template <class T>
constexpr DotTileFn<T> dot_tile_for(int mb, int nb) {
  switch (mb) {
    case 1:
      return dot_tile_for<T, 1>(nb);
    case 2:
      return dot_tile_for<T, 2>(nb);
    case 3:
      return dot_tile_for<T, 3>(nb);
    default:
      return dot_tile_for<T, 4>(nb);
  }
}

// Columns per tile of the linear: batch 1 is bandwidth bound, so more weight rows in flight.
inline std::int64_t linear_tile_columns(std::int64_t batch) { return batch == 1 ? 4 : 2; }

// y[b][n] = sum_k x[b][k] * w[n][k] (+ bias[n]) for b < batch and n in [n_begin, n_end), with
// n_begin a multiple of linear_tile_columns(batch): the tiles are those of the whole range, so
// each element is computed the same way whatever range it falls in.
template <class T, class Out>
void linear_columns(const T* x, std::int64_t ldx, std::int64_t batch, const T* w, std::int64_t ldw, std::int64_t N,
                    std::int64_t K, const T* bias, Out* y, std::int64_t ldy, std::int64_t n_begin, std::int64_t n_end) {
  constexpr std::int64_t kBatchBlock = 64, kTile = 4;
  const std::int64_t nb_max = linear_tile_columns(batch);
  float out[4][4];
  for (std::int64_t b0 = 0; b0 < batch; b0 += kBatchBlock) {
    const std::int64_t b_end = std::min(batch, b0 + kBatchBlock);
    for (std::int64_t n0 = n_begin; n0 < n_end; n0 += nb_max) {
      const int nb = int(std::min(nb_max, N - n0));
      for (std::int64_t b = b0; b < b_end; b += kTile) {
        const int mb = int(std::min(kTile, b_end - b));
        dot_tile_for<T>(mb, nb)(x + b * ldx, ldx, w + n0 * ldw, ldw, K, out);
        for (int i = 0; i < mb; ++i)
          for (int j = 0; j < nb; ++j) {
            const float acc = out[i][j] + (bias ? to_float(bias[n0 + j]) : 0.0f);
            y[(b + i) * ldy + n0 + j] = from_float<Out>(acc);
          }
      }
    }
  }
}

}  // namespace host_detail

class HostOps {
 public:
  static constexpr MemoryKind memory = MemoryKind::host;
  template <class T>
  using Buffer = HostBuffer<T>;

  // Work below this many multiply-adds (or elements) runs on the calling thread alone: waking
  // the pool would cost more than it saves.
  static constexpr std::int64_t kMinParallelWork = std::int64_t(1) << 16;

  // One thread: the caller's.
  HostOps() = default;
  // `threads` threads (the caller and threads - 1 pool workers, created now, once).
  explicit HostOps(int threads) {
    TPKIT_REQUIRE(threads >= 1, "HostOps needs at least one thread (got ", threads, ")");
    if (threads > 1) pool_ = std::make_shared<ThreadPool>(threads);
  }

  int threads() const { return pool_ ? pool_->size() : 1; }

  template <class T>
  void load_block(const RawTensorView& src, Range rows, Range cols, T* dst, std::int64_t dst_ld) const {
    load_host_block(src, rows, cols, dst, dst_ld);
  }

  template <class T>
  void fill_zero(T* dst, std::size_t count) const {
    std::memset(static_cast<void*>(dst), 0, count * sizeof(T));
  }

  template <class T>
  void copy(const T* src, T* dst, std::size_t count) const {
    std::memcpy(static_cast<void*>(dst), src, count * sizeof(T));
  }

  // y[b][n] = sum_k x[b][k] * w[n][k] (+ bias[n]) for b < batch, n < N, k < K, accumulated in
  // float and rounded once to Out. Weights stream through once per call for batches up to 64;
  // the threads take contiguous ranges of output columns. No allocation.
  template <class T, class Out>
  void linear(const T* x, std::int64_t ldx, std::int64_t batch, const T* w, std::int64_t ldw, std::int64_t N,
              std::int64_t K, const T* bias, Out* y, std::int64_t ldy) const {
    const std::int64_t tile = host_detail::linear_tile_columns(batch);
    for_each_range((N + tile - 1) / tile, batch * K * tile, [&](int, std::int64_t begin, std::int64_t end) {
      host_detail::linear_columns(x, ldx, batch, w, ldw, N, K, bias, y, ldy, begin * tile, std::min(N, end * tile));
    });
  }

  // y[b][n] += bias[n].
  template <class T>
  void add_bias(T* y, std::int64_t ldy, std::int64_t batch, const T* bias, std::int64_t N) const {
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t n = 0; n < N; ++n) y[b * ldy + n] = from_float<T>(to_float(y[b * ldy + n]) + to_float(bias[n]));
  }

  // Transformer-block kernels (host_kernels.hpp), rows spread over the threads for long steps.
  template <class T>
  void rms_norm(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols, const float* weight, float eps,
                T* y, std::int64_t ldy) const {
    for_each_range(rows, cols, [&](int, std::int64_t begin, std::int64_t end) {
      host_kernels::rms_norm(x + begin * ldx, ldx, end - begin, cols, weight, eps, y + begin * ldy, ldy);
    });
  }
  template <class T>
  void rope(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim, const float* cos,
            const float* sin, bool interleaved) const {
    const std::int64_t half = head_dim / 2;
    for_each_range(rows, heads * head_dim, [&](int, std::int64_t begin, std::int64_t end) {
      host_kernels::rope(x + begin * ld, ld, end - begin, heads, head_dim, cos + begin * half, sin + begin * half,
                         interleaved);
    });
  }
  template <class T>
  void silu_and_mul(const T* gate_up, std::int64_t rows, std::int64_t n, T* out) const {
    for_each_range(rows, n, [&](int, std::int64_t begin, std::int64_t end) {
      host_kernels::silu_and_mul(gate_up + begin * 2 * n, end - begin, n, out + begin * n);
    });
  }
  template <class T>
  void add(T* x, const T* y, std::int64_t n) const {
    for_each_range(
        n, 1, [&](int, std::int64_t begin, std::int64_t end) { host_kernels::add(x + begin, y + begin, end - begin); });
  }

  // A Buffer's contents to host memory (the device policy copies and waits).
  template <class T>
  void download(const T* src, T* host, std::size_t count) const {
    copy(src, host, count);
  }

  // Host data a step computes (RoPE angles) into a Buffer.
  template <class T>
  void upload(const T* host, T* dst, std::size_t count) const {
    copy(host, dst, count);
  }

  // out[i] = table row (ids[i] - first_id) for ids in [first_id, first_id + rows), zeros
  // otherwise. ids are host memory.
  template <class T>
  void gather_rows(const T* table, std::int64_t first_id, std::int64_t rows, std::int64_t width,
                   const std::int32_t* ids, std::int64_t count, T* out, std::int64_t ldo) const {
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t local = std::int64_t(ids[i]) - first_id;
      if (local >= 0 && local < rows)
        copy(table + local * width, out + i * ldo, std::size_t(width));
      else
        fill_zero(out + i * ldo, std::size_t(width));
    }
  }

  // out[i] = row rows[i] of x (width elements), for i < count; rows is host memory. A MoE layer
  // gathers the tokens routed to one expert with it.
  template <class T>
  void gather_rows_at(const T* x, std::int64_t ldx, std::int64_t width, const std::int32_t* rows, std::int64_t count,
                      T* out, std::int64_t ldo) const {
    for (std::int64_t i = 0; i < count; ++i) copy(x + std::int64_t(rows[i]) * ldx, out + i * ldo, std::size_t(width));
  }

  // y[rows[i]] += weights[i] * src[i] (weight 1 when weights is null), in float and rounded
  // once per element, for i < count in order; rows and weights are host memory, and the rows
  // of one call are distinct. A MoE layer adds each expert's weighted output with it.
  template <class T>
  void scatter_add_rows(const T* src, std::int64_t lds, std::int64_t width, const std::int32_t* rows,
                        const float* weights, std::int64_t count, T* y, std::int64_t ldy) const {
    for (std::int64_t i = 0; i < count; ++i) {
      const T* in = src + i * lds;
      T* out = y + std::int64_t(rows[i]) * ldy;
      const float w = weights ? weights[i] : 1.0f;
      for (std::int64_t c = 0; c < width; ++c) out[c] = from_float<T>(to_float(out[c]) + w * to_float(in[c]));
    }
  }

  // One step's attention metadata: the host kernels read the StepLayout itself. Each thread
  // has its own attention workspace; they grow, then are reused.
  struct StepState {
    const StepLayout* layout = nullptr;
    std::vector<std::vector<float>> workspaces;
  };
  template <class Shape>
  void prepare_step(StepState& state, const StepLayout& layout, const Shape&) const {
    state.layout = &layout;
    state.workspaces.resize(std::size_t(threads()));
  }

  // The step's new K and V rows (row t at k + t * ld, v + t * ld) into their cache slots.
  template <class T, class Cache>
  void write_kv(Cache& cache, std::int64_t layer, const StepState& state, const T* k, const T* v,
                std::int64_t ld) const {
    const std::size_t width = std::size_t(cache.shape().slot_elements());
    const std::vector<std::int64_t>& slots = state.layout->slots;
    for (std::size_t t = 0; t < slots.size(); ++t) {
      if (slots[t] < 0) continue;
      copy(k + std::int64_t(t) * ld, cache.key(layer, slots[t]), width);
      copy(v + std::int64_t(t) * ld, cache.value(layer, slots[t]), width);
    }
  }

  // Paged attention over the step's rows (see host_attention.hpp), the (row, local head)
  // pairs spread over the threads.
  template <class T, class Cache>
  void paged_attention(const Cache& cache, std::int64_t layer, const HeadPartition& heads, const T* q, std::int64_t ldq,
                       StepState& state, float scale, std::int64_t window, T* out, std::int64_t ldo) const {
    const std::vector<AttentionQuery>& queries = state.layout->queries;
    const std::int64_t hd = cache.shape().head_dim, local_heads = heads.local_q_heads();
    std::int64_t longest = 0;
    for (const AttentionQuery& query : queries) {
      cache.slot(*query.blocks, query.position);  // the block table covers every position read
      longest = std::max(longest, attention_workspace_floats(hd, query));
    }
    const std::int64_t units = std::int64_t(queries.size()) * local_heads;
    const std::int64_t work = units == 0 ? 0 : 2 * longest * hd;
    for_each_range(units, work, [&](int part, std::int64_t begin, std::int64_t end) {
      std::vector<float>& workspace = state.workspaces[std::size_t(part)];
      if (std::int64_t(workspace.size()) < longest) workspace.resize(std::size_t(longest));
      for (std::int64_t u = begin; u < end; ++u) {
        const std::int64_t t = u / local_heads;
        attend_head(cache, layer, heads, q, ldq, queries[std::size_t(t)], t, int(u % local_heads), scale, window, out,
                    ldo, workspace.data());
      }
    });
  }

  // tokens[r] = a token sampled from row r of `logits` ([rows, vocab], this memory) under
  // requests[r]; tokens is host memory. The Sampler's scratch is reused between steps.
  using SamplingState = Sampler;
  void sample(SamplingState& sampler, const float* logits, std::int64_t rows, std::int64_t vocab,
              const SampleRequest* requests, std::int32_t* tokens) const {
    for (std::int64_t r = 0; r < rows; ++r)
      tokens[r] = sampler.sample(logits + r * vocab, vocab, *requests[r].rule, *requests[r].rng);
  }

  // For each row b of a [batch, N] matrix: the largest value and its column (the first on ties).
  template <class V>
  void row_argmax(const V* values, std::int64_t ld, std::int64_t batch, std::int64_t N, float* best_value,
                  std::int64_t* best_index) const {
    for (std::int64_t b = 0; b < batch; ++b) {
      float best = -std::numeric_limits<float>::infinity();
      std::int64_t at = -1;
      for (std::int64_t n = 0; n < N; ++n) {
        const float v = to_float(values[b * ld + n]);
        if (v > best || at < 0) best = v, at = n;
      }
      best_value[b] = best;
      best_index[b] = at;
    }
  }

 private:
  // fn(part, begin, end) over [0, units), on every thread when the whole (units x
  // work_per_unit) is worth it, otherwise fn(0, 0, units) on this thread. The units are cut into
  // a fixed list of chunks, a few per thread, which the threads take in turn as they finish: a
  // thread slowed by the memory system does less, and since the chunks are the same whoever
  // takes them, so is every result. `part` is the thread's index (for per-thread workspaces).
  template <class F>
  void for_each_range(std::int64_t units, std::int64_t work_per_unit, F&& fn) const {
    if (units <= 0) return;
    if (!pool_ || units < 2 || units * work_per_unit < kMinParallelWork) return fn(0, 0, units);
    constexpr std::int64_t kChunksPerThread = 8;
    const int parts = int(std::min<std::int64_t>(pool_->size(), units));
    const std::int64_t chunks = std::min<std::int64_t>(units, parts * kChunksPerThread);
    std::atomic<std::int64_t> next{0};
    pool_->run([&](int part) {
      if (part >= parts) return;
      for (std::int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
           c = next.fetch_add(1, std::memory_order_relaxed)) {
        const Range r = balanced_range(units, int(chunks), int(c));
        fn(part, r.begin, r.end);
      }
    });
  }

  std::shared_ptr<ThreadPool> pool_;
};

TPKIT_SIMD_END
