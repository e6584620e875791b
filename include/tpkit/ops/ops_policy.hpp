// tpkit/ops/ops_policy.hpp: what an execution policy (the `Ops` of Layer<T, Ops> and
// TransformerModel<T, Ops>) must provide. Checked by the `ops_policy` concept under C++20 and
// documented here for C++17. HostOps (tpkit/ops/host_ops.hpp) and CudaOps
// (tpkit/gpu/cuda_ops.cuh) satisfy it.
//
// An Ops is a copyable handle (layers keep a copy) to whatever the policy runs on: HostOps to
// its thread pool, CudaOps to its CUDA context and stream. Every member is const on the handle.
//
//   static constexpr MemoryKind memory             where Buffers and activations live
//   template <class T> using Buffer                owning storage: Buffer<T>(count), data(),
//                                                  size(), reserve_at_least(count) (grow only)
//   load_block(RawTensorView, rows, cols, T* dst, ld)   a block of a full host tensor, converted
//   fill_zero(T*, n), copy(const T*, T*, n)        within the policy's memory
//   upload(const T* host, T*, n), download(const T*, T* host, n)
//   linear<T, Out>(x, ldx, batch, w, ldw, N, K, bias, y, ldy)   y = x W^T (+ bias), float accumulate
//   add_bias, rms_norm, rope, silu_and_mul, add    the transformer block's element-wise kernels
//   gather_rows(table, first_id, rows, width, host ids, count, out, ldo)   the embedding lookup
//   gather_rows_at(x, ldx, width, host rows, count, out, ldo)              a MoE expert's tokens
//   scatter_add_rows(src, lds, width, host rows, host weights, count, y, ldy)   their weighted sum
//   row_argmax(values, ld, batch, N, host best_value, host best_index)
//   StepState, prepare_step(state, StepLayout, KVCacheShape)   a step's attention metadata
//   write_kv(cache, layer, state, k, v, ld), paged_attention(cache, layer, heads, q, ldq, state,
//            scale, window, out, ldo)
//   SamplingState, sample(state, logits, rows, vocab, SampleRequest*, host tokens)
//
// Optional: StepGraphs and run_graph(graphs, key, addresses, body), which replays a decode
// step's layers from a captured graph (CudaOps); step_graphs<Ops> below tells whether a policy
// has them.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tpkit/config.hpp"
#include "tpkit/core/tensor.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/shard.hpp"
#include "tpkit/sampling/sampler.hpp"

#if TPKIT_HAS_CONCEPTS
#include <concepts>
#endif

namespace tpkit {

#if TPKIT_HAS_CONCEPTS
template <class Ops>
concept ops_policy = std::copy_constructible<Ops> &&
    requires(const Ops& ops, PagedKVCache<float, Ops>& cache, typename Ops::StepState& step,
             typename Ops::SamplingState& sampling, const RawTensorView& weights, Range range, float* f,
             const float* cf, std::int32_t* ids, const std::int32_t* cids, std::int64_t* index, std::int64_t n,
             std::size_t count, const StepLayout& layout, const HeadPartition& heads, const SampleRequest* requests) {
  { Ops::memory } -> std::convertible_to<MemoryKind>;
  typename Ops::template Buffer<float>;
  ops.load_block(weights, range, range, f, n);
  ops.fill_zero(f, count);
  ops.copy(cf, f, count);
  ops.upload(cf, f, count);
  ops.download(cf, f, count);
  ops.template linear<float, float>(cf, n, n, cf, n, n, n, cf, f, n);
  ops.add_bias(f, n, n, cf, n);
  ops.rms_norm(cf, n, n, n, cf, 1.0f, f, n);
  ops.rope(f, n, n, 1, n, cf, cf, true);
  ops.silu_and_mul(cf, n, n, f);
  ops.add(f, cf, n);
  ops.gather_rows(cf, n, n, n, cids, n, f, n);
  ops.gather_rows_at(cf, n, n, cids, n, f, n);
  ops.scatter_add_rows(cf, n, n, cids, cf, n, f, n);
  ops.row_argmax(cf, n, n, n, f, index);
  ops.prepare_step(step, layout, cache.shape());
  ops.write_kv(cache, n, step, cf, cf, n);
  ops.paged_attention(cache, n, heads, cf, n, step, 1.0f, n, f, n);
  ops.sample(sampling, cf, n, n, requests, ids);
};
#define TPKIT_OPS_CHECK(Ops) static_assert(::tpkit::ops_policy<Ops>, "Ops does not satisfy ops_policy")
#else
#define TPKIT_OPS_CHECK(Ops) static_assert(std::is_copy_constructible_v<Ops>, "an Ops policy must be a copyable handle")
#endif

// A policy that can replay a decode step's layers from a captured graph (CudaOps) defines
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

}  // namespace tpkit
