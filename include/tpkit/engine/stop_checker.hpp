// tpkit/engine/stop_checker.hpp: what happens to a sequence when a token is sampled: the end-of-
// sequence tokens, max_tokens, the model's context and stop strings decide whether it ends,
// and the text that can no longer be cut by a stop string is released to the stream. Needs no
// model, only a way to turn tokens into text.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tpkit/engine/scheduler.hpp"

namespace tpkit {

class StopChecker {
 public:
  // The text token `id` adds after token `previous` (a tokenizer's decode); empty: no text.
  using Decode = std::function<std::string(std::int32_t previous, std::int32_t id)>;

  struct Verdict {
    bool eos = false;           // the token ended the sequence and was not appended
    std::string finish_reason;  // "stop" or "length" when the sequence ends; empty otherwise
    bool stream = false;        // whether the stream callback gets this token
    std::string_view text;      // the text that became final with it (valid until the next call)
  };

  StopChecker(std::vector<int> eos_token_ids, std::int64_t max_position, Decode decode)
      : eos_(std::move(eos_token_ids)), max_position_(max_position), decode_(std::move(decode)) {}

  // Appends `token` to s (unless it is an end-of-sequence token) and applies the stop rules. A
  // stop string cuts the text where it begins; a tail that could still become a stop string is
  // held back from the stream until it cannot.
  Verdict accept(Sequence& s, std::int32_t token) const {
    Verdict v;
    v.eos = !s.params.ignore_eos && std::find(eos_.begin(), eos_.end(), token) != eos_.end();
    if (v.eos) {
      v.finish_reason = "stop";
    } else {
      if (decode_) s.text += decode_(s.tokens.back(), token);
      s.tokens.push_back(token);
      if (!s.params.stop.empty()) {
        std::size_t cut = std::string::npos;
        for (const auto& stop : s.params.stop)
          cut = std::min(cut, s.text.find(stop, s.streamed > stop.size() ? s.streamed - stop.size() : 0));
        if (cut != std::string::npos) {
          s.text.resize(cut);
          v.finish_reason = "stop";
        }
      }
      if (v.finish_reason.empty() &&
          (s.generated() >= s.params.max_tokens || std::int64_t(s.tokens.size()) >= max_position_))
        v.finish_reason = "length";
    }
    // Hold back a tail that could still become a stop string.
    std::size_t final_end = s.text.size();
    if (v.finish_reason.empty())
      for (const auto& stop : s.params.stop)
        for (std::size_t k = std::min(stop.size() - 1, s.text.size()); k > 0; --k)
          if (s.text.compare(s.text.size() - k, k, stop, 0, k) == 0) {
            final_end = std::min(final_end, s.text.size() - k);
            break;
          }
    v.stream = !v.eos || final_end > s.streamed;
    v.text = std::string_view(s.text).substr(s.streamed, final_end - std::min(final_end, s.streamed));
    s.streamed = std::max(s.streamed, final_end);
    return v;
  }

 private:
  std::vector<int> eos_;
  std::int64_t max_position_;
  Decode decode_;
};

}  // namespace tpkit
