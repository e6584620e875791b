// What tpkit-generate runs on each engine (the CPU engines in tpkit_generate.cpp, the GPU
// engines in generate_cuda.cu), and where it looks for a tokenizer.
#pragma once

#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tpkit/engine/engine.hpp>
#include <tpkit/io/mapped_file.hpp>

namespace generate {

struct Request {
  std::string prompt;
  std::vector<std::int32_t> ids;
  tpkit::SamplingParams params;
};

// A llama2.c tokenizer beside the model (tokenizer.bin, tok512.bin or tok32000.bin in its
// folder, or in the folder of a .bin file), or "" when there is none. The library never guesses.
inline std::string find_tokenizer(const std::string& model_path) {
  const bool dir = tpkit::is_directory(model_path);
  const std::string folder = dir ? model_path : model_path.substr(0, model_path.find_last_of('/') + 1);
  const std::string base = folder.empty() || folder.back() == '/' ? folder : folder + "/";
  for (const char* name : {"tokenizer.bin", "tok512.bin", "tok32000.bin"})
    if (tpkit::is_regular_file(base + name)) return base + name;
  return "";
}

// Runs one request on either engine; only the leader (the sampling rank) prints.
template <class EngineT>
void run(EngineT& engine, Request request, bool leader, const tpkit::EngineOptions& options) {
  if (request.ids.empty()) {
    if (!engine.has_tokenizer())
      throw std::invalid_argument("no tokenizer found beside the model: pass --tokenizer PATH or --prompt-ids");
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
