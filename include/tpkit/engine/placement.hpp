// tpkit/engine/placement.hpp: expert placements and expert statistics as files, and a placement
// balanced for a recorded load (what tpkit-placement computes).
//
// A placement file says, per sparse layer, which ranks of the TP group hold which experts;
// layers it does not list keep the balanced split:
//   {"ranks": 2, "num_experts": 4, "layers": {"1": [[0], [1], [0, 1], [1]]}}
// (expert 2 of layer 1 has a copy on both ranks). Expert statistics (tpkit-generate
// --expert-stats, or tpkit-serve's /metrics) are the tokens each expert of each layer received:
//   {"layers": {"1": [120, 31, 402, 77]}}
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/engine/request.hpp"
#include "tpkit/io/json.hpp"
#include "tpkit/model/config.hpp"
#include "tpkit/parallel/shard.hpp"

namespace tpkit {

// Layer -> placement, from a placement file's text (`source` names it in errors). Every placement
// is checked for `num_experts` experts over `ranks` ranks.
inline std::map<std::int64_t, ExpertPlacement> parse_expert_placements(const std::string& text,
                                                                       const std::string& source) {
  const Json j = Json::parse(text, source);
  const auto number = [&](const char* key) {
    const Json* v = j.find(key);
    if (!v || !v->is_number()) throw FormatError(source + ": missing the number \"" + key + "\"");
    return int(v->integer(1, ModelLimits::num_experts));
  };
  const int ranks = number("ranks"), experts = number("num_experts");
  const Json* layers = j.find("layers");
  if (!layers || !layers->is_object()) throw FormatError(source + ": missing the object \"layers\"");
  std::map<std::int64_t, ExpertPlacement> out;
  for (const auto& [key, list] : layers->object()) {
    std::int64_t layer = -1;
    try {
      layer = Json::parse(key).integer(0, ModelLimits::num_layers - 1);
    } catch (const FormatError&) {
      throw FormatError(source + ": layer \"" + key + "\" is not a layer index");
    }
    ExpertPlacement p;
    p.num_experts = experts, p.ranks = ranks;
    if (!list.is_array()) throw FormatError(source + ": layer " + key + " must list each expert's ranks");
    for (const Json& holders : list.array()) {
      if (!holders.is_array()) throw FormatError(source + ": layer " + key + " must list each expert's ranks");
      std::vector<int> h;
      for (const Json& r : holders.array()) h.push_back(int(r.integer(0, ranks - 1)));
      p.holders.push_back(std::move(h));
    }
    try {
      p.validate(experts, ranks);
    } catch (const std::invalid_argument& e) {
      throw FormatError(source + ": layer " + key + ": " + user_message(e));
    }
    out[layer] = std::move(p);
  }
  return out;
}

inline std::map<std::int64_t, ExpertPlacement> read_expert_placements(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError("cannot read the expert placement file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_expert_placements(text.str(), path);
}

inline std::string expert_placements_json(const std::map<std::int64_t, ExpertPlacement>& placements) {
  TPKIT_REQUIRE(!placements.empty(), "no placement to write");
  const ExpertPlacement& first = placements.begin()->second;
  std::string out = "{\"ranks\": " + std::to_string(first.ranks) +
                    ", \"num_experts\": " + std::to_string(first.num_experts) + ", \"layers\": {";
  bool comma = false;
  for (const auto& [layer, p] : placements) {
    out += std::string(comma ? ",\n  " : "\n  ") + "\"" + std::to_string(layer) + "\": [";
    for (int e = 0; e < p.num_experts; ++e) {
      out += e ? ", [" : "[";
      for (std::size_t i = 0; i < p.holders[std::size_t(e)].size(); ++i)
        out += (i ? ", " : "") + std::to_string(p.holders[std::size_t(e)][i]);
      out += "]";
    }
    out += "]";
    comma = true;
  }
  return out + "\n}}\n";
}

inline std::string expert_load_json(const std::vector<ExpertLoad>& loads) {
  std::string out = "{\"layers\": {";
  for (std::size_t i = 0; i < loads.size(); ++i) {
    out += std::string(i ? ",\n  " : "\n  ") + "\"" + std::to_string(loads[i].layer) + "\": [";
    for (std::size_t e = 0; e < loads[i].tokens.size(); ++e)
      out += (e ? ", " : "") + std::to_string(loads[i].tokens[e]);
    out += "]";
  }
  return out + "\n}}\n";
}

// Expert statistics from an --expert-stats file, or from tpkit-serve's /metrics text (its
// tpkit:moe_expert_tokens_total{layer="L",expert="E"} samples).
inline std::vector<ExpertLoad> parse_expert_load(const std::string& text, const std::string& source) {
  std::map<std::int64_t, std::vector<std::int64_t>> layers;
  const std::string metric = "tpkit:moe_expert_tokens_total{";
  if (text.find(metric) != std::string::npos) {
    std::size_t at = 0;
    while ((at = text.find(metric, at)) != std::string::npos) {
      const std::size_t end = text.find('\n', at);
      const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
      at += metric.size();
      // Every number is a checked integer: a malformed sample is an error naming it.
      const auto integer = [&](const std::string& text, std::int64_t limit) {
        try {
          return Json::parse(text, source).integer(0, limit);
        } catch (const FormatError&) {
          throw FormatError(source + ": a malformed sample: " + line);
        }
      };
      const auto label = [&](const char* name, std::int64_t limit) {
        const std::string key = std::string(name) + "=\"";
        const std::size_t p = line.find(key), end = p == std::string::npos ? p : line.find('"', p + key.size());
        if (end == std::string::npos) throw FormatError(source + ": a sample without " + name + ": " + line);
        return integer(line.substr(p + key.size(), end - p - key.size()), limit);
      };
      const std::int64_t layer = label("layer", ModelLimits::num_layers - 1);
      const std::int64_t expert = label("expert", ModelLimits::num_experts - 1);
      const std::size_t value = line.rfind(' ');
      if (value == std::string::npos) throw FormatError(source + ": a malformed sample: " + line);
      std::vector<std::int64_t>& tokens = layers[layer];
      if (std::int64_t(tokens.size()) <= expert) tokens.resize(std::size_t(expert + 1), 0);
      tokens[std::size_t(expert)] = integer(line.substr(value + 1), std::int64_t(1) << 62);
    }
  } else {
    const Json j = Json::parse(text, source);
    const Json* l = j.find("layers");
    if (!l || !l->is_object()) throw FormatError(source + ": missing the object \"layers\"");
    for (const auto& [key, list] : l->object()) {
      std::int64_t layer = 0;
      try {
        layer = Json::parse(key).integer(0, ModelLimits::num_layers - 1);
      } catch (const FormatError&) {
        throw FormatError(source + ": layer \"" + key + "\" is not a layer index");
      }
      if (!list.is_array() || std::int64_t(list.array().size()) > ModelLimits::num_experts)
        throw FormatError(source + ": layer " + key + " must list at most " + std::to_string(ModelLimits::num_experts) +
                          " token counts");
      std::vector<std::int64_t>& tokens = layers[layer];
      try {
        for (const Json& t : list.array()) tokens.push_back(t.integer(0, std::int64_t(1) << 62));
      } catch (const FormatError& e) {
        throw FormatError(source + ": layer " + key + ": " + e.what());
      }
    }
  }
  std::vector<ExpertLoad> out;
  for (auto& [layer, tokens] : layers) out.push_back({layer, std::move(tokens)});
  return out;
}

// A placement of `tokens.size()` experts over `ranks` ranks that balances the recorded load, as
// EPLB does: `redundant` extra copies go one at a time to the expert with the most load per
// copy (at most one copy per rank), then copies are placed heaviest first on the least-loaded
// rank that has a free slot and no copy of that expert yet (slots: the E + redundant copies
// split in balance). Ties go to the lower expert and the lower rank, so the result is fixed.
inline ExpertPlacement placement_for_load(const std::vector<std::int64_t>& tokens, int ranks, int redundant = 0) {
  const int E = int(tokens.size());
  TPKIT_REQUIRE(E >= 1 && ranks >= 1, "a placement needs experts and ranks (got ", E, " and ", ranks, ")");
  TPKIT_REQUIRE(E <= ModelLimits::num_experts, "a placement of ", E, " experts: at most ", ModelLimits::num_experts);
  const std::int64_t most = std::int64_t(E) * (ranks - 1);
  TPKIT_REQUIRE(redundant >= 0 && redundant <= most, "redundant copies must be in [0, ", most, "] for ", E,
                " experts on ", ranks, " ranks (got ", redundant, ")");
  std::vector<int> copies(std::size_t(E), 1);
  const auto per_copy = [&](int e) { return double(tokens[std::size_t(e)]) / copies[std::size_t(e)]; };
  for (int x = 0; x < redundant; ++x) {
    int best = -1;
    for (int e = 0; e < E; ++e)
      if (copies[std::size_t(e)] < ranks && (best < 0 || per_copy(e) > per_copy(best))) best = e;
    ++copies[std::size_t(best)];
  }
  std::vector<int> order;  // one entry per copy, heaviest first
  for (int e = 0; e < E; ++e)
    for (int c = 0; c < copies[std::size_t(e)]; ++c) order.push_back(e);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return per_copy(a) > per_copy(b); });
  std::vector<double> load(std::size_t(ranks), 0.0);
  std::vector<std::int64_t> free_slots(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) free_slots[std::size_t(r)] = balanced_range(E + redundant, ranks, r).size();
  ExpertPlacement p;
  p.num_experts = E, p.ranks = ranks;
  p.holders.resize(std::size_t(E));
  for (int e : order) {
    std::vector<int>& h = p.holders[std::size_t(e)];
    int best = -1;
    for (int pass = 0; pass < 2 && best < 0; ++pass)  // the second pass ignores the slots
      for (int r = 0; r < ranks; ++r) {
        if (std::find(h.begin(), h.end(), r) != h.end() || (pass == 0 && free_slots[std::size_t(r)] == 0)) continue;
        if (best < 0 || load[std::size_t(r)] < load[std::size_t(best)]) best = r;
      }
    h.push_back(best);
    load[std::size_t(best)] += per_copy(e);
    --free_slots[std::size_t(best)];
  }
  for (std::vector<int>& h : p.holders) std::sort(h.begin(), h.end());
  p.validate(E, ranks);
  return p;
}

}  // namespace tpkit
