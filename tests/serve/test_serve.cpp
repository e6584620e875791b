// tpkit-serve over real HTTP on loopback, started and stopped by the tests: greedy text equals
// what tpkit-generate prints; streamed deltas concatenate to the non-streamed text; 32 concurrent
// clients each get what they get alone; a client that disconnects mid-stream aborts its request
// and frees its blocks (seen in /metrics); every kind of bad input gets its status and OpenAI's
// error object; SIGTERM drains and exits 0. The references are the tpkit-generate and
// tpkit-tokenize programs (this test links no engine: it is a client).
#include <signal.h>
#include <sys/types.h>

#include <string>
#include <thread>
#include <vector>

#include "processes.hpp"

using namespace serve_test;

namespace {

namespace stories {
const std::string kModels = std::getenv("TPKIT_TEST_MODELS") ? std::getenv("TPKIT_TEST_MODELS") : TPKIT_TEST_MODELS;
const std::string kBin = kModels + "/stories260K/stories260K.bin";
const std::string kTokenizer = kModels + "/stories260K/tok512.bin";
const std::vector<std::string> kPrompts = {"Once upon a time", "Lily and Tom", "The little dog",
                                           "One day, a girl named Sue", "Sam wanted a big red ball because"};
}  // namespace stories

// What tpkit-generate prints after the prompt: greedy, `tokens` at most, EOS honoured.
std::string generated(const std::string& prompt, int tokens, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> words = {
      TPKIT_GENERATE_BIN, "--model", stories::kBin, "--prompt", prompt, "--max-tokens", std::to_string(tokens),
      "--temperature",    "0"};
  words.insert(words.end(), extra.begin(), extra.end());
  std::string out = output_of(words);
  REQUIRE(out.rfind(prompt, 0) == 0);
  REQUIRE(out.back() == '\n');
  return out.substr(prompt.size(), out.size() - prompt.size() - 1);
}

// A tpkit-serve process on a free loopback port.
class ServerProcess : public ListeningProcess {
 public:
  // `launcher`: words before the server's command line (mpirun and its options).
  explicit ServerProcess(std::vector<std::string> extra = {}, std::vector<std::string> launcher = {},
                         const std::string& model = stories::kBin)
      : ListeningProcess(arguments(std::move(extra), std::move(launcher), model)) {}

