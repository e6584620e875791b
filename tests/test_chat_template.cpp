// Chat templates against transformers 4.57.1 / jinja2 3.1.6: the public chat goldens of the real
// Qwen3 and Mistral tokenizers in ../shared/models/tokenizers, the renders
// tools/make_chat_fixtures.py wrote (real templates and two written for tpkit, hundreds of
// conversations each), hundreds of small snippets, each feature in isolation; then what jinja2
// cannot tell us: load errors with line:column, the limits, template selection, threads.
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include "catch.hpp"
#include "data_files.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/jinja/chat_template.hpp"
#include "tpkit/tokenizer/hf_tokenizer.hpp"

namespace {

using test_data::read_file;
using test_data::read_jsonl;

namespace fs = std::filesystem;
using tpkit::Json;
using tpkit::jinja::ChatInput;
using tpkit::jinja::ChatTemplate;
using tpkit::jinja::Template;
using tpkit::jinja::TemplateError;
using tpkit::jinja::TemplateRaised;
using tpkit::jinja::Value;
using tpkit::jinja::Variables;

const std::string kData = TPKIT_TEST_DATA;  // tests/data/chat
const std::string kShared = TPKIT_TEST_MODELS "/tokenizers";

bool have_shared() { return fs::exists(kShared + "/qwen3/tokenizer.json"); }

const tpkit::HfTokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<tpkit::HfTokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<tpkit::HfTokenizer>(kShared + "/" + name + "/tokenizer.json");
  return *slot;
}

// The template a golden line names: "tokenizer_config.json" (of its tokenizer), a file beside the
// tokenizer, "shared:<dir>/<file>" or "data:<file>" (under tests/data/chat).
const ChatTemplate& template_of(const Json& g) {
  static std::map<std::string, std::unique_ptr<ChatTemplate>> cache;
  const std::string tok = g.at("tokenizer").string();
  std::string name = g.at("template").string();
  if (name.rfind("shared:", 0) != 0 && name.rfind("data:", 0) != 0) name = "shared:" + tok + "/" + name;
  auto& slot = cache[tok + "|" + name];
  if (slot) return *slot;
  // The variables come from the line's tokenizer (a template may be paired with another's).
  const std::string config_path = kShared + "/" + tok + "/tokenizer_config.json";
  const Json config = Json::parse(read_file(config_path), config_path);
  const bool in_shared = name.rfind("shared:", 0) == 0;
  const std::string path = in_shared ? kShared + "/" + name.substr(7) : kData + "/" + name.substr(5);
  std::string source;
  if (fs::path(path).filename() == "tokenizer_config.json") {
    auto t = ChatTemplate::from_model(path);  // also checks loading from a model's config
    REQUIRE(t.has_value());
    source = Json::parse(read_file(path), path).at("chat_template").string();
  } else {
    source = read_file(path);
  }
  slot = std::make_unique<ChatTemplate>(std::vector<std::pair<std::string, std::string>>{{"default", source}},
                                        ChatTemplate::special_tokens_of(config, config_path), path);
  return *slot;
}

std::vector<std::int32_t> ids_of(const Json& j) {
  std::vector<std::int32_t> ids;
  for (const Json& v : j.array()) ids.push_back(std::int32_t(v.integer()));
  return ids;
}

