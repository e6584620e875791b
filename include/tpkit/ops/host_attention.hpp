// tpkit/ops/host_attention.hpp: causal attention of query tokens over a paged KV cache, on the
// host, with grouped-query heads mapped by the rank's HeadPartition. HostOps runs it with its
// threads, each (query token, head) pair computed whole by one thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tpkit/core/dtype.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

// Workspace floats attend_head needs for `query`: [head_dim] accumulator + [position + 1] scores.
inline std::int64_t attention_workspace_floats(std::int64_t head_dim, const AttentionQuery& query) {
  return head_dim + query.position + 1;
}

// Local query head h of query token t: out[t][h] = softmax(q . K^T * scale) V over positions
// 0..position of the query's sequence (only the last `window` of them when window > 0). The
// query's block table must cover its position (paged_attention_host checks). Scores accumulate
// in float, in position order.
template <class T, class Ops>
void attend_head(const PagedKVCache<T, Ops>& cache, std::int64_t layer, const HeadPartition& heads, const T* q,
                 std::int64_t ldq, const AttentionQuery& query, std::int64_t t, int h, float scale, std::int64_t window,
                 T* out, std::int64_t ldo, float* workspace) {
  const std::int64_t hd = cache.shape().head_dim;
  const std::int64_t n = query.position + 1;
  const std::int64_t first = window > 0 && n > window ? n - window : 0;  // sliding window
  float* acc = workspace;                                                // [hd] output accumulator, then [n] scores
  float* scores = acc + hd;
  const T* qh = q + t * ldq + h * hd;
  const std::int64_t kv_offset = std::int64_t(heads.local_kv_for(h)) * hd;
  float best = -INFINITY;
  for (std::int64_t p = first; p < n; ++p) {
    const T* k = cache.key(layer, cache.slot_unchecked(*query.blocks, p)) + kv_offset;
    float dot = 0;
    for (std::int64_t d = 0; d < hd; ++d) dot += to_float(qh[d]) * to_float(k[d]);
    scores[p] = dot * scale;
    best = std::max(best, scores[p]);
  }
  float total = 0;
  for (std::int64_t p = first; p < n; ++p) total += scores[p] = std::exp(scores[p] - best);
  std::fill(acc, acc + hd, 0.0f);
  for (std::int64_t p = first; p < n; ++p) {
    const T* v = cache.value(layer, cache.slot_unchecked(*query.blocks, p)) + kv_offset;
    const float w = scores[p] / total;
    for (std::int64_t d = 0; d < hd; ++d) acc[d] += w * to_float(v[d]);
  }
  for (std::int64_t d = 0; d < hd; ++d) out[t * ldo + h * hd + d] = from_float<T>(acc[d]);
}

// out[t] (local q heads x head_dim) = attention of query t over its sequence, for `count`
// queries (q rows have stride ldq). `workspace` is caller-owned and only grows, so a warm step
// allocates nothing.
template <class T, class Ops>
void paged_attention_host(const PagedKVCache<T, Ops>& cache, std::int64_t layer, const HeadPartition& heads, const T* q,
                          std::int64_t ldq, const AttentionQuery* queries, std::int64_t count, float scale,
                          std::int64_t window, T* out, std::int64_t ldo, std::vector<float>& workspace) {
  const std::int64_t hd = cache.shape().head_dim;
  for (std::int64_t t = 0; t < count; ++t) {
    const AttentionQuery& query = queries[t];
    cache.slot(*query.blocks, query.position);  // the block table covers every position read
    const std::int64_t need = attention_workspace_floats(hd, query);
    if (std::int64_t(workspace.size()) < need) workspace.resize(std::size_t(need));
    for (int h = 0; h < heads.local_q_heads(); ++h)
      attend_head(cache, layer, heads, q, ldq, query, t, h, scale, window, out, ldo, workspace.data());
  }
}

}  // namespace tpkit
