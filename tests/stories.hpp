// What the tests on the real stories260K model share: where it is, the golden prompts, and
// greedy generation of a fixed length. TPKIT_TEST_MODELS is set by tests/CMakeLists.txt; the
// environment variable of the same name overrides it (a test program carried to another
// machine with its models, as scripts/gpu-check.sh does).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include "tpkit/engine/engine.hpp"

namespace stories {
inline const std::string kModels =
    std::getenv("TPKIT_TEST_MODELS") ? std::getenv("TPKIT_TEST_MODELS") : TPKIT_TEST_MODELS;
inline const std::string kBin = kModels + "/stories260K/stories260K.bin";
inline const std::string kHf = kModels + "/stories260K_hf";
inline const std::string kTokenizer = kModels + "/stories260K/tok512.bin";
inline const std::vector<std::string> kPrompts = {"Once upon a time", "Lily and Tom", "The little dog",
                                                  "One day, a girl named Sue", "Sam wanted a big red ball because"};

// Greedy, EOS ignored: every prompt gives exactly `tokens` tokens, so results compare in full.
inline tpkit::SamplingParams greedy(int tokens) {
  tpkit::SamplingParams p;
  p.temperature = 0;
  p.max_tokens = tokens;
  p.ignore_eos = true;
  return p;
}

inline std::vector<std::vector<std::int32_t>> token_ids(const std::vector<tpkit::GenerationResult>& results) {
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& r : results) out.push_back(r.token_ids);
  return out;
}
}  // namespace stories
