// tools/cli/train_main.cpp: the dedicated trainer's main(): recipe defaults, command-line overrides, the run, what the
// model learned (held-out loss, sampled continuations). Compiled once into kiln_trainer_cli; the recipe is a
// RecipeProgram (recipe_program.hpp).
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <xxhash.h>

#include "kiln/backend/blas.hpp"
#include "kiln/core/file.hpp"
#include "kiln/data/bytes.hpp"
#include "kiln/data/tokenizer.hpp"
#include "kiln/eval/chat_probes.hpp"
#include "kiln/eval/score.hpp"
#include "kiln/eval/tasks.hpp"
#include "kiln/io/jsonl.hpp"
#include "kiln/io/tensorboard.hpp"
#include "kiln/parallel/comm.hpp"
#include "kiln/plan/print.hpp"
#include "kiln/train/checkpointing.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/merge.hpp"
#include "kiln/train/run_data.hpp"
#include "kiln/train/schedule.hpp"
#include "kiln/train/signals.hpp"
#include "cli/commands.hpp"
#include "cli/recipe_program.hpp"

namespace kiln::cli {

namespace {
// One --stage value: START[:abs]:NAME=W[,NAME=W...] (or START alone: the natural mixture). START is a fraction of
// the phase's tokens; W multiplies the source's natural share, or with abs is the source's weight (others 0); the
// name * stands for every source not named.
TrainConfig::DataStage parse_stage(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return CLI::ValidationError("--stage", "'" + text + "': " + why +
                                             " (expected START[:abs]:NAME=WEIGHT,..., e.g. 0.7:code=4,math=4)");
  };
  TrainConfig::DataStage st;
  std::string rest = text;
  const size_t colon = rest.find(':');
  try {
    size_t used = 0;
    st.start = std::stod(rest.substr(0, colon), &used);
    if (used != (colon == std::string::npos ? rest.size() : colon)) throw bad("START is not a number");
  } catch (const std::logic_error&) {
    throw bad("START is not a number");
  }
  if (!(st.start >= 0 && st.start < 1)) throw bad("START must be a fraction of the phase in [0, 1)");
  if (colon == std::string::npos) return st;
  rest = rest.substr(colon + 1);
  if (rest.rfind("abs:", 0) == 0) {
    st.absolute = true;
    rest = rest.substr(4);
  }
  if (rest.empty()) throw bad("no NAME=WEIGHT after the start");
  std::stringstream in(rest);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw bad("'" + item + "' is not NAME=WEIGHT");
    double w = 0;
    try {
      size_t used = 0;
      w = std::stod(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw bad("the weight of '" + item.substr(0, eq) + "' is not a number");
    } catch (const std::logic_error&) {
      throw bad("the weight of '" + item.substr(0, eq) + "' is not a number");
    }
    if (!(w >= 0) || !std::isfinite(w)) throw bad("the weight of '" + item.substr(0, eq) + "' must be >= 0");
    st.boost.emplace_back(item.substr(0, eq), w);
  }
  return st;
}

// The program's table: the held-out numbers at the run's start and at each phase's end (what `tools/kiln demo` ends
// with), one column per measure, in the order first seen. Markdown, so <out>/summary.md renders it too.
struct SummaryRow {
  std::string label;
  long step = 0;
  std::vector<std::pair<std::string, double>> values;
};
std::string summary_table(const std::vector<SummaryRow>& rows) {
  std::vector<std::string> cols;
  for (const auto& r : rows)
    for (const auto& [k, v] : r.values)
      if (std::find(cols.begin(), cols.end(), k) == cols.end()) cols.push_back(k);
  std::string out = "| after | step |";
  for (const auto& k : cols) out += " " + k + " |";
  out += "\n|---|---:|";
  for (size_t i = 0; i < cols.size(); ++i) out += "---:|";
  out += "\n";
  for (const auto& r : rows) {
    out += "| " + r.label + " | " + std::to_string(r.step) + " |";
    for (const auto& k : cols) {
      const auto it = std::find_if(r.values.begin(), r.values.end(), [&](const auto& kv) { return kv.first == k; });
      char b[32] = "";
      if (it != r.values.end() && std::isfinite(it->second)) std::snprintf(b, sizeof b, "%.3f", it->second);
      out += std::string(" ") + (b[0] ? b : "-") + " |";
    }
    out += "\n";
  }
  return out;
}
}  // namespace

