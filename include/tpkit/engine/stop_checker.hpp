// tpkit/engine/stop_checker.hpp: what happens to a sequence when a token is sampled: the end-of-
// sequence tokens (the model's and the request's), max_tokens, the model's context and stop
// strings decide whether it ends, and the text that can no longer be cut by a stop string is
// released to the stream. Needs no model, only a tokenizer to turn tokens into text.
//
// Each sequence decodes through its own DecodeStream, primed with the prompt (so a leading space
// or a character split across byte tokens comes out as the whole decode has it); the text is
// complete UTF-8 at every step. Ids the tokenizer does not have (a model's vocabulary padded
// beyond the tokenizer's) add no text.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tpkit/engine/scheduler.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit {

class StopChecker {
 public:
  struct Verdict {
    bool eos = false;           // the token ended the sequence and was not appended
    std::string finish_reason;  // "stop" or "length" when the sequence ends; empty otherwise
    bool stream = false;        // whether the stream callback gets this token
    std::string_view text;      // the text that became final with it (valid until the next call)
  };

  // `tokenizer` may be null (no text); it must outlive the checker.
  StopChecker(std::vector<int> eos_token_ids, std::int64_t max_position, const Tokenizer* tokenizer)
      : eos_(std::move(eos_token_ids)), max_position_(max_position), tokenizer_(tokenizer) {}

  // Appends `token` to s (unless it is an end-of-sequence token) and applies the stop rules. A
  // stop string cuts the text where it begins; a tail that could still become a stop string is
  // held back from the stream until it cannot.
  Verdict accept(Sequence& s, std::int32_t token) const {
    Verdict v;
    bool stopped_by_string = false;
    const auto& extra = s.params.stop_token_ids;
    v.eos = !s.params.ignore_eos && (std::find(eos_.begin(), eos_.end(), token) != eos_.end() ||
                                     std::find(extra.begin(), extra.end(), token) != extra.end());
    if (v.eos) {
      v.finish_reason = "stop";
    } else {
      s.text += decode(s, token);
      s.tokens.push_back(token);
      if (!s.params.stop.empty()) {
        std::size_t cut = std::string::npos;
        for (const auto& stop : s.params.stop)
          cut = std::min(cut, s.text.find(stop, s.streamed > stop.size() ? s.streamed - stop.size() : 0));
        if (cut != std::string::npos) {
          s.text.resize(cut);
          v.finish_reason = "stop";
          stopped_by_string = true;
        }
      }
      if (v.finish_reason.empty() &&
          (s.generated() >= s.params.max_tokens || std::int64_t(s.tokens.size()) >= max_position_))
        v.finish_reason = "length";
    }
    // The end flushes a character cut short as U+FFFD, as a whole decode would (not after a stop
    // string: the text was cut before it).
    if (!v.finish_reason.empty() && !stopped_by_string && s.decoder) s.text += s.decoder->finish();
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
  std::string decode(Sequence& s, std::int32_t token) const {
    if (!tokenizer_) return {};
    const auto known = [&](std::int32_t id) { return id >= 0 && std::size_t(id) < tokenizer_->vocab_size(); };
    if (!s.decoder) {
      s.decoder = tokenizer_->decode_stream(s.params.skip_special_tokens);
      for (std::int32_t id : s.tokens)
        if (known(id)) s.decoder->push(id);
    }
    return known(token) ? s.decoder->push(token) : std::string();
  }

  std::vector<int> eos_;
  std::int64_t max_position_;
  const Tokenizer* tokenizer_;
};

}  // namespace tpkit
