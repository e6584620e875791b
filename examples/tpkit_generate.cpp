// tpkit-generate: generate text from a llama2.c .bin or a Hugging Face directory with the
// tpkit example engine, TP ranks running as threads over the mock backend.
//
//   tpkit-generate --model PATH [--tokenizer PATH] [--prompt TEXT | --prompt-ids 1,2,3]
//                  [--tp N] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
//                  [--min-p P] [--seed S] [--stop TEXT]... [--dtype f32|bf16|f16]
//
// The generated text goes to stdout as it is produced; a summary goes to stderr.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <tpkit/engine/engine.hpp>

namespace {
[[noreturn]] void usage(const std::string& error) {
  std::fprintf(stderr,
               "error: %s\n"
               "usage: tpkit-generate --model PATH [--tokenizer PATH] [--prompt TEXT | --prompt-ids 1,2,3]\n"
               "       [--tp N] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
               "       [--seed S] [--stop TEXT]... [--dtype f32|bf16|f16]\n",
               error.c_str());
  std::exit(2);
}
template <class T>
T number(const std::string& flag, const std::string& value) {
  std::istringstream in(value);
  T v;
  if (!(in >> v) || !in.eof()) usage(flag + " expects a number, got \"" + value + "\"");
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model, prompt, prompt_ids;
  tpkit::EngineOptions options;
  tpkit::SamplingParams params;
  params.temperature = 0.0f;
  params.max_tokens = 256;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("help requested");
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model")
      model = value;
    else if (flag == "--tokenizer")
      options.tokenizer = value;
    else if (flag == "--prompt")
      prompt = value;
    else if (flag == "--prompt-ids")
      prompt_ids = value;
    else if (flag == "--tp")
      options.tp_size = number<int>(flag, value);
    else if (flag == "--max-tokens")
      params.max_tokens = number<int>(flag, value);
    else if (flag == "--temperature")
      params.temperature = number<float>(flag, value);
    else if (flag == "--top-k")
      params.top_k = number<int>(flag, value);
    else if (flag == "--top-p")
      params.top_p = number<float>(flag, value);
    else if (flag == "--min-p")
      params.min_p = number<float>(flag, value);
    else if (flag == "--seed")
      params.seed = number<std::uint64_t>(flag, value);
    else if (flag == "--stop")
      params.stop.push_back(value);
    else if (flag == "--dtype") {
      if (value == "f32")
        options.dtype = tpkit::DType::f32;
      else if (value == "bf16")
        options.dtype = tpkit::DType::bf16;
      else if (value == "f16")
        options.dtype = tpkit::DType::f16;
      else
        usage("--dtype must be f32, bf16 or f16");
    } else
      usage("unknown option " + flag);
  }
  if (model.empty()) usage("--model is required");
  try {
    tpkit::Engine engine(model, options);
    std::vector<std::int32_t> ids;
    if (!prompt_ids.empty()) {
      std::istringstream in(prompt_ids);
      for (std::string item; std::getline(in, item, ',');) ids.push_back(number<std::int32_t>("--prompt-ids", item));
    } else {
      if (!engine.has_tokenizer()) usage("no tokenizer found beside the model: pass --tokenizer PATH or --prompt-ids");
      ids = engine.tokenizer().encode(prompt, true, false);
      std::cout << prompt << std::flush;
    }
    const bool text = engine.has_tokenizer();
    const auto results = engine.generate({ids}, {params}, [&](std::size_t, std::int32_t token, std::string_view piece) {
      if (text)
        std::cout << piece << std::flush;
      else if (token >= 0)
        std::cout << token << ' ' << std::flush;
    });
    std::cout << std::endl;
    const auto& stats = engine.last_stats();
    std::fprintf(stderr, "tp %d, %s: %lld prompt tokens, %lld generated in %.3f s (%.1f tok/s), finish: %s\n",
                 options.tp_size, tpkit::dtype_name(options.dtype), static_cast<long long>(stats.prompt_tokens),
                 static_cast<long long>(stats.generated_tokens), stats.seconds,
                 stats.seconds > 0 ? double(stats.generated_tokens) / stats.seconds : 0.0,
                 results.at(0).finish_reason.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-generate: %s\n", e.what());
    return 1;
  }
}
