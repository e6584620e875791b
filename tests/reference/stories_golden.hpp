// The golden run of stories260K for the engine tests: each golden prompt's ids, the float64
// reference's 64 greedy tokens after it, and the reference's logits at every one of them.
#pragma once

#include <string>
#include <vector>

#include "reference/llama_reference.hpp"
#include "stories.hpp"

namespace stories {
struct Golden {
  std::vector<std::vector<std::int32_t>> prompt_ids;
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<std::vector<std::vector<double>>> logits;
};

inline Golden make_golden() {
  Golden g;
  const ref::LlamaWeights w = ref::read_llama2c(kBin);
  const tpkit::Llama2cTokenizer tok(kTokenizer);
  for (const std::string& p : kPrompts) {
    g.prompt_ids.push_back(tok.encode(p, true, false));
    std::vector<std::vector<double>> logits;
    const std::vector<int> t =
        ref::greedy(w, std::vector<int>(g.prompt_ids.back().begin(), g.prompt_ids.back().end()), 64, &logits);
    g.tokens.emplace_back(t.begin(), t.end());
    g.logits.push_back(std::move(logits));
  }
  return g;
}
}  // namespace stories
