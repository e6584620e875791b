// tpkit/sampling/sampler.hpp: how a token is drawn from a row of logits (SamplingRule), the
// request's generator and its one uniform draw per token, and the host Sampler. The engine's
// SamplingParams (tpkit/engine/request.hpp) add what a request needs beyond the arithmetic:
// max_tokens, stop strings, ignore_eos and the seed.
//
// Order of operations: temperature (0 = greedy), then top-k, top-p (nucleus) and min-p
// filters over the softmax, then one draw from the request's own generator. Greedy and
// top_k == 1 take the first maximal logit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

// The distribution a token is drawn from: the logits at `temperature`, filtered.
struct SamplingRule {
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off

  void validate() const {
    TPKIT_REQUIRE(temperature >= 0 && std::isfinite(temperature), "temperature must be >= 0 (got ", temperature, ")");
    TPKIT_REQUIRE(top_k >= 0, "top_k must be >= 0 (got ", top_k, ")");
    TPKIT_REQUIRE(top_p > 0 && top_p <= 1, "top_p must be in (0, 1] (got ", top_p, ")");
    TPKIT_REQUIRE(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1] (got ", min_p, ")");
  }
  bool greedy() const { return temperature == 0.0f || top_k == 1; }
};

// The uniform draw in [0, 1) a non-greedy sample takes from its request's generator: one per
// token, on the host whichever device samples (tpkit/kernels/sampling.cuh takes it as an input).
inline double uniform_draw(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1p-53; }

inline std::int32_t argmax_token(const float* logits, std::int64_t vocab) {
  return std::int32_t(std::max_element(logits, logits + vocab) - logits);
}

// One row of a step's logits to sample: its request's rule and generator.
struct SampleRequest {
  const SamplingRule* rule;
  std::mt19937_64* rng;
};

class Sampler {
 public:
  // `scratch` vectors are reused between calls; no allocation once warm.
  std::int32_t sample(const float* logits, std::int64_t vocab, const SamplingRule& p, std::mt19937_64& rng) {
    if (p.greedy()) return argmax_token(logits, vocab);
    order_.resize(std::size_t(vocab));
    std::iota(order_.begin(), order_.end(), 0);
    // Descending logit, lower id first on ties: the candidate order every filter uses.
    const auto by_logit = [&](std::int32_t a, std::int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::int64_t keep = vocab;
    if (p.top_k > 0 && p.top_k < vocab) {
      keep = p.top_k;
      std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
    } else {
      std::sort(order_.begin(), order_.end(), by_logit);
    }
    probs_.resize(std::size_t(keep));
    const double top = double(logits[order_[0]]) / p.temperature;
    double total = 0;
    for (std::int64_t i = 0; i < keep; ++i)
      total += probs_[std::size_t(i)] = std::exp(double(logits[order_[std::size_t(i)]]) / p.temperature - top);
    if (p.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
      double mass = 0;
      std::int64_t n = 0;
      while (n < keep && mass < double(p.top_p) * total) mass += probs_[std::size_t(n++)];
      keep = std::max<std::int64_t>(n, 1);
    }
    if (p.min_p > 0.0f) {  // probability at least min_p times the most likely token's
      std::int64_t n = 1;
      while (n < keep && probs_[std::size_t(n)] >= double(p.min_p) * probs_[0]) ++n;
      keep = n;
    }
    total = 0;
    for (std::int64_t i = 0; i < keep; ++i) total += probs_[std::size_t(i)];
    const double u = uniform_draw(rng) * total;
    double cumulative = 0;
    for (std::int64_t i = 0; i < keep; ++i) {
      cumulative += probs_[std::size_t(i)];
      if (u < cumulative) return order_[std::size_t(i)];
    }
    return order_[std::size_t(keep - 1)];
  }

 private:
  std::vector<std::int32_t> order_;
  std::vector<double> probs_;
};

}  // namespace tpkit