// One golden conversation: the variables the template sees, the render (or the template's own
// raise_exception message) and the ids of apply_chat_template(tokenize=True).
void check_chat(const Json& g) {
  INFO(g.at("id").string());
  const ChatTemplate& t = template_of(g);
  ChatInput input;
  input.messages = g.at("messages");
  input.tools = g.at("tools");
  input.add_generation_prompt = g.at("add_generation_prompt").boolean();
  input.kwargs = g.at("kwargs");

  // variables = the special-tokens map, then the kwargs.
  Variables want_variables;
  for (const auto& [k, v] : g.at("variables").object()) want_variables.emplace_back(k, Value::from_json(v));
  Variables got_variables = t.special_tokens();
  for (const auto& [k, v] : input.kwargs.object()) got_variables.emplace_back(k, Value::from_json(v));
  REQUIRE(Value::dict({}).kind() == Value::Kind::dict);
  std::map<std::string, std::string> want_map, got_map;
  for (const auto& [k, v] : want_variables) want_map[k] = v.repr();
  for (const auto& [k, v] : got_variables) got_map[k] = v.repr();
  CHECK(got_map == want_map);

  if (!g.at("error").is_null()) {
    try {
      t.render(input);
      FAIL("expected raise_exception: " << g.at("error").string());
    } catch (const TemplateRaised& e) {
      CHECK(std::string(e.what()) == g.at("error").string());
    }
    return;
  }
  const std::string rendered = t.render(input);
  REQUIRE(rendered == g.at("rendered").string());
  tpkit::EncodeOptions options;
  options.add_special_tokens = false;
  options.parse_special = true;
  CHECK(tokenizer(g.at("tokenizer").string()).encode(rendered, options) == ids_of(g.at("ids")));
}

Variables variables_of(const Json& context) {
  Variables v;
  for (const auto& [k, x] : context.object()) v.emplace_back(k, Value::from_json(x));
  return v;
}

std::string render(std::string_view source, const Variables& variables = {}) {
  return Template(source).render(variables);
}

// The message of the TemplateError that loading `source` throws.
std::string load_error(std::string_view source) {
  try {
    Template t(source);
  } catch (const TemplateError& e) {
    return e.what();
  }
  return "(loaded)";
}

std::string render_error(std::string_view source, const Variables& variables = {}) {
  try {
    render(source, variables);
  } catch (const TemplateError& e) {
    return e.what();
  }
  return "(rendered)";
}

}  // namespace

TEST_CASE("chat templates: the public goldens of the real Qwen3 and Mistral templates", "[chat]") {
  if (!have_shared()) {
    WARN("../shared/models/tokenizers not present: skipped");
    return;
  }
  const auto goldens = read_jsonl(kShared + "/golden_chat_public.jsonl");
  REQUIRE(goldens.size() == 10);
  for (const Json& g : goldens) check_chat(g);
}

TEST_CASE("chat templates: generated conversations equal transformers' apply_chat_template", "[chat]") {
  if (!have_shared()) {
    WARN("../shared/models/tokenizers not present: skipped");
    return;
  }
  const auto goldens = read_jsonl(kData + "/golden_chat.jsonl");
  REQUIRE(goldens.size() >= 500);
  std::map<std::string, int> per_template, errors;
  for (const Json& g : goldens) {
    check_chat(g);
    ++per_template[g.at("template").string()];
    if (!g.at("error").is_null()) ++errors[g.at("template").string()];
  }
  for (const auto& [name, count] : per_template) {
    INFO(name);
    CHECK(count >= 20);
  }
}

TEST_CASE("jinja: snippets render as jinja2 renders them", "[chat]") {
  // What tpkit leaves out (docs/models.md): these must fail at load, naming the construct.
  const std::map<std::string, std::string> unsupported = {
      {"filt-pprint-like", "pprint"},        {"filt-striptags-urlencode", "striptags"},
      {"loop-depth-recursive", "recursive"}, {"macro-call-block", "'call'"},
      {"macro-call-args", "'call'"},
  };
  const auto snippets = read_jsonl(kData + "/snippets.jsonl");
  REQUIRE(snippets.size() >= 200);
  for (const Json& s : snippets) {
    const std::string source = s.at("template").string();
    INFO(s.at("id").string() << ": " << source);
    const Variables variables = variables_of(s.at("context"));
    if (const auto it = unsupported.find(s.at("id").string()); it != unsupported.end()) {
      CHECK_THAT(load_error(source), Catch::Contains(it->second));
      continue;
    }
    if (!s.at("error").is_null()) {
      const std::string want = s.at("error").string();
      INFO("jinja2: " << want);
      CHECK_THROWS_AS(Template(source).render(variables), TemplateError);
      if (want.rfind("TemplateError: ", 0) == 0) {  // raise_exception: the message is the template's
        try {
          Template(source).render(variables);
        } catch (const TemplateRaised& e) {
          CHECK(std::string(e.what()) == want.substr(15));
        }
      }
      continue;
    }
    std::string got;
    try {
      got = Template(source).render(variables);
    } catch (const std::exception& e) {
      FAIL_CHECK("threw: " << e.what());
      continue;
    }
    CHECK(got == s.at("rendered").string());
  }
}