 private:
  static std::vector<std::string> arguments(std::vector<std::string> extra, std::vector<std::string> launcher,
                                            const std::string& model) {
    std::vector<std::string> args = launcher;
    for (std::string a : {std::string(TPKIT_SERVE_BIN), std::string("--model"), model, std::string("--port"),
                          std::string("0"), std::string("--served-model-name"), std::string("stories")})
      args.push_back(a);
    if (std::find(extra.begin(), extra.end(), "--tp") == extra.end()) extra.insert(extra.begin(), {"--tp", "2"});
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
};

json post(const ServerProcess& server, const std::string& path, const json& body, int expect = 200) {
  auto c = server.client();
  auto res = c.Post(path.c_str(), body.dump(), "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == expect);
  return json::parse(res->body);
}

// The text of a streamed completion, with the finish reason; checks the stream's form.
std::pair<std::string, std::string> streamed_text(const RawStream& s, bool chat = false) {
  const std::vector<std::string> events = s.events();
  expect(!events.empty() && events.back() == "[DONE]", "the stream does not end with [DONE]: " + s.raw());
  std::string text, reason;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    expect(e["object"] == (chat ? "chat.completion.chunk" : "text_completion"),
           "a chunk of another kind: " + events[i]);
    if (e["choices"].empty()) continue;  // the usage chunk
    const json& c = e["choices"][0];
    text += chat ? c["delta"].value("content", "") : c["text"].get<std::string>();
    if (!c["finish_reason"].is_null()) reason = c["finish_reason"];
  }
  return {text, reason};
}

// One series of /metrics.
double metric(const ServerProcess& server, const std::string& name) {
  auto c = server.client();
  auto res = c.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::regex line("(^|\n)" + std::regex_replace(name, std::regex(R"([{}"+.])"), R"(\$&)") + " ([^\n]+)");
  std::smatch m;
  REQUIRE(std::regex_search(res->body, m, line));
  return std::stod(m[2]);
}

}  // namespace

TEST_CASE("greedy text through the server equals tpkit-generate's, streamed deltas concatenate to it", "[serve]") {
  ServerProcess server;
  for (const std::string& prompt : stories::kPrompts) {
    INFO(prompt);
    const std::string want = generated(prompt, 40);
    const json request = {{"model", "stories"}, {"prompt", prompt}, {"max_tokens", 40}, {"temperature", 0}};
    const json r = post(server, "/v1/completions", request);
    CHECK(r["object"] == "text_completion");
    CHECK(r["model"] == "stories");
    CHECK(r["choices"][0]["text"] == want);
    const json ids = post(server, "/tokenize", {{"prompt", prompt}});
    CHECK(r["usage"]["prompt_tokens"] == ids["count"]);
    const std::int64_t completion = r["usage"]["completion_tokens"];
    CHECK(r["usage"]["total_tokens"] == completion + ids["count"].get<std::int64_t>());
    CHECK(r["choices"][0]["finish_reason"] == (completion == 40 ? "length" : "stop"));
    json streaming = request;
    streaming["stream"] = true;
    streaming["stream_options"] = {{"include_usage", true}};
    RawStream s(server.port, "/v1/completions", streaming);
    s.read_all();
    CHECK(s.status() == 200);
    const auto [text, reason] = streamed_text(s);
    CHECK(text == want);
    CHECK(reason == r["choices"][0]["finish_reason"]);
    const json usage = json::parse(s.events()[s.events().size() - 2])["usage"];
    CHECK(usage["completion_tokens"] == completion);
    // The same prompt as token ids.
    const json by_ids =
        post(server, "/v1/completions", {{"prompt", ids["tokens"]}, {"max_tokens", 40}, {"temperature", 0}});
    CHECK(by_ids["choices"][0]["text"] == want);
  }
  // Several prompts in one request, one choice each, in order.
  const json many =
      post(server, "/v1/completions",
           {{"prompt", {stories::kPrompts[1], stories::kPrompts[2]}}, {"max_tokens", 40}, {"temperature", 0}});
  REQUIRE(many["choices"].size() == 2);
  CHECK(many["choices"][0]["index"] == 0);
  CHECK(many["choices"][0]["text"] == generated(stories::kPrompts[1], 40));
  CHECK(many["choices"][1]["text"] == generated(stories::kPrompts[2], 40));
  // Stop strings end the text where they begin, as tpkit-generate's do.
  const json stopped =
      post(server, "/v1/completions",
           {{"prompt", stories::kPrompts[0]}, {"max_tokens", 40}, {"temperature", 0}, {"stop", "Lily"}});
  CHECK(stopped["choices"][0]["text"] == generated(stories::kPrompts[0], 40, {"--stop", "Lily"}));
  CHECK(stopped["choices"][0]["finish_reason"] == "stop");
  CHECK(server.terminate() == 0);
}

TEST_CASE("32 concurrent clients each receive exactly what they receive alone", "[serve]") {
  ServerProcess server({"--max-num-seqs", "8"});
  struct Case {
    json request;
    std::string alone;
    std::string got;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 32; ++i) {
    json r = {{"prompt", stories::kPrompts[std::size_t(i) % stories::kPrompts.size()]},
              {"max_tokens", 20 + i % 7 * 5},
              {"ignore_eos", true},
              {"stream", i % 2 == 0}};
    if (i % 3 == 0)
      r["temperature"] = 0;
    else
      r["temperature"] = 0.8, r["top_p"] = 0.9, r["seed"] = 1000 + i;
    cases.push_back({r, "", ""});
  }
  const auto run = [&](Case& c, std::string& into) {
    try {
      RawStream s(server.port, "/v1/completions", c.request);
      s.read_all();
      expect(s.status() == 200, "status " + std::to_string(s.status()));
      if (c.request["stream"])
        into = streamed_text(s).first;
      else
        into = json::parse(s.body())["choices"][0]["text"];
    } catch (const std::exception& e) {
      into = std::string("client failed: ") + e.what();
    }
  };
  for (Case& c : cases) run(c, c.alone);  // one at a time
  std::vector<std::thread> clients;
  for (Case& c : cases) clients.emplace_back([&] { run(c, c.got); });
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("client " << i << ": " << cases[i].request.dump());
    CHECK(!cases[i].alone.empty());
    CHECK(cases[i].got == cases[i].alone);
  }
  CHECK(server.terminate() == 0);
}

TEST_CASE("a client that disconnects mid-stream aborts its request and frees its blocks", "[serve]") {
  ServerProcess server;
  {
    RawStream s(server.port, "/v1/completions",
                {{"prompt", stories::kPrompts[0]},
                 {"max_tokens", 400},
                 {"ignore_eos", true},
                 {"temperature", 0},
                 {"stream", true}});
    REQUIRE(s.read_until([](const std::string& raw) { return raw.find("\"text\"") != std::string::npos; }));
    CHECK(metric(server, "tpkit:num_requests_running{model_name=\"stories\"}") == 1);
    CHECK(metric(server, "tpkit:kv_cache_usage_perc{model_name=\"stories\"}") > 0);
    s.close_now();
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (metric(server, "tpkit:request_success_total{model_name=\"stories\",finished_reason=\"abort\"}") < 1) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }
  CHECK(metric(server, "tpkit:num_requests_running{model_name=\"stories\"}") == 0);
  CHECK(metric(server, "tpkit:kv_cache_usage_perc{model_name=\"stories\"}") == 0);
  CHECK(metric(server, "tpkit:generation_tokens_total{model_name=\"stories\"}") < 400);
  CHECK(metric(server, "tpkit:time_to_first_token_seconds_count{model_name=\"stories\"}") == 1);
  CHECK(server.terminate() == 0);
}

TEST_CASE("bad input gets its status and OpenAI's error object, the server goes on", "[serve]") {
  ServerProcess server({"--max-body-bytes", "100000"});
  const auto expect_error = [&](const std::string& path, const std::string& body, int status,
                                const std::string& message_part) {
    auto c = server.client();
    auto res = c.Post(path.c_str(), body, "application/json");
    REQUIRE(res);
    INFO(path << " " << body.substr(0, 200) << " -> " << res->status << " " << res->body);
    CHECK(res->status == status);
    const json e = json::parse(res->body, nullptr, false);
    REQUIRE(e.is_object());
    REQUIRE(e.contains("error"));
    for (const char* key : {"message", "type", "param", "code"}) CHECK(e["error"].contains(key));
    CHECK_THAT(e["error"]["message"].get<std::string>(), Catch::Contains(message_part));
  };
  const std::string c = "/v1/completions";
  expect_error(c, "{not json", 400, "not valid JSON");
  expect_error(c, "[1, 2]", 400, "JSON object");
  expect_error(c, R"({"max_tokens": 5})", 400, "'prompt' is required");
  expect_error(c, R"({"prompt": 5})", 400, "'prompt' must be");
  expect_error(c, R"({"prompt": "x", "max_tokens": "many"})", 400, "'max_tokens' must be an integer");
  expect_error(c, R"({"prompt": "x", "max_tokens": 0})", 400, "at least 1");
  expect_error(c, R"({"prompt": "x", "temperature": -1})", 400, "'temperature'");
  expect_error(c, R"({"prompt": "x", "top_p": 1.5})", 400, "'top_p'");
  expect_error(c, R"({"prompt": "x", "stop": [1]})", 400, "'stop' must be a string");
  expect_error(c, R"({"prompt": "x", "n": 2})", 400, "'n' must be 1");
  expect_error(c, R"({"prompt": "x", "logprobs": 3})", 400, "not supported");
  expect_error(c, R"({"prompt": "x", "response_format": {"type": 1}})", 400, "not supported");
  expect_error(c, R"({"prompt": "x", "stream_options": {"include_usage": "yes"}})", 400, "must be a boolean");
  expect_error(c, R"({"prompt": "x", "seed": 1.5})", 400, "'seed' must be an integer");
  expect_error(c, "{\"prompt\": " + std::string(100, '[') + std::string(100, ']') + "}", 400, "nests deeper");
  expect_error(c, R"({"prompt": [1, 99999]})", 400, "outside the vocabulary");
  expect_error(c, R"({"prompt": [1, -3]})", 400, "not a valid id");
  expect_error(c, R"({"prompt": "x", "model": "gpt-4"})", 404, "does not exist");
  expect_error(c, json{{"prompt", std::vector<int>(600, 1)}}.dump(), 400, "maximum context length");
  expect_error(c, json{{"prompt", "x"}, {"max_tokens", 100000}}.dump(), 400, "maximum context length");
  expect_error(c, json{{"prompt", std::string(200000, 'a')}}.dump(), 413, "too large");
  expect_error("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})", 400, "no chat template");
  expect_error("/v1/chat/completions", R"({"messages": []})", 400, "'messages'");
  expect_error("/detokenize", R"({"tokens": [100000]})", 400, "outside");
  expect_error("/v1/nothing", "{}", 404, "no such endpoint");
  // Still serving.
  CHECK(post(server, c, {{"prompt", "Once"}, {"max_tokens", 3}})["choices"][0]["finish_reason"] == "length");
  CHECK(server.terminate() == 0);
}

TEST_CASE("a prompt larger than the KV cache is a 400, the server goes on", "[serve]") {
  ServerProcess server({"--num-kv-blocks", "4", "--block-size", "16"});  // 64 positions
  auto c = server.client();
  auto res = c.Post("/v1/completions", json{{"prompt", std::vector<int>(100, 5)}, {"max_tokens", 4}}.dump(),
                    "application/json");
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 400);
  CHECK(json::parse(res->body)["error"]["code"] == "kv_cache_exceeded");
  CHECK(post(server, "/v1/completions", {{"prompt", "Once"}, {"max_tokens", 3}})["choices"][0]["text"] != "");
  CHECK(server.terminate() == 0);
}

