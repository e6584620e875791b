// libFuzzer: a regex and a text. The first byte is the pattern's length; the pattern follows,
// then the text. Compiling must succeed or throw FormatError; matching must stay inside the text
// and end (a runaway backtrack is a FormatError, not a hang).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tpkit/tokenizer/regex.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t pattern_bytes = std::min<std::size_t>(size - 1, data[0]);
  const std::string pattern(reinterpret_cast<const char*>(data + 1), pattern_bytes);
  const std::string text = tpkit::unicode::to_valid_utf8(
      std::string_view(reinterpret_cast<const char*>(data + 1 + pattern_bytes), size - 1 - pattern_bytes));
  try {
    const tpkit::Regex re(pattern);
    std::size_t last = 0;
    re.for_each_match(text, [&](std::size_t begin, std::size_t end) {
      if (begin < last || end < begin || end > text.size()) std::abort();
      last = end;
    });
  } catch (const tpkit::FormatError&) {
  }
  return 0;
}