TEST_CASE("jinja: what tpkit does not implement fails at load with line and column", "[chat]") {
  CHECK_THAT(load_error("a\n  {% include 'x' %}"), Catch::Contains("2:6") && Catch::Contains("include"));
  CHECK_THAT(load_error("{{ x | frobnicate }}"), Catch::Contains("1:8") && Catch::Contains("frobnicate"));
  CHECK_THAT(load_error("{% if x is frobnicated %}{% endif %}"),
             Catch::Contains("1:12") && Catch::Contains("frobnicated"));
  CHECK_THAT(load_error("{% for x in y recursive %}{% endfor %}"), Catch::Contains("recursive"));
  CHECK_THAT(load_error("{{ f(*args) }}"), Catch::Contains("1:6"));
  CHECK_THAT(load_error("{% extends 'base' %}"), Catch::Contains("extends"));
  CHECK_THAT(load_error("{% break %}"), Catch::Contains("outside a loop"));
  CHECK_THAT(load_error("{% if x %}"), Catch::Contains("endif"));
  CHECK_THAT(load_error("{% for x in y %}{% endif %}"), Catch::Contains("1:"));
  CHECK_THAT(load_error("{{ x "), Catch::Contains("not closed"));
  CHECK_THAT(load_error("{# x "), Catch::Contains("comment"));
  CHECK_THAT(load_error("{{ 'abc }}"), Catch::Contains("string"));
  CHECK_THAT(load_error("{{ (1 }}"), Catch::Contains("1:"));
  CHECK_THAT(load_error("{{ 1 ]}}"), Catch::Contains("unexpected ']'"));
  CHECK_THAT(load_error("{{ a ? b }}"), Catch::Contains("'?'"));
  CHECK_THAT(load_error("{% raw %}x"), Catch::Contains("endraw"));
  CHECK_THAT(load_error("{% call m() %}x{% endcall %}"), Catch::Contains("1:4") && Catch::Contains("call"));
  CHECK_THAT(load_error("{{ 99999999999999999999 }}"), Catch::Contains("out of range"));
  CHECK_THAT(load_error(std::string("{{ '\xff' }}")), Catch::Contains("UTF-8"));
  CHECK_THAT(load_error("{% macro m(a=1, b) %}{% endmacro %}"), Catch::Contains("default"));
}

TEST_CASE("jinja: render errors say where", "[chat]") {
  CHECK_THAT(render_error("\n{{ 'a' + 1 }}"), Catch::Contains("2:") && Catch::Contains("concatenate"));
  CHECK_THAT(render_error("{{ x.y }}"), Catch::Contains("1:") && Catch::Contains("'x' is undefined"));
  CHECK_THAT(render_error("{{ 1 // 0 }}"), Catch::Contains("ZeroDivisionError"));
  CHECK_THAT(render_error("{% set a, b = [1] %}"), Catch::Contains("unpack"));
  CHECK_THAT(render_error("{% set x = 1 %}{% set x.y = 2 %}"), Catch::Contains("namespace"));
  CHECK_THAT(render_error("{{ 9223372036854775807 + 1 }}"), Catch::Contains("64 bits"));
  try {
    render("{{ raise_exception('Roles must alternate') }}");
    FAIL("no exception");
  } catch (const TemplateRaised& e) {
    CHECK(std::string(e.what()) == "Roles must alternate");
  }
}