// Binds every run-time field of TrainConfig to a command-line option (the recipe's value is the default).
void add_train_options(CLI::App& app, TrainConfig& c) {
  static const std::map<std::string, Schedule> schedules = {
      {"constant", Schedule::constant}, {"cosine", Schedule::cosine}, {"linear", Schedule::linear}, {"wsd", Schedule::wsd}};
  app.add_option("--lr", c.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", c.min_lr, "learning rate at the end of the decay")->capture_default_str();
  app.add_option("--warmup", c.warmup, "linear warmup steps")->capture_default_str();
  app.add_option("--steps", c.steps, "optimizer steps")->capture_default_str();
  app.add_option("--schedule", c.schedule, "constant | cosine | linear | wsd")
      ->transform(CLI::CheckedTransformer(schedules, CLI::ignore_case))
      ->default_str(schedule_name(c.schedule));
  app.add_option("--decay-fraction", c.decay_fraction, "WSD: share of steps spent decaying")->capture_default_str();
  app.add_option("--beta1", c.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", c.beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--adam-eps", c.adam_eps, "AdamW epsilon")->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "decoupled weight decay")->capture_default_str();
  app.add_option("--no-decay", c.no_decay, "regexes of parameter names without weight decay")->capture_default_str();
  app.add_option("--clip", c.clip, "global gradient-norm clip (0: off)")->capture_default_str();
  app.add_option_function<int>(
         "--grad-accum", [&c](int n) { c.grad_accum = n, c.global_batch = 0; },
         "micro-batches per optimizer step on each rank (replaces the recipe's global batch)")
      ->default_str(std::to_string(c.grad_accum));
  app.add_option("--global-batch", c.global_batch,
                 "micro-batches per optimizer step over all data-parallel ranks (0: --grad-accum on each); each rank "
                 "accumulates global / ranks of them")
      ->capture_default_str();
  app.add_option("--spike-zscore", c.guard.spike_zscore, "skip a step whose loss is this many std above the window (0: off)")
      ->capture_default_str();
  app.add_option("--spike-window", c.guard.spike_window, "steps in the loss-spike window")->capture_default_str();
  app.add_option("--max-bad-steps", c.guard.max_bad_steps, "bad steps in a row before rolling back")->capture_default_str();
  app.add_option("--init-std", c.init_std, "std of the normal initialisation")->capture_default_str();
  app.add_option("--seed", c.seed, "seed of initialisation and data order")->capture_default_str();
  app.add_option("--data", c.data, "text file or directory (fortune format: documents separated by % lines)")
      ->capture_default_str();
  std::string recipe_stages;
  for (const auto& st : c.stages) {
    std::string b;
    for (const auto& [n, w] : st.boost) b += (b.empty() ? "" : ",") + n + "=" + plan::value_text(w);
    recipe_stages += (recipe_stages.empty() ? "" : " ") + plan::value_text(st.start) + (st.absolute ? ":abs" : "") +
                     (b.empty() ? "" : ":" + b);
  }
  app.add_option_function<std::vector<std::string>>(
         "--stage",
         [&c](const std::vector<std::string>& v) {
           c.stages.clear();
           for (const auto& s : v) c.stages.push_back(parse_stage(s));
         },
         "data stages, replacing the recipe's (repeatable, in order): START[:abs]:NAME=WEIGHT,... boosts sources "
         "from a fraction of the phase on; * is every other source")
      ->default_str(recipe_stages.empty() ? "none" : recipe_stages);
  app.add_flag_callback("--no-stages", [&c] { c.stages.clear(); },
                        "no data stages: every source at its natural share for the whole run");
  app.add_option("--tokenizer", c.tokenizer,
                 "\"\" (byte-level) or bpe:<n>[:digits] (train a BPE on the data, cached; :digits: a token per digit)")
      ->capture_default_str();
  app.add_option("--token-size", c.token_size,
                 "bytes per token of shards without Kiln's metadata (datatrove's: 2 or 4; 0: read it from the metadata)")
      ->capture_default_str();
  app.add_option("--cache", c.cache, "where prepared tokenizers and shards are kept")->capture_default_str();
  app.add_option("--val-every", c.val_every, "hold out every n-th document")->capture_default_str();
  app.add_option("--retrieval-docs", c.retrieval_documents,
                 "add n retrieval documents (a password, filler from the corpus, the question) as the source "
                 "\"retrieval\" (--tokenizer bpe:<n> only; 0: none)")->capture_default_str();
  app.add_option("--retrieval-max-chars", c.retrieval_max_chars,
                 "their filler: 0 to this many characters")->capture_default_str();
  app.add_option("--reasoning-docs", c.reasoning_documents,
                 "add n reasoning documents (an addition of --chat-digits digits in the chat template, worked in think "
                 "mode) as the source \"reasoning\" (--tokenizer bpe:<n> only; 0: none)")->capture_default_str();
  app.add_option("--chat", c.chat,
                 "SFT phases: the conversations (jsonl, {\"messages\": [{\"role\", \"content\"}...]} a line; \"\": "
                 "generated from the corpus, fortune requests and additions)")->capture_default_str();
  app.add_option("--pairs", c.pairs,
                 "preference phases: the pairs (jsonl, {\"prompt\", \"chosen\", \"rejected\"} a line; \"\": generated "
                 "from the corpus)")->capture_default_str();
  app.add_option("--beta", c.beta, "preference phases: the loss's beta (TRL's)")->capture_default_str();
  app.add_option("--rpo-alpha", c.rpo_alpha,
                 "preference phases: TRL's rpo_alpha, the weight of the chosen answers' mean negative log-likelihood "
                 "added to the loss (0: none; the RPO paper uses 1)")->capture_default_str();
  app.add_option("--reasoning-problems", c.reasoning_problems,
                 "SFT and preference phases: additions answered by greedy generation at every evaluation, in think and "
                 "in no-think mode, checked exactly (0: none)")->capture_default_str();
  app.add_option("--chat-digits", c.chat_digits, "digits of each addend, in the generated conversations and pairs and "
                 "in the reasoning probe")->capture_default_str();
  app.add_option("--chat-instructions", c.chat_instructions,
                 "SFT phases with --chat \"\": generated fortune requests")->capture_default_str();
  app.add_option("--chat-additions", c.chat_additions,
                 "SFT phases with --chat \"\": generated additions (half in think mode)")->capture_default_str();
  app.add_option("--log-every", c.log_every, "console line every n steps")->capture_default_str();
  app.add_option("--eval-every", c.eval_every, "held-out loss every n steps (0: at the end)")->capture_default_str();
  app.add_option("--eval-every-tokens", c.eval_every_tokens,
                 "also evaluate whenever the phase's tokens pass a multiple of n (0: off; ablations of different "
                 "batch shapes then evaluate at the same token counts)")->capture_default_str();
  app.add_option("--document-masking", c.document_masking,
                 "true: a token attends to its own document only and its position restarts there (SmolLM3's); "
                 "false: a packed row is one sequence")->capture_default_str();
  app.add_option("--eval-batches", c.eval_batches, "micro-batches in a held-out evaluation")->capture_default_str();
  app.add_option("--eval-task", c.eval_tasks, "a multiple-choice task (jsonl: HellaSwag, ARC, PIQA, WinoGrande, MMLU "
                 "layouts; tools/kiln make-task makes one; generated:completion, generated:instructions or "
                 "generated:preferences: made from the corpus's held-out documents) scored in the CF and MCF "
                 "formulations at every evaluation (repeatable)");
  app.add_option("--eval-task-examples", c.eval_task_examples, "score the first n examples of each task (0: all)")
      ->capture_default_str();
  app.add_option("--eval-task-mcf", c.eval_task_mcf, "score the tasks in the MCF formulation (the answers' letters) "
                 "besides CF (their texts)")->capture_default_str();
  app.add_option("--eval-phase-start", c.eval_phase_start, "score the tasks and the additions at each later phase's "
                 "start too (the held-out loss always)")->capture_default_str();
  app.add_option("--threads", c.threads, "threads (0: all cores)")->capture_default_str();
  app.add_option("--checkpoint-every", c.checkpoint_every, "save a checkpoint every n steps (0: only at the end)")
      ->capture_default_str();
  app.add_option("--keep-checkpoints", c.keep_checkpoints, "checkpoints kept (the newest)")->capture_default_str();
  app.add_option("--resume", c.resume, "auto (newest valid checkpoint in <out>/checkpoints, if any) | none | <dir>")
      ->capture_default_str();
  app.add_flag("--allow-tokenizer-change", c.allow_tokenizer_change,
               "resume a checkpoint with another tokenizer than the one it was trained with, on purpose");
  app.add_option("--out", c.out, "run directory: metrics.jsonl, tb/, checkpoints/ (default runs/<recipe>)");
  app.add_option("--comm-timeout", c.comm_timeout,
                 "seconds a rank waits for the others in a collective before every rank stops, naming the late ones")
      ->capture_default_str();
  app.add_option("--peak-tflops", c.peak_tflops, "the machine's peak TFLOP/s, to show MFU (0: not shown)")
      ->capture_default_str();
  app.add_option("--prompt", c.prompts, "prompts to continue after training (repeatable)");
  app.add_option("--sample-tokens", c.sample_tokens, "tokens to sample per prompt")->capture_default_str();
  app.add_option("--temperature", c.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-p", c.top_p, "nucleus sampling: keep the most likely tokens up to this mass")
      ->capture_default_str();
}

// Every rank must run the same recipe and binary (its plan: parameter table, phases, backend) with the same
// settings: hashes of both are compared with rank 0's, and a difference is one error on every rank.
void agree_on_run(parallel::Communicator& comm, const RecipeProgram& r, const std::vector<TrainConfig>& configs, int argc,
                  char** argv) {
  std::string plan = r.name + "|" + r.backend + "|" + std::to_string(r.table_floats);
  for (const auto& e : r.table) plan += "|" + std::string(e.name.view()) + "@" + std::to_string(e.offset);
  for (const auto& p : r.phases)
    plan += "|" + std::string(p.shape.name) + ":" + std::to_string(p.shape.micro_batch) + "x" +
            std::to_string(p.shape.seq_len) + ":" + p.positional + ":" + plan::value_text(p.theta);
  std::string settings;
  for (const auto& c : configs)
    settings += plan::value_text(double(c.steps)) + "|" + std::to_string(c.grad_accum) + "|" + plan::value_text(c.lr) +
                "|" + plan::value_text(c.min_lr) + "|" + std::to_string(c.warmup) + "|" + std::to_string(c.seed) + "|" +
                c.data + "|" + c.tokenizer + "|" + plan::value_text(c.clip) + "|" + plan::value_text(c.weight_decay) +
                "|" + std::to_string(c.eval_every) + "|" + std::to_string(c.eval_every_tokens) + "|" +
                std::to_string(c.document_masking) + "|" + std::to_string(c.checkpoint_every) + "|" + c.resume + "|" +
                c.out + ";";
  const int64_t mine[2] = {int64_t(XXH64(plan.data(), plan.size(), 0)), int64_t(XXH64(settings.data(), settings.size(), 0))};
  int64_t first[2] = {mine[0], mine[1]};
  comm.broadcast(first, sizeof first, 0, "comparing the ranks' plans with rank 0's");
  int64_t differ[2] = {mine[0] != first[0], mine[1] != first[1]};
  comm.allreduce_max(differ, 2, "comparing the ranks' plans with rank 0's");
  const auto hex = [](int64_t v) {
    char b[20];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return std::string(b);
  };
  KILN_CHECK(!differ[0], "the ranks were started with different recipes or binaries: ",
             mine[0] != first[0] ? "this rank's plan (recipe " + r.name + ", hash " + hex(mine[0]) + ") is not rank 0's (" + hex(first[0]) + ")"
                                 : "another rank's plan differs from rank 0's (recipe " + r.name + ", hash " + hex(first[0]) + ")",
             ": start every rank with the same trainer");
  KILN_CHECK(!differ[1], "the ranks were started with different settings (", argv[0], argc > 1 ? " ..." : "", "): ",
             mine[1] != first[1] ? "this rank's differ from rank 0's" : "another rank's differ from rank 0's",
             " (steps, grad-accum, lr, schedule, seed, data, tokenizer, clip, weight decay, eval / checkpoint cadence, "
             "resume, out): start every rank with the same command line");
}

int trainer_main(int argc, char** argv, const RecipeProgram& r) {
  const BlasInfo blas = select_blas_kernels(argv);
  if (argc > 1 && std::string_view(argv[1]) == "generate") return generate_main(argc - 1, argv + 1, r);
  if (argc > 1 && std::string_view(argv[1]) == "eval") return eval_main(argc - 1, argv + 1, r);
  if (argc > 1 && std::string_view(argv[1]) == "export") return hf_export_main(argc - 1, argv + 1, r);
  if (argc > 1 && std::string_view(argv[1]) == "import") return hf_import_main(argc - 1, argv + 1, r);
  if (argc > 1 && std::string_view(argv[1]) == "merge") return merge_main(argc - 1, argv + 1, r);
  if (argc > 1 && std::string_view(argv[1]) == "chat") return chat_main(argc - 1, argv + 1, r);
  const char* name = r.name.c_str();
  const int phase_count = int(r.phases.size());
  const auto phase_name = [&](int i) { return std::string(r.phases[size_t(i)].shape.name); };
  const int MaxT = r.max_seq_len;
  // Each phase's run-time settings are the recipe's for that phase with the command line's overrides on top: the
  // same arguments are parsed once per phase (a recipe of one phase: once).
  std::vector<TrainConfig> configs;
  bool show_plan = false;
  std::string only_phase;
  for (int i = 0; i < phase_count; ++i) {
    configs.push_back(r.defaults(i));
    CLI::App app{std::string("Kiln trainer for recipe ") + name +
                 " (CPU backend, fp32). `generate --help`: continue prompts with a checkpoint; `export --help` / "
                 "`import --help`: Hugging Face model directories; `merge --help`: merge checkpoints; `chat --help`: talk with one."};
    add_train_options(app, configs.back());
    app.add_flag("--plan", show_plan, "print the static plan and exit");
    app.add_option("--phase", only_phase,
                   "run only this phase (" + r.phase_list() +
                       "); a later phase starts from a checkpoint of the one before it (--resume <dir>)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
  }
  TrainConfig& c = configs[0];  // settings that belong to the run, not a phase (threads, out, resume, prompts)
  std::unique_ptr<parallel::Communicator> comm;  // outside the try: an error on one rank ends every rank
  try {
    if (show_plan) {
      r.print(std::cout, true);
      return 0;
    }
    int target = -1;
    if (!only_phase.empty()) {
      target = r.find_phase(only_phase);
      KILN_CHECK(target >= 0, "--phase ", only_phase, ": not a phase of recipe ", name, " (its phases: ", r.phase_list(),
                 ")");
      KILN_CHECK(target == 0 || c.resume != "none", "--phase ", only_phase, " starts from a checkpoint of phase ",
                 phase_name(target > 0 ? target - 1 : 0), ": give --resume <checkpoint dir> (or auto)");
    }
    if (c.threads > 0) {
      omp_set_num_threads(c.threads);
      openblas_set_num_threads(c.threads);
    }
    for (int i = 0; i < phase_count; ++i) {  // every option, before any work (the trainer checks again, for its users)
      validate(configs[size_t(i)], phase_count > 1 ? " (phase " + phase_name(i) + ")" : "");
      double sum = 0;
      for (const auto& [phase, w] : configs[size_t(i)].merge) {  // the merge step names earlier phases
        const int k = r.find_phase(phase);
        KILN_CHECK(k >= 0 && k < i, "phase ", phase_name(i), "'s merge step names phase \"", phase, "\", which is not ",
                   "a phase before it (", r.phase_list(), ")");
        KILN_CHECK(w > 0 && w < 1, "phase ", phase_name(i), "'s merge step: the weight of phase ", phase, " must lie in "
                   "(0, 1), got ", w);
        sum += w;
      }
      KILN_CHECK(sum < 1, "phase ", phase_name(i), "'s merge step: the weights of the earlier phases sum to ", sum,
                 ", leaving nothing of the phase's own end (they must sum below 1)");
    }
    // Ranks (data parallelism): from mpirun's / srun's environment; rank 0 alone writes the console, metrics and
    // checkpoints, and every rank checks that all run the same recipe, binary and settings.
    const parallel::Launch launch = parallel::discover_launch();
    comm = parallel::make_communicator(launch, c.comm_timeout);
    const int rank = comm->rank(), world = comm->world();
    KILN_CHECK(world % r.tp == 0, "the recipe's layout has TP<", r.tp, ">: ", world, " ranks were started, not a "
               "multiple of ", r.tp);
    const int dp = world / r.tp;  // data-parallel ranks (the ranks of a tensor-parallel group share micro-batches)
    if (world > 1 && r.backend != "cpu") {  // GPU ranks: NCCL on this node's GPU local_rank, its id sent over MPI
      KILN_CHECK(r.make_device_comm, "this ", r.backend, " trainer was started as ", world, " ranks but was built "
                 "without NCCL (CMake found no nccl.h in the CUDA toolkit): it runs one rank only");
      comm->attach(parallel::Communicator::DeviceFactory(  // the groups a layout splits off get their own
          [make = r.make_device_comm, local = launch.local_rank, timeout = c.comm_timeout](parallel::Communicator& g) {
            return make(g, local, timeout, {});
          }));
    }
    if (rank > 0) {
      std::fflush(stdout);
      KILN_CHECK(std::freopen("/dev/null", "w", stdout), "rank ", rank, ": cannot silence its console");
    }
    for (int i = 0; i < phase_count; ++i) {  // a global batch shared among the ranks
      TrainConfig& pc = configs[size_t(i)];
      if (pc.global_batch <= 0) continue;
      KILN_CHECK(pc.global_batch % dp == 0, "--global-batch ", pc.global_batch,
                 phase_count > 1 ? " (phase " + phase_name(i) + ")" : std::string(), ": ", pc.global_batch,
                 " micro-batches do not split among ", dp, " data-parallel ranks (give a multiple of ", dp,
                 ", or --grad-accum for each rank's share)");
      pc.grad_accum = pc.global_batch / dp;
      KILN_CHECK(pc.grad_accum <= 1'000'000, "--global-batch ", pc.global_batch, ": ", pc.grad_accum, " micro-batches "
                 "a rank (over ", dp, " ranks) is beyond 1e6");
    }
    if (world > 1) agree_on_run(*comm, r, configs, argc, argv);
    std::printf("kiln: recipe %s | %s parameters | %d layers, hidden %d, %d/%d heads, vocab %d | %d phase%s:",
                name, plan::with_commas(r.parameters).c_str(), r.layers, r.hidden, r.heads, r.kv_heads, r.vocab,
                phase_count, phase_count == 1 ? "" : "s");
    for (int i = 0; i < phase_count; ++i)  // every phase's name and shape on the first line
      std::printf(" %s micro-batch %d x %d%s", phase_name(i).c_str(), r.phases[size_t(i)].shape.micro_batch,
                  r.phases[size_t(i)].shape.seq_len, i + 1 < phase_count ? ";" : "\n");
    const double memory = r.phases[0].memory_bytes;  // the first phase's (each later one says its own when it starts)
    if (r.backend == "cpu")
      std::printf("kiln: %d threads | BLAS %s | kernels %s (%s) | memory %s\n", omp_get_max_threads(), blas.config.c_str(),
                  blas.core.c_str(), blas.how.c_str(), plan::human_bytes(memory).c_str());
    else
      std::printf("kiln: backend %s | device memory %s (the plan's, bf16 storage) | host threads %d\n", r.backend.c_str(),
                  plan::human_bytes(memory).c_str(), omp_get_max_threads());
    // Sources starting to repeat: the first few are printed, the rest counted (every event is in the loader's state).
    long shown_repeats = 0, quiet_repeats = 0;
    std::shared_ptr<RunData> data;  // the current phase's (its tokenizer is the run's)
    std::string tokenizer_path;
    auto data_for = [&](int phase, const TrainConfig& pc) -> PhaseData {
      const PhaseShape& shape = r.phases[size_t(phase)].shape;
      const long tokens_per_step = long(shape.micro_batch) * shape.seq_len * pc.grad_accum * dp;  // global
      const bool sft = shape.objective == Objective::sft, pref = shape.objective == Objective::preference;
      auto d = std::make_shared<RunData>(
          sft ? open_chat_data(pc, r.vocab, shape.seq_len)
          : pref ? open_pair_data(pc, r.vocab, shape.seq_len)
              : open_run_data(pc, r.vocab, tokens_per_step, [&](const std::string& e) {
                  if (e.find("starts epoch ") != std::string::npos && shown_repeats++ >= 3) {
                    ++quiet_repeats;
                    return;
                  }
                  std::printf("  data: %s\n", e.c_str());
                  std::fflush(stdout);
                }));
      if (data)
        KILN_CHECK(d->tokenizer_path == tokenizer_path, "phase ", phase_name(phase), " reads its data with tokenizer \"",
                   d->tokenizer_path, "\", the run's is \"", tokenizer_path, "\": every phase of a run uses one tokenizer");
      tokenizer_path = d->tokenizer_path;
      const double tokens = double(pc.steps) * double(tokens_per_step);
      std::string objective = sft ? "SFT (loss on the assistant's tokens) | " : "";
      if (pref)
        objective = std::string("preference optimisation (") + preference_loss_name(shape.preference_loss) + ", beta " +
                    plan::value_text(pc.beta) +
                    (pc.rpo_alpha > 0 ? ", + " + plan::value_text(pc.rpo_alpha) + " x the chosen answers' NLL (RPO)"
                                      : std::string()) +
                    ", against the weights the phase starts from) | ";
      std::printf("kiln: %sdata %s\n", objective.c_str(), d->summary.c_str());
      std::printf("kiln: %ld steps x %ld tokens = %.2fM tokens (%.2f epochs) | lr %.2e %s, warmup %ld\n", pc.steps,
                  tokens_per_step, tokens / 1e6, tokens / d->epoch_tokens, pc.lr, schedule_name(pc.schedule), pc.warmup);
      if (!pc.document_masking)
        std::printf("kiln: no document masking: each %d-token row is one sequence (attention across its documents, "
                    "positions 0..%d)\n", shape.seq_len, shape.seq_len - 1);
      std::vector<TrainConfig::DataStage> stages = pc.stages;  // as the loader runs them (run_data.hpp)
      if (!stages.empty() && stages.front().start > 0) stages.insert(stages.begin(), {0.0, {}, false});
      for (size_t k = 0; k < stages.size() && !d->tokenizer_path.empty() && !sft && !pref; ++k) {
        std::string b;
        for (const auto& [n, w] : stages[k].boost) b += (b.empty() ? "" : ", ") + n + " x" + std::to_string(w).substr(0, 4);
        std::printf("kiln: data stage %zu from %.0f%% of the %s (step %ld): %s%s\n", k + 1, 100 * stages[k].start,
                    phase_count > 1 ? "phase" : "run", long(stages[k].start * double(pc.steps)),
                    stages[k].absolute ? "weights " : b.empty() ? "natural mixture" : "natural mixture, boosted ",
                    b.c_str());
      }
      data = d;
      return PhaseData{std::move(d->train), d->make_eval};
    };
    if (c.out.empty()) c.out = std::string("runs/") + name;
    for (auto& pc : configs) pc.out = c.out;
    std::filesystem::create_directories(c.out);
    // rank 0 opens the data first (it may tokenize and cache it), the others then read the cache
    if (rank > 0) comm->barrier("waiting for rank 0 to open (and prepare) the data");
    const std::unique_ptr<TrainerBase> owned = r.make_trainer(configs, data_for);
    if (rank == 0) comm->barrier("waiting for the other ranks to open the data");
    TrainerBase& trainer = *owned;
    trainer.set_communicator(comm.get());
    if (r.tp > 1)
      std::printf("kiln: layout %s: tensor parallel over %d ranks (each its heads, ffn columns and vocabulary rows; "
                  "%s), data parallel over %d\n", trainer.layout().c_str(), r.tp, comm->name(), dp);
    if (dp > 1) {
      std::printf("kiln: data parallel over %d ranks (%s): each step's global batch is %d x %d micro-batches of "
                  "%d x %d; every rank reads the global stream and runs its share\n", dp, comm->name(), dp,
                  c.grad_accum, r.phases[0].shape.micro_batch, r.phases[0].shape.seq_len);
      if (trainer.optimizer_sharded())
        std::printf("kiln: layout %s: each rank holds 1/%d of the AdamW moments (rank 0: floats %zu to %zu of %zu); "
                    "gradients are reduce-scattered, weights all-gathered\n", trainer.layout().c_str(), world,
                    trainer.optimizer_shard().begin, trainer.optimizer_shard().end, trainer.parameter_floats());
    }
    // Checkpoints: <out>/checkpoints/step_N, every --checkpoint-every steps, at each phase's end, and on SIGTERM /
    // SIGINT.
    const std::string ckpt_root = c.out + "/checkpoints";
    auto warn = [](const std::string& w) { std::printf("kiln: warning: %s\n", w.c_str()); };
    bool resumed = false;
    if (c.resume == "none") {
      // Starting over in this run directory: its old checkpoints would mix with the new run's, so they go, and so
      // do the phase ends it kept for merge steps (<out>/phases), which a merge step of this run must not take.
      if (const auto old = io::list_checkpoints(ckpt_root); !old.empty() && rank == 0) {
        std::filesystem::remove_all(ckpt_root);
        std::printf("kiln: --resume none: starting over; removed the %zu checkpoints of the previous run in %s "
                    "(--out <dir> keeps runs apart)\n", old.size(), ckpt_root.c_str());
      }
      if (const std::string kept = c.out + "/phases"; rank == 0 && std::filesystem::exists(kept)) {
        std::filesystem::remove_all(kept);
        std::printf("kiln: --resume none: removed the phase ends the previous run kept for its merge steps in %s\n",
                    kept.c_str());
      }
      comm->barrier("waiting for rank 0 to clear the old checkpoints");
    } else {
      std::optional<io::CheckpointInfo> found;
      if (c.resume == "auto") {
        found = io::find_latest_valid(ckpt_root, warn);
        const auto all = io::list_checkpoints(ckpt_root);
        KILN_CHECK(found || all.empty(), ckpt_root, " holds ", all.size(), " checkpoint", all.size() == 1 ? "" : "s",
                   " but none is valid (see the warnings above): --resume none starts over (and removes them), "
                   "--resume <dir> names one to use");
      } else {
        KILN_CHECK(std::filesystem::is_directory(c.resume), "--resume ", c.resume,
                   ": no such directory (auto: the newest valid checkpoint in <out>/checkpoints; none: start over)");
        found = io::CheckpointInfo{c.resume, 0};
      }
      if (found) {
        const io::Checkpoint ck(*found);
        // The tokenizer is part of the run: the same ids must mean the same text after a resume.
        const std::string theirs = ck.state().extra.value("data", nlohmann::json::object()).value("tokenizer", std::string());
        // (one file, or two with the same bytes: a cache elsewhere that trained the same tokenizer from the same
        // texts, whose key holds the generated files' paths)
        const auto same_file = [](const std::string& a, const std::string& b) {
          if (a.empty() || b.empty()) return a == b;
          std::error_code e1, e2;
          if (std::filesystem::weakly_canonical(a, e1) == std::filesystem::weakly_canonical(b, e2)) return true;
          const auto bytes = [](const std::string& path) {
            std::ifstream in(path, std::ios::binary);
            return in ? std::string(std::istreambuf_iterator<char>(in), {}) : std::string();
          };
          const std::string x = bytes(a);
          return !x.empty() && x == bytes(b);
        };
        KILN_CHECK(c.allow_tokenizer_change || same_file(theirs, data->tokenizer_path), found->dir,
                   ": the checkpoint was trained with tokenizer ", theirs.empty() ? "(byte-level)" : "\"" + theirs + "\"",
                   " but this run reads its data with ",
                   data->tokenizer_path.empty() ? "byte-level tokens" : "\"" + data->tokenizer_path + "\"",
                   ": pass --tokenizer ", theirs.empty() ? "\"\"" : theirs, " (and --data with shards made with it), or "
                   "--allow-tokenizer-change to train on with the new one on purpose");
        load_checkpoint(trainer, ck, name);
        resumed = true;
        const auto& extra = ck.state().extra;
        if (extra.value("recipe", std::string()) != name)  // load_checkpoint found the same program
          std::printf("kiln: the checkpoint is of recipe %s: the same model and phases, written under %s on %d "
                      "rank(s); this run's layout is %s\n", extra.value("recipe", std::string()).c_str(),
                      extra.value("layout", nlohmann::json::object()).value("text", std::string("?")).c_str(),
                      extra.value("layout", nlohmann::json::object()).value("ranks", 1), trainer.layout().c_str());
        std::printf("kiln: resumed from %s at step %ld (phase %s, step %ld of it; %s)\n", found->dir.c_str(),
                    trainer.run_step(), phase_name(trainer.phase()).c_str(), trainer.step(),
                    trainer.data().where().c_str());
        if (target >= 0 && target != trainer.phase()) {
          KILN_CHECK(target == trainer.phase() + 1, "--phase ", only_phase, " starts from a checkpoint of phase ",
                     target > 0 ? phase_name(target - 1) : "(none: it is the first)", ", but ", found->dir,
                     " is of phase ", phase_name(trainer.phase()));
          trainer.start_phase(target);  // parameters and optimizer state carry over; the phase's data and shape start
          std::printf("kiln: phase %s starts from the checkpoint of phase %s\n", only_phase.c_str(),
                      phase_name(target - 1).c_str());
        }
      } else {
        KILN_CHECK(target <= 0, "--phase ", only_phase, " starts from a checkpoint of phase ",
                   target > 0 ? phase_name(target - 1) : "", ", and ", ckpt_root, " has none (--resume <dir> names one)");
      }
    }
    if (target >= 0) trainer.stop_after_phase(target);
    long saved_at = resumed ? trainer.run_step() : -1;  // the step of the newest checkpoint this run has
    auto save = [&] {
      if (saved_at == trainer.run_step()) return;  // a phase that ended where the run resumed: it is saved already
      saved_at = trainer.run_step();
      // every rank calls it: rank 0 writes what every rank holds, each rank its shard of a sharded optimizer
      const auto info = save_checkpoint(trainer, ckpt_root, c.keep_checkpoints, name, warn,
                                        {{"tokenizer", data->tokenizer_path}, {"end_of_document", data->end_of_document},
                                         {"vocab_used", data->vocab_used}});
      std::printf("kiln: checkpoint %s\n", info.dir.c_str());
      comm->barrier("waiting for rank 0's checkpoint");
    };
    // The end of each phase a merge step names, and of each phase with a merge step (before it), parameters only,
    // kept apart from the pruned checkpoints: <out>/phases/<name>/step_N, what a merge step reads and what `merge`,
    // `eval` and `export` take.
    const auto phase_root = [&](int p) { return c.out + "/phases/" + phase_name(p); };
    auto keep_phase_end = [&](int p) {
      bool needed = !configs[size_t(p)].merge.empty();
      for (const auto& pc : configs)
        for (const auto& m : pc.merge) needed = needed || m.first == phase_name(p);
      if (!needed) return;
      trainer.sync_host();  // (tensor parallelism: every rank)
      if (rank != 0) return;
      const std::string root = phase_root(p);
      if (std::filesystem::exists(root + "/" + io::detail::checkpoint_dir_name(trainer.run_step()))) return;  // resumed
      io::CheckpointState st;
      st.step = trainer.run_step();
      st.schedule_step = trainer.step();
      st.tokens_seen = trainer.tokens_seen();
      st.extra = {{"recipe", name}, {"program", program_fingerprint(trainer)}, {"phase", phase_name(p)},
                  {"phase_index", p}, {"phase_step", trainer.step()}, {"phase_end", true},
                  {"data", {{"tokenizer", data->tokenizer_path}, {"end_of_document", data->end_of_document},
                            {"vocab_used", data->vocab_used}}}};
      io::write_checkpoint(root, st, {{"parameters", io::param_views(r.table, trainer.host(backend::Tensor::params))}},
                           1 << 30, warn);
    };
    // The merge step of phase p (TrainConfig::merge): (1 - sum w) x its end + sum w x the kept ends it names.
    auto merge_step = [&](int p) {
      const TrainConfig& pc = configs[size_t(p)];
      if (pc.merge.empty() || trainer.merged_phase == p) return;
      std::vector<std::vector<float>> kept;
      std::vector<double> w = {1.0};
      std::string what;
      for (const auto& [phase, weight] : pc.merge) {
        // that phase's end in this program: the one kept at the step where the phase ends with this run's step
        // counts, or else the only one kept (a run with --phase whose --steps differ from the earlier phases'); two
        // or more elsewhere are ambiguous (ends of other runs in this directory)
        const int k = r.find_phase(phase);
        long end = 0;
        for (int j = 0; j <= k; ++j) end += configs[size_t(j)].steps;
        const std::string root = phase_root(k);
        const auto kept_ends = io::list_checkpoints(root);
        std::optional<io::CheckpointInfo> found;
        for (const auto& ck : kept_ends)
          if (ck.step == end) found = ck;
        if (!found && kept_ends.size() == 1) {
          found = kept_ends[0];
          std::printf("kiln: merge step: phase %s's end is kept at step %lld, not at step %ld where this run's step "
                      "counts end it: taking it, the only one in %s\n", phase.c_str(), (long long)found->step, end,
                      root.c_str());
        }
        KILN_CHECK(found, "phase ", phase_name(p), "'s merge step needs phase ", phase, "'s end (step ", end, "), and ",
                   root, kept_ends.empty() ? " holds none (a run that started after that phase, with --phase, has "
                                             "not kept it: run the program from that phase, or merge by hand with `merge`)"
                                           : " holds other steps' ends, from other runs: merge by hand with `merge`, or "
                                             "give the run its own --out");
        if (const auto problem = io::checkpoint_problem(found->dir, io::Verify::checksums))
          KILN_FAIL("phase ", phase_name(p), "'s merge step needs phase ", phase, "'s end, and ",
                    found->dir.string(), " does not verify: ", *problem);
        kept.emplace_back(r.table_floats);
        io::load_params(r.table, io::Checkpoint(*found).blob("parameters"), kept.back().data(),
                        found->dir.string() + "/parameters.safetensors");
        w[0] -= weight;
        w.push_back(weight);
        char b[96];
        std::snprintf(b, sizeof b, " + %g x phase %s's end", weight, phase.c_str());
        what += b;
      }
      std::vector<const float*> in = {trainer.host(backend::Tensor::params)};
      for (const auto& k : kept) in.push_back(k.data());
      const std::vector<float> merged = merge_params(MergeMethod::linear, in, w, nullptr, r.table_floats);
      std::copy(merged.begin(), merged.end(), trainer.host_mut(backend::Tensor::params));
      trainer.commit(backend::Tensor::params);
      trainer.merged_phase = p;
      saved_at = -1;  // the merged weights are not in any checkpoint yet
      std::printf("kiln: merge step: the weights are now %g x phase %s's end%s (kiln/train/merge.hpp, linear)\n", w[0],
                  phase_name(p).c_str(), what.c_str());
    };
    install_stop_handlers();
    // A backend whose steps overlap (cuda) may be running the next step when after_step sees a signal: the trainer
    // finishes that step first and calls after_step again with the state exact; wants_state makes every later step
    // wait for the host once a signal is there.
    trainer.wants_state = [](long, long) { return stop_signal().load() != 0; };
    trainer.after_step = [&](long step) {
      // a signal on any rank stops every rank after the same step (one small all-reduce a step)
      const bool stop = world > 1 ? comm->any(stop_signal().load() != 0, "agreeing on a stop signal")
                                  : stop_signal().load() != 0;
      if (stop) {
        const int sig = stop_signal().load() ? stop_signal().load() : SIGTERM;
        if (trainer.step_in_flight()) return true;
        save();
        std::printf("kiln: stopped by %s after step %ld; the same command with --resume auto continues from here\n",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT", step);
        return true;
      }
      const TrainConfig& pc = trainer.config();
      if (pc.checkpoint_every > 0 && trainer.step() % pc.checkpoint_every == 0 && trainer.step() < pc.steps) save();
      return false;
    };
    trainer.rollback = [&] {
      const auto found = io::find_latest_valid(ckpt_root, warn);
      if (!found) return false;
      load_checkpoint(trainer, io::Checkpoint(*found), name, /*keep_data=*/true);
      return true;
    };
    std::function<void(const std::string&)> snapshot;  // a row of the program's table (set below)
    bool ended_with_merge = false;  // the last phase's merge step ran in this process (the table's last row)
    bool held_out_only = false;     // this evaluation: the held-out loss, no tasks or additions (eval_phase_start)
    if (phase_count > 1) {
      trainer.on_phase_start = [&](int p) {
        const PhaseInfo& ph = r.phases[size_t(p)];
        std::printf("\nkiln: phase %d/%d %s: micro-batch %d x %d, %s theta %g | memory %s\n", p + 1, phase_count,
                    phase_name(p).c_str(), ph.shape.micro_batch, ph.shape.seq_len, ph.positional.c_str(), ph.theta,
                    plan::human_bytes(ph.memory_bytes).c_str());
        if (p > 0) {
          const double v = trainer.evaluate();
          std::printf("kiln: held-out loss %.4f at the phase's start%s\n", v, trainer.eval_extra_text().c_str());
          held_out_only = !trainer.config().eval_phase_start;
          trainer.on_eval(trainer.run_step(), v);
          held_out_only = false;
        }
      };
      // A phase's end and the next one's start are both evaluated, each in its own shape (sequence length, theta):
      // what the phase learned, and where the next one starts from.
      trainer.on_phase_end = [&](int p) {
        keep_phase_end(p);
        const bool merges = !configs[size_t(p)].merge.empty() && trainer.merged_phase != p;
        if (merges) {  // the phase's own end, then the merge's
          trainer.on_eval(trainer.run_step(), trainer.evaluate());
          snapshot(phase_name(p));
        }
        merge_step(p);
        if (p < phase_count - 1 && p != target) {
          trainer.on_eval(trainer.run_step(), trainer.evaluate());
          snapshot(phase_name(p) + (merges ? " + merge" : ""));
          save();  // the next phase (or a later --phase run) starts from here
        } else if (merges) {
          ended_with_merge = true;
        }
      };
    }
    // Metrics: one JSON line per step and per evaluation, and TensorBoard scalars (tools/kiln plot <run> draws them).
    // A fresh run never truncates an older run's metrics: they are kept beside it as metrics.<k>.jsonl.
    const std::string metrics = c.out + "/metrics.jsonl";
    if (rank == 0 && !resumed && std::filesystem::exists(metrics) && std::filesystem::file_size(metrics) > 0) {
      int k = 1;
      while (std::filesystem::exists(c.out + "/metrics." + std::to_string(k) + ".jsonl")) ++k;
      const std::string kept = c.out + "/metrics." + std::to_string(k) + ".jsonl";
      std::filesystem::rename(metrics, kept);
      std::printf("kiln: the previous run's metrics are kept as %s\n", kept.c_str());
    }
    // rank 0's files only: the other ranks write nothing
    std::unique_ptr<io::JsonlWriter> jsonl_file;
    std::unique_ptr<io::TensorBoardWriter> tb_file;
    if (rank == 0) {
      jsonl_file = std::make_unique<io::JsonlWriter>(metrics, /*append=*/true);
      tb_file = std::make_unique<io::TensorBoardWriter>(c.out + "/tb");
    }
    trainer.on_step = [&](const StepLog& l) {
      if (!jsonl_file) return;
      io::JsonlWriter& jsonl = *jsonl_file;
      io::TensorBoardWriter& tb = *tb_file;
      nlohmann::json rec = {{"step", l.step}, {"loss", l.loss}, {"lr", l.lr}, {"grad_norm", l.grad_norm},
                            {"tokens_per_s", l.tokens_per_s}, {"skipped", l.skipped}, {"time", io::unix_now()}};
      if (phase_count > 1) rec["phase"] = phase_name(l.phase), rec["phase_step"] = l.phase_step;
      for (const auto& [k, v] : l.extra) rec[k] = v, tb.scalar(std::string("train/") + k, l.step, float(v));
      jsonl.write(rec);
      tb.scalars(l.step, {{"train/loss", float(l.loss)}, {"train/lr", float(l.lr)}, {"train/grad_norm", float(l.grad_norm)},
                          {"train/tokens_per_s", float(l.tokens_per_s)}});
      if (l.step % trainer.config().log_every == 0) tb.flush();
    };
    // Tasks scored at every evaluation (rank 0, on the CPU from the host's parameters: kiln/eval). Read now, so that
    // a malformed one stops the run before any training.
    std::vector<std::pair<std::string, eval::Task>> tasks;
    for (const std::string& spec : c.eval_tasks) {
      const bool generated = spec.rfind("generated:", 0) == 0;
      const std::string path = generated ? generated_task_file(c, spec.substr(10)) : spec;
      eval::Task t = eval::read_task(path);
      if (c.eval_task_examples > 0 && long(t.examples.size()) > c.eval_task_examples)
        t.examples.resize(size_t(c.eval_task_examples));
      tasks.emplace_back(generated ? spec.substr(10) : std::filesystem::path(path).stem().string(), std::move(t));
    }
    // The numbers of the latest evaluation by column, for the program's table (summary_table): snapshot() takes them
    // at the run's start and at each phase's end, with the held-out text's bits per byte measured then.
    std::vector<std::pair<std::string, double>> latest;
    std::vector<SummaryRow> summary;
    std::vector<std::pair<std::string, double>> chance;  // each task's, for the table's reader
    const auto note = [&](const std::string& k, double x) {
      for (auto& kv : latest)
        if (kv.first == k) return void(kv.second = x);
      latest.emplace_back(k, x);
    };
    trainer.on_eval = [&](long step, double v) {
      // the additions: wherever the tokenizer has the chat tokens (a pretraining phase too, after reasoning documents)
      const bool probe = trainer.config().reasoning_problems > 0 && !data->tokenizer_path.empty() &&
                         data->encode(data::kImEnd).size() == 1 && !held_out_only;
      if ((!tasks.empty() && !held_out_only) || probe) trainer.sync_host();  // tensor parallelism: every rank, for rank 0's full parameters
      if (!jsonl_file) return;
      io::JsonlWriter& jsonl = *jsonl_file;
      io::TensorBoardWriter& tb = *tb_file;
      nlohmann::json where = {{"step", step}, {"tokens", trainer.tokens_seen()}};
      if (phase_count > 1) where["phase"] = phase_name(trainer.phase());
      nlohmann::json rec = where;
      rec["val_loss"] = v, rec["time"] = io::unix_now();
      for (const auto& [k, x] : trainer.eval_extra) rec["val_" + k] = x, tb.scalar("eval/" + k, step, float(x));
      jsonl.write(rec);
      tb.scalar("eval/loss", step, float(v));
      // After an SFT or preference phase's evaluation: the additions, in think and in no-think mode.
      const TrainConfig& pc = trainer.config();
      if (probe) {
        const int32_t im_end = data->encode(data::kImEnd).at(0);
        eval::SamplingConfig greedy{0.0, 1.0, 0, data->vocab_used};
        const eval::ArithmeticResult a = eval::arithmetic_probe(
            pc.reasoning_problems, pc.chat_digits, pc.seed, data->encode, data->decode,
            [&](const std::vector<int32_t>& prompt, int n) {
              return r.generate(trainer.phase(), trainer.host(backend::Tensor::params), prompt, n, greedy, im_end, nullptr);
            });
        nlohmann::json rec = where;
        rec.update({{"probe", "arithmetic"}, {"problems", a.problems}, {"digits", pc.chat_digits},
                    {"acc_think", a.accuracy(true)}, {"acc_no_think", a.accuracy(false)},
                    {"tokens_think", a.answer_tokens[1]}, {"tokens_no_think", a.answer_tokens[0]}, {"time", io::unix_now()}});
        jsonl.write(rec);
        tb.scalars(step, {{"eval/arithmetic/think", float(a.accuracy(true))},
                          {"eval/arithmetic/no_think", float(a.accuracy(false))}});
        std::printf("  additions (%d digits, %d problems, greedy): think %.3f (%.0f tokens), no-think %.3f, at step %ld\n",
                    pc.chat_digits, a.problems, a.accuracy(true), a.answer_tokens[1], a.accuracy(false), step);
        note("additions think", a.accuracy(true));
        note("additions no-think", a.accuracy(false));
      }
      if (!tasks.empty() && !held_out_only) {
        int B = 0, T = 0;
        const auto run = r.make_scorer(trainer.phase(), trainer.host(backend::Tensor::params), &B, &T);
        for (const auto& [name, t] : tasks) {
          std::string line = "  task " + name + ":";
          double random = 0;
          for (const eval::Formulation f : {eval::Formulation::cloze, eval::Formulation::multiple_choice}) {
            if (f == eval::Formulation::multiple_choice && !pc.eval_task_mcf) continue;
            const eval::TaskResult res = eval::evaluate(t.examples, f, data->encode, B, T, run);
            const eval::Metrics& m = res.metrics;
            const std::string form = eval::formulation_name(f), key = "eval/" + name + "/" + form + "/";
            // the task's headline measure, for the program's table and the curves (kiln_plot reads it): by
            // characters (HellaSwag's acc_norm); a preference pair by the log-probability sums themselves (which
            // answer the model prefers, as DPO compares them)
            const double headline = name == "preferences" ? m.acc : m.acc_norm_char;
            nlohmann::json score = where;
            score.update({{"task", name}, {"formulation", form}, {"examples", m.examples}, {"acc", m.acc},
                          {"acc_norm_char", m.acc_norm_char}, {"acc_norm_token", m.acc_norm_token},
                          {"headline", headline}, {"random", m.random}, {"time", io::unix_now()}});
            jsonl.write(score);
            tb.scalars(step, {{key + "acc", float(m.acc)}, {key + "acc_norm", float(m.acc_norm_char)},
                              {key + "acc_token", float(m.acc_norm_token)}});
            char b[160];
            std::snprintf(b, sizeof b, " %s acc %.3f (by characters %.3f, by tokens %.3f);", form.c_str(), m.acc,
                          m.acc_norm_char, m.acc_norm_token);
            line += b;
            random = m.random;
            if (f == eval::Formulation::cloze) {
              note(name, headline);
              if (std::none_of(chance.begin(), chance.end(), [&](const auto& kv) { return kv.first == name; }))
                chance.emplace_back(name, m.random);
            }
          }
          std::printf("%s random %.3f, %zu examples, at step %ld\n", line.c_str(), random, t.examples.size(), step);
        }
      }
      tb.flush();
    };
    // The held-out text (the corpus's held-out documents, ~40 kB) whose bits per byte the table shows at every row:
    // the one measure that means the same after every phase (each phase's own held-out loss is on its own data).
    std::vector<int32_t> heldout_text;
    if (phase_count > 1 && rank == 0 && !data->tokenizer_path.empty())
      if (const std::string text = heldout_sample(c, 40'000); text.size() > 1000) heldout_text = data->encode(text);
    snapshot = [&](const std::string& label) {
      if (phase_count == 1) return;
      trainer.sync_host();  // (tensor parallelism: every rank, for rank 0's full parameters)
      if (rank != 0) return;
      SummaryRow row{label, trainer.run_step(), {}};
      if (!heldout_text.empty()) {
        int B = 0, T = 0;
        const auto run = r.make_scorer(trainer.phase(), trainer.host(backend::Tensor::params), &B, &T);
        const auto bpb = eval::bits_per_byte(heldout_text, B, T, run,
                                             [&](const std::vector<int32_t>& v) { return long(data->decode(v).size()); });
        row.values.emplace_back("text bits/byte", bpb.bits_per_byte);
      }
      for (const auto& kv : latest) row.values.push_back(kv);
      summary.push_back(std::move(row));
    };
    std::printf("kiln: run directory %s (metrics.jsonl, tb/, checkpoints/; `tools/kiln plot %s` draws the curves)\n",
                c.out.c_str(), c.out.c_str());
    if (rank == 0) {  // what the run is, for tools that compare runs (tools/kiln ablate): run.json
      nlohmann::json phases = nlohmann::json::array();
      for (int i = 0; i < phase_count; ++i) {
        const PhaseInfo& ph = r.phases[size_t(i)];
        const TrainConfig& pc = configs[size_t(i)];
        phases.push_back({{"name", phase_name(i)}, {"micro_batch", ph.shape.micro_batch}, {"seq_len", ph.shape.seq_len},
                          {"positional", ph.positional}, {"theta", ph.theta}, {"steps", pc.steps},
                          {"tokens_per_step", long(ph.shape.micro_batch) * ph.shape.seq_len * pc.grad_accum * (world / r.tp)},
                          {"train_flops_per_token", ph.train_flops_per_token}, {"lr", pc.lr},
                          {"document_masking", pc.document_masking}});
      }
      const nlohmann::json info = {{"recipe", r.name}, {"header", r.header}, {"backend", r.backend},
                                   {"parameters", r.parameters}, {"layout", trainer.layout()}, {"ranks", world},
                                   {"seed", c.seed}, {"data", c.data}, {"tokenizer", data->tokenizer_path},
                                   {"resumed", resumed}, {"phases", phases}, {"started", io::unix_now()}};
      core::write_text_atomic(c.out + "/run.json", info.dump(2) + "\n");
    }
    const double before = trainer.evaluate();
    const int before_phase = trainer.phase();
    std::printf("kiln: held-out loss %s %.4f (ln(vocab) = %.4f)\n", resumed ? "at the checkpoint" : "before training",
                before, std::log(double(r.vocab)));
    // The first point of a fresh run's curves: the held-out loss and the tasks before any step (a later phase's start
    // is evaluated by on_phase_start, also where --phase starts it from a checkpoint).
    if (!resumed) {
      trainer.on_eval(trainer.run_step(), before);
      snapshot("start");
    }
    const long start = trainer.run_step();
    const bool finished = trainer.step() >= trainer.config().steps &&
                          (trainer.phase() == phase_count - 1 || trainer.phase() == target);
    if (finished)
      std::printf("kiln: the checkpoint is at the end of %s (step %ld): nothing left to train (--resume none starts "
                  "over)\n", phase_count > 1 ? ("phase " + phase_name(trainer.phase())).c_str() : "the run",
                  trainer.run_step());
    if (!finished && !trainer.run()) return stop_signal().load() == SIGTERM ? 143 : 130;
    if (trainer.run_step() > start) save();
    if (quiet_repeats)
      std::printf("kiln: data sources began another epoch %ld more times (not listed; the first %ld are above)\n",
                  quiet_repeats, shown_repeats - quiet_repeats);
    const double after = trainer.evaluate();
    trainer.on_eval(trainer.run_step(), after);
    if (trainer.run_step() > start || ended_with_merge)
      snapshot(phase_name(trainer.phase()) + (ended_with_merge ? " + merge" : ""));
    char bpb[48] = "";
    if (data->bytes_per_token > 0)
      std::snprintf(bpb, sizeof bpb, " = %.3f bits/byte", after / std::log(2.0) / data->bytes_per_token);
    if (trainer.phase() == before_phase)
      std::printf("\nkiln: held-out loss %.4f nats/token%s (from %.4f before training: %.0f%% lower)\n", after, bpb,
                  before, 100.0 * (1.0 - after / before));
    else  // another phase's held-out data (SFT's conversations, say): no comparison with the start's
      std::printf("\nkiln: held-out loss %.4f%s%s on phase %s's held-out data%s\n", after,
                  r.phases[size_t(trainer.phase())].shape.objective == Objective::preference ? "" : " nats/token", bpb,
                  phase_name(trainer.phase()).c_str(), trainer.eval_extra_text().c_str());
    if (summary.size() > 1) {
      const std::string table = summary_table(summary);
      std::string odds;
      for (const auto& [k, x] : chance) odds += (odds.empty() ? "; chance: " : ", ") + k + " " + plan::value_text(x);
      std::printf("\nkiln: what each phase did (held-out data%s):\n%s"
                  "kiln: the table is in %s/summary.md; `tools/kiln plot %s` draws the curves\n", odds.c_str(),
                  table.c_str(), c.out.c_str(), c.out.c_str());
      core::write_text_atomic(c.out + "/summary.md", table + (odds.empty() ? "" : "\n(held-out data" + odds + ")\n"));
    }
    trainer.sync_host();  // tensor parallelism: the full parameters, for the continuations
    if (rank > 0 || c.sample_tokens == 0) return 0;  // the continuations: rank 0's console, unless none are wanted
    if (!c.prompts.empty())
      std::printf("\nWhat it learned: continuations (temperature %.2f, top-p %.2f)\n", c.temperature, c.top_p);
    // After an SFT or preference phase each prompt is a user's message in the chat template, answered until <|im_end|>.
    const bool chat = r.phases[size_t(trainer.phase())].shape.objective != Objective::pretrain;
    if (chat && !c.prompts.empty()) std::printf("(each prompt as a user's message in the chat template)\n");
    for (size_t i = 0; i < c.prompts.size(); ++i) {
      const eval::SamplingConfig sc{c.temperature, c.top_p, c.seed + i, data->vocab_used};
      int dropped = 0;
      const std::string text =
          chat ? data::render_chat({{"user", c.prompts[i]}}, /*add_generation_prompt=*/true).text : c.prompts[i];
      const int32_t stop = chat ? data->encode(data::kImEnd).at(0) : data->end_of_document;
      // The model of the phase the run ended in, with the parameters as they are now.
      const auto out = r.generate(trainer.phase(), trainer.host(backend::Tensor::params), data->encode(text),
                                  c.sample_tokens, sc, stop, &dropped);
      const bool tty = isatty(fileno(stdout));  // the prompt in bold on a terminal, plain in logs
      std::printf("---\n%s%s%s%s\n", tty ? "\033[1m" : "", c.prompts[i].c_str(), tty ? "\033[0m" : "",
                  data->decode(out).c_str());
      if (dropped)
        std::printf("(the prompt's first %d tokens were dropped: prompt + %d new tokens exceed the %d-token context)\n",
                    dropped, c.sample_tokens, MaxT);
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON): a message, not a crash
    if (comm && comm->world() > 1) {
      std::fprintf(stderr, "kiln: rank %d of %d: error: %s\n", comm->rank(), comm->world(), e.what());
      comm->abort(1);  // the other ranks would wait for this one until --comm-timeout
    }
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
