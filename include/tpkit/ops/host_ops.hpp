// tpkit/ops/host_ops.hpp: the host execution policy that layers are instantiated with.
//
// A layer is `Layer<T, Ops>`. Ops says where the layer's memory lives (Ops::memory), what owns
// it (Ops::Buffer<T>) and how each primitive runs. HostOps runs on the CPU; a CUDA policy in
// kernels/ provides the same members over device memory (cuBLASLt and tpkit kernels), so the
// GPU path adds a policy rather than rewriting layers. See docs/architecture.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "tpkit/attention/paged_attention_host.hpp"
#include "tpkit/config.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/error.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/engine/sampling.hpp"
#include "tpkit/ops/host_kernels.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {
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

}  // namespace host_detail

// The tokens of one forward step as the K/V writes and attention see them. The model fills it
// on the host; each Ops policy's prepare_step turns it into what its kernels read (HostOps: the
// lists themselves; CudaOps: device arrays).
struct StepLayout {
  struct Sequence {
    const std::vector<std::int32_t>* blocks;  // block table, covering every position of the step
    std::int64_t first_row, count, start_position;
  };
  std::vector<Sequence> sequences;
  std::vector<AttentionQuery> queries;  // per token row: its position and block table
  std::vector<std::int64_t> slots;      // per token row: the cache slot its K/V go to (< 0: none)
  // > 0: block tables are padded to this many blocks and attention is planned for as many
  // positions, so that steps of one shape launch the same kernels (a captured graph's replay).
  std::int64_t table_width = 0;
  void clear() { sequences.clear(), queries.clear(), slots.clear(), table_width = 0; }
};

// An Ops policy that can replay a decode step's layers from a captured graph (CudaOps) defines
// StepGraphs and run_graph(graphs, key, addresses, body); for the others the graphs are this
// empty type and are never used.
struct NoStepGraphs {};
template <class Ops, class = void>
struct step_graphs {
  using type = NoStepGraphs;
  static constexpr bool supported = false;
};
template <class Ops>
struct step_graphs<Ops, std::void_t<typename Ops::StepGraphs>> {
  using type = typename Ops::StepGraphs;
  static constexpr bool supported = true;
};

struct HostOps {
  static constexpr MemoryKind memory = MemoryKind::host;
  template <class T>
  using Buffer = HostBuffer<T>;

  // dst (row stride dst_ld) = the block rows x cols of a host tensor of any floating dtype,
  // converted to T. Only this block of the source is read.
  template <class T>
  static void load_block(const RawTensorView& src, Range rows, Range cols, T* dst, std::int64_t dst_ld) {
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

  template <class T>
  static void fill_zero(T* dst, std::size_t count) {
    std::memset(static_cast<void*>(dst), 0, count * sizeof(T));
  }

  template <class T>
  static void copy(const T* src, T* dst, std::size_t count) {
    std::memcpy(static_cast<void*>(dst), src, count * sizeof(T));
  }

  // y[b][n] = sum_k x[b][k] * w[n][k] (+ bias[n]) for b < batch, n < N, k < K, accumulated in
  // float and rounded once to Out. Weights stream through once per call for batches up to
  // kBatchBlock; x rows of a block stay in cache. No allocation.
  template <class T, class Out>
  static void linear(const T* x, std::int64_t ldx, std::int64_t batch, const T* w, std::int64_t ldw, std::int64_t N,
                     std::int64_t K, const T* bias, Out* y, std::int64_t ldy) {
    constexpr std::int64_t kBatchBlock = 64, kTile = 4;
    const std::int64_t nb_max = batch == 1 ? 4 : 2;  // batch 1 is bandwidth bound: more rows in flight
    float out[4][4];
    for (std::int64_t b0 = 0; b0 < batch; b0 += kBatchBlock) {
      const std::int64_t b_end = std::min(batch, b0 + kBatchBlock);
      for (std::int64_t n0 = 0; n0 < N; n0 += nb_max) {
        const int nb = int(std::min(nb_max, N - n0));
        for (std::int64_t b = b0; b < b_end; b += kTile) {
          const int mb = int(std::min(kTile, b_end - b));
          host_detail::dot_tile_for<T>(mb, nb)(x + b * ldx, ldx, w + n0 * ldw, ldw, K, out);
          for (int i = 0; i < mb; ++i)
            for (int j = 0; j < nb; ++j) {
              const float acc = out[i][j] + (bias ? to_float(bias[n0 + j]) : 0.0f);
              y[(b + i) * ldy + n0 + j] = from_float<Out>(acc);
            }
        }
      }
    }
  }

  // y[b][n] += bias[n].
  template <class T>
  static void add_bias(T* y, std::int64_t ldy, std::int64_t batch, const T* bias, std::int64_t N) {
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t n = 0; n < N; ++n) y[b * ldy + n] = from_float<T>(to_float(y[b * ldy + n]) + to_float(bias[n]));
  }

