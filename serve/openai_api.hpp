// serve/openai_api.hpp: the OpenAI-compatible protocol of tpkit-serve, without HTTP: request
// bodies parsed and checked into engine requests, errors as OpenAI's error object, and the
// response and stream-chunk objects. Needs nlohmann-json (an application dependency: never part
// of tpkit::tpkit).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <tpkit/engine/request.hpp>

#include "api_error.hpp"

namespace tpkit::serve {

// What /v1/completions and /v1/chat/completions share, checked.
struct GenerationRequest {
  std::string model;
  SamplingParams params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  // tpkit's extensions, for a router that may move a request to another server mid-stream:
  // each choice (and stream chunk) carries the ids of its tokens, and a request can continue
  // after tokens another server already generated (same prompt, parameters and seed).
  bool return_token_ids = false;
  std::vector<std::int32_t> resume_token_ids;
};

// A completions request: one or more prompts, each text or token ids.
struct CompletionRequest : GenerationRequest {
  std::vector<std::string> text_prompts;                 // or
  std::vector<std::vector<std::int32_t>> token_prompts;  // (one of them is empty)
  std::size_t size() const { return text_prompts.size() + token_prompts.size(); }
};

struct ChatRequest : GenerationRequest {
  json messages;         // checked: a non-empty list of objects with a string role
  json template_kwargs;  // chat_template_kwargs (an object, or null)
  bool add_generation_prompt = true;
};

namespace api_detail {

inline const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "a list";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

// Reads optional field `name` of `body` with `read(value)` unless it is absent or null.
template <class Read>
void optional_field(const json& body, const char* name, Read&& read) {
  auto it = body.find(name);
  if (it != body.end() && !it->is_null()) read(*it);
}

inline double number(const json& v, const char* name) {
  if (!v.is_number()) throw bad_request(std::string("'") + name + "' must be a number, not " + type_name(v), name);
  return v.get<double>();
}
inline std::int64_t integer(const json& v, const char* name) {
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return std::int64_t(d);
  }
  throw bad_request(std::string("'") + name + "' must be an integer, not " + type_name(v), name);
}
inline bool boolean(const json& v, const char* name) {
  if (!v.is_boolean()) throw bad_request(std::string("'") + name + "' must be a boolean, not " + type_name(v), name);
  return v.get<bool>();
}
inline std::string string(const json& v, const char* name) {
  if (!v.is_string()) throw bad_request(std::string("'") + name + "' must be a string, not " + type_name(v), name);
  return v.get<std::string>();
}

inline std::vector<std::int32_t> token_list(const json& v, const char* name) {
  std::vector<std::int32_t> ids;
  for (const json& t : v) {
    const std::int64_t id = integer(t, name);
    if (id < 0 || id > std::numeric_limits<std::int32_t>::max())
      throw bad_request(std::string("'") + name + "' holds token id " + std::to_string(id) + ", not a valid id", name);
    ids.push_back(std::int32_t(id));
  }
  return ids;
}

// The fields both endpoints take. `max_tokens_default`: OpenAI's completions default 16; chat
// has none (up to the context), which the caller bounds.
inline void read_common(const json& body, GenerationRequest& r, int max_tokens_default) {
  if (!body.is_object())
    throw bad_request(std::string("the request body must be a JSON object, not ") + type_name(body));
  optional_field(body, "model", [&](const json& v) { r.model = string(v, "model"); });
  SamplingParams& p = r.params;
  p.max_tokens = max_tokens_default;
  p.temperature = 1.0f;
  const auto read_max = [&](const char* name) {
    optional_field(body, name, [&](const json& v) {
      const std::int64_t n = integer(v, name);
      if (n < 1)
        throw bad_request(std::string("'") + name + "' must be at least 1 (got " + std::to_string(n) + ")", name);
      p.max_tokens = int(std::min<std::int64_t>(n, std::numeric_limits<int>::max()));
    });
  };
  read_max("max_tokens");
  read_max("max_completion_tokens");
  optional_field(body, "temperature", [&](const json& v) {
    const double t = number(v, "temperature");
    if (!(t >= 0 && t <= 100))
      throw bad_request("'temperature' must be in [0, 100] (got " + v.dump() + ")", "temperature");
    p.temperature = float(t);
  });
  optional_field(body, "top_p", [&](const json& v) {
    const double t = number(v, "top_p");
    if (!(t > 0 && t <= 1)) throw bad_request("'top_p' must be in (0, 1] (got " + v.dump() + ")", "top_p");
    p.top_p = float(t);
  });
  optional_field(body, "top_k", [&](const json& v) {
    const std::int64_t k = integer(v, "top_k");
    if (k < -1 || k > std::numeric_limits<int>::max())
      throw bad_request("'top_k' must be -1 or 0 (off) or a positive count (got " + v.dump() + ")", "top_k");
    p.top_k = int(k < 0 ? 0 : k);
  });
  optional_field(body, "min_p", [&](const json& v) {
    const double m = number(v, "min_p");
    if (!(m >= 0 && m <= 1)) throw bad_request("'min_p' must be in [0, 1] (got " + v.dump() + ")", "min_p");
    p.min_p = float(m);
  });
  optional_field(body, "seed", [&](const json& v) {
    if (v.is_number_unsigned())
      p.seed = v.get<std::uint64_t>();
    else
      p.seed = std::uint64_t(integer(v, "seed"));  // negative seeds wrap, as Python's do not matter here
  });
  optional_field(body, "stop", [&](const json& v) {
    if (v.is_string()) {
      p.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (v.size() > 16) throw bad_request("'stop' takes at most 16 strings", "stop");
      for (const json& s : v) p.stop.push_back(string(s, "stop"));
    } else {
      throw bad_request(std::string("'stop' must be a string or a list of strings, not ") + type_name(v), "stop");
    }
    for (const std::string& s : p.stop)
      if (s.empty()) throw bad_request("'stop' strings must not be empty", "stop");
  });
  optional_field(body, "stop_token_ids", [&](const json& v) {
    if (!v.is_array()) throw bad_request("'stop_token_ids' must be a list of token ids", "stop_token_ids");
    p.stop_token_ids = token_list(v, "stop_token_ids");
  });
  optional_field(body, "ignore_eos", [&](const json& v) { p.ignore_eos = boolean(v, "ignore_eos"); });
  optional_field(body, "skip_special_tokens",
                 [&](const json& v) { p.skip_special_tokens = boolean(v, "skip_special_tokens"); });
  optional_field(body, "stream", [&](const json& v) { r.stream = boolean(v, "stream"); });
  optional_field(body, "stream_options", [&](const json& v) {
    if (!v.is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    optional_field(v, "include_usage", [&](const json& u) { r.include_usage = boolean(u, "include_usage"); });
  });
  optional_field(body, "return_token_ids", [&](const json& v) { r.return_token_ids = boolean(v, "return_token_ids"); });
  optional_field(body, "resume_token_ids", [&](const json& v) {
    if (!v.is_array()) throw bad_request("'resume_token_ids' must be a list of token ids", "resume_token_ids");
    r.resume_token_ids = token_list(v, "resume_token_ids");
    if (!r.params.seed && !r.resume_token_ids.empty() && r.params.temperature != 0)
      throw bad_request("'resume_token_ids' with sampling needs the 'seed' the request started with",
                        "resume_token_ids");
  });
  optional_field(body, "n", [&](const json& v) {
    if (integer(v, "n") != 1) throw bad_request("'n' must be 1: tpkit-serve returns one choice per prompt", "n");
  });
  optional_field(body, "best_of", [&](const json& v) {
    if (integer(v, "best_of") != 1) throw bad_request("'best_of' is not supported (only 1)", "best_of");
  });
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    optional_field(body, name, [&](const json& v) {
      if (number(v, name) != 0) throw bad_request(std::string("'") + name + "' is not supported (only 0)", name);
    });
  optional_field(body, "repetition_penalty", [&](const json& v) {
    if (number(v, "repetition_penalty") != 1)
      throw bad_request("'repetition_penalty' is not supported (only 1)", "repetition_penalty");
  });
  for (const char* name : {"logprobs", "top_logprobs", "echo", "logit_bias", "suffix", "tools", "response_format"})
    optional_field(body, name, [&](const json& v) {
      const bool off =
          (v.is_boolean() && !v.get<bool>()) || (v.is_number_integer() && v.get<std::int64_t>() == 0) ||
          (v.is_object() && v.empty()) || (v.is_array() && v.empty()) ||
          (std::string(name) == "response_format" && v.is_object() && v.contains("type") && v["type"] == "text") ||
          (std::string(name) == "suffix" && v.is_string() && v.get<std::string>().empty());
      if (!off) throw bad_request(std::string("'") + name + "' is not supported by tpkit-serve", name);
    });
}

}  // namespace api_detail

inline CompletionRequest parse_completion(const json& body) {
  CompletionRequest r;
  api_detail::read_common(body, r, 16);
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) throw bad_request("'prompt' is required", "prompt");
  const json& p = *it;
  if (p.is_string()) {
    r.text_prompts.push_back(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_string()) {
    for (const json& s : p) r.text_prompts.push_back(api_detail::string(s, "prompt"));
  } else if (p.is_array() && !p.empty() && p[0].is_array()) {
    for (const json& ids : p) {
      if (!ids.is_array()) throw bad_request("'prompt' mixes token-id lists with other values", "prompt");
      r.token_prompts.push_back(api_detail::token_list(ids, "prompt"));
    }
  } else if (p.is_array() && !p.empty()) {
    r.token_prompts.push_back(api_detail::token_list(p, "prompt"));
  } else {
    throw bad_request("'prompt' must be a string, a list of strings, a list of token ids or a list of such lists",
                      "prompt");
  }
  if (r.size() > 256) throw bad_request("'prompt' holds more than 256 prompts", "prompt");
  for (const auto& ids : r.token_prompts)
    if (ids.empty()) throw bad_request("a prompt is empty", "prompt");
  for (const auto& text : r.text_prompts)
    if (text.empty()) throw bad_request("a prompt is empty", "prompt");
  return r;
}

inline ChatRequest parse_chat(const json& body, int max_tokens_default) {
  ChatRequest r;
  api_detail::read_common(body, r, max_tokens_default);
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty())
    throw bad_request("'messages' must be a non-empty list of messages", "messages");
  for (const json& m : *it) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw bad_request("each message must be an object with a string 'role'", "messages");
    if (m.contains("content") && !m["content"].is_null() && !m["content"].is_string() && !m["content"].is_array())
      throw bad_request("a message's 'content' must be a string or a list of parts", "messages");
  }
  r.messages = *it;
  api_detail::optional_field(body, "chat_template_kwargs", [&](const json& v) {
    if (!v.is_object()) throw bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    r.template_kwargs = v;
  });
  api_detail::optional_field(body, "add_generation_prompt", [&](const json& v) {
    r.add_generation_prompt = api_detail::boolean(v, "add_generation_prompt");
  });
  return r;
}

// OpenAI's finish reasons: "stop" and "length" as they are; tpkit's "abort" and errors are
// reported as "abort" / "error" (the stream has no other way to say it).
inline std::string openai_finish_reason(const std::string& reason) {
  if (reason == "stop" || reason == "length" || reason == "abort") return reason;
  return "error";
}

}  // namespace tpkit::serve
