// The float64 reference of a mixture-of-experts layer, written from the Mixtral / Qwen-MoE
// definition (transformers' modeling files), independent of tpkit's MoELayer: routing, the
// experts, Qwen2-MoE's shared expert, and a per-output error bound for a float computation in
// any summation order. Shared by tests/test_moe.cpp (HostOps) and tests/cuda/test_cuda_moe.cu.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "support.hpp"
#include "tpkit/layers/moe.hpp"

namespace moe_ref {

// The float64 routing of one token: softmax, then top_k by probability with the lower index
// first on ties (a stable sort of indices by descending probability).
struct RefRoute {
  std::vector<int> experts;
  std::vector<double> weights;
  double boundary_gap = 1.0;  // p(k-th) - p(k+1-th): how decisive the choice is
};
inline RefRoute ref_route(const std::vector<double>& logits, int top_k, bool normalize) {
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (std::size_t e = 0; e < p.size(); ++e) sum += p[e] = std::exp(logits[e] - top);
  for (double& v : p) v /= sum;
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[std::size_t(a)] > p[std::size_t(b)]; });
  RefRoute r;
  double chosen = 0;
  for (int k = 0; k < top_k; ++k) {
    r.experts.push_back(order[std::size_t(k)]);
    r.weights.push_back(p[std::size_t(order[std::size_t(k)])]);
    chosen += r.weights.back();
  }
  if (normalize)
    for (double& w : r.weights) w /= chosen;
  if (std::size_t(top_k) < p.size())
    r.boundary_gap = p[std::size_t(order[std::size_t(top_k - 1)])] - p[std::size_t(order[std::size_t(top_k)])];
  return r;
}

// v rounded to T (the float rounding first, as a float computation would hold it).
template <class T>
double as_t(double v) {
  return double(float(T(float(v))));
}

inline double silu(double v) { return v / (1.0 + std::exp(-v)); }

// Random full weights of one MoE layer, as float (the checkpoint) and T-rounded doubles (what a
// layer of storage T multiplies).
struct Problem {
  int E, top_k, H, I, S;  // experts, chosen per token, hidden, expert and shared intermediate
  bool normalize;
  std::vector<float> router, shared_gate;
  std::vector<std::vector<float>> gate, up, down;  // per expert; index E: the shared expert
  Problem(int experts, int k, int hidden, int inter, int shared, bool norm, std::uint64_t seed)
      : E(experts), top_k(k), H(hidden), I(inter), S(shared), normalize(norm) {
    ref::Rng rng(seed);
    const double unit_in = 1.0 / std::sqrt(double(H)), unit_mid = 1.0 / std::sqrt(double(I));
    router = rng.uniform_vector(std::size_t(E * H), 4 * unit_in);  // router logits of a few units
    for (int e = 0; e <= E; ++e) {
      const int width = e == E ? S : I;
      gate.push_back(rng.uniform_vector(std::size_t(width * H), 2 * unit_in));
      up.push_back(rng.uniform_vector(std::size_t(width * H), 2 * unit_in));
      down.push_back(rng.uniform_vector(std::size_t(H * width), 2 * unit_mid));
    }
    if (S > 0) shared_gate = rng.uniform_vector(std::size_t(H), unit_in);
  }
  tpkit::MoEWeights weights() const {
    tpkit::MoEWeights w;
    w.router = test::raw(router, E, H);
    for (int e = 0; e < E; ++e)
      w.experts.push_back({test::raw(gate[std::size_t(e)], I, H), test::raw(up[std::size_t(e)], I, H),
                           test::raw(down[std::size_t(e)], H, I)});
    if (S > 0) {
      w.shared = {test::raw(gate[std::size_t(E)], S, H), test::raw(up[std::size_t(E)], S, H),
                  test::raw(down[std::size_t(E)], H, S)};
      w.shared_gate = test::raw(shared_gate, 1, H);
    }
    return w;
  }
};

