// The loaders under a comma-decimal locale: a program that sets LC_NUMERIC to de_DE (as a
// German desktop application may) must still read "0.02" in a config.json as 0.02. Exits 77
// (skipped) when no comma-decimal locale can be set here; the CTest fixture builds one with
// localedef into the build tree (LOCPATH).
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>

#include "tpkit/io/json.hpp"
#include "tpkit/model/config.hpp"

int main() {
  const char* names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char* set = nullptr;
  for (const char* n : names)
    if ((set = std::setlocale(LC_ALL, n))) break;
  if (!set || std::strcmp(std::localeconv()->decimal_point, ",") != 0) {
    std::printf("skipped: no comma-decimal locale available\n");
    return 77;
  }
  std::printf("locale %s, decimal point \"%s\"\n", set, std::localeconv()->decimal_point);
  try {
    const tpkit::Json j = tpkit::Json::parse(
        R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
            "num_attention_heads": 8, "vocab_size": 512, "rms_norm_eps": 0.02, "rope_theta": 500000.5,
            "initializer_range": 2.5e-2})");
    const tpkit::ModelConfig c = tpkit::config_from_hf(j);
    const bool ok = c.rms_norm_eps == 0.02 && c.rope_theta == 500000.5 && j.at("initializer_range").number() == 0.025;
    std::printf("rms_norm_eps %.17g, rope_theta %.17g: %s\n", c.rms_norm_eps, c.rope_theta, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
