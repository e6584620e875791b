// serve/server.hpp: tpkit-serve's HTTP server over a running engine (Engine, or world rank 0 of a
// DistributedEngine): OpenAI's completions, chat completions and models endpoints, streamed as
// server-sent events; /health, /metrics, /tokenize and /detokenize. Needs cpp-httplib and
// nlohmann-json (application dependencies: never part of tpkit::tpkit).
//
// Each HTTP request runs on one of cpp-httplib's threads: it checks the body, submits its prompts
// to the engine and waits on a RequestStream that the engine's thread fills. Nothing the client
// sends can reach the engine unchecked; a client that goes away mid-stream aborts its requests.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <tpkit/engine/engine.hpp>
#include <tpkit/jinja/chat_template.hpp>

#include "http_server.hpp"
#include "metrics.hpp"
#include "openai_api.hpp"

namespace tpkit::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port
  std::string served_model_name;
  std::string api_key;                   // empty: none required
  std::int64_t max_queue = 256;          // requests waiting in the engine beyond which: 429
  double request_timeout = 600;          // seconds a request may take in all: then it is aborted
  int http_threads = 64;                 // concurrent connections served (streams hold one each)
  std::size_t max_body_bytes = 4 << 20;  // larger bodies: 413
  std::string chat_template_dir;         // where the chat template is looked for
};

// The outputs of one HTTP request's engine requests (one per prompt, its choice index), handed
// from the engine's thread to the HTTP thread in arrival order; also where their latencies are
// measured for the metrics.
class RequestStream {
  using Clock = std::chrono::steady_clock;

 public:
  RequestStream(Metrics& metrics, Clock::time_point arrival, std::size_t choices)
      : metrics_(metrics), arrival_(arrival), timing_(choices, Timing{arrival}) {}

  static OutputCallback callback(const std::shared_ptr<RequestStream>& stream, std::size_t choice) {
    return [stream, choice](const RequestOutput& out) { stream->push(choice, out); };
  }

  // The next output and its choice, or nullopt when none came before `deadline`.
  std::optional<std::pair<std::size_t, RequestOutput>> next(Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return !queue_.empty(); })) return std::nullopt;
    auto out = std::move(queue_.front());
    queue_.pop_front();
    return out;
  }

 private:
  struct Timing {  // of one choice; touched only by the engine's thread
    Clock::time_point last;
    bool first_token = false;
    double ttft = 0;
    std::vector<double> gaps;
  };

  void push(std::size_t choice, const RequestOutput& out) {
    const Clock::time_point now = Clock::now();
    Timing& t = timing_[choice];
    if (!out.token_ids.empty()) {
      if (!t.first_token)
        t.ttft = seconds(arrival_, now), t.first_token = true;
      else
        t.gaps.push_back(seconds(t.last, now));
      t.last = now;
    }
    if (out.finished)
      metrics_.finished(openai_finish_reason(out.finish_reason), t.first_token ? t.ttft : -1, t.gaps,
                        seconds(arrival_, now), out.queue_seconds);
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.emplace_back(choice, out);
    changed_.notify_all();
  }
  static double seconds(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  }

  Metrics& metrics_;
  Clock::time_point arrival_;
  std::vector<Timing> timing_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<std::size_t, RequestOutput>> queue_;
};

template <class EngineT>
class Server {
  using Clock = std::chrono::steady_clock;

 public:
  Server(EngineT& engine, ServerOptions options)
      : engine_(engine), options_(std::move(options)), metrics_(options_.served_model_name) {
    if (engine_.has_tokenizer()) chat_ = jinja::ChatTemplate::from_model(options_.chat_template_dir);
    routes();
  }

