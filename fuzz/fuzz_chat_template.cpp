// libFuzzer: a chat template. The input is the template's source; it is rendered with a small
// conversation (strings, numbers, a tool list, nesting). Loading and rendering must succeed or
// throw TemplateError (with a line:column), and stay within the output cap: never crash, hang or
// grow without bound.
#include <cstddef>
#include <cstdint>
#include <string>

#include "tpkit/jinja/template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using tpkit::jinja::Value;
  static const tpkit::jinja::Variables variables = [] {
    const tpkit::Json messages = tpkit::Json::parse(
        R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \u00e9\u4e16 <think>"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1.5, "y": [true, null]}}}]},
            {"role": "tool", "content": {"ok": 1}}])");
    return tpkit::jinja::Variables{
        {"messages", Value::from_json(messages)},
        {"tools", Value::from_json(tpkit::Json::parse(R"([{"name": "f", "parameters": {}}])"))},
        {"add_generation_prompt", Value(true)},
        {"bos_token", Value("<s>")},
        {"eos_token", Value("</s>")}};
  }();
  const std::string source(reinterpret_cast<const char*>(data), size);
  try {
    tpkit::jinja::Template::Options options;
    options.max_output_bytes = 1 << 20;
    options.max_call_depth = 16;
    const tpkit::jinja::Template t(source, options);
    (void)t.render(variables);
  } catch (const tpkit::jinja::TemplateError&) {
  }
  return 0;
}
