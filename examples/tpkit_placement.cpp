// tpkit-placement: a balanced expert placement for a mixture-of-experts model, from the tokens
// its experts received (tpkit-generate --expert-stats FILE, or tpkit-serve's /metrics saved to a
// file). The output is a placement file for --expert-placement with --moe-layout ep or
// ep-dispatch: per sparse layer, which ranks hold which experts, with `--redundant` extra copies
// of the busiest experts.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include <tpkit/engine/placement.hpp>

int main(int argc, char** argv) {
  CLI::App app("Compute an expert placement that balances a recorded expert load.", "tpkit-placement");
  std::string stats, output;
  int ranks = 1, redundant = 0;
  app.add_option("--stats", stats, "expert statistics: an --expert-stats JSON file or a saved /metrics page")
      ->required();
  app.add_option("--ranks", ranks, "ranks of the expert-parallel group (the TP size)")
      ->required()
      ->check(CLI::Range(1, 4096));
  app.add_option("--redundant", redundant, "extra copies of the busiest experts, per layer")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--output,-o", output, "placement file to write (default: standard output)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    std::ifstream in(stats, std::ios::binary);
    if (!in) throw tpkit::FormatError("cannot read " + stats);
    std::ostringstream text;
    text << in.rdbuf();
    const std::vector<tpkit::ExpertLoad> loads = tpkit::parse_expert_load(text.str(), stats);
    if (loads.empty()) throw tpkit::FormatError(stats + " has no expert statistics (a dense model?)");
    std::map<std::int64_t, tpkit::ExpertPlacement> placements;
    for (const tpkit::ExpertLoad& l : loads) {
      const tpkit::ExpertPlacement p = tpkit::placement_for_load(l.tokens, ranks, redundant);
      placements[l.layer] = p;
      // The busiest rank's expected tokens over the mean, before and after.
      std::vector<double> before(std::size_t(ranks), 0.0), after(std::size_t(ranks), 0.0);
      const tpkit::ExpertPlacement balanced = tpkit::balanced_expert_placement(int(l.tokens.size()), ranks);
      for (std::size_t e = 0; e < l.tokens.size(); ++e) {
        for (int r : balanced.holders[e]) before[std::size_t(r)] += double(l.tokens[e]);
        for (int r : p.holders[e]) after[std::size_t(r)] += double(l.tokens[e]) / double(p.holders[e].size());
      }
      const auto spread = [](const std::vector<double>& v) {
        double total = 0, most = 0;
        for (double x : v) total += x, most = std::max(most, x);
        return total > 0 ? most * double(v.size()) / total : 0.0;
      };
      std::fprintf(stderr, "layer %lld: busiest rank / mean %.3f with the balanced split, %.3f placed\n",
                   static_cast<long long>(l.layer), spread(before), spread(after));
    }
    const std::string json = tpkit::expert_placements_json(placements);
    if (output.empty()) {
      std::cout << json;
    } else {
      std::ofstream out(output);
      out << json;
      if (!out) throw tpkit::FormatError("cannot write " + output);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-placement: %s\n", tpkit::user_message(e).c_str());
    return 1;
  }
  return 0;
}
