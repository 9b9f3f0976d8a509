// tools/tokenizer.cpp: kiln_tokenizer, training a byte-level BPE tokenizer (kiln/data/tokenizer.hpp) on text, as
// the playbook trains one before tokenizing a corpus; no recipe involved.
//   kiln_tokenizer train <inputs...> --vocab N --out tok.json [--special <|endoftext|>]... [--format ...] [--force]
//   kiln_tokenizer chat-template                  the chat template (kiln/data/chat.hpp) in Jinja
//   kiln_tokenizer chat <tok.json> <convs.jsonl>  each conversation's text, ids and loss mask, a JSON line each
// Inputs are what kiln_tokenize reads as text: files, directories (every text file below), .jsonl (--field),
// fortune files. Every limit is checked before the work starts (vocabulary size against the bytes and special
// tokens, the output's directory, an existing output), and the tokenizer is written atomically (a temp file renamed
// into place), so a failed or interrupted run leaves no half-written tokenizer.json.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "kiln/data/chat.hpp"
#include "kiln/data/text_sources.hpp"
#include "kiln/data/tokenizer.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"Kiln's tokenizer tools"};
  app.require_subcommand(1);
  auto* train = app.add_subcommand("train", "train a byte-level BPE (Llama-3 pre-tokenizer, GPT-2 byte alphabet) on text");
  std::vector<std::string> inputs, specials = {"<|endoftext|>"};
  std::string out, format = "auto", field = "text";
  int vocab = 0;
  bool split_lines = false, force = false;
  train->add_option("inputs", inputs, "text files, directories, .jsonl files, fortune files")->required();
  train->add_option("--vocab", vocab, "vocabulary size: 256 bytes + special tokens + merges")->required();
  train->add_option("-o,--out", out, "the tokenizer.json to write")->required();
  train->add_option("--special", specials, "special tokens (repeatable): the last ids, in this order")->capture_default_str();
  train->add_option("--format", format, "text input format")->check(CLI::IsMember({"auto", "text", "jsonl", "fortune"}))
      ->capture_default_str();
  train->add_option("--field", field, "jsonl field holding the document")->capture_default_str();
  train->add_flag("--split-lines", split_lines, "text files: one document per non-empty line (default: per file)");
  train->add_flag("--force", force, "replace an existing --out");
  // The chat format (kiln/data/chat.hpp): its Jinja template, and the ids and loss mask Kiln makes of conversations
  // (what tests/reference/make_chat_fixture.py checks against transformers' apply_chat_template).
  auto* tmpl = app.add_subcommand("chat-template", "print the chat template (Jinja, as tokenizer_config.json holds it)");
  auto* chat = app.add_subcommand("chat", "render and tokenize conversations (jsonl, {\"messages\": [...]} a line): "
                                  "one JSON line each, {text, ids, mask}");
  std::string chat_tok, chat_file;
  bool generation_prompt = false;
  chat->add_option("tokenizer", chat_tok, "tokenizer.json (with the chat tokens)")->required();
  chat->add_option("conversations", chat_file, "jsonl of conversations")->required();
  chat->add_flag("--generation-prompt", generation_prompt, "end each with the opening of an assistant turn");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*tmpl) {
      std::printf("%s\n", kiln::data::chat_template_jinja().c_str());
      return 0;
    }
    if (*chat) {
      const kiln::data::Tokenizer tok = kiln::data::Tokenizer::load(chat_tok);
      const std::string missing = kiln::data::missing_chat_tokens(tok);
      KILN_CHECK(missing.empty(), chat_tok, ": the tokenizer lacks the chat tokens ", missing);
      for (const auto& c : kiln::data::read_conversations(chat_file, /*need_answer=*/!generation_prompt)) {
        const auto text = kiln::data::render_chat(c.messages, generation_prompt);
        const auto t = kiln::data::tokenize_chat(tok, text);
        std::printf("%s\n", nlohmann::json{{"text", text.text}, {"ids", t.ids}, {"mask", t.trained}}.dump().c_str());
      }
      return 0;
    }
    // The limits first: nothing is read before they hold.
    KILN_CHECK(vocab >= 256 + int(specials.size()), "--vocab ", vocab, ": must be at least 256 (the bytes) + ",
               specials.size(), " (the special tokens)");
    KILN_CHECK(vocab < (1 << 24), "--vocab ", vocab, ": must be below 2^24");
    const fs::path target = fs::absolute(out);
    std::error_code ec;
    KILN_CHECK(!fs::is_directory(target, ec), "--out ", out, ": is a directory; name the tokenizer.json file to write");
    KILN_CHECK(force || !fs::exists(target, ec), "--out ", out, ": exists; add --force to replace it");
    KILN_CHECK(fs::is_directory(target.parent_path(), ec), "--out ", out, ": its directory ",
               target.parent_path().string(), " does not exist");
    const std::vector<std::string> files = kiln::data::text_files(inputs);
    KILN_CHECK(!files.empty(), "no text files in ", inputs.size() == 1 ? inputs[0] : "the inputs");
    uint64_t bytes = 0;
    for (const auto& f : files) bytes += fs::file_size(f, ec);
    std::fprintf(stderr, "kiln_tokenizer: %zu file%s, %.1f MiB of text -> a BPE of %d entries (%zu special)\n",
                 files.size(), files.size() == 1 ? "" : "s", double(bytes) / 1048576.0, vocab, specials.size());

    const auto t0 = std::chrono::steady_clock::now();
    kiln::data::TextStream in(files, kiln::data::TextOptions{format, field, split_lines});
    std::vector<std::string> docs;
    std::string doc;
    while (in.next(doc)) docs.push_back(doc);
    KILN_CHECK(!docs.empty(), "the inputs hold no documents");
    const kiln::data::Tokenizer tok = kiln::data::Tokenizer::train(docs, vocab, specials);
    tok.save(target.string());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    uint64_t tokens = 0, text = 0;
    for (const auto& d : docs) {
      tokens += tok.encode(d).size();
      text += d.size();
    }
    std::printf("kiln_tokenizer: wrote %s: %d entries, trained on %zu documents in %.1f s; %.2f bytes per token on "
                "them\n", target.c_str(), tok.vocab_size(), docs.size(), s, tokens ? double(text) / double(tokens) : 0.0);
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON)
    std::fprintf(stderr, "kiln_tokenizer: error: %s\n", e.what());
    return 1;
  }
}
