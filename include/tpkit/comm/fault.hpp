// tpkit/comm/fault.hpp: injected faults, for testing that lost and stalled ranks are reported.
// Every backend counts each rank's communicator operations and applies the faults that name
// that rank and operation.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tpkit/core/error.hpp"

namespace tpkit {

struct Fault {
  enum class Kind { fail, stall };
  int rank = 0;                    // world rank
  std::uint64_t at_operation = 0;  // this rank's n-th communicator operation, from 0
  Kind kind = Kind::fail;
  std::chrono::milliseconds stall_for{0};

  static Fault fail_at(int rank, std::uint64_t operation) { return {rank, operation, Kind::fail, {}}; }
  static Fault stall_at(int rank, std::uint64_t operation, std::chrono::milliseconds duration) {
    return {rank, operation, Kind::stall, duration};
  }
};

// Called before operation number `n` of `world_rank`: stalls, or throws InjectedFault.
inline void apply_faults(const std::vector<Fault>& faults, int world_rank, std::uint64_t n, const char* what) {
  for (const Fault& f : faults) {
    if (f.rank != world_rank || f.at_operation != n) continue;
    if (f.kind == Fault::Kind::stall) {
      std::this_thread::sleep_for(f.stall_for);
    } else {
      throw InjectedFault("injected failure on world rank " + std::to_string(world_rank) + " at its operation #" +
                          std::to_string(n) + " (" + what + ")");
    }
  }
}

// Faults from text, for processes that take them from the command line or the environment:
// "fail:RANK:OP" and "stall:RANK:OP:MILLISECONDS", separated by commas.
inline std::vector<Fault> parse_faults(const std::string& spec) {
  std::vector<Fault> out;
  std::size_t at = 0;
  while (at < spec.size()) {
    std::size_t end = spec.find(',', at);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(at, end - at);
    std::vector<std::string> parts;
    for (std::size_t p = 0, q; p <= item.size(); p = q + 1) {
      q = item.find(':', p);
      if (q == std::string::npos) q = item.size();
      parts.push_back(item.substr(p, q - p));
    }
    try {
      if (parts.size() == 3 && parts[0] == "fail")
        out.push_back(Fault::fail_at(std::stoi(parts[1]), std::stoull(parts[2])));
      else if (parts.size() == 4 && parts[0] == "stall")
        out.push_back(Fault::stall_at(std::stoi(parts[1]), std::stoull(parts[2]),
                                      std::chrono::milliseconds(std::stoll(parts[3]))));
      else
        throw InvalidArgument("");
    } catch (const std::exception&) {
      TPKIT_THROW(InvalidArgument, "bad fault \"", item, "\"; expected fail:RANK:OP or stall:RANK:OP:MS");
    }
    at = end + 1;
  }
  return out;
}

}  // namespace tpkit
