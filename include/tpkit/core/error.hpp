// tpkit/core/error.hpp: the exception types thrown by layers, communicators and loaders.
//
// Two families, so callers can tell their own bugs from runtime failures:
//   InvalidArgument (a std::invalid_argument): the caller passed something that can never work
//     (a shape mismatch, a TP size the model cannot take, a rank out of range).
//   Error (a std::runtime_error) and its subclasses: something failed while running
//     (a collective timed out, ranks disagreed, a rank failed, a file is corrupt).
// Messages carry the file and line of the check and the offending values.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "tpkit/config.hpp"

namespace tpkit {

class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Communication failures. Every message names the operation and the rank(s) involved.
class CommError : public Error {
 public:
  using Error::Error;
};
// A rank did not enter a collective (or send a message) within the timeout.
class CollectiveTimeout : public CommError {
 public:
  using CommError::CommError;
};
// Ranks entered the same collective slot with different operations, sizes, dtypes or roots.
class CollectiveMismatch : public CommError {
 public:
  using CommError::CommError;
};
// Another rank failed; this rank's pending operation was abandoned.
class RankAborted : public CommError {
 public:
  using CommError::CommError;
};
// Raised by the mock backend's fault-injection hook.
class InjectedFault : public CommError {
 public:
  using CommError::CommError;
};

// A checkpoint, tokenizer or configuration file that cannot be read as what it claims to be.
class FormatError : public Error {
 public:
  using Error::Error;
};

// A running engine that cannot take a request now: its queue is full (Overloaded), or it is
// shutting down or was never started on this rank (Unavailable). A server answers 429 and 503.
class Overloaded : public Error {
 public:
  using Error::Error;
};
class Unavailable : public Error {
 public:
  using Error::Error;
};

// What an exception says (`fallback` for one that is not a std::exception).
inline std::string message_of(const std::exception_ptr& e, const char* fallback = "unknown error") {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return fallback;
  }
}

namespace detail {

template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

template <class E, class... Args>
[[noreturn]] void raise(const char* file, int line, Args&&... args) {
  throw E(concat(file, ":", line, ": ", std::forward<Args>(args)...));
}

}  // namespace detail

// The message of `e` for someone running a program rather than debugging tpkit: the source
// locations TPKIT_REQUIRE and TPKIT_THROW put in front of a message ("path/file.hpp:123: ") are
// removed, wherever they appear (an error that wraps another keeps the inner one's text).
inline std::string user_message(const std::exception& e) {
  const std::string_view what = e.what();
  std::string out;
  out.reserve(what.size());
  std::size_t at = 0;
  while (at < what.size()) {
    // A location starts a word: a file name with a source extension, ':', digits, ": ".
    const bool word_start = at == 0 || what[at - 1] == ' ' || what[at - 1] == '(';
    std::size_t colon = word_start ? what.find(':', at) : std::string_view::npos;
    if (colon != std::string_view::npos) {
      const std::string_view file = what.substr(at, colon - at);
      const auto ends_with = [&](std::string_view suffix) {
        return file.size() > suffix.size() && file.substr(file.size() - suffix.size()) == suffix;
      };
      std::size_t digits = colon + 1;
      while (digits < what.size() && what[digits] >= '0' && what[digits] <= '9') ++digits;
      const bool source =
          file.find(' ') == std::string_view::npos &&
          (ends_with(".hpp") || ends_with(".cuh") || ends_with(".h") || ends_with(".cpp") || ends_with(".cu"));
      if (source && digits > colon + 1 && what.substr(digits, 2) == ": ") {
        at = digits + 2;
        continue;
      }
    }
    out += what[at++];
  }
  return out;
}

}  // namespace tpkit

// TPKIT_REQUIRE(cond, message parts...): throw tpkit::InvalidArgument when a caller-supplied
// argument is unusable. The message parts are streamed, so values can be named inline.
#define TPKIT_REQUIRE(cond, ...)                                                                    \
  do {                                                                                              \
    if (!(cond)) ::tpkit::detail::raise<::tpkit::InvalidArgument>(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

// TPKIT_THROW(ErrorType, message parts...): throw a runtime error with file and line.
#define TPKIT_THROW(E, ...) ::tpkit::detail::raise<E>(__FILE__, __LINE__, __VA_ARGS__)
