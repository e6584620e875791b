// tpkit/tokenizer/decoders.hpp: the decoders of tokenizer.json as streams.
//
// Hugging Face decoders transform the list of token strings (ByteLevel, Replace, ByteFallback,
// Fuse, Strip, Metaspace, chained by Sequence); some act on each token, some on the whole list.
// Here each is a stage that takes the text a piece at a time: a Chunk carries text and whether it
// begins and ends a token, so a per-token stage still knows its token's edges after Fuse has
// joined everything into one. A stage releases text as soon as no later token can change it and
// holds the rest (a UTF-8 sequence cut between byte tokens, a byte-fallback run, trailing
// characters Strip may drop). decode() is this same stream run to the end, so the streamed
// pieces concatenate to the full decode by construction.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tpkit/core/error.hpp"
#include "tpkit/tokenizer/unicode.hpp"

namespace tpkit {

// GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the other 68
// bytes for U+0100 onwards, so every byte string is a printable token string.
class ByteLevelMap {
 public:
  static const ByteLevelMap& get() {
    static const ByteLevelMap map;
    return map;
  }
  const std::string& char_of(unsigned char byte) const { return chars_[byte]; }
  // The byte a character stands for, or -1.
  int byte_of(char32_t c) const { return c < 0x144 ? bytes_[c] : -1; }

  // Each byte of `text` as its character.
  std::string encode(std::string_view text) const {
    std::string out;
    out.reserve(text.size() * 2);
    for (unsigned char b : text) out += chars_[b];
    return out;
  }

 private:
  ByteLevelMap() {
    bytes_.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? char32_t(b) : char32_t(next++);
      chars_[std::size_t(b)] = unicode::utf8(c);
      bytes_[c] = b;
    }
  }
  std::array<std::string, 256> chars_;
  std::array<int, 0x144> bytes_;
};

struct Chunk {
  std::string text;
  bool begins = true, ends = true;  // whether it begins / ends a token
};
using Chunks = std::vector<Chunk>;

class DecoderStage {
 public:
  virtual ~DecoderStage() = default;
  virtual void push(Chunk chunk, Chunks& out) = 0;
  virtual void finish(Chunks& out) = 0;
};

// A decoder as configured; start() makes the per-stream state.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::unique_ptr<DecoderStage> start() const = 0;
};

namespace decoders {

// Collects a token that arrives in pieces, for stages that need whole tokens.
struct WholeTokens {
  std::string pending;
  bool open = false;
  // The whole token once `chunk` ends it, else nullptr.
  const std::string* add(Chunk& chunk) {
    if (chunk.begins && chunk.ends) {
      pending = std::move(chunk.text);
      open = false;
      return &pending;
    }
    if (chunk.begins) pending.clear();
    pending += chunk.text;
    open = !chunk.ends;
    return chunk.ends ? &pending : nullptr;
  }
};

// The bytes of each token (through the byte map; a token with a character outside it as its own
// UTF-8), joined into one token and decoded lossily.
class ByteLevel : public Decoder {
 public:
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(); }

 private:
  struct Stage : DecoderStage {
    WholeTokens tokens;
    unicode::Utf8Stream utf8;
    bool begun = false;
    void emit(std::string text, bool ends, Chunks& out) {
      if (text.empty() && !ends) return;
      out.push_back({std::move(text), !begun, ends});
      begun = true;
    }
    void push(Chunk chunk, Chunks& out) override {
      const std::string* token = tokens.add(chunk);
      if (!token) return;
      const ByteLevelMap& map = ByteLevelMap::get();
      std::string bytes;
      bytes.reserve(token->size());
      bool mapped = true;
      for (std::size_t at = 0; at < token->size() && mapped;) {
        const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(*token, at).valid);
        const int b = map.byte_of(unicode::utf8_code_point(*token, at, n));
        if (b < 0) mapped = false;
        bytes += char(b);
        at += n;
      }
      emit(utf8.push(mapped ? std::string_view(bytes) : std::string_view(*token)), false, out);
    }
    void finish(Chunks& out) override { emit(utf8.finish(), true, out); }
  };
};

