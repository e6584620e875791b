// libFuzzer: config.json. It must give a ModelConfig that passes validate() (and whose derived
// sizes cannot overflow) or throw FormatError.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tpkit/model/config.hpp"
#include "tpkit/model/rope.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const tpkit::ModelConfig c =
        tpkit::config_from_hf(tpkit::Json::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz"));
    c.validate();
    // What the engine derives before it loads any tensor.
    (void)(c.q_size() + 2 * c.kv_size());
    (void)tpkit::rope_inverse_frequencies(c);
    for (std::int64_t l = 0; l < c.num_layers; ++l) (void)c.window(l);
    try {
      c.check_tp_size(int(1 + size % 8));
    } catch (const tpkit::InvalidArgument&) {
    }
  } catch (const tpkit::FormatError&) {
  }
  return 0;
}
