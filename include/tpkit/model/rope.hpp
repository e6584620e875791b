// tpkit/model/rope.hpp: rotary position embedding frequencies, including Llama-3 scaling.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "tpkit/model/config.hpp"

namespace tpkit {

// inv_freq[i] = theta^(-2i / head_dim), i < head_dim / 2, rescaled per Llama 3.1 when enabled:
// long wavelengths (beyond original_max_position / low_freq_factor) are divided by `factor`,
// short ones (below original_max_position / high_freq_factor) kept, and the band between
// interpolated smoothly.
inline std::vector<double> rope_inverse_frequencies(const ModelConfig& c) {
  const std::int64_t half = c.head_dim / 2;
  std::vector<double> inv(static_cast<std::size_t>(half));
  const double two_pi = 6.283185307179586;
  for (std::int64_t i = 0; i < half; ++i) {
    double f = std::pow(c.rope_theta, -double(2 * i) / double(c.head_dim));
    if (c.rope_scaling.llama3) {
      const RopeScaling& s = c.rope_scaling;
      const double wavelength = two_pi / f;
      const double low_wavelength = s.original_max_position / s.low_freq_factor;
      const double high_wavelength = s.original_max_position / s.high_freq_factor;
      if (wavelength > low_wavelength) {
        f /= s.factor;
      } else if (wavelength >= high_wavelength) {
        const double smooth =
            (s.original_max_position / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[std::size_t(i)] = f;
  }
  return inv;
}

// cos and sin of position * inv_freq for each of `count` positions: [count, head_dim / 2] each.
inline void rope_angles(const std::vector<double>& inv_freq, const std::int64_t* positions, std::int64_t count,
                        float* cos_out, float* sin_out) {
  const std::size_t half = inv_freq.size();
  for (std::int64_t t = 0; t < count; ++t)
    for (std::size_t i = 0; i < half; ++i) {
      const double angle = double(positions[t]) * inv_freq[i];
      cos_out[std::size_t(t) * half + i] = float(std::cos(angle));
      sin_out[std::size_t(t) * half + i] = float(std::sin(angle));
    }
}

}  // namespace tpkit
