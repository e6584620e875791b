// What tpkit-generate runs on each engine (the CPU engines in tpkit_generate.cpp, the GPU
// engines in generate_cuda.cu), and where it looks for a tokenizer.
#pragma once

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tpkit/engine/engine.hpp>
#include <tpkit/engine/placement.hpp>
#include <tpkit/io/json.hpp>
#include <tpkit/io/mapped_file.hpp>
#include <tpkit/jinja/chat_template.hpp>
#include <tpkit/tokenizer/load.hpp>

namespace generate {

struct Request {
  std::string prompt;
  std::vector<std::int32_t> ids;
  tpkit::SamplingParams params;
  // --chat: the prompt is a user message (after `system`, when given) rendered through the chat
  // template found in `template_dir` (the tokenizer's folder, else the model's).
  bool chat = false;
  std::string system;
  std::string chat_template_kwargs;  // a JSON object, e.g. {"enable_thinking": false}
  std::string template_dir;
  bool print_prompt_ids = false;
  std::string expert_stats;  // mixture-of-experts models: write the routed tokens per expert here
};

// The prompt ids of a --chat request and the end-of-turn ids the chat stops at.
inline void apply_chat(const tpkit::Tokenizer& tokenizer, Request& request) {
  const auto chat = tpkit::jinja::ChatTemplate::from_model(request.template_dir);
  if (!chat)
    throw std::invalid_argument(request.template_dir +
                                " has no chat template (chat_template.jinja or "
                                "tokenizer_config.json's chat_template): drop --chat");
  using tpkit::jinja::Value;
  const auto message = [](const char* role, const std::string& content) {
    return Value::dict({{Value("role"), Value(role)}, {Value("content"), Value(content)}});
  };
  std::vector<Value> messages;
  if (!request.system.empty()) messages.push_back(message("system", request.system));
  messages.push_back(message("user", request.prompt));
  tpkit::jinja::ChatInput input;
  input.messages = tpkit::Json::parse(Value::list(std::move(messages)).to_json(), "the chat messages");
  if (!request.chat_template_kwargs.empty())
    input.kwargs = tpkit::Json::parse(request.chat_template_kwargs, "--chat-template-kwargs");
  request.ids = chat->encode(tokenizer, input);
  for (std::int32_t id : chat->end_of_turn_ids(tokenizer)) request.params.stop_token_ids.push_back(id);
}

// Runs one request on either engine; only the leader (the sampling rank) prints.
template <class EngineT>
void run(EngineT& engine, Request request, bool leader, const tpkit::EngineOptions& options) {
  if (request.ids.empty()) {
    if (!engine.has_tokenizer())
      throw std::invalid_argument("no tokenizer found beside the model: pass --tokenizer PATH or --prompt-ids");
    if (request.chat) {
      apply_chat(engine.tokenizer(), request);
    } else {
      tpkit::EncodeOptions encode;
      encode.add_special_tokens = true;  // a BOS where the tokenizer adds one; typed special tokens stay text
      request.ids = engine.tokenizer().encode(request.prompt, encode);
      if (leader) std::cout << request.prompt << std::flush;
    }
  }
  if (leader && request.print_prompt_ids) {
    std::string list;
    for (std::int32_t id : request.ids) list += (list.empty() ? "" : ", ") + std::to_string(id);
    std::fprintf(stderr, "prompt ids: [%s]\n", list.c_str());
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
  std::fprintf(
      stderr,
      "tp %d x pp %d, %s: %lld prompt tokens (%lld cached), %lld generated in %.3f s (%.1f tok/s), %lld steps "
      "(%lld from CUDA graphs), finish: %s\n",
      options.tp_size, options.pp_size, tpkit::dtype_name(options.dtype), static_cast<long long>(stats.prompt_tokens),
      static_cast<long long>(stats.prefix_cache_hits), static_cast<long long>(stats.generated_tokens), stats.seconds,
      stats.seconds > 0 ? double(stats.generated_tokens) / stats.seconds : 0.0, static_cast<long long>(stats.steps),
      static_cast<long long>(stats.graph_steps), results.at(0).finish_reason.c_str());
  if (!stats.expert_load.empty()) {
    double worst = 0;
    for (const tpkit::ExpertLoad& l : stats.expert_load) worst = std::max(worst, l.imbalance());
    std::fprintf(stderr, "moe layout %s: %zu sparse layers, busiest expert / mean up to %.2f\n",
                 tpkit::moe_layout_name(options.moe_layout), stats.expert_load.size(), worst);
  }
  if (!request.expert_stats.empty()) {
    std::ofstream out(request.expert_stats);
    out << tpkit::expert_load_json(stats.expert_load);
    if (!out) throw std::runtime_error("cannot write " + request.expert_stats);
  }
}
}  // namespace generate
