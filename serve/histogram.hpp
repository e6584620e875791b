// serve/histogram.hpp: a Prometheus histogram (fixed buckets), shared by tpkit-serve and
// tpkit-router. Not thread-safe: its owner locks.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace tpkit::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v) {
    std::size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }
  // Prometheus text: cumulative buckets, then _sum and _count.
  void write(std::string& out, const std::string& name, const std::string& labels) const {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += counts_[i];
      const std::string le = i < bounds_.size() ? format(bounds_[i]) : "+Inf";
      out += name + "_bucket{" + labels + ",le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
    }
    out += name + "_sum{" + labels + "} " + format(sum_) + "\n";
    out += name + "_count{" + labels + "} " + std::to_string(count_) + "\n";
  }
  static std::string format(double v) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.9g", v);
    return buffer;
  }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace tpkit::serve
