// The README's engine example: two prompts batched at TP 2, streamed as they generate.
//   engine_api --model MODEL --tokenizer TOKENIZER
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include <tpkit/engine/engine.hpp>

int main(int argc, char** argv) {
  CLI::App app("Two prompts batched at TP 2 with tpkit's engine, the first streamed.", "engine_api");
  std::string model;
  tpkit::EngineOptions options;
  options.tp_size = 2;
  app.add_option("--model", model, "llama2.c .bin file or Hugging Face directory")->required();
  app.add_option("--tokenizer", options.tokenizer, "llama2.c tokenizer .bin")->required()->check(CLI::ExistingFile);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    tpkit::Engine engine(model, options);
    tpkit::SamplingParams params;
    params.temperature = 0.8f, params.top_p = 0.9f, params.seed = 7, params.max_tokens = 64;
    auto results = engine.generate({"Once upon a time", "Lily"}, params,
                                   [](std::size_t request, std::int32_t, std::string_view text) {
                                     if (request == 0) std::cout << text << std::flush;  // stream the first
                                   });
    std::cout << "\n---\n" << results[1].text << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_api: %s\n", tpkit::user_message(e).c_str());
    return 1;
  }
}