TEST_CASE("a full queue is 429, a wrong API key 401", "[serve]") {
  ServerProcess server({"--max-queue", "0", "--api-key", "sesame"});
  httplib::Headers auth = {{"Authorization", "Bearer sesame"}};
  auto c = server.client();
  auto no_key = c.Post("/v1/completions", R"({"prompt": "x"})", "application/json");
  REQUIRE(no_key);
  CHECK(no_key->status == 401);
  CHECK(json::parse(no_key->body)["error"]["type"] == "authentication_error");
  auto full = c.Post("/v1/completions", auth, R"({"prompt": "x"})", "application/json");
  REQUIRE(full);
  CHECK(full->status == 429);
  CHECK(json::parse(full->body)["error"]["code"] == "queue_full");
  auto health = c.Get("/health");  // not behind the key
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(server.terminate() == 0);
}

TEST_CASE("models, health, tokenize, detokenize and metrics", "[serve]") {
  ServerProcess server;
  auto c = server.client();
  auto health = c.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  const json models = json::parse(c.Get("/v1/models")->body);
  CHECK(models["object"] == "list");
  CHECK(models["data"][0]["id"] == "stories");
  const json t = post(server, "/tokenize", {{"prompt", "Once upon a time"}});
  const std::string ids = output_of({"sh", "-c",
                                     "printf 'Once upon a time' | " + std::string(TPKIT_TOKENIZE_BIN) +
                                         " --tokenizer " + stories::kTokenizer + " --add-special-tokens"});
  CHECK(t["tokens"] == json::parse(ids));
  CHECK(t["count"] == t["tokens"].size());
  const json d = post(server, "/detokenize", {{"tokens", t["tokens"]}});
  CHECK_THAT(d["prompt"].get<std::string>(), Catch::Contains("Once upon a time"));
  post(server, "/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 5}, {"ignore_eos", true}});
  for (const char* name :
       {"tpkit:num_requests_waiting", "tpkit:prefix_cache_queries_total", "tpkit:prefix_cache_hits_total",
        "tpkit:prompt_tokens_total", "tpkit:inter_token_latency_seconds_count",
        "tpkit:e2e_request_latency_seconds_count", "tpkit:request_queue_time_seconds_count"})
    metric(server, std::string(name) + "{model_name=\"stories\"}");
  CHECK(metric(server, "tpkit:generation_tokens_total{model_name=\"stories\"}") == 5);
  CHECK(metric(server, "tpkit:request_success_total{model_name=\"stories\",finished_reason=\"length\"}") == 1);
  CHECK(metric(server, "tpkit:e2e_request_latency_seconds_count{model_name=\"stories\"}") == 1);
  CHECK(metric(server, "tpkit:inter_token_latency_seconds_count{model_name=\"stories\"}") == 4);
  CHECK(server.terminate() == 0);
}

// A mixture-of-experts model: each sparse layer's tokens per expert and its imbalance. A prompt of
// 4 ids and 5 tokens generated compute 8 tokens (the last one sampled is never run), each routed
// to 2 of 6 experts in both sparse layers.
TEST_CASE("a MoE model's expert load in /metrics", "[serve][moe]") {
  ServerProcess server({"--tp", "2", "--moe-layout", "ep-dispatch"}, {},
                       std::string(TPKIT_TEST_DATA) + "/qwen3_moe/f32");
  post(server, "/v1/completions", {{"prompt", {5, 17, 99, 3}}, {"max_tokens", 5}, {"ignore_eos", true}});
  for (int layer : {0, 1}) {
    double routed = 0;
    for (int e = 0; e < 6; ++e)
      routed += metric(server, "tpkit:moe_expert_tokens_total{model_name=\"stories\",layer=\"" + std::to_string(layer) +
                                   "\",expert=\"" + std::to_string(e) + "\"}");
    CHECK(routed == 16);
    CHECK(metric(server,
                 "tpkit:moe_expert_imbalance{model_name=\"stories\",layer=\"" + std::to_string(layer) + "\"}") >= 1.0);
  }
  CHECK(server.terminate() == 0);
}

TEST_CASE("SIGTERM lets the streams in flight finish, refuses new requests, and exits 0", "[serve]") {
  ServerProcess server;
  RawStream s(server.port, "/v1/completions",
              {{"prompt", stories::kPrompts[0]},
               {"max_tokens", 300},
               {"ignore_eos", true},
               {"temperature", 0},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}});
  REQUIRE(s.read_until([](const std::string& raw) { return raw.find("\"text\"") != std::string::npos; }));
  int status = -1;
  std::thread term([&] { status = server.terminate(); });
  s.read_all();
  term.join();
  CHECK(status == 0);
  const auto [text, reason] = streamed_text(s);
  CHECK(reason == "length");
  CHECK(json::parse(s.events()[s.events().size() - 2])["usage"]["completion_tokens"] == 300);
}