  // Transformer-block kernels (see host_kernels.hpp and paged_attention_host.hpp).
  template <class T>
  static void rms_norm(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols, const float* weight,
                       float eps, T* y, std::int64_t ldy) {
    host_kernels::rms_norm(x, ldx, rows, cols, weight, eps, y, ldy);
  }
  template <class T>
  static void rope(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim, const float* cos,
                   const float* sin, bool interleaved) {
    host_kernels::rope(x, ld, rows, heads, head_dim, cos, sin, interleaved);
  }
  template <class T>
  static void silu_and_mul(const T* gate_up, std::int64_t rows, std::int64_t n, T* out) {
    host_kernels::silu_and_mul(gate_up, rows, n, out);
  }
  template <class T>
  static void add(T* x, const T* y, std::int64_t n) {
    host_kernels::add(x, y, n);
  }

  // A Buffer's contents to host memory (the device policy copies and waits).
  template <class T>
  static void download(const T* src, T* host, std::size_t count) {
    copy(src, host, count);
  }

  // Host data a step computes (RoPE angles) into a Buffer.
  template <class T>
  static void upload(const T* host, T* dst, std::size_t count) {
    copy(host, dst, count);
  }

  // out[i] = table row (ids[i] - first_id) for ids in [first_id, first_id + rows), zeros
  // otherwise. ids are host memory.
  template <class T>
  static void gather_rows(const T* table, std::int64_t first_id, std::int64_t rows, std::int64_t width,
                          const std::int32_t* ids, std::int64_t count, T* out, std::int64_t ldo) {
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t local = std::int64_t(ids[i]) - first_id;
      if (local >= 0 && local < rows)
        copy(table + local * width, out + i * ldo, std::size_t(width));
      else
        fill_zero(out + i * ldo, std::size_t(width));
    }
  }

  // One step's attention metadata: the host kernels read the StepLayout itself.
  struct StepState {
    const StepLayout* layout = nullptr;
    std::vector<float> scores;  // attention workspace; grows, then is reused
  };
  template <class Shape>
  static void prepare_step(StepState& state, const StepLayout& layout, const Shape&) {
    state.layout = &layout;
  }

  // The step's new K and V rows (row t at k + t * ld, v + t * ld) into their cache slots.
  template <class T, class Cache>
  static void write_kv(Cache& cache, std::int64_t layer, const StepState& state, const T* k, const T* v,
                       std::int64_t ld) {
    const std::size_t width = std::size_t(cache.shape().slot_elements());
    const std::vector<std::int64_t>& slots = state.layout->slots;
    for (std::size_t t = 0; t < slots.size(); ++t) {
      if (slots[t] < 0) continue;
      copy(k + std::int64_t(t) * ld, cache.key(layer, slots[t]), width);
      copy(v + std::int64_t(t) * ld, cache.value(layer, slots[t]), width);
    }
  }

  template <class T, class Cache>
  static void paged_attention(const Cache& cache, std::int64_t layer, const HeadPartition& heads, const T* q,
                              std::int64_t ldq, StepState& state, float scale, std::int64_t window, T* out,
                              std::int64_t ldo) {
    const std::vector<AttentionQuery>& queries = state.layout->queries;
    paged_attention_host(cache, layer, heads, q, ldq, queries.data(), std::int64_t(queries.size()), scale, window, out,
                         ldo, state.scores);
  }

  // tokens[r] = a token sampled from row r of `logits` ([rows, vocab], this memory) under
  // requests[r]; tokens is host memory. The Sampler's scratch is reused between steps.
  using SamplingState = Sampler;
  static void sample(SamplingState& sampler, const float* logits, std::int64_t rows, std::int64_t vocab,
                     const SampleRequest* requests, std::int32_t* tokens) {
    for (std::int64_t r = 0; r < rows; ++r)
      tokens[r] = sampler.sample(logits + r * vocab, vocab, *requests[r].params, *requests[r].rng);
  }

  // For each row b of a [batch, N] matrix: the largest value and its column (the first on ties).
  template <class V>
  static void row_argmax(const V* values, std::int64_t ld, std::int64_t batch, std::int64_t N, float* best_value,
                         std::int64_t* best_index) {
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
};

}  // namespace tpkit
