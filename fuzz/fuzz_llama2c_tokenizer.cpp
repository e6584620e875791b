// libFuzzer: a llama2.c tokenizer.bin, and text encoded and decoded with it. The first two bytes
// say where the file ends and the text begins. Loading must succeed or throw FormatError;
// encoding any bytes and decoding every id it gives must not crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tpkit/tokenizer/llama2c_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t text_bytes = std::min<std::size_t>(size - 2, (std::size_t(data[0]) << 8 | data[1]) % 512);
  const std::uint8_t* file = data + 2 + text_bytes;
  const std::size_t file_size = size - 2 - text_bytes;
  try {
    const auto tokenizer = tpkit::Llama2cTokenizer::from_bytes(file, file_size, "fuzz tokenizer");
    const std::string_view text(reinterpret_cast<const char*>(data + 2), text_bytes);
    const auto ids = tokenizer.encode(text, true, true);
    (void)tokenizer.decode(ids);
    for (std::int32_t id : ids) (void)tokenizer.piece(id);
  } catch (const tpkit::FormatError&) {
  } catch (const tpkit::InvalidArgument&) {
  }
  return 0;
}