// Replaces each occurrence of a string inside each token.
class Replace : public Decoder {
 public:
  Replace(std::string pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(*this); }

 private:
  struct Stage : DecoderStage {
    const Replace& d;
    std::string carry;  // the end of the open token that may begin the pattern
    bool open = false;
    explicit Stage(const Replace& r) : d(r) {}
    void push(Chunk chunk, Chunks& out) override {
      const bool begins = chunk.begins || !open;
      std::string s = (chunk.begins ? std::string() : std::move(carry)) + chunk.text;
      carry.clear();
      std::string replaced;
      std::size_t at = 0;
      if (!d.pattern_.empty())
        for (std::size_t hit; (hit = s.find(d.pattern_, at)) != std::string::npos; at = hit + d.pattern_.size())
          replaced.append(s, at, hit - at).append(d.content_);
      if (!chunk.ends && !d.pattern_.empty()) {
        // Hold the longest tail that is a proper prefix of the pattern.
        for (std::size_t k = std::min(d.pattern_.size() - 1, s.size() - at); k > 0; --k)
          if (s.compare(s.size() - k, k, d.pattern_, 0, k) == 0) {
            carry = s.substr(s.size() - k);
            s.resize(s.size() - k);
            break;
          }
      }
      replaced.append(s, at, std::string::npos);
      out.push_back({std::move(replaced), begins, chunk.ends});
      open = !chunk.ends;
    }
    void finish(Chunks& out) override {
      if (open) out.push_back({std::move(carry), false, true});
      carry.clear();
      open = false;
    }
  };
  std::string pattern_, content_;
};

// Runs of <0xXX> tokens become their bytes: the run as text when it is valid UTF-8, else one
// U+FFFD per byte. A run is held until a token that is not a byte ends it.
class ByteFallback : public Decoder {
 public:
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(); }

  // The byte of a token spelled <0xXX> (Rust's u8::from_str_radix, so "<0x+A>" counts), or -1.
  static int byte_of(std::string_view t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    const auto digit = [](char c) {
      return c >= '0' && c <= '9'   ? c - '0'
             : c >= 'a' && c <= 'f' ? c - 'a' + 10
             : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                    : -1;
    };
    if (t[3] == '+') return digit(t[4]);
    const int hi = digit(t[3]), lo = digit(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

 private:
  struct Stage : DecoderStage {
    WholeTokens tokens;
    std::string run;
    void flush(Chunks& out) {
      if (run.empty()) return;
      if (unicode::is_valid_utf8(run)) {
        out.push_back({run, true, true});
      } else {
        for (std::size_t k = 0; k < run.size(); ++k) out.push_back({unicode::utf8(unicode::kReplacement), true, true});
      }
      run.clear();
    }
    void push(Chunk chunk, Chunks& out) override {
      const std::string* token = tokens.add(chunk);
      if (!token) return;
      const int b = byte_of(*token);
      if (b >= 0) {
        run += char(b);
        return;
      }
      flush(out);
      out.push_back({*token, true, true});
    }
    void finish(Chunks& out) override { flush(out); }
  };
};

// Joins every token into one.
class Fuse : public Decoder {
 public:
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(); }

 private:
  struct Stage : DecoderStage {
    bool begun = false;
    void push(Chunk chunk, Chunks& out) override {
      if (chunk.text.empty()) return;
      out.push_back({std::move(chunk.text), !begun, false});
      begun = true;
    }
    void finish(Chunks& out) override { out.push_back({std::string(), !begun, true}); }
  };
};