#ifdef TPKIT_MPIRUN_WORDS
TEST_CASE("under mpirun, world rank 0 serves TP 2 x PP 2 and gives the same tokens", "[serve][mpi]") {
  std::vector<std::string> mpirun;
  std::string words = TPKIT_MPIRUN_WORDS;
  for (std::size_t at = 0; at <= words.size();) {
    const std::size_t tab = std::min(words.find('\t', at), words.size());
    mpirun.push_back(words.substr(at, tab - at));
    at = tab + 1;
  }
  mpirun.insert(mpirun.end(), {"-np", "4"});
  ServerProcess server({"--tp", "2", "--pp", "2", "--idle-heartbeat-ms", "200"}, mpirun);
  std::vector<std::string> want;
  for (const std::string& prompt : stories::kPrompts) want.push_back(generated(prompt, 30));
  std::vector<std::thread> clients;
  std::vector<std::string> got(stories::kPrompts.size());
  for (std::size_t i = 0; i < stories::kPrompts.size(); ++i)
    clients.emplace_back([&, i] {
      try {
        RawStream s(server.port, "/v1/completions",
                    {{"prompt", stories::kPrompts[i]}, {"max_tokens", 30}, {"temperature", 0}, {"stream", i % 2 == 1}});
        s.read_all();
        got[i] = i % 2 == 1 ? streamed_text(s).first : json::parse(s.body())["choices"][0]["text"].get<std::string>();
      } catch (const std::exception& e) {
        got[i] = std::string("client failed: ") + e.what();
      }
    });
  for (auto& t : clients) t.join();
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want[i]);
  CHECK(metric(server, "tpkit:request_success_total{model_name=\"stories\",finished_reason=\"length\"}") == 5);
  // SIGTERM goes to world rank 0 (mpirun itself would kill the job): it drains and stops the
  // others, and mpirun exits 0.
  const pid_t rank0 = server.rank0();
  REQUIRE(rank0 > 0);
  CHECK(server.terminate(60s, rank0) == 0);
}
#endif

