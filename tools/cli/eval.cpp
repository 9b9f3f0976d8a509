// tools/cli/eval.cpp: `train_<recipe> eval`, compiled once into kiln_trainer_cli: a checkpoint scored on
// multiple-choice tasks (kiln/eval: HellaSwag, ARC / OpenBookQA, PIQA, WinoGrande or MMLU jsonl) in the cloze and
// the multiple-choice formulations, and on texts (bits per byte), pairs packed into the micro-batches of the
// checkpoint's phase and run through the CPU's evaluation program.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "kiln/data/bytes.hpp"
#include "kiln/data/tokenizer.hpp"
#include "kiln/eval/score.hpp"
#include "kiln/eval/tasks.hpp"
#include "kiln/io/jsonl.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/checkpointing.hpp"
#include "cli/commands.hpp"

namespace kiln::cli {

int eval_main(int argc, char** argv, const RecipeProgram& r) {
  const char* name = r.name.c_str();
  CLI::App app{std::string("Score a checkpoint of recipe ") + name + " on multiple-choice tasks"};
  std::string checkpoint = std::string("runs/") + name + "/checkpoints", formulation = "both", jsonl;
  std::vector<std::string> tasks, texts;
  long limit = 0;
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory, or a checkpoints root (its newest valid one)")
      ->capture_default_str();
  app.add_option("--task", tasks, "a task's jsonl file (HellaSwag, ARC / OpenBookQA, PIQA, WinoGrande or MMLU "
                 "layout; repeatable)");
  app.add_option("--text", texts, "a text file whose bits per byte to measure (repeatable)");
  app.add_option("--formulation", formulation, "cf (each answer's text), mcf (the answer letters) or both")
      ->check(CLI::IsMember({"cf", "mcf", "both"}))->capture_default_str();
  std::vector<int> by_position;
  std::string phase;
  app.add_option("--by-position", by_position, "with --text: also the mean loss at positions split at these edges "
                 "(e.g. 256,512: [0,256), [256,512), [512,T)), each row of T tokens one sequence")
      ->delimiter(',');
  app.add_option("--phase", phase, "score under this phase's model and shape (default: the checkpoint's phase), e.g. "
                 "a checkpoint of a short phase at the long phase's length and theta: where that phase starts");
  app.add_option("--limit", limit, "score the first N examples of each task (0: all)")->check(CLI::NonNegativeNumber);
  app.add_option("--jsonl", jsonl, "also append one JSON line a task and formulation to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!by_position.empty() && texts.empty()) {
    std::fprintf(stderr, "kiln: error: eval: --by-position measures a --text file\n");
    return 1;
  }
  if (tasks.empty() && texts.empty()) {
    std::fprintf(stderr, "kiln: error: eval: give --task <file.jsonl> or --text <file> (or both)\n");
    return 1;
  }
  try {
    const ToolCheckpoint ck = open_checkpoint(checkpoint, r);
    KILN_CHECK(ck.tokenizer || ck.info.value("byte_level", true), ck.dir.string(), " has no tokenizer and its ids "
               "are not bytes (imported without tokenizer.json): the task's text cannot be encoded as it was trained");
    const auto encode = [&](const std::string& t) { return ck.encode(t); };
    int B = 0, T = 0, at = ck.phase;
    if (!phase.empty()) {
      at = r.find_phase(phase);
      KILN_CHECK(at >= 0, "--phase ", phase, ": not a phase of recipe ", name, " (its phases: ", r.phase_list(), ")");
    }
    const auto run = r.make_scorer(at, ck.params.data(), &B, &T);
    std::printf("kiln: %s at step %lld | %s | phase %s: %s theta %g | pairs packed %d x %d a micro-batch\n",
                ck.dir.c_str(), ck.step, ck.tokenizer ? ("tokenizer " + ck.tokenizer_path).c_str() : "byte-level tokens",
                std::string(r.phases[size_t(at)].shape.name).c_str(), r.phases[size_t(at)].positional.c_str(),
                r.phases[size_t(at)].theta, B, T);
    std::unique_ptr<io::JsonlWriter> out;
    if (!jsonl.empty()) out = std::make_unique<io::JsonlWriter>(jsonl, true);
    for (const std::string& path : texts) {
      std::ifstream f(path, std::ios::binary);
      KILN_CHECK(f.good(), path, ": cannot open the text file");
      const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
      const std::vector<int32_t> ids = encode(text);
      const auto bpb = eval::bits_per_byte(ids, B, T, run,
                                           [&](const std::vector<int32_t>& v) { return long(ck.decode(v).size()); });
      std::printf("%s: %.4f bits per byte (%ld tokens scored, %ld bytes, %.4f nats a token)\n", path.c_str(),
                  bpb.bits_per_byte, bpb.tokens, bpb.bytes, bpb.nats / double(bpb.tokens));
      if (out)
        out->write({{"checkpoint", ck.dir.string()}, {"step", ck.step}, {"text", path},
                    {"bits_per_byte", bpb.bits_per_byte}, {"tokens", bpb.tokens}, {"bytes", bpb.bytes}});
      if (by_position.empty()) continue;
      const eval::PositionLoss pl = eval::loss_by_position(ids, B, T, run, by_position);
      std::printf("%s: loss by position (%ld rows of %d tokens, each from position 0):", path.c_str(), pl.rows, T);
      nlohmann::json buckets = nlohmann::json::array();
      for (size_t e = 0; e < pl.nats.size(); ++e) {
        std::printf(" [%d, %d) %.4f%s", pl.edges[e], pl.edges[e + 1], pl.nats[e], e + 1 < pl.nats.size() ? "," : "\n");
        buckets.push_back({{"from", pl.edges[e]}, {"to", pl.edges[e + 1]}, {"nats", pl.nats[e]}, {"tokens", pl.tokens[e]}});
      }
      if (out)
        out->write({{"checkpoint", ck.dir.string()}, {"step", ck.step}, {"text", path},
                    {"phase", std::string(r.phases[size_t(at)].shape.name)}, {"loss_by_position", buckets}});
    }
    if (tasks.empty()) return 0;
    std::printf("%-28s %-10s %-4s %8s %8s %10s %10s %8s %9s\n", "task", "layout", "form", "examples", "acc",
                "acc_norm", "acc_tok", "random", "truncated");
    for (const std::string& path : tasks) {
      eval::Task t = eval::read_task(path);
      if (limit > 0 && long(t.examples.size()) > limit) t.examples.resize(size_t(limit));
      for (const eval::Formulation f : {eval::Formulation::cloze, eval::Formulation::multiple_choice}) {
        if (formulation != "both" && (formulation == "cf") != (f == eval::Formulation::cloze)) continue;
        const eval::TaskResult res = eval::evaluate(t.examples, f, encode, B, T, run);
        const eval::Metrics& m = res.metrics;
        const std::string task = std::filesystem::path(path).filename().string();
        std::printf("%-28s %-10s %-4s %8ld %8.4f %10.4f %10.4f %8.4f %9ld\n", task.c_str(), t.layout.c_str(),
                    eval::formulation_name(f), m.examples, m.acc, m.acc_norm_char, m.acc_norm_token, m.random,
                    res.truncated);
        if (out)
          out->write({{"checkpoint", ck.dir.string()}, {"step", ck.step}, {"task", path}, {"layout", t.layout},
                      {"formulation", eval::formulation_name(f)}, {"examples", m.examples}, {"acc", m.acc},
                      {"acc_norm_char", m.acc_norm_char}, {"acc_norm_token", m.acc_norm_token},
                      {"random", m.random}, {"truncated", res.truncated}});
      }
    }
    std::printf("(acc_norm: by the answer's characters, lm-eval's acc_norm; acc_tok: by its tokens; truncated: pairs "
                "whose context lost tokens on the left to fit %d)\n", T);
    return 0;
  } catch (const std::exception& e) {
    std::fflush(stdout);  // the table so far, then the message
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