// Removes up to `start` copies of `content` from the front of each token and up to `stop` from
// its end.
class Strip : public Decoder {
 public:
  Strip(char32_t content, std::size_t start, std::size_t stop) : content_(content), start_(start), stop_(stop) {}
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(*this); }

 private:
  struct Stage : DecoderStage {
    const Strip& d;
    std::size_t stripped = 0, held = 0;  // held: trailing copies of content not yet released
    bool leading = true, open = false;
    explicit Stage(const Strip& s) : d(s) {}
    void push(Chunk chunk, Chunks& out) override {
      const bool begins = chunk.begins || !open;
      if (chunk.begins) stripped = 0, held = 0, leading = true;
      std::string text;
      const std::string content = unicode::utf8(d.content_);
      for (std::size_t at = 0; at < chunk.text.size();) {
        const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(chunk.text, at).valid);
        const bool is_content = unicode::utf8_code_point(chunk.text, at, n) == d.content_;
        if (leading && is_content && stripped < d.start_) {
          ++stripped;
        } else {
          leading = false;
          if (is_content && d.stop_ > 0) {
            if (held == d.stop_)
              text += content;  // the oldest held copy can no longer be trailing
            else
              ++held;
          } else {
            for (; held > 0; --held) text += content;
            text.append(chunk.text, at, n);
          }
        }
        at += n;
      }
      if (chunk.ends) held = 0;  // the trailing copies are dropped
      out.push_back({std::move(text), begins, chunk.ends});
      open = !chunk.ends;
    }
    void finish(Chunks& out) override {
      if (open) out.push_back({std::string(), false, true});
      open = false;
    }
  };
  char32_t content_;
  std::size_t start_, stop_;
};

// The replacement character becomes a space, and disappears in the first token unless the
// prepend scheme is "never".
class Metaspace : public Decoder {
 public:
  Metaspace(char32_t replacement, bool prepends) : replacement_(replacement), prepends_(prepends) {}
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(*this); }

 private:
  struct Stage : DecoderStage {
    const Metaspace& d;
    std::size_t tokens = 0;
    explicit Stage(const Metaspace& m) : d(m) {}
    void push(Chunk chunk, Chunks& out) override {
      if (chunk.begins) ++tokens;
      const bool first = tokens <= 1;
      std::string text;
      for (std::size_t at = 0; at < chunk.text.size();) {
        const std::size_t n = std::max<std::size_t>(1, unicode::utf8_step(chunk.text, at).valid);
        if (unicode::utf8_code_point(chunk.text, at, n) == d.replacement_) {
          if (!(first && d.prepends_)) text += ' ';
        } else {
          text.append(chunk.text, at, n);
        }
        at += n;
      }
      out.push_back({std::move(text), chunk.begins, chunk.ends});
    }
    void finish(Chunks&) override {}
  };
  char32_t replacement_;
  bool prepends_;
};

// No decoder: tokens joined by single spaces.
class JoinWithSpaces : public Decoder {
 public:
  std::unique_ptr<DecoderStage> start() const override { return std::make_unique<Stage>(); }

 private:
  struct Stage : DecoderStage {
    bool begun = false;
    void push(Chunk chunk, Chunks& out) override {
      if (chunk.begins && begun) out.push_back({" ", false, false});
      out.push_back({std::move(chunk.text), !begun, false});
      begun = true;
    }
    void finish(Chunks& out) override { out.push_back({std::string(), !begun, true}); }
  };
};

class Sequence : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> decoders) : decoders_(std::move(decoders)) {}
  std::unique_ptr<DecoderStage> start() const override {
    auto stage = std::make_unique<Stage>();
    for (const auto& d : decoders_) stage->stages.push_back(d->start());
    return stage;
  }

 private:
  struct Stage : DecoderStage {
    std::vector<std::unique_ptr<DecoderStage>> stages;
    Chunks a, b;
    void run(std::size_t from, Chunks& in, Chunks& out, bool finishing) {
      for (std::size_t k = from; k < stages.size(); ++k) {
        b.clear();
        for (Chunk& c : in) stages[k]->push(std::move(c), b);
        if (finishing) stages[k]->finish(b);
        std::swap(in, b);
      }
      for (Chunk& c : in) out.push_back(std::move(c));
      in.clear();
    }
    void push(Chunk chunk, Chunks& out) override {
      a.clear();
      a.push_back(std::move(chunk));
      run(0, a, out, false);
    }
    void finish(Chunks& out) override {
      a.clear();
      run(0, a, out, true);
    }
  };
  std::vector<std::unique_ptr<Decoder>> decoders_;
};

}  // namespace decoders
}  // namespace tpkit
