// tpkit-tokenize: a tokenizer and chat template from the command line, as llama.cpp's
// llama-tokenize: text on stdin to ids, ids to text, or a conversation to the exact prompt.
//
//   echo -n "Hello world" | tpkit-tokenize --tokenizer ../shared/models/tokenizers/qwen3
//   [9707, 1879]
//   echo "[9707, 1879]" | tpkit-tokenize --tokenizer qwen3/tokenizer.json --decode
//   Hello world
//   echo '{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}' |
//     tpkit-tokenize --tokenizer qwen3 --render-chat
//
// --tokenizer is a tokenizer.json, a model directory, or a llama2.c tokenizer.bin; the chat
// template comes from the same folder (chat_template.jinja or tokenizer_config.json). Ids are
// printed as one JSON array and a newline; decoded text and rendered prompts exactly as they
// are (no newline added). Errors: one line on stderr, exit 1 (2 for a bad command line).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <tpkit/core/error.hpp>
#include <tpkit/io/json.hpp>
#include <tpkit/io/mapped_file.hpp>
#include <tpkit/jinja/chat_template.hpp>
#include <tpkit/tokenizer/load.hpp>

namespace {

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void write(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Encode text, decode ids, or render a chat prompt with a model's tokenizer and chat template.",
               "tpkit-tokenize");
  std::string path;
  bool add_special = false, parse_special = false, decode = false, skip_special = false, render_chat = false;
  app.add_option("--tokenizer", path, "tokenizer.json, a model directory, or a llama2.c tokenizer.bin")
      ->required()
      ->check(CLI::ExistingPath);
  app.add_flag("--add-special-tokens", add_special, "encode: add the tokenizer's special tokens (a BOS, its template)");
  app.add_flag("--parse-special", parse_special, "encode: special-token text in the input becomes its id");
  auto* decode_flag = app.add_flag("--decode", decode, "read a JSON array of ids on stdin and print their text");
  app.add_flag("--skip-special-tokens", skip_special, "decode: special tokens produce no text")->needs(decode_flag);
  app.add_flag("--render-chat", render_chat,
               "read {\"messages\", \"add_generation_prompt\", \"chat_template_kwargs\", \"tools\"} on stdin and "
               "print the prompt the chat template renders")
      ->excludes(decode_flag);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    const std::string input = read_stdin();
    if (render_chat) {
      const auto chat = tpkit::jinja::ChatTemplate::from_model(tpkit::folder_of(path));
      if (!chat)
        throw tpkit::Error(tpkit::folder_of(path) +
                           " has no chat template (chat_template.jinja or tokenizer_config.json)");
      const tpkit::Json request = tpkit::Json::parse(input, "stdin");
      if (!request.is_object()) throw tpkit::FormatError("stdin: expected a JSON object with \"messages\"");
      tpkit::jinja::ChatInput chat_input;
      chat_input.messages = request.at("messages");
      if (const tpkit::Json* tools = request.find("tools")) chat_input.tools = *tools;
      if (const tpkit::Json* g = request.find("add_generation_prompt")) chat_input.add_generation_prompt = g->boolean();
      if (const tpkit::Json* k = request.find("chat_template_kwargs"); k && !k->is_null()) chat_input.kwargs = *k;
      write(chat->render(chat_input));
      return 0;
    }
    const auto tokenizer = tpkit::load_tokenizer(path);
    if (decode) {
      const tpkit::Json ids = tpkit::Json::parse(input, "stdin");
      if (!ids.is_array()) throw tpkit::FormatError("stdin: expected a JSON array of token ids");
      std::vector<std::int32_t> list;
      for (const tpkit::Json& id : ids.array())
        list.push_back(std::int32_t(id.integer(0, (std::int64_t(1) << 31) - 1)));
      write(tokenizer->decode(list, skip_special));
      return 0;
    }
    tpkit::EncodeOptions options;
    options.add_special_tokens = add_special;
    options.parse_special = parse_special;
    std::string out = "[";
    for (std::int32_t id : tokenizer->encode(input, options)) out += (out.size() > 1 ? ", " : "") + std::to_string(id);
    write(out + "]\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-tokenize: %s\n", tpkit::user_message(e).c_str());
    return 1;
  }
  return 0;
}