TEST_CASE("jinja: limits keep a hostile template bounded", "[chat]") {
  CHECK_THAT(render_error("{% for i in range(100001) %}{% endfor %}"), Catch::Contains("MAX_RANGE"));
  CHECK(render("{{ range(100000) | length }}") == "100000");
  CHECK_THAT(render_error("{{ 'x' * 100000000 }}"), Catch::Contains("too long"));
  CHECK_THAT(render_error("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}"), Catch::Contains("RecursionError"));
  // Nesting is bounded where it would otherwise overflow the stack: the parser, the tree, values.
  const auto repeat = [](const std::string& s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  CHECK_THAT(load_error("{{ " + repeat("(", 150) + "1" + repeat(")", 150) + " }}"), Catch::Contains("nested deeper"));
  CHECK_THAT(load_error("{{ " + repeat("1 + ", 150) + "1 }}"), Catch::Contains("nested deeper"));
  CHECK_THAT(load_error("{{ x" + repeat("|trim", 150) + " }}"), Catch::Contains("nested deeper"));
  CHECK_THAT(load_error(repeat("{% if 1 %}", 150) + repeat("{% endif %}", 150)), Catch::Contains("nested deeper"));
  CHECK(render("{{ " + repeat("1 + ", 60) + "1 }}") == "61");
  // Values: refused where they are built (printing, comparing and freeing recurse per level).
  CHECK_THAT(
      render_error("{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}{% endfor %}"),
      Catch::Contains("1:57") && Catch::Contains("RecursionError"));
  CHECK_THAT(
      render_error("{% set ns = namespace(x=1) %}{% for i in range(1000) %}{% set ns.x = {'k': ns.x} %}{% endfor %}"),
      Catch::Contains("RecursionError"));
  // The renderer's own recursion: macros calling themselves through deep statements.
  CHECK_THAT(render_error("{% macro m(n) %}" + repeat("{% if true %}", 90) + "{% if n > 0 %}{{ m(n - 1) }}{% endif %}" +
                          repeat("{% endif %}", 90) + "{% endmacro %}{{ m(31) }}"),
             Catch::Contains("RecursionError"));
  // Memory: strings and lists that double, joins, loops that never end.
  CHECK_THAT(
      render_error("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
      Catch::Contains("too long"));
  CHECK_THAT(
      render_error("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}"),
      Catch::Contains("too long"));
  CHECK_THAT(render_error("{% set s = 'x' * 60000000 %}{{ [s, s] | join | length }}"), Catch::Contains("too long"));
  Template::Options few;
  few.max_loop_iterations = 10000;
  CHECK_THROWS_WITH(
      Template("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", few).render({}),
      Catch::Contains("1:") && Catch::Contains("10000 loop iterations"));
  CHECK_THAT(render_error("{{ range(-9223372036854775807, 9223372036854775807) }}"), Catch::Contains("MAX_RANGE"));
  CHECK(render("{{ 'abc'[1::9223372036854775807] }}") == "b");
  Template::Options small;
  small.max_output_bytes = 1000;
  Template t("{% for i in range(1000) %}{{ i }}{% endfor %}", small);
  CHECK_THROWS_WITH(t.render({}), Catch::Contains("1000 bytes"));
}

TEST_CASE("jinja: variables as Python sees them", "[chat]") {
  // A JSON object with a repeated key keeps the last value, in the first one's place (json.loads).
  const Json x = Json::parse(R"({"role": "user", "content": "a", "role": "assistant"})");
  CHECK(render("{{ x.role }} {{ x | tojson }} {{ x | length }}", {{"x", Value::from_json(x)}}) ==
        R"(assistant {"role": "assistant", "content": "a"} 2)");
  // A name given twice: the last wins, and the template's own top-level set replaces it.
  const Variables twice = {{"eos_token", Value("</s>")}, {"eos_token", Value("<|im_end|>")}};
  CHECK(render("{{ eos_token }}", twice) == "<|im_end|>");
  CHECK(render("{% set eos_token = 'SET' %}{{ eos_token }}", twice) == "SET");
}

TEST_CASE("jinja: strftime_now formats the clock it is given", "[chat]") {
  Template::Options options;
  options.now = [] {
    std::tm tm{};
    tm.tm_year = 2024 - 1900;
    tm.tm_mon = 6;
    tm.tm_mday = 26;
    return tm;
  };
  CHECK(Template("{{ strftime_now('%d %b %Y') }}", options).render({}) == "26 Jul 2024");
  // The real clock gives this year.
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  CHECK(render("{{ strftime_now('%Y') }}") == std::to_string(1900 + tm.tm_year));
}

TEST_CASE("chat templates: where a model's template comes from", "[chat]") {
  const fs::path dir = fs::temp_directory_path() / ("tpkit_chat_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; };

  CHECK_FALSE(ChatTemplate::from_model(dir).has_value());  // nothing there
  write("tokenizer_config.json", R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
    "pad_token": null, "additional_special_tokens": [],
    "chat_template": [{"name": "default", "template": "D{{ bos_token }}{{ eos_token }}{{ pad_token is defined }}"},
                      {"name": "tool_use", "template": "T{{ tools | length }}"}]})");
  auto t = ChatTemplate::from_model(dir);
  REQUIRE(t.has_value());
  ChatInput input;
  CHECK(t->render(input) == "D<s></s>False");  // null tokens and an empty list are not variables
  input.tools = Json::parse(R"([{"type": "function"}])");
  CHECK(t->render(input) == "T1");
  CHECK(t->chosen_name(input) == "tool_use");

  write("chat_template.jinja", "J{{ messages | length }}{{ add_generation_prompt }}\n");
  t = ChatTemplate::from_model(dir);
  REQUIRE(t.has_value());
  CHECK(t->render(input) == "J0True");  // the file wins; its trailing newline is dropped

  input.kwargs = Json::parse(R"({"messages": []})");
  CHECK_THROWS_AS(t->render(input), tpkit::InvalidArgument);
  input.kwargs = Json::parse("{}");
  input.messages = Json::parse("{}");
  CHECK_THROWS_AS(t->render(input), tpkit::InvalidArgument);

  write("chat_template.jinja", "{% if %}");
  CHECK_THROWS_WITH(ChatTemplate::from_model(dir), Catch::Contains("chat_template.jinja") && Catch::Contains("1:"));
  fs::remove(dir / "chat_template.jinja");
  write("tokenizer_config.json", R"({"chat_template": 3})");
  CHECK_THROWS_AS(ChatTemplate::from_model(dir), tpkit::FormatError);
  write("tokenizer_config.json", R"j({"chat_template": "{{ x )"})j");
  CHECK_THROWS_AS(ChatTemplate::from_model(dir), TemplateError);
  write("tokenizer_config.json", R"({"chat_template": )");
  CHECK_THROWS_AS(ChatTemplate::from_model(dir), tpkit::FormatError);
  fs::remove_all(dir);
}

TEST_CASE("chat templates: one template renders from many threads", "[chat]") {
  if (!have_shared()) {
    WARN("../shared/models/tokenizers not present: skipped");
    return;
  }
  auto t = ChatTemplate::from_model(kShared + "/qwen3");
  REQUIRE(t.has_value());
  std::vector<std::string> outputs(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      ChatInput input;
      input.messages = Json::parse(R"([{"role": "user", "content": "thread )" + std::to_string(i % 2) + R"("}])");
      for (int k = 0; k < 200; ++k) outputs[std::size_t(i)] = t->render(input);
    });
  for (auto& th : threads) th.join();
  CHECK(outputs[0] == outputs[2]);
  CHECK(outputs[1] == outputs[3]);
  CHECK(outputs[0] != outputs[1]);
}
