// libFuzzer: a safetensors file in memory. It must parse or throw FormatError; every view it
// returns must lie inside the buffer (each byte is read, so ASan sees any overrun).
#include <cstddef>
#include <cstdint>

#include "tpkit/model/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto tensors = tpkit::Checkpoint::parse_safetensors(data, size, "fuzz.safetensors");
    unsigned sum = 0;
    for (const auto& [name, t] : tensors) {
      const auto* p = static_cast<const unsigned char*>(t.data());
      const std::size_t bytes = std::size_t(t.numel()) * tpkit::dtype_size(t.dtype());
      for (std::size_t i = 0; i < bytes; ++i) sum += p[i];
      if (t.numel() > 0) (void)(t.rank() == 1 ? t.load(t.size(0) - 1) : t.load(t.size(0) - 1, t.size(1) - 1));
    }
    if (sum == 0xdeadbeef) return 1;  // keep the reads
  } catch (const tpkit::FormatError&) {
  }
  return 0;
}
