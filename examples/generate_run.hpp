// What tpkit-generate runs on each engine (the CPU engines in tpkit_generate.cpp, the GPU engine
// in generate_cuda.cu).
#pragma once

#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <tpkit/engine/engine.hpp>

namespace generate {

[[noreturn]] void usage(const std::string& error);  // prints the usage and exits 2

struct Request {
  std::string prompt;
  std::vector<std::int32_t> ids;
  tpkit::SamplingParams params;
};

// Runs one request on either engine; only the leader (the sampling rank) prints.
template <class EngineT>
void run(EngineT& engine, Request request, bool leader, const tpkit::EngineOptions& options) {
  if (request.ids.empty()) {
    if (!engine.has_tokenizer()) usage("no tokenizer found beside the model: pass --tokenizer PATH or --prompt-ids");
    request.ids = engine.tokenizer().encode(request.prompt, true, false);
    if (leader) std::cout << request.prompt << std::flush;
  }
  const bool text = engine.has_tokenizer();
  const auto results =
      engine.generate({request.ids}, {request.params}, [&](std::size_t, std::int32_t token, std::string_view piece) {
        if (text)
          std::cout << piece << std::flush;
        else if (token >= 0)
          std::cout << token << ' ' << std::flush;
      });
  if (!leader) return;
  std::cout << std::endl;
  const auto& stats = engine.last_stats();
  std::fprintf(stderr,
               "tp %d x pp %d, %s: %lld prompt tokens, %lld generated in %.3f s (%.1f tok/s), %lld steps (%lld from "
               "CUDA graphs), finish: %s\n",
               options.tp_size, options.pp_size, tpkit::dtype_name(options.dtype),
               static_cast<long long>(stats.prompt_tokens), static_cast<long long>(stats.generated_tokens),
               stats.seconds, stats.seconds > 0 ? double(stats.generated_tokens) / stats.seconds : 0.0,
               static_cast<long long>(stats.steps), static_cast<long long>(stats.graph_steps),
               results.at(0).finish_reason.c_str());
}
}  // namespace generate
