// tpkit/engine/agreement.hpp: how the processes of a distributed engine check that they were
// given the same model, options and requests: each hashes what it has and the world compares.
// A disagreement is an error on every rank, naming the ranks that differ, instead of a hang or
// wrong tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "tpkit/comm/communicator.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

// FNV-1a over the bytes of what every rank must agree on.
struct Fingerprint {
  std::uint64_t value = 1469598103934665603ull;
  void add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) value = (value ^ p[i]) * 1099511628211ull;
  }
  template <class T>
  void add(const T& v) {
    static_assert(std::is_arithmetic_v<T>);
    add(&v, sizeof v);
  }
  void add(const std::string& s) {
    add(s.size());
    add(s.data(), s.size());
  }
};

// Collective over `world`: throws InvalidArgument on every rank, naming the ranks whose
// fingerprint differs from rank 0's.
template <class Backend>
void require_agreement(Communicator<Backend>& world, const Fingerprint& mine, const char* what) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(world.size()));
  const std::int64_t v = std::int64_t(mine.value);
  world.all_gather(&v, 1, all.data());
  std::string differ;
  for (int r = 1; r < world.size(); ++r)
    if (all[std::size_t(r)] != all[0]) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  TPKIT_REQUIRE(differ.empty(), "ranks disagree on ", what, ": world rank(s) ", differ, " differ from world rank 0");
}

}  // namespace tpkit