  // Binds (port 0: a free one) and returns the port.
  int bind() {
    const int port = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                        : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0) throw std::runtime_error("cannot listen on " + options_.host + ":" + std::to_string(options_.port));
    return port;
  }
  // Serves until stop(); call after bind().
  void run() { http_.listen_after_bind(); }

  // SIGTERM: /health turns 503 and new generation requests are refused with 503.
  void begin_drain() { draining_ = true; }
  // Requests being answered now (each holds an HTTP thread).
  int active() const { return active_.load(); }
  void stop() { http_.stop(); }

 private:
  struct Active {  // counts a request while its handler runs
    std::atomic<int>& n;
    explicit Active(std::atomic<int>& a) : n(a) { ++n; }
    ~Active() { --n; }
  };

  void routes() {
    configure_server(http_, options_.http_threads, options_.max_body_bytes);
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!options_.api_key.empty() && req.path.rfind("/v1/", 0) == 0 &&
          req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
        reply_error(
            res, ApiError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'", "", "invalid_api_key"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const EngineStatus s = engine_.status();
      if (draining_ || !s.accepting) {
        res.status = 503;
        res.set_content("draining\n", "text/plain");
      } else {
        res.set_content("", "text/plain");
      }
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.render(engine_.status()), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json model = {{"id", options_.served_model_name},
                    {"object", "model"},
                    {"created", created_},
                    {"owned_by", "tpkit"},
                    {"root", options_.served_model_name},
                    {"max_model_len", engine_.config().max_position}};
      reply(res, {{"object", "list"}, {"data", json::array({model})}});
    });
    http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { completions(req, res); });
    });
    http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { chat_completions(req, res); });
    });
    http_.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { tokenize(req, res); });
    });
    http_.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { detokenize(req, res); });
    });
  }

  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    Active active(active_);
    try {
      f();
    } catch (const ApiError& e) {
      reply_error(res, e);
    } catch (const Overloaded& e) {
      reply_error(res, ApiError(429, e.what(), "", "queue_full"));
    } catch (const Unavailable& e) {
      reply_error(res, ApiError(503, e.what(), "", "unavailable"));
    } catch (const InvalidArgument& e) {
      reply_error(res, ApiError(400, user_message(e)));
    } catch (const std::invalid_argument& e) {
      reply_error(res, ApiError(400, e.what()));
    } catch (const jinja::TemplateError& e) {
      reply_error(res, ApiError(400, std::string("the chat template failed: ") + e.what(), "messages"));
    } catch (const FormatError& e) {
      reply_error(res, ApiError(400, e.what()));
    } catch (const json::exception& e) {  // a value of an unexpected type somewhere we did not check
      reply_error(res, ApiError(400, std::string("the request does not have the expected form: ") + e.what()));
    }
  }

  // Parsing is iterative, but copying and printing a value recurse: deeper bodies are refused.
  static constexpr int kMaxDepth = 64;
  json parse_body(const httplib::Request& req) const {
    bool too_deep = false;
    json body = json::parse(
        req.body,
        [&](int depth, json::parse_event_t, json&) {
          if (depth <= kMaxDepth) return true;
          too_deep = true;
          return false;  // dropped
        },
        false);
    if (body.is_discarded()) throw bad_request("the request body is not valid JSON");
    if (too_deep) throw bad_request("the request body nests deeper than " + std::to_string(kMaxDepth) + " levels");
    return body;
  }
  void check_model(const std::string& model) const {
    if (!model.empty() && model != options_.served_model_name)
      throw ApiError(
          404, "the model '" + model + "' does not exist (this server serves '" + options_.served_model_name + "')",
          "model", "model_not_found");
  }
  void check_accepting() const {
    if (draining_) throw Unavailable("the server is shutting down");
  }
  const Tokenizer& tokenizer() const {
    if (!engine_.has_tokenizer()) throw bad_request("this model has no tokenizer: send token ids");
    return engine_.tokenizer();
  }
  std::vector<std::int32_t> encode(const std::string& text, bool add_special_tokens = true) const {
    EncodeOptions e;
    e.add_special_tokens = add_special_tokens;
    return tokenizer().encode(text, e);
  }
  // A prompt must leave room in the model's context; chat's default max_tokens is what is left.
  void check_length(const std::vector<std::int32_t>& ids, SamplingParams& p, bool fill_context) const {
    const std::int64_t context = engine_.config().max_position;
    const auto n = std::int64_t(ids.size());
    if (n >= context)
      throw ApiError(400,
                     "this model's maximum context length is " + std::to_string(context) + " tokens; the prompt has " +
                         std::to_string(n),
                     "prompt", "context_length_exceeded");
    if (fill_context) p.max_tokens = int(std::min<std::int64_t>(p.max_tokens, context - n));
    if (n + p.max_tokens > context)
      throw ApiError(400,
                     "this model's maximum context length is " + std::to_string(context) + " tokens; the prompt has " +
                         std::to_string(n) + " and max_tokens asks for " + std::to_string(p.max_tokens) + " more",
                     "max_tokens", "context_length_exceeded");
  }

  // Submits every prompt (all or none) and returns the stream of their outputs.
  std::shared_ptr<RequestStream> submit(const std::vector<std::vector<std::int32_t>>& prompts,
                                        const GenerationRequest& request, std::vector<RequestId>& ids) {
    check_accepting();
    if (!request.resume_token_ids.empty() && prompts.size() != 1)
      throw bad_request("'resume_token_ids' continues one prompt, not " + std::to_string(prompts.size()),
                        "resume_token_ids");
    auto stream = std::make_shared<RequestStream>(metrics_, Clock::now(), prompts.size());
    try {
      for (std::size_t i = 0; i < prompts.size(); ++i)
        ids.push_back(engine_.resume(prompts[i], request.resume_token_ids, request.params,
                                     RequestStream::callback(stream, i), options_.max_queue));
    } catch (...) {
      for (RequestId id : ids) engine_.abort(id);
      throw;
    }
    return stream;
  }

  // A request the engine ended with an error: one too large for the KV cache is the client's
  // (400); anything else is the engine's (500: a rank failed).
  static ApiError failure(const std::string& reason) {
    if (reason.rfind("error: the request needs", 0) == 0 || reason.rfind("error: the request does not fit", 0) == 0)
      return ApiError(400, reason.substr(7) + ": send a shorter prompt", "prompt", "kv_cache_exceeded");
    return ApiError(500, "generation failed: " + reason);
  }

  std::string new_id(const char* prefix) {
    std::lock_guard<std::mutex> lock(id_mutex_);
    char hex[33];
    std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(id_rng_()),
                  static_cast<unsigned long long>(id_rng_()));
    return std::string(prefix) + hex;
  }

  // Generation for both endpoints: the whole response is an `object`, a stream one of
  // `chunk_object`s. `chunk(choice, delta text, finish reason or null)` makes a stream chunk's
  // choice; `choice(index, text, finish reason)` a whole response's.
  template <class Chunk, class Choice>
  void generate(httplib::Response& res, const GenerationRequest& request,
                const std::vector<std::vector<std::int32_t>>& prompts, const std::string& object,
                const std::string& chunk_object, const std::string& id, Chunk chunk, Choice choice,
                const std::optional<json>& first_chunk) {
    auto ids = std::make_shared<std::vector<RequestId>>();
    const std::shared_ptr<RequestStream> stream = submit(prompts, request, *ids);
    const bool return_ids = request.return_token_ids;
    const std::size_t choices = prompts.size();
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(options_.request_timeout));
    const std::int64_t created =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const auto envelope = [=](json choices) {
      return json{{"id", id},
                  {"object", chunk_object},
                  {"created", created},
                  {"model", options_.served_model_name},
                  {"choices", std::move(choices)}};
    };
    const auto usage_of = [](std::int64_t prompt, std::int64_t completion, std::int64_t cached) {
      return json{{"prompt_tokens", prompt},
                  {"completion_tokens", completion},
                  {"total_tokens", prompt + completion},
                  {"prompt_tokens_details", {{"cached_tokens", cached}}}};
    };
    if (!request.stream) {
      std::vector<std::string> texts(choices), reasons(choices);
      std::vector<std::vector<std::int32_t>> tokens(choices);
      std::int64_t prompt = 0, completion = 0, cached = 0;
      for (std::size_t remaining = choices; remaining > 0;) {
        auto next = stream->next(deadline);
        if (!next) {
          for (RequestId rid : *ids) engine_.abort(rid);
          throw ApiError(504, "the request did not finish within the server's request timeout", "", "timeout");
        }
        auto& [i, out] = *next;
        texts[i] += out.text;
        tokens[i].insert(tokens[i].end(), out.token_ids.begin(), out.token_ids.end());
        if (!out.finished) continue;
        if (out.finish_reason.rfind("error", 0) == 0) {
          for (RequestId rid : *ids) engine_.abort(rid);
          throw failure(out.finish_reason);
        }
        reasons[i] = openai_finish_reason(out.finish_reason);
        prompt += out.prompt_tokens, completion += out.completion_tokens, cached += out.cached_tokens;
        --remaining;
      }
      json list = json::array();
      for (std::size_t i = 0; i < choices; ++i) {
        list.push_back(choice(i, texts[i], reasons[i]));
        if (return_ids) list.back()["token_ids"] = tokens[i];
      }
      json body = envelope(std::move(list));
      body["object"] = object;
      body["usage"] = usage_of(prompt, completion, cached);
      reply(res, body);
      return;
    }
    const bool include_usage = request.include_usage;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, ids, stream, choices, deadline, envelope, usage_of, chunk, include_usage, first_chunk, return_ids](
            std::size_t, httplib::DataSink& sink) {
          Active active(active_);
          const auto send = [&](const json& body) {
            const std::string event = "data: " + body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
            return sink.write(event.data(), event.size());
          };
          const auto give_up = [&] {
            for (RequestId rid : *ids) engine_.abort(rid);
            return false;  // ends the response: the client is gone
          };
          if (first_chunk)
            for (std::size_t i = 0; i < choices; ++i) {
              json c = *first_chunk;
              c["index"] = i;
              if (!send(envelope(json::array({c})))) return give_up();
            }
          std::int64_t prompt = 0, completion = 0, cached = 0;
          for (std::size_t remaining = choices; remaining > 0;) {
            // Short waits, so that a client gone while nothing streams is noticed.
            auto next = stream->next(std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
            if (!next) {
              if (!sink.is_writable()) return give_up();
              if (Clock::now() >= deadline) {
                for (RequestId rid : *ids) engine_.abort(rid);
                send(ApiError(504, "the request did not finish within the server's request timeout", "", "timeout")
                         .body());
                break;
              }
              continue;
            }
            auto& [i, out] = *next;
            std::optional<std::string> reason;
            if (out.finished) {
              reason = openai_finish_reason(out.finish_reason);
              --remaining;
              prompt += out.prompt_tokens, completion += out.completion_tokens, cached += out.cached_tokens;
            }
            if (!out.text.empty() || reason || (return_ids && !out.token_ids.empty())) {
              json c = chunk(i, out.text, reason);
              if (return_ids) c["token_ids"] = out.token_ids;
              if (!send(envelope(json::array({c})))) return give_up();
            }
            if (out.finished && out.finish_reason.rfind("error", 0) == 0)
              if (!send(failure(out.finish_reason).body())) return give_up();
          }
          if (include_usage) {
            json last = envelope(json::array());
            last["usage"] = usage_of(prompt, completion, cached);
            if (!send(last)) return give_up();
          }
          const std::string end = "data: [DONE]\n\n";
          if (!sink.write(end.data(), end.size())) return give_up();
          sink.done();
          return true;
        },
        [ids, this](bool success) {
          if (!success)
            for (RequestId rid : *ids) engine_.abort(rid);
        });
  }

  void completions(const httplib::Request& req, httplib::Response& res) {
    CompletionRequest r = parse_completion(parse_body(req));
    check_model(r.model);
    std::vector<std::vector<std::int32_t>> prompts = r.token_prompts;
    for (const std::string& text : r.text_prompts) prompts.push_back(encode(text));
    for (const auto& ids : prompts) check_length(ids, r.params, false);  // (the engine checks the ids)
    if (!r.params.stop.empty()) tokenizer();                             // stop strings need text
    generate(
        res, r, prompts, "text_completion", "text_completion", new_id("cmpl-"),
        [](std::size_t i, const std::string& text, const std::optional<std::string>& reason) {
          return json{{"index", i},
                      {"text", text},
                      {"logprobs", nullptr},
                      {"finish_reason", reason ? json(*reason) : json(nullptr)}};
        },
        [](std::size_t i, const std::string& text, const std::string& reason) {
          return json{{"index", i}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason}};
        },
        std::nullopt);
  }

  void chat_completions(const httplib::Request& req, httplib::Response& res) {
    ChatRequest r = parse_chat(parse_body(req), std::numeric_limits<int>::max());
    check_model(r.model);
    if (!chat_)
      throw bad_request(
          "this model has no chat template (chat_template.jinja or tokenizer_config.json's "
          "chat_template): use /v1/completions",
          "messages");
    jinja::ChatInput input;
    input.messages = Json::parse(r.messages.dump(), "messages");
    input.add_generation_prompt = r.add_generation_prompt;
    if (!r.template_kwargs.is_null()) input.kwargs = Json::parse(r.template_kwargs.dump(), "chat_template_kwargs");
    std::vector<std::int32_t> ids = chat_->encode(tokenizer(), input);
    if (ids.empty()) throw bad_request("the chat template rendered an empty prompt", "messages");
    for (std::int32_t id : chat_->end_of_turn_ids(tokenizer())) r.params.stop_token_ids.push_back(id);
    check_length(ids, r.params, true);
    generate(
        res, r, {ids}, "chat.completion", "chat.completion.chunk", new_id("chatcmpl-"),
        [](std::size_t i, const std::string& text, const std::optional<std::string>& reason) {
          json delta = json::object();
          if (!text.empty()) delta["content"] = text;
          return json{{"index", i},
                      {"delta", delta},
                      {"logprobs", nullptr},
                      {"finish_reason", reason ? json(*reason) : json(nullptr)}};
        },
        [](std::size_t i, const std::string& text, const std::string& reason) {
          return json{{"index", i},
                      {"message", {{"role", "assistant"}, {"content", text}}},
                      {"logprobs", nullptr},
                      {"finish_reason", reason}};
        },
        json{{"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}});
  }

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    if (!body.is_object()) throw bad_request("the request body must be a JSON object");
    api_detail::optional_field(body, "model", [&](const json& v) { check_model(api_detail::string(v, "model")); });
    bool add_special = true;
    api_detail::optional_field(body, "add_special_tokens",
                               [&](const json& v) { add_special = api_detail::boolean(v, "add_special_tokens"); });
    std::vector<std::int32_t> ids;
    if (body.contains("messages")) {
      ChatRequest chat = parse_chat(body, 1);
      if (!chat_) throw bad_request("this model has no chat template", "messages");
      jinja::ChatInput input;
      input.messages = Json::parse(chat.messages.dump(), "messages");
      input.add_generation_prompt = chat.add_generation_prompt;
      if (!chat.template_kwargs.is_null())
        input.kwargs = Json::parse(chat.template_kwargs.dump(), "chat_template_kwargs");
      ids = chat_->encode(tokenizer(), input);
    } else {
      auto it = body.find("prompt");
      if (it == body.end()) throw bad_request("'prompt' (or 'messages') is required", "prompt");
      ids = encode(api_detail::string(*it, "prompt"), add_special);
    }
    reply(res, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", engine_.config().max_position}});
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    if (!body.is_object()) throw bad_request("the request body must be a JSON object");
    api_detail::optional_field(body, "model", [&](const json& v) { check_model(api_detail::string(v, "model")); });
    auto it = body.find("tokens");
    if (it == body.end() || !it->is_array()) throw bad_request("'tokens' must be a list of token ids", "tokens");
    const std::vector<std::int32_t> ids = api_detail::token_list(*it, "tokens");
    const Tokenizer& t = tokenizer();
    for (std::int32_t id : ids)
      if (std::size_t(id) >= t.vocab_size())
        throw bad_request("token id " + std::to_string(id) + " is outside the tokenizer's vocabulary", "tokens");
    reply(res, {{"prompt", t.decode(ids)}});
  }

  EngineT& engine_;
  ServerOptions options_;
  Metrics metrics_;
  std::optional<jinja::ChatTemplate> chat_;
  httplib::Server http_;
  std::atomic<bool> draining_{false};
  std::atomic<int> active_{0};
  std::mutex id_mutex_;
  std::mt19937_64 id_rng_{std::random_device{}()};
  const std::int64_t created_ =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
};

}  // namespace tpkit::serve
