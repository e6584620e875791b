// tpkit/attention/paged_attention_host.hpp: causal attention of query tokens over a paged KV
// cache, on the host, with grouped-query heads mapped by the rank's HeadPartition.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tpkit/core/dtype.hpp"
#include "tpkit/kv/paged_kv_cache.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

// One query token: its position (it attends to positions 0..position) and its sequence's
// block table.
struct AttentionQuery {
  std::int64_t position;
  const std::vector<std::int32_t>* blocks;
};

// out[t] (local q heads x head_dim) = softmax(q . K^T * scale) V over positions 0..position of
// query t's sequence (only the last `window` of them when window > 0). q rows have stride ldq;
// scores accumulate in float. `workspace` is caller-owned and only grows, so a warm step
// allocates nothing.
template <class T, class Ops>
void paged_attention_host(const PagedKVCache<T, Ops>& cache, std::int64_t layer, const HeadPartition& heads, const T* q,
                          std::int64_t ldq, const AttentionQuery* queries, std::int64_t count, float scale,
                          std::int64_t window, T* out, std::int64_t ldo, std::vector<float>& workspace) {
  const std::int64_t hd = cache.shape().head_dim;
  for (std::int64_t t = 0; t < count; ++t) {
    const AttentionQuery& query = queries[t];
    const std::int64_t n = query.position + 1;
    const std::int64_t first = window > 0 && n > window ? n - window : 0;  // sliding window
    if (std::int64_t(workspace.size()) < hd + n) workspace.resize(std::size_t(hd + n));
    float* acc = workspace.data();  // [hd] output accumulator, then [n] scores
    float* scores = acc + hd;
    cache.slot(*query.blocks, query.position);  // the block table covers every position read below
    for (int h = 0; h < heads.local_q_heads(); ++h) {
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
  }
}

}  // namespace tpkit