// y and a per-output error bound for x [n, H], in float64 from T-rounded weights and inputs.
// Bound: every output is a sum over chosen experts (and the shared one) of w_e * down . act with
// act_i = silu(g_i) u_i. In float, g_i and u_i err by at most gamma_H G_i and gamma_H U_i (G, U:
// sums of |x w|), act_i then by 1.1 gamma_H G_i U_i + |silu(g_i)| gamma_H U_i + u |act_i| (silu is
// 1.1-Lipschitz), the down projection adds gamma_I over sum |d| |act|, and the weighted sum over
// top_k experts and the ranks' partial sums gamma_{k + ranks}. All are below
// gamma_{H + I + k + ranks + 8} * M, with M the sum over experts of |w_e| sum_i |d_ji| (1.1 G_i U_i
// + |silu(g_i)| U_i + |act_i|). Each store in T (gate/up, act, an expert's output, each running
// sum, the reduction) adds u_T * M at most: 8 of them for 16-bit types, and 2 more for the
// routing weight and the shared expert's gate, which transformers casts to T.
template <class T>
struct Reference {
  std::vector<double> y, bound;
  std::vector<std::int64_t> counts;
  double min_gap = 1.0;
};
template <class T>
Reference<T> reference(const Problem& p, const std::vector<float>& x, int n, int ranks,
                       const std::vector<std::uint8_t>& counted = {}) {
  const auto xr = test::rounded<T>(x);
  const auto wr = test::rounded<T>(p.router);
  Reference<T> out;
  out.y.assign(std::size_t(n * p.H), 0.0);
  std::vector<double> mag(static_cast<std::size_t>(n * p.H), 0.0);
  out.counts.assign(std::size_t(p.E), 0);
  const auto mlp = [&](int e, int width, const double* xt, double scale, double* y, double* m) {
    const auto g = test::rounded<T>(p.gate[std::size_t(e)]), u = test::rounded<T>(p.up[std::size_t(e)]),
               d = test::rounded<T>(p.down[std::size_t(e)]);
    std::vector<double> act(static_cast<std::size_t>(width)), err(static_cast<std::size_t>(width));
    for (int i = 0; i < width; ++i) {
      double gi = 0, ui = 0, G = 0, U = 0;
      for (int h = 0; h < p.H; ++h) {
        gi += xt[h] * g[std::size_t(i * p.H + h)], ui += xt[h] * u[std::size_t(i * p.H + h)];
        G += std::fabs(xt[h] * g[std::size_t(i * p.H + h)]), U += std::fabs(xt[h] * u[std::size_t(i * p.H + h)]);
      }
      act[std::size_t(i)] = silu(gi) * ui;
      err[std::size_t(i)] = 1.1 * G * U + std::fabs(silu(gi)) * U + std::fabs(act[std::size_t(i)]);
    }
    for (int j = 0; j < p.H; ++j) {
      double v = 0, a = 0;
      for (int i = 0; i < width; ++i) {
        v += d[std::size_t(j * width + i)] * act[std::size_t(i)];
        a += std::fabs(d[std::size_t(j * width + i)]) * err[std::size_t(i)];
      }
      y[j] += scale * v;
      m[j] += std::fabs(scale) * a;
    }
  };
  for (int t = 0; t < n; ++t) {
    const double* xt = xr.data() + t * p.H;
    std::vector<double> logits(static_cast<std::size_t>(p.E), 0.0);
    for (int e = 0; e < p.E; ++e)
      for (int h = 0; h < p.H; ++h) logits[std::size_t(e)] += xt[h] * wr[std::size_t(e * p.H + h)];
    // transformers runs the router in the model's dtype, and casts the routing weights to it.
    for (double& l : logits) l = as_t<T>(l);
    RefRoute r = ref_route(logits, p.top_k, p.normalize);
    for (double& w : r.weights) w = as_t<T>(w);
    out.min_gap = std::min(out.min_gap, r.boundary_gap);
    for (int k = 0; k < p.top_k; ++k) {
      if (counted.empty() || counted[std::size_t(t)]) ++out.counts[std::size_t(r.experts[std::size_t(k)])];
      mlp(r.experts[std::size_t(k)], p.I, xt, r.weights[std::size_t(k)], out.y.data() + t * p.H, mag.data() + t * p.H);
    }
    if (p.S > 0) {
      const auto sg = test::rounded<T>(p.shared_gate);
      double z = 0, Z = 0;
      for (int h = 0; h < p.H; ++h) z += xt[h] * sg[std::size_t(h)], Z += std::fabs(xt[h] * sg[std::size_t(h)]);
      const double gate = as_t<T>(1.0 / (1.0 + std::exp(-as_t<T>(z))));
      std::vector<double> s(static_cast<std::size_t>(p.H), 0.0), sm(static_cast<std::size_t>(p.H), 0.0);
      mlp(p.E, p.S, xt, 1.0, s.data(), sm.data());
      for (int j = 0; j < p.H; ++j) {
        out.y[std::size_t(t * p.H + j)] += gate * s[std::size_t(j)];
        // The gate's own error moves sigmoid by at most 0.25 gamma_H Z.
        mag[std::size_t(t * p.H + j)] += sm[std::size_t(j)] + 0.25 * Z * std::fabs(s[std::size_t(j)]);
      }
    }
  }
  const double g = ref::gamma_float(p.H + p.I + p.S + p.top_k + ranks + 8);
  const double stores = std::is_same_v<T, float> ? 0.0 : 10 * ref::roundoff<T>();
  out.bound.resize(mag.size());
  for (std::size_t i = 0; i < mag.size(); ++i) out.bound[i] = (g + stores) * mag[i] * (1 + g) + 1e-30;
  return out;
}

}  // namespace moe_ref
