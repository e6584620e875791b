// tpkit/tokenizer/tokenizer.hpp: what every tokenizer offers (the llama2.c tokenizer.bin and
// Hugging Face tokenizer.json): encode with or without special tokens, decode, token pieces,
// special ids, the id space, and a per-request decode stream for streaming text.
//
// A tokenizer is immutable once loaded: one instance serves every thread. The state of decoding
// one request lives in its DecodeStream, the session object (as llama.cpp keeps its vocabulary
// apart from a tokenizer session).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tpkit {

struct EncodeOptions {
  // Add what the tokenizer adds around a text (a BOS, the post-processor's template).
  bool add_special_tokens = false;
  // Special tokens typed in the text become their ids. Off for user content (a user who types
  // "<|im_end|>" gets text, not an end of turn); on for a rendered chat template.
  bool parse_special = false;
};

// Turns one request's ids into text as they arrive. push() returns the text that became final
// with `id`: complete UTF-8 only, so a character split across byte tokens waits for its last
// byte, and a SentencePiece leading space or a byte-fallback run comes out as the whole decode
// would have it. The pieces of push() and finish() concatenate to exactly decode(all ids).
class DecodeStream {
 public:
  virtual ~DecodeStream() = default;
  // Throws InvalidArgument for an id outside [0, vocab_size()).
  virtual std::string push(std::int32_t id) = 0;
  virtual std::string finish() = 0;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `text` need not be valid UTF-8: each maximal invalid subpart is read as U+FFFD (as Python's
  // "replace" error handler does before text reaches Hugging Face tokenizers).
  virtual std::vector<std::int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const = 0;

  // A fresh decode session. With skip_special_tokens, special tokens produce no text.
  virtual std::unique_ptr<DecodeStream> decode_stream(bool skip_special_tokens = false) const = 0;

  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens = false) const {
    const auto stream = decode_stream(skip_special_tokens);
    std::string text;
    for (std::int32_t id : ids) text += stream->push(id);
    return text + stream->finish();
  }

  // Ids run over [0, vocab_size()); an id there may still have no token (a hole in the id space).
  virtual std::size_t vocab_size() const = 0;
  // The token's string as the vocabulary spells it ("Ġworld", "▁Hello", "<0x0A>"); nullopt for a hole.
  virtual std::optional<std::string> token(std::int32_t id) const = 0;
  virtual std::optional<std::int32_t> token_id(std::string_view token) const = 0;
  // Special tokens: dropped by skip_special_tokens, matched in text only with parse_special.
  virtual bool is_special(std::int32_t id) const = 0;
  virtual std::vector<std::int32_t> special_ids() const = 0;
  // What was loaded, for messages: "llama2.c tokenizer.bin" or "tokenizer.json (BPE)".
  virtual std::string description() const = 0;
};

}  // namespace tpkit
