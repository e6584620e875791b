// tpkit/jinja/chat_template.hpp: a model's chat template, found and rendered as transformers'
// apply_chat_template(tokenize=False) does.
//
// Where the template comes from (transformers 4.57's order): a `chat_template.jinja` file in the
// model directory, else tokenizer_config.json's `chat_template`, which is a string or a list of
// {"name", "template"} (the "tool_use" one when tools are given and it exists, else "default").
//
// What the template sees: `messages`, `tools` (null unless given), `documents` (null),
// `add_generation_prompt`, the special-tokens map of tokenizer_config.json (bos_token, eos_token,
// unk_token, sep_token, pad_token, cls_token, mask_token when set, additional_special_tokens when
// not empty; each as its text) and the caller's keyword arguments (chat_template_kwargs, such as
// Qwen3's enable_thinking), which win over the special tokens. The output is not stripped.
//
// The rendered prompt is tokenized with add_special_tokens=false and special tokens parsed (the
// template writes them), which is what apply_chat_template(tokenize=True) returns.
#pragma once

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/jinja/template.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit::jinja {

// One conversation to render. JSON as the OpenAI chat API and transformers take it.
struct ChatInput {
  Json messages = Json::parse("[]");  // [{"role": ..., "content": ...}, ...]
  Json tools;                         // null or a list of tool schemas
  Json documents;                     // null or a list
  bool add_generation_prompt = true;
  Json kwargs = Json::parse("{}");  // extra template variables (chat_template_kwargs)
};

class ChatTemplate {
 public:
  // `templates`: name -> source ("default" for a single template); `special_tokens`: template
  // variables from the tokenizer's special-tokens map; `origin` names the file in errors.
  ChatTemplate(std::vector<std::pair<std::string, std::string>> templates, Variables special_tokens, std::string origin,
               Template::Options options = {})
      : special_tokens_(std::move(special_tokens)), origin_(std::move(origin)) {
    for (auto& [name, source] : templates) {
      try {
        templates_.emplace_back(name, Template(source, options));
      } catch (const TemplateError& e) {
        throw TemplateError(origin_ + (name == "default" ? "" : " (template '" + name + "')") + ": " + e.what());
      }
    }
    if (templates_.empty()) throw TemplateError(origin_ + ": no chat template");
  }

  // The chat template of a model directory (or of a tokenizer_config.json path); nullopt when
  // the model has none. Malformed files and templates throw, naming the file.
  static std::optional<ChatTemplate> from_model(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path dir = fs::is_directory(path, ec) ? path : path.parent_path();
    const fs::path config_path = fs::is_directory(path, ec) ? dir / "tokenizer_config.json" : path;
    std::optional<Json> config;
    if (fs::is_regular_file(config_path, ec)) config = Json::parse(read_text(config_path), config_path.string());
    Variables specials = config ? special_tokens_of(*config, config_path.string()) : Variables{};
    // Files from before tokenizer_config.json listed its added tokens keep the special tokens in
    // special_tokens_map.json, which transformers then reads over the config's.
    const fs::path map_path = dir / "special_tokens_map.json";
    if ((!config || !config->find("added_tokens_decoder")) && fs::is_regular_file(map_path, ec)) {
      for (auto& [name, value] :
           special_tokens_of(Json::parse(read_text(map_path), map_path.string()), map_path.string())) {
        bool replaced = false;
        for (auto& [n, v] : specials)
          if (n == name) v = value, replaced = true;
        if (!replaced) specials.emplace_back(name, value);
      }
    }

    const fs::path jinja_file = dir / "chat_template.jinja";
    if (fs::is_regular_file(jinja_file, ec))
      return ChatTemplate({{"default", read_text(jinja_file)}}, std::move(specials), jinja_file.string());
    if (!config) return std::nullopt;
    const Json* entry = config->find("chat_template");
    if (!entry || entry->is_null()) return std::nullopt;
    std::vector<std::pair<std::string, std::string>> templates;
    if (entry->is_string()) {
      templates.emplace_back("default", entry->string());
    } else if (entry->is_array()) {
      for (const Json& named : entry->array()) {
        if (!named.is_object() || !named.find("name") || !named.find("template"))
          throw FormatError(config_path.string() + ": chat_template list entries need \"name\" and \"template\"");
        templates.emplace_back(named.at("name").string(), named.at("template").string());
      }
    } else {
      throw FormatError(config_path.string() + ": chat_template must be a string or a list of {name, template}");
    }
    return ChatTemplate(std::move(templates), std::move(specials), config_path.string() + " chat_template");
  }

  // transformers' special_tokens_map from tokenizer_config.json, as template variables.
  static Variables special_tokens_of(const Json& config, const std::string& source) {
    Variables out;
    static const char* const kNames[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                         "pad_token", "cls_token", "mask_token"};
    const auto text_of = [&](const Json& j, const std::string& key) -> std::optional<std::string> {
      if (j.is_null()) return std::nullopt;
      if (j.is_string()) return j.string();
      if (j.is_object() && j.find("content") && j.at("content").is_string()) return j.at("content").string();
      throw FormatError(source + ": " + key + " must be a string or {\"content\": ...}");
    };
    for (const char* name : kNames)
      if (const Json* j = config.find(name))
        if (auto text = text_of(*j, name)) out.emplace_back(name, Value(*text));
    if (const Json* extra = config.find("additional_special_tokens");
        extra && extra->is_array() && !extra->array().empty()) {
      std::vector<Value> items;
      for (const Json& t : extra->array())
        if (auto text = text_of(t, "additional_special_tokens")) items.emplace_back(*text);
      out.emplace_back("additional_special_tokens", Value::list(std::move(items)));
    }
    return out;
  }

  // The template render() uses for these inputs (by name: "default", "tool_use", ...).
  const std::string& chosen_name(const ChatInput& input) const { return choose(input).first; }
  const Variables& special_tokens() const { return special_tokens_; }
  const std::string& origin() const { return origin_; }

  // Throws TemplateRaised when the template calls raise_exception (for example roles that do not
  // alternate), TemplateError for other failures, InvalidArgument for malformed input.
  std::string render(const ChatInput& input) const {
    if (!input.messages.is_array()) throw InvalidArgument("chat messages must be a list");
    if (!input.tools.is_null() && !input.tools.is_array()) throw InvalidArgument("chat tools must be a list or null");
    if (!input.kwargs.is_null() && !input.kwargs.is_object())
      throw InvalidArgument("chat_template_kwargs must be an object");
    Variables variables = special_tokens_;
    try {
      if (input.kwargs.is_object())
        for (const auto& [key, value] : input.kwargs.object()) {
          if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt")
            throw InvalidArgument("chat_template_kwargs may not set '" + key + "'");
          variables.emplace_back(key, Value::from_json(value));
        }
      variables.emplace_back("messages", Value::from_json(input.messages));
      variables.emplace_back("tools", Value::from_json(input.tools));
      variables.emplace_back("documents", Value::from_json(input.documents));
    } catch (const ValueError& e) {
      throw InvalidArgument(std::string("chat input: ") + e.what());
    }
    variables.emplace_back("add_generation_prompt", Value(input.add_generation_prompt));
    return choose(input).second.render(variables);
  }

  // The prompt ids: the render tokenized without added special tokens and with special-token
  // text parsed (the template writes them), as apply_chat_template(tokenize=True) returns.
  std::vector<std::int32_t> encode(const Tokenizer& tokenizer, const ChatInput& input) const {
    EncodeOptions options;
    options.add_special_tokens = false;
    options.parse_special = true;
    return tokenizer.encode(render(input), options);
  }

  // The end-of-turn ids a chat stops at: the special-tokens map's eos_token when the tokenizer
  // has it as one token (Qwen3's <|im_end|>, Mistral's </s>). A model's generation_config.json
  // may name more; the engine adds those itself.
  std::vector<std::int32_t> end_of_turn_ids(const Tokenizer& tokenizer) const {
    for (const auto& [name, value] : special_tokens_)
      if (name == "eos_token" && value.is_string())
        if (const auto id = tokenizer.token_id(value.str())) return {*id};
    return {};
  }

 private:
  const std::pair<std::string, Template>& choose(const ChatInput& input) const {
    if (templates_.size() == 1) return templates_.front();
    const auto named = [&](std::string_view name) -> const std::pair<std::string, Template>* {
      for (const auto& t : templates_)
        if (t.first == name) return &t;
      return nullptr;
    };
    if (!input.tools.is_null())
      if (const auto* t = named("tool_use")) return *t;
    if (const auto* t = named("default")) return *t;
    throw TemplateError(origin_ + ": several chat templates and none named \"default\"");
  }

  static std::string read_text(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Error("cannot read " + p.string());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::vector<std::pair<std::string, Template>> templates_;
  Variables special_tokens_;
  std::string origin_;
};

}  // namespace tpkit::jinja
