// serve/http_server.hpp: what tpkit-serve and tpkit-router do alike with cpp-httplib: a server's
// threads, limits and timeouts, JSON answers, and OpenAI's error object for the statuses
// cpp-httplib answers itself (a body too large, an unknown path) and for an uncaught exception.
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <exception>
#include <string>

#include "api_error.hpp"

namespace tpkit::serve {

inline void reply(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}
inline void reply_error(httplib::Response& res, const ApiError& e) { reply(res, e.body(), e.status); }

// `threads` connections served at once (a stream holds one), bodies up to `max_body_bytes`.
inline void configure_server(httplib::Server& http, int threads, std::size_t max_body_bytes) {
  http.new_task_queue = [threads] { return new httplib::ThreadPool(std::size_t(threads)); };
  http.set_payload_max_length(max_body_bytes);
  http.set_read_timeout(std::chrono::seconds(30));
  http.set_write_timeout(std::chrono::seconds(30));
  // cpp-httplib answers a body over the limit (413) or an unknown path (404) with a bare status:
  // give it the error object.
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413)
      reply_error(res, ApiError(413, "the request body is too large", "", "payload_too_large"));
    else if (res.status == 404)
      reply_error(res, ApiError(404, "no such endpoint", "", "not_found"));
    else if (res.status == 405)
      reply_error(res, ApiError(405, "method not allowed for this endpoint", "", "method_not_allowed"));
    else if (res.status >= 400)
      reply_error(res, ApiError(res.status, "bad request"));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      what = x.what();
    } catch (...) {
    }
    reply_error(res, ApiError(500, what));
  });
}

}  // namespace tpkit::serve
