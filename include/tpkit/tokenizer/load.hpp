// tpkit/tokenizer/load.hpp: a tokenizer from a path, whatever its format: a Hugging Face
// tokenizer.json, a llama2.c tokenizer.bin, or a model directory holding either.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "tpkit/core/error.hpp"
#include "tpkit/tokenizer/hf_tokenizer.hpp"
#include "tpkit/tokenizer/llama2c_tokenizer.hpp"
#include "tpkit/tokenizer/tokenizer.hpp"

namespace tpkit {

// The tokenizer file a model directory holds: tokenizer.json first, then a llama2.c
// tokenizer.bin / tok512.bin / tok32000.bin. Empty when there is none.
inline std::string find_tokenizer_file(const std::string& directory) {
  namespace fs = std::filesystem;
  for (const char* name : {"tokenizer.json", "tokenizer.bin", "tok512.bin", "tok32000.bin"}) {
    const fs::path p = fs::path(directory) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return {};
}

// The folder a model or tokenizer path names: the path itself when it is a directory, else the
// folder holding the file (where tokenizer_config.json and the chat template are looked for).
inline std::string folder_of(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path;
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The tokenizer beside a model (a Hugging Face directory or a llama2.c .bin file): what
// find_tokenizer_file finds in its folder. The library never guesses; applications call this.
inline std::string find_tokenizer_beside(const std::string& model_path) {
  return find_tokenizer_file(folder_of(model_path));
}

// `path`: a tokenizer.json (any *.json), a llama2.c tokenizer file, or a directory holding one.
inline std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = find_tokenizer_file(path);
    if (file.empty())
      throw InvalidArgument(path + " holds no tokenizer (tokenizer.json, tokenizer.bin, tok512.bin or tok32000.bin)");
  }
  if (fs::path(file).extension() == ".json") return std::make_unique<HfTokenizer>(file);
  return std::make_unique<Llama2cTokenizer>(file);
}

}  // namespace tpkit
