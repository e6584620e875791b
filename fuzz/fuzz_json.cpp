// libFuzzer: the strict JSON reader. Any input must parse or throw FormatError; walking the
// result (every number read as an integer too) must not crash or hit undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tpkit/io/json.hpp"

namespace {
void walk(const tpkit::Json& j, int depth) {
  switch (j.type()) {
    case tpkit::Json::Type::number:
      try {
        (void)j.integer();
        (void)j.integer(0, 1 << 20);
      } catch (const tpkit::FormatError&) {
      }
      break;
    case tpkit::Json::Type::array:
      for (const auto& v : j.array()) walk(v, depth + 1);
      break;
    case tpkit::Json::Type::object:
      for (const auto& [key, v] : j.object()) {
        (void)j.find(key);
        walk(v, depth + 1);
      }
      break;
    default:
      break;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    walk(tpkit::Json::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz"), 0);
  } catch (const tpkit::FormatError&) {
  }
  return 0;
}
