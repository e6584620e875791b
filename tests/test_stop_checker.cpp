// The stop rules and the text stream without a model: a sequence fed token by token through a
// StopChecker with a tiny made-up vocabulary. The expected texts are written out by hand.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "catch.hpp"
#include "tpkit/engine/stop_checker.hpp"
#include "tpkit/tokenizer/utf8.hpp"

using namespace tpkit;

namespace {
// Token i decodes to kPieces[i]; 2 is the end-of-sequence token; 10 and 11 are the two bytes of
// "é" (a character split across tokens); no token is special.
const std::vector<std::string> kPieces = {"<s>",  "Once", "</s>", " upon", " a",   " time",
                                          " The", " E",   "nd",   "!",     "\xC3", "\xA9"};

class PieceTokenizer : public Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view, const EncodeOptions& = {}) const override { return {}; }
  std::unique_ptr<DecodeStream> decode_stream(bool) const override {
    struct Stream : DecodeStream {
      unicode::Utf8Stream utf8;
      std::string push(std::int32_t id) override { return utf8.push(kPieces.at(std::size_t(id))); }
      std::string finish() override { return utf8.finish(); }
    };
    return std::make_unique<Stream>();
  }
  std::size_t vocab_size() const override { return kPieces.size(); }
  std::optional<std::string> token(std::int32_t id) const override { return kPieces.at(std::size_t(id)); }
  std::optional<std::int32_t> token_id(std::string_view) const override { return std::nullopt; }
  bool is_special(std::int32_t) const override { return false; }
  std::vector<std::int32_t> special_ids() const override { return {}; }
  std::string description() const override { return "pieces"; }
};

StopChecker checker(std::int64_t max_position = 100) {
  static const PieceTokenizer tokenizer;
  return StopChecker({2}, max_position, &tokenizer);
}

Sequence sequence(SamplingParams p, std::vector<std::int32_t> prompt = {0, 1}) {
  Sequence s;
  s.params = std::move(p);
  s.tokens = std::move(prompt);
  s.prompt_length = std::int64_t(s.tokens.size());
  return s;
}

// Feeds tokens until one ends the sequence; returns the concatenated stream and the reason.
std::pair<std::string, std::string> feed(const StopChecker& c, Sequence& s, const std::vector<std::int32_t>& tokens) {
  std::string streamed;
  for (std::int32_t t : tokens) {
    const StopChecker::Verdict v = c.accept(s, t);
    if (v.stream) streamed += std::string(v.text);
    if (!v.finish_reason.empty()) return {streamed, v.finish_reason};
  }
  return {streamed, ""};
}
}  // namespace

TEST_CASE("stop checker: the end-of-sequence token ends a sequence unless ignored", "[engine][stops]") {
  SamplingParams p;
  Sequence s = sequence(p);
  const StopChecker c = checker();
  StopChecker::Verdict v = c.accept(s, 3);
  REQUIRE((v.finish_reason.empty() && v.stream && v.text == " upon" && !v.eos));
  v = c.accept(s, 2);
  REQUIRE((v.eos && v.finish_reason == "stop" && s.tokens.size() == 3 && s.text == " upon"));
  REQUIRE(!v.stream);  // nothing left to release

  p.ignore_eos = true;
  Sequence ignoring = sequence(p);
  v = c.accept(ignoring, 2);
  REQUIRE((!v.eos && v.finish_reason.empty() && ignoring.tokens.back() == 2 && ignoring.text == "</s>"));
}

TEST_CASE("stop checker: max_tokens and the model's context end a sequence with length", "[engine][stops]") {
  SamplingParams p;
  p.max_tokens = 3;
  Sequence s = sequence(p);
  REQUIRE(feed(checker(), s, {3, 4, 5, 6}) == std::make_pair(std::string(" upon a time"), std::string("length")));
  REQUIRE(s.generated() == 3);
  p.max_tokens = 100;
  Sequence t = sequence(p);
  // A context of 4 positions: the prompt's 2 and two generated tokens.
  REQUIRE(feed(checker(4), t, {3, 4, 5}) == std::make_pair(std::string(" upon a"), std::string("length")));
}

TEST_CASE("stop checker: a stop string across tokens cuts the text and is never streamed", "[engine][stops]") {
  SamplingParams p;
  p.stop = {" End"};
  Sequence s = sequence(p);
  const StopChecker c = checker();
  // " time" is released; " E" could begin " End", so it is held back; "nd" completes the stop string.
  StopChecker::Verdict v = c.accept(s, 5);
  REQUIRE(v.text == " time");
  v = c.accept(s, 7);
  REQUIRE((v.text.empty() && v.finish_reason.empty()));
  v = c.accept(s, 8);
  REQUIRE((v.finish_reason == "stop" && v.text.empty() && s.text == " time"));

  // A held-back prefix that turns out not to be the stop string is released with the next token.
  Sequence t = sequence(p);
  REQUIRE(feed(c, t, {7, 9, 2}) == std::make_pair(std::string(" E!"), std::string("stop")));
}

TEST_CASE("stop checker: of several stop strings, the one that starts first cuts", "[engine][stops]") {
  SamplingParams p;
  p.stop = {"time", " a "};
  Sequence s = sequence(p);
  // " upon a time": both complete with " time"; " a " starts at 5, "time" at 8.
  REQUIRE(feed(checker(), s, {3, 4, 5, 6}) == std::make_pair(std::string(" upon"), std::string("stop")));
  REQUIRE(s.text == " upon");
}

TEST_CASE("stop checker: request stop token ids end a sequence like EOS", "[engine][stops]") {
  SamplingParams p;
  p.stop_token_ids = {9};
  Sequence s = sequence(p);
  REQUIRE(feed(checker(), s, {3, 9, 4}) == std::make_pair(std::string(" upon"), std::string("stop")));
  REQUIRE(s.tokens.size() == 3);  // "!" ended it and was not appended
  p.ignore_eos = true;
  Sequence ignoring = sequence(p);
  REQUIRE(feed(checker(), ignoring, {9, 2, 5}) == std::make_pair(std::string("!</s> time"), std::string("")));
}

TEST_CASE("stop checker: text is complete UTF-8 at every step, the end flushes a cut character", "[engine][stops]") {
  SamplingParams p;
  p.max_tokens = 3;
  Sequence s = sequence(p);
  const StopChecker c = checker();
  StopChecker::Verdict v = c.accept(s, 10);  // the first byte of "é": nothing yet
  REQUIRE((v.finish_reason.empty() && v.text.empty()));
  v = c.accept(s, 11);
  REQUIRE(v.text == "\xC3\xA9");
  v = c.accept(s, 10);  // length: the lone byte becomes U+FFFD, as decode(all ids) has it
  REQUIRE((v.finish_reason == "length" && v.text == "\xEF\xBF\xBD" && s.text == "\xC3\xA9\xEF\xBF\xBD"));

  // Ids beyond the tokenizer (a model's padded vocabulary) add no text.
  Sequence padded = sequence(SamplingParams{});
  REQUIRE(feed(c, padded, {3, 500, 4}).first == " upon a");
}

TEST_CASE("stop checker: the decode session starts from the prompt", "[engine][stops]") {
  // The prompt ends with the first byte of "é"; the generated second byte completes it.
  Sequence s = sequence(SamplingParams{}, {0, 10});
  REQUIRE(std::string(checker().accept(s, 11).text) == "\xC3\xA9");
}
