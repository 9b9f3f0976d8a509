// tools/make_task.cpp: kiln_make_task, an evaluation task made from text on this machine (kiln/eval/make_tasks.hpp):
//   kiln_make_task /usr/share/games/fortunes --out runs/tasks/fortunes.jsonl [--count 500] [--seed 1] [--choices 4]
// writes HellaSwag-layout jsonl (ctx, endings, label, source): each fortune's beginning with its true ending and
// endings of other fortunes of the closest lengths, which `train_<recipe> eval --task` (tools/kiln eval) scores.
// --retrieval MIN:MAX makes a retrieval task instead: a password stated, MIN to MAX characters of the documents as
// filler, the password asked for (the long-context demonstration's probe; --held-out 20 for unseen filler).
// --instructions makes the instruction-following probe of post-training: a request for a fortune of a topic (the
// chat template's prompt), the endings a fortune of that topic and of others (--held-out 20: unseen fortunes).
// Inputs as kiln_tokenize reads them (text, jsonl, fortune files, directories).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>

#include "kiln/core/file.hpp"
#include "kiln/data/chat_synthetic.hpp"
#include "kiln/data/text_sources.hpp"
#include "kiln/eval/make_tasks.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Make a HellaSwag-layout completion task (jsonl) from text files"};
  std::vector<std::string> inputs;
  std::string out;
  kiln::eval::CompletionOptions o;
  kiln::data::TextOptions t;
  app.add_option("inputs", inputs, "text files or directories (fortune files, text, jsonl)")->required();
  app.add_option("--out", out, "the task file to write (jsonl)")->required();
  app.add_option("--count", o.count, "examples (at most one a document)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--choices", o.choices, "endings an example")->capture_default_str()->check(CLI::Range(2, 26));
  app.add_option("--seed", o.seed, "the order, the distractors and the labels' places")->capture_default_str();
  app.add_option("--min-chars", o.min_chars, "documents shorter are not used")->capture_default_str();
  app.add_option("--max-chars", o.max_chars, "documents longer are not used")->capture_default_str();
  int held_out = 0;
  app.add_option("--held-out", held_out, "only the documents a trainer holds out with --val-every n (the demo's 20): "
                 "a task the runs never trained on (0: every document)")->capture_default_str()->check(CLI::NonNegativeNumber);
  std::string retrieval;
  app.add_option("--retrieval", retrieval, "MIN:MAX: a retrieval task instead (kiln/data/synthetic.hpp): a password, "
                 "MIN to MAX characters of the documents as filler, the question; the endings are keys");
  bool instructions = false;
  app.add_flag("--instructions", instructions, "an instruction-following probe instead (kiln/data/chat_synthetic.hpp): "
               "a request for a fortune of a topic in the chat template, the endings fortunes of that topic and of "
               "others (fortune files named computers, love, ...; --max-chars bounds them)");
  app.add_option("--format", t.format, "auto, text, jsonl or fortune")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    KILN_CHECK(held_out != 1, "--held-out 1 would hold out every document; give the trainer's --val-every (>= 2)");
    kiln::data::TextStream in(inputs, t);
    std::vector<std::pair<std::string, std::string>> docs;
    for (std::string d; in.next(d);)
      if (held_out < 2 || kiln::data::held_out_document(d, held_out))
        docs.emplace_back(d, std::filesystem::path(in.current_file()).filename().string());
    std::vector<nlohmann::json> records;
    KILN_CHECK(!(instructions && !retrieval.empty()), "--instructions and --retrieval make different tasks: give one");
    if (instructions) {
      records = kiln::data::instruction_task(docs, o.count, o.choices, o.max_chars, o.seed);
    } else if (retrieval.empty()) {
      records = kiln::eval::completion_task(docs, o);
    } else {
      kiln::data::RetrievalOptions r;
      r.seed = o.seed;
      const size_t colon = retrieval.find(':');
      try {
        KILN_CHECK(colon != std::string::npos, "");
        size_t used = 0;
        r.min_chars = std::stoi(retrieval.substr(0, colon), &used);
        KILN_CHECK(used == colon, "");
        r.max_chars = std::stoi(retrieval.substr(colon + 1), &used);
        KILN_CHECK(used == retrieval.size() - colon - 1, "");
      } catch (const std::exception&) {
        KILN_CHECK(false, "--retrieval ", retrieval, ": expected MIN:MAX characters of filler, e.g. 1600:2400");
      }
      std::vector<std::string> texts;
      for (const auto& d : docs) texts.push_back(d.first);
      records = kiln::eval::retrieval_task(texts, o.count, o.choices, r);
    }
    std::string text;
    for (const auto& r : records) text += r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    kiln::core::write_text_atomic(out, text);
    std::printf("kiln_make_task: %zu examples of %d endings from %zu documents -> %s\n", records.size(), o.choices,
                docs.size(), out.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_make_task: error: %s\n", e.what());
    return 1;
  }
}
