// Test references written from the math, sharing no code with tpkit: float64 dense linear
// algebra on unsharded tensors, a portable seeded generator, and the error bounds the tests
// compare against.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

// splitmix64: portable, so the same seed gives the same inputs with every standard library.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  double uniform() { return double(next() >> 11) * 0x1p-52 - 1.0; }
  std::vector<float> uniform_vector(std::size_t n, double scale = 1.0) {
    std::vector<float> v(n);
    for (auto& x : v) x = float(uniform() * scale);
    return v;
  }

 private:
  std::uint64_t state_;
};

// Unit roundoff of each storage type, from the IEEE formats' significand widths.
template <class T>
double roundoff();

// gamma_n = n u / (1 - n u): the classic bound on the relative error of an n-term float sum
// or dot product in any summation order (Higham, Accuracy and Stability, section 3.1).
inline double gamma_float(int n) {
  const double u = 0x1p-24;
  return n * u / (1.0 - n * u);
}

// y[b][n] = sum_k x[b][k] w[n][k] + bias[n] in float64, and S[b][n] = sum_k |x w| + |bias|, the
// magnitude every error bound scales with.
struct DenseResult {
  std::vector<double> y, magnitude;
};
inline DenseResult linear(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& bias,
                          int batch, int out, int in) {
  DenseResult r{std::vector<double>(std::size_t(batch) * out), std::vector<double>(std::size_t(batch) * out)};
  for (int b = 0; b < batch; ++b)
    for (int n = 0; n < out; ++n) {
      double s = bias.empty() ? 0.0 : bias[std::size_t(n)];
      double m = std::fabs(s);
      for (int k = 0; k < in; ++k) {
        const double t = x[std::size_t(b) * in + k] * w[std::size_t(n) * in + k];
        s += t;
        m += std::fabs(t);
      }
      r.y[std::size_t(b) * out + n] = s;
      r.magnitude[std::size_t(b) * out + n] = m;
    }
  return r;
}

}  // namespace ref
