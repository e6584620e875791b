// serve/api_error.hpp: OpenAI's error object with its HTTP status, shared by tpkit-serve and
// tpkit-router. Needs nlohmann-json (an application dependency: never part of tpkit::tpkit).
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace tpkit::serve {

using nlohmann::json;

// An error answered with an HTTP status and OpenAI's error object.
struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code;
  ApiError(int status_, std::string message, std::string param_ = {}, std::string code_ = {})
      : std::runtime_error(std::move(message)), status(status_), param(std::move(param_)), code(std::move(code_)) {
    switch (status) {
      case 401:
        type = "authentication_error";
        break;
      case 429:
        type = "rate_limit_error";
        break;
      default:
        type = status >= 500 ? "server_error" : "invalid_request_error";
    }
  }
  json body() const {
    return {{"error",
             {{"message", what()},
              {"type", type},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", code.empty() ? json(nullptr) : json(code)}}}};
  }
};

inline ApiError bad_request(const std::string& message, const std::string& param = {}) {
  return ApiError(400, message, param);
}

}  // namespace tpkit::serve