#ifdef TPKIT_TINY_MODELS
// A tiny model with Qwen3's vocabulary (written by tests/make_tiny_model.cpp) and the real Qwen3
// tokenizer and chat template: the prompt ids of /tokenize's messages equal transformers'
// apply_chat_template (tests/data/chat/engine_chat.jsonl), and a chat completion streams what it
// answers whole.
TEST_CASE("chat completions through the real Qwen3 template", "[.chat]") {
  ServerProcess server({"--tp", "1", "--tokenizer", stories::kModels + "/tokenizers/qwen3"}, {},
                       std::string(TPKIT_TINY_MODELS) + "/tiny_qwen3");
  std::ifstream cases(TPKIT_CHAT_CASES);
  std::string line;
  int checked = 0;
  json first;
  while (std::getline(cases, line)) {
    const json c = json::parse(line);
    if (c["tokenizer"] != "qwen3") continue;
    json messages = json::array();
    if (!c["system"].is_null()) messages.push_back({{"role", "system"}, {"content", c["system"]}});
    messages.push_back({{"role", "user"}, {"content", c["prompt"]}});
    json request = {{"messages", messages}};
    if (!c["kwargs"].empty()) request["chat_template_kwargs"] = c["kwargs"];
    INFO(line);
    CHECK(post(server, "/tokenize", request)["tokens"] == c["ids"]);
    if (first.is_null()) first = request, first["ids"] = c["ids"];
    ++checked;
  }
  REQUIRE(checked >= 3);
  json chat = {{"messages", first["messages"]}, {"max_tokens", 6}, {"temperature", 0}, {"ignore_eos", true}};
  const json whole = post(server, "/v1/chat/completions", chat);
  CHECK(whole["object"] == "chat.completion");
  CHECK(whole["choices"][0]["message"]["role"] == "assistant");
  CHECK(whole["choices"][0]["finish_reason"] == "length");
  CHECK(whole["usage"]["prompt_tokens"] == first["ids"].size());
  CHECK(whole["usage"]["completion_tokens"] == 6);
  chat["stream"] = true;
  RawStream s(server.port, "/v1/chat/completions", chat);
  s.read_all();
  const json opening = json::parse(s.events().at(0));
  CHECK(opening["choices"][0]["delta"] == json{{"role", "assistant"}, {"content", ""}});
  const auto [text, reason] = streamed_text(s, true);
  CHECK(text == whole["choices"][0]["message"]["content"]);
  CHECK(reason == "length");
  CHECK(server.terminate() == 0);
}
#endif

