// libFuzzer: a tokenizer.json, and text encoded and ids decoded with it. The first two bytes say
// how long the text is; the text follows, then the file. Loading must succeed or throw
// FormatError; encoding any bytes must give ids that decode to valid UTF-8; decoding ids made
// from the text's bytes (some outside the tokenizer) must give text or InvalidArgument.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tpkit/tokenizer/hf_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t text_bytes = std::min<std::size_t>(size - 2, (std::size_t(data[0]) << 8 | data[1]) % 512);
  const std::string_view text(reinterpret_cast<const char*>(data + 2), text_bytes);
  const std::string_view file(reinterpret_cast<const char*>(data + 2 + text_bytes), size - 2 - text_bytes);
  try {
    const auto tokenizer = tpkit::HfTokenizer::from_json(file, "fuzz tokenizer.json");
    for (bool special : {false, true}) {
      const auto ids = tokenizer.encode(text, {special, special});
      for (bool skip : {false, true})
        if (!tpkit::unicode::is_valid_utf8(tokenizer.decode(ids, skip))) std::abort();
    }
    std::vector<std::int32_t> ids;
    const std::int64_t span = std::int64_t(tokenizer.vocab_size()) + 8;
    for (std::size_t i = 0; i + 1 < text.size(); i += 2)
      ids.push_back(std::int32_t(std::int64_t(std::uint8_t(text[i]) << 8 | std::uint8_t(text[i + 1])) % span - 4));
    try {
      if (!tpkit::unicode::is_valid_utf8(tokenizer.decode(ids))) std::abort();
    } catch (const tpkit::InvalidArgument&) {
    }
  } catch (const tpkit::FormatError&) {
  }
  return 0;
}
