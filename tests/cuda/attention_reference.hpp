// The float64 attention reference shared by the paged-attention tests, written from the math
// (not from the kernels), with the error bound argued in test_paged_attention.cu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "tpkit/core/dtype.hpp"

namespace tpkit::test {

// Compares got[0..hd) with softmax(q . K^T * scale) V over positions [first, n) of one query
// head whose keys and values sit at keys/values + slot(p) * kv_stride + kv_offset. Returns the
// worst error as a fraction of the bound; `ok` turns false past the bound or on NaN.
template <class T, class SlotOf>
double check_attention(const T* q, int hd, int first, int n, SlotOf slot, const std::vector<T>& keys,
                       const std::vector<T>& values, std::size_t kv_stride, std::size_t kv_offset, double scale,
                       const T* got, bool& ok) {
  const double kFloat = std::ldexp(1.0, -24), u = unit_roundoff<T>();
  std::vector<double> score(static_cast<std::size_t>(n));
  double best = -1e300, delta = 0, vmax = 0, worst = 0;
  for (int p = first; p < n; ++p) {
    const T* k = keys.data() + slot(p) * kv_stride + kv_offset;
    double dot = 0, magnitude = 0;
    for (int d = 0; d < hd; ++d) {
      const double term = double(to_float(q[d])) * double(to_float(k[d]));
      dot += term, magnitude += std::fabs(term);
    }
    score[std::size_t(p)] = dot * scale;
    delta = std::max(delta, (hd + 2) * kFloat * magnitude * scale);
    best = std::max(best, score[std::size_t(p)]);
  }
  double total = 0;
  for (int p = first; p < n; ++p) total += std::exp(score[std::size_t(p)] - best);
  for (int p = first; p < n; ++p)
    for (int d = 0; d < hd; ++d)
      vmax = std::max(vmax, std::fabs(double(to_float(values[slot(p) * kv_stride + kv_offset + std::size_t(d)]))));
  for (int d = 0; d < hd; ++d) {
    double want = 0;
    for (int p = first; p < n; ++p)
      want += std::exp(score[std::size_t(p)] - best) / total *
              to_float(values[slot(p) * kv_stride + kv_offset + std::size_t(d)]);
    const double g = to_float(got[d]);
    const double bound = u * std::fabs(want) + vmax * (2 * delta + (n - first + 16) * kFloat);
    worst = std::max(worst, std::fabs(g - want) / bound);
    ok &= std::fabs(g - want) <= bound;  // false for NaN (an unwritten element)
  }
  return worst;
}

}  // namespace tpkit::test