TEST_CASE("token ids in the stream, and a request resumed after them gives the rest of the same stream", "[serve]") {
  ServerProcess server;
  const json request = {
      {"prompt", stories::kPrompts[4]}, {"max_tokens", 40}, {"temperature", 0.8}, {"seed", 11}, {"ignore_eos", true},
      {"return_token_ids", true}};
  json streaming = request;
  streaming["stream"] = true;
  RawStream s(server.port, "/v1/completions", streaming);
  s.read_all();
  std::vector<std::int32_t> ids;
  std::vector<std::string> texts;  // per chunk
  for (const std::string& e : s.events()) {
    if (e == "[DONE]") break;
    const json c = json::parse(e)["choices"][0];
    REQUIRE(c["token_ids"].size() == 1);  // one chunk per token
    ids.push_back(c["token_ids"][0]);
    texts.push_back(c["text"]);
  }
  REQUIRE(ids.size() == 40);
  const json whole = post(server, "/v1/completions", request);
  CHECK(whole["choices"][0]["token_ids"] == ids);
  for (std::size_t k : {std::size_t(1), std::size_t(17), std::size_t(39)}) {
    INFO("resumed after " << k);
    json resumed = request;
    resumed["resume_token_ids"] = std::vector<std::int32_t>(ids.begin(), ids.begin() + std::ptrdiff_t(k));
    const json rest = post(server, "/v1/completions", resumed);
    std::string sent;
    for (std::size_t j = 0; j < k; ++j) sent += texts[j];
    CHECK(sent + rest["choices"][0]["text"].get<std::string>() == whole["choices"][0]["text"].get<std::string>());
    CHECK(rest["choices"][0]["token_ids"] == std::vector<std::int32_t>(ids.begin() + std::ptrdiff_t(k), ids.end()));
    CHECK(rest["usage"]["completion_tokens"] == 40);
  }
  json unseeded = request;
  unseeded.erase("seed");
  unseeded["resume_token_ids"] = {ids[0]};
  CHECK(post(server, "/v1/completions", unseeded, 400)["error"]["param"] == "resume_token_ids");
  CHECK(server.terminate() == 0);
}
