// The README's engine example: two prompts batched at TP 2, streamed as they generate.
//   engine_api MODEL [TOKENIZER]
#include <cstdio>
#include <iostream>

#include <tpkit/engine/engine.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: engine_api MODEL [TOKENIZER]\n");
    return 2;
  }
  tpkit::EngineOptions options;
  options.tp_size = 2;
  if (argc > 2) options.tokenizer = argv[2];
  tpkit::Engine engine(argv[1], options);
  tpkit::SamplingParams params;
  params.temperature = 0.8f, params.top_p = 0.9f, params.seed = 7, params.max_tokens = 64;
  auto results = engine.generate({"Once upon a time", "Lily"}, params,
                                 [](std::size_t request, std::int32_t, std::string_view text) {
                                   if (request == 0) std::cout << text << std::flush;  // stream the first
                                 });
  std::cout << "\n---\n" << results[1].text << "\n";
}
