// tools/trainer_main.hpp: the dedicated trainer's main(): recipe defaults, command-line overrides, the run, what the
// model learned (held-out loss, sampled continuations).
#pragma once
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <map>

#include "kiln/backend/blas.hpp"
#include "kiln/backend/cpu.hpp"
#include "kiln/eval/generate.hpp"
#include "kiln/io/jsonl.hpp"
#include "kiln/io/tensorboard.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/checkpointing.hpp"
#include "kiln/train/run_data.hpp"
#include "kiln/train/signals.hpp"
#include "kiln/train/trainer.hpp"
#include "hf_interop.hpp"
#include "recipe_print.hpp"

namespace kiln {

// Binds every run-time field of TrainConfig to a command-line option (the recipe's value is the default).
inline void add_train_options(CLI::App& app, TrainConfig& c) {
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
  app.add_option("--grad-accum", c.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  app.add_option("--spike-zscore", c.guard.spike_zscore, "skip a step whose loss is this many std above the window (0: off)")
      ->capture_default_str();
  app.add_option("--spike-window", c.guard.spike_window, "steps in the loss-spike window")->capture_default_str();
  app.add_option("--max-bad-steps", c.guard.max_bad_steps, "bad steps in a row before rolling back")->capture_default_str();
  app.add_option("--init-std", c.init_std, "std of the normal initialisation")->capture_default_str();
  app.add_option("--seed", c.seed, "seed of initialisation and data order")->capture_default_str();
  app.add_option("--data", c.data, "text file or directory (fortune format: documents separated by % lines)")
      ->capture_default_str();
  app.add_option("--tokenizer", c.tokenizer, "\"\" (byte-level) or bpe:<n> (train a BPE on the data, cached)")
      ->capture_default_str();
  app.add_option("--cache", c.cache, "where prepared tokenizers and shards are kept")->capture_default_str();
  app.add_option("--val-every", c.val_every, "hold out every n-th document")->capture_default_str();
  app.add_option("--log-every", c.log_every, "console line every n steps")->capture_default_str();
  app.add_option("--eval-every", c.eval_every, "held-out loss every n steps (0: at the end)")->capture_default_str();
  app.add_option("--eval-batches", c.eval_batches, "micro-batches in a held-out evaluation")->capture_default_str();
  app.add_option("--threads", c.threads, "threads (0: all cores)")->capture_default_str();
  app.add_option("--checkpoint-every", c.checkpoint_every, "save a checkpoint every n steps (0: only at the end)")
      ->capture_default_str();
  app.add_option("--keep-checkpoints", c.keep_checkpoints, "checkpoints kept (the newest)")->capture_default_str();
  app.add_option("--resume", c.resume, "auto (newest valid checkpoint in <out>/checkpoints, if any) | none | <dir>")
      ->capture_default_str();
  app.add_flag("--allow-tokenizer-change", c.allow_tokenizer_change,
               "resume a checkpoint with another tokenizer than the one it was trained with, on purpose");
  app.add_option("--out", c.out, "run directory: metrics.jsonl, tb/, checkpoints/ (default runs/<recipe>)");
  app.add_option("--peak-tflops", c.peak_tflops, "the machine's peak TFLOP/s, to show MFU (0: not shown)")
      ->capture_default_str();
  app.add_option("--prompt", c.prompts, "prompts to continue after training (repeatable)");
  app.add_option("--sample-tokens", c.sample_tokens, "tokens to sample per prompt")->capture_default_str();
  app.add_option("--temperature", c.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-p", c.top_p, "nucleus sampling: keep the most likely tokens up to this mass")
      ->capture_default_str();
}

// `train_<recipe> generate`: continues prompts with a checkpoint's parameters (KV-cache generation on the CPU).
template <RecipeType Recipe>
int generate_main(int argc, char** argv, const char* name) {
  using M = typename Recipe::model;
  constexpr int MaxT = max_seq_len<Recipe>;
  CLI::App app{std::string("Generate text with a checkpoint of recipe ") + name};
  std::string checkpoint = std::string("runs/") + name + "/checkpoints";
  std::vector<std::string> prompts;
  eval::SamplingConfig sc;
  int tokens = 200;
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory, or a checkpoints root (its newest valid one)")
      ->capture_default_str();
  app.add_option("--prompt", prompts, "prompt to continue (repeatable)")->required();
  app.add_option("--tokens", tokens, "tokens to generate per prompt")->capture_default_str();
  app.add_option("--temperature", sc.temperature, "0: greedy")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    std::filesystem::path dir = checkpoint;
    if (!std::filesystem::exists(dir / "manifest.json")) {
      const auto found = io::find_latest_valid(checkpoint, [](const std::string& w) {
        std::fprintf(stderr, "kiln: warning: %s\n", w.c_str());
      });
      KILN_CHECK(found, checkpoint, ": no valid checkpoint here (train first, or name a step_N directory)");
      dir = found->dir;
    }
    const io::Checkpoint ck(dir);
    const std::string theirs = ck.state().extra.value("recipe", std::string());
    KILN_CHECK(theirs == name, dir.string(), ": field extra.recipe is \"", theirs, "\", this is the trainer of \"", name, "\"");
    auto state = std::make_unique<backend::cpu::State<M>>();
    io::load_params<M>(ck.blob("parameters"), state->host_mut(backend::Tensor::params),
                       dir.string() + "/parameters.safetensors");
    state->commit(backend::Tensor::params);
    const nlohmann::json info = ck.state().extra.value("data", nlohmann::json::object());
    const std::string tok_path = info.value("tokenizer", std::string());
    std::shared_ptr<data::Tokenizer> tok;
    if (!tok_path.empty()) tok = std::make_shared<data::Tokenizer>(data::Tokenizer::load(tok_path));
    const int32_t eod = info.value("end_of_document", tok ? -1 : data::ByteTokenizer::end_of_document);
    sc.vocab_limit = info.value("vocab_used", 0);
    std::printf("kiln: %s at step %lld | %s\n", dir.c_str(), (long long)ck.step(),
                tok ? ("tokenizer " + tok_path).c_str() : "byte-level tokens");
    for (const auto& p : prompts) {
      const auto ids = tok ? tok->encode(p) : data::ByteTokenizer::encode(p);
      int dropped = 0;
      const auto out = with_phase<Recipe>(checkpoint_phase<Recipe>(ck), [&]<int I>() {  // the checkpoint's phase model
        using PM = phase_model<Recipe, I>;
        return eval::generate<PM, MaxT, backend::cpu::Decoder<PM, MaxT>>(*state, ids, tokens, sc, eod, &dropped);
      });
      if (dropped)
        std::printf("kiln: the prompt's first %d tokens were dropped: prompt + %d new tokens exceed the %d-token "
                    "context\n", dropped, tokens, MaxT);
      std::printf("---\n%s%s\n", p.c_str(), (tok ? tok->decode(out) : data::ByteTokenizer::decode(out)).c_str());
      ++sc.seed;
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON): a message, not a crash
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

template <RecipeType Recipe>
int train_main(int argc, char** argv, const char* name) {
  const BlasInfo blas = select_blas_kernels(argv);
  if (argc > 1 && std::string_view(argv[1]) == "generate") return generate_main<Recipe>(argc - 1, argv + 1, name);
  if (argc > 1 && std::string_view(argv[1]) == "export") return hf_export_main<Recipe>(argc - 1, argv + 1, name);
  if (argc > 1 && std::string_view(argv[1]) == "import") return hf_import_main<Recipe>(argc - 1, argv + 1, name);
  using M = typename Recipe::model;
  using Phs = phases_of<Recipe>;
  using TrainerT = Trainer<Recipe>;
  constexpr int MaxT = max_seq_len<Recipe>;
  // Each phase's run-time settings are the recipe's for that phase with the command line's overrides on top: the
  // same arguments are parsed once per phase (a recipe of one phase: once).
  std::vector<TrainConfig> configs;
  bool show_plan = false;
  std::string only_phase;
  for (int i = 0; i < Phs::count; ++i) {
    configs.push_back(phase_defaults<Recipe>(i));
    CLI::App app{std::string("Kiln trainer for recipe ") + name +
                 " (CPU backend, fp32). `generate --help`: continue prompts with a checkpoint; `export --help` / "
                 "`import --help`: Hugging Face model directories."};
    add_train_options(app, configs.back());
    app.add_flag("--plan", show_plan, "print the static plan and exit");
    std::string phase_help = "run only this phase (";
    for (int k = 0; k < Phs::count; ++k) phase_help += (k ? ", " : "") + std::string(Phs::names[k]);
    app.add_option("--phase", only_phase,
                   phase_help + "); a later phase starts from a checkpoint of the one before it (--resume <dir>)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
  }
  TrainConfig& c = configs[0];  // settings that belong to the run, not a phase (threads, out, resume, prompts)
  try {
    if (show_plan) {
      print_recipe<Recipe>(std::cout, name, true);
      return 0;
    }
    int target = -1;
    if (!only_phase.empty()) {
      target = Phs::find(only_phase);
      std::string known;
      for (auto n : Phs::names) known += (known.empty() ? "" : ", ") + std::string(n);
      KILN_CHECK(target >= 0, "--phase ", only_phase, ": not a phase of recipe ", name, " (its phases: ", known, ")");
      KILN_CHECK(target == 0 || c.resume != "none", "--phase ", only_phase, " starts from a checkpoint of phase ",
                 Phs::names[target > 0 ? target - 1 : 0], ": give --resume <checkpoint dir> (or auto)");
    }
    if (c.threads > 0) {
      omp_set_num_threads(c.threads);
      openblas_set_num_threads(c.threads);
    }
    for (int i = 0; i < Phs::count; ++i)  // every option, before any work (the trainer checks again, for its users)
      validate(configs[size_t(i)], Phs::count > 1 ? " (phase " + std::string(Phs::names[i]) + ")" : "");
    using P = plan::ParamPlan<M>;
    std::printf("kiln: recipe %s | %s parameters | %d layers, hidden %d, %d/%d heads, vocab %d | %d phase%s:",
                name, plan::with_commas(P::parameters).c_str(), M::layers, M::hidden, M::heads, M::kv_heads, M::vocab,
                Phs::count, Phs::count == 1 ? "" : "s");
    [&]<int... I>(std::integer_sequence<int, I...>) {  // every phase's name and shape on the first line
      ((std::printf(" %s micro-batch %d x %d%s", std::string(Phs::names[I]).c_str(), phase_stage<Recipe, I>::micro_batch,
                    phase_stage<Recipe, I>::seq_len, I + 1 < Phs::count ? ";" : "\n")), ...);
    }(std::make_integer_sequence<int, Phs::count>{});
    using S0 = phase_stage<Recipe, 0>;  // the first phase's memory (each later one says its own when it starts)
    const double memory = double(plan::MemoryPlan<phase_model<Recipe, 0>, S0::micro_batch, S0::seq_len, plan::Fp32>::total);
    std::printf("kiln: %d threads | BLAS %s | kernels %s (%s) | memory %s\n", omp_get_max_threads(), blas.config.c_str(),
                blas.core.c_str(), blas.how.c_str(), plan::human_bytes(memory).c_str());
    // Sources starting to repeat: the first few are printed, the rest counted (every event is in the loader's state).
    long shown_repeats = 0, quiet_repeats = 0;
    std::shared_ptr<RunData> data;  // the current phase's (its tokenizer is the run's)
    std::string tokenizer_path;
    auto data_for = [&](int phase, const TrainConfig& pc) -> PhaseData {
      const long tokens_per_step = with_phase<Recipe>(phase, [&]<int I>() {
        return long(phase_stage<Recipe, I>::micro_batch) * phase_stage<Recipe, I>::seq_len * pc.grad_accum;
      });
      auto d = std::make_shared<RunData>(open_run_data(pc, M::vocab, tokens_per_step, [&](const std::string& e) {
        if (e.find("starts epoch ") != std::string::npos && shown_repeats++ >= 3) {
          ++quiet_repeats;
          return;
        }
        std::printf("  data: %s\n", e.c_str());
        std::fflush(stdout);
      }));
      if (data)
        KILN_CHECK(d->tokenizer_path == tokenizer_path, "phase ", Phs::names[phase], " reads its data with tokenizer \"",
                   d->tokenizer_path, "\", the run's is \"", tokenizer_path, "\": every phase of a run uses one tokenizer");
      tokenizer_path = d->tokenizer_path;
      const double tokens = double(pc.steps) * double(tokens_per_step);
      std::printf("kiln: data %s\n", d->summary.c_str());
      std::printf("kiln: %ld steps x %ld tokens = %.2fM tokens (%.2f epochs) | lr %.2e %s, warmup %ld\n", pc.steps,
                  tokens_per_step, tokens / 1e6, tokens / d->epoch_tokens, pc.lr, schedule_name(pc.schedule), pc.warmup);
      for (size_t k = 0; k < pc.stages.size(); ++k) {
        std::string b;
        for (const auto& [n, w] : pc.stages[k].boost) b += (b.empty() ? "" : ", ") + n + " x" + std::to_string(w).substr(0, 4);
        std::printf("kiln: data stage %zu from %.0f%% of the %s (step %ld): %s%s\n", k + 1, 100 * pc.stages[k].start,
                    Phs::count > 1 ? "phase" : "run", long(pc.stages[k].start * double(pc.steps)),
                    pc.stages[k].absolute ? "weights " : b.empty() ? "natural mixture" : "natural mixture, boosted ",
                    b.c_str());
      }
      data = d;
      return PhaseData{std::move(d->train), d->make_eval};
    };
    if (c.out.empty()) c.out = std::string("runs/") + name;
    for (auto& pc : configs) pc.out = c.out;
    std::filesystem::create_directories(c.out);
    TrainerT trainer(configs, data_for);
    // Checkpoints: <out>/checkpoints/step_N, every --checkpoint-every steps, at each phase's end, and on SIGTERM /
    // SIGINT.
    const std::string ckpt_root = c.out + "/checkpoints";
    auto warn = [](const std::string& w) { std::printf("kiln: warning: %s\n", w.c_str()); };
    bool resumed = false;
    if (c.resume == "none") {
      // Starting over in this run directory: its old checkpoints would mix with the new run's, so they go.
      if (const auto old = io::list_checkpoints(ckpt_root); !old.empty()) {
        std::filesystem::remove_all(ckpt_root);
        std::printf("kiln: --resume none: starting over; removed the %zu checkpoints of the previous run in %s "
                    "(--out <dir> keeps runs apart)\n", old.size(), ckpt_root.c_str());
      }
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
        const auto same_file = [](const std::string& a, const std::string& b) {
          if (a.empty() || b.empty()) return a == b;
          std::error_code e1, e2;
          return std::filesystem::weakly_canonical(a, e1) == std::filesystem::weakly_canonical(b, e2);
        };
        KILN_CHECK(c.allow_tokenizer_change || same_file(theirs, data->tokenizer_path), found->dir,
                   ": the checkpoint was trained with tokenizer ", theirs.empty() ? "(byte-level)" : "\"" + theirs + "\"",
                   " but this run reads its data with ",
                   data->tokenizer_path.empty() ? "byte-level tokens" : "\"" + data->tokenizer_path + "\"",
                   ": pass --tokenizer ", theirs.empty() ? "\"\"" : theirs, " (and --data with shards made with it), or "
                   "--allow-tokenizer-change to train on with the new one on purpose");
        load_checkpoint(trainer, ck, name);
        resumed = true;
        std::printf("kiln: resumed from %s at step %ld (phase %s, step %ld of it; %s)\n", found->dir.c_str(),
                    trainer.run_step(), std::string(Phs::names[trainer.phase()]).c_str(), trainer.step(),
                    trainer.data().where().c_str());
        if (target >= 0 && target != trainer.phase()) {
          KILN_CHECK(target == trainer.phase() + 1, "--phase ", only_phase, " starts from a checkpoint of phase ",
                     target > 0 ? Phs::names[target - 1] : "(none: it is the first)", ", but ", found->dir,
                     " is of phase ", Phs::names[trainer.phase()]);
          trainer.start_phase(target);  // parameters and optimizer state carry over; the phase's data and shape start
          std::printf("kiln: phase %s starts from the checkpoint of phase %s\n", only_phase.c_str(),
                      std::string(Phs::names[target - 1]).c_str());
        }
      } else {
        KILN_CHECK(target <= 0, "--phase ", only_phase, " starts from a checkpoint of phase ",
                   target > 0 ? Phs::names[target - 1] : "", ", and ", ckpt_root, " has none (--resume <dir> names one)");
      }
    }
    if (target >= 0) trainer.stop_after_phase(target);
    long saved_at = resumed ? trainer.run_step() : -1;  // the step of the newest checkpoint this run has
    auto save = [&] {
      if (saved_at == trainer.run_step()) return;  // a phase that ended where the run resumed: it is saved already
      saved_at = trainer.run_step();
      const auto info = save_checkpoint(trainer, ckpt_root, c.keep_checkpoints, name, warn,
                                        {{"tokenizer", data->tokenizer_path}, {"end_of_document", data->end_of_document},
                                         {"vocab_used", data->vocab_used}});
      std::printf("kiln: checkpoint %s\n", info.dir.c_str());
    };
    install_stop_handlers();
    trainer.after_step = [&](long step) {
      if (const int sig = stop_signal().load()) {
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
    if (Phs::count > 1) {
      trainer.on_phase_start = [&](int p) {
        with_phase<Recipe>(p, [&]<int I>() {
          using PM = phase_model<Recipe, I>;
          using St = phase_stage<Recipe, I>;
          std::printf("\nkiln: phase %d/%d %s: micro-batch %d x %d, %s theta %g | memory %s\n", p + 1, Phs::count,
                      std::string(Phs::names[p]).c_str(), St::micro_batch, St::seq_len, PM::positional::name,
                      PM::positional::theta,
                      plan::human_bytes(double(plan::MemoryPlan<PM, St::micro_batch, St::seq_len, plan::Fp32>::total)).c_str());
        });
      };
      trainer.on_phase_end = [&](int p) {
        if (p < Phs::count - 1 && p != target) save();  // the next phase (or a later --phase run) starts from here
      };
    }
    // Metrics: one JSON line per step and per evaluation, and TensorBoard scalars (tools/kiln plot <run> draws them).
    // A fresh run never truncates an older run's metrics: they are kept beside it as metrics.<k>.jsonl.
    const std::string metrics = c.out + "/metrics.jsonl";
    if (!resumed && std::filesystem::exists(metrics) && std::filesystem::file_size(metrics) > 0) {
      int k = 1;
      while (std::filesystem::exists(c.out + "/metrics." + std::to_string(k) + ".jsonl")) ++k;
      const std::string kept = c.out + "/metrics." + std::to_string(k) + ".jsonl";
      std::filesystem::rename(metrics, kept);
      std::printf("kiln: the previous run's metrics are kept as %s\n", kept.c_str());
    }
    io::JsonlWriter jsonl(metrics, /*append=*/true);
    io::TensorBoardWriter tb(c.out + "/tb");
    trainer.on_step = [&](const typename TrainerT::Log& l) {
      nlohmann::json rec = {{"step", l.step}, {"loss", l.loss}, {"lr", l.lr}, {"grad_norm", l.grad_norm},
                            {"tokens_per_s", l.tokens_per_s}, {"skipped", l.skipped}, {"time", io::unix_now()}};
      if (Phs::count > 1) rec["phase"] = std::string(Phs::names[l.phase]), rec["phase_step"] = l.phase_step;
      jsonl.write(rec);
      tb.scalars(l.step, {{"train/loss", float(l.loss)}, {"train/lr", float(l.lr)}, {"train/grad_norm", float(l.grad_norm)},
                          {"train/tokens_per_s", float(l.tokens_per_s)}});
      if (l.step % trainer.config().log_every == 0) tb.flush();
    };
    trainer.on_eval = [&](long step, double v) {
      jsonl.write({{"step", step}, {"val_loss", v}, {"time", io::unix_now()}});
      tb.scalar("eval/loss", step, float(v));
      tb.flush();
    };
    std::printf("kiln: run directory %s (metrics.jsonl, tb/, checkpoints/; `tools/kiln plot %s` draws the curves)\n",
                c.out.c_str(), c.out.c_str());
    const double before = trainer.evaluate();
    std::printf("kiln: held-out loss %s %.4f (ln(vocab) = %.4f)\n", resumed ? "at the checkpoint" : "before training",
                before, std::log(double(M::vocab)));
    const long start = trainer.run_step();
    const bool finished = trainer.step() >= trainer.config().steps &&
                          (trainer.phase() == Phs::count - 1 || trainer.phase() == target);
    if (finished)
      std::printf("kiln: the checkpoint is at the end of %s (step %ld): nothing left to train (--resume none starts "
                  "over)\n", Phs::count > 1 ? ("phase " + std::string(Phs::names[trainer.phase()])).c_str() : "the run",
                  trainer.run_step());
    if (!finished && !trainer.run()) return stop_signal().load() == SIGTERM ? 143 : 130;
    if (trainer.run_step() > start) save();
    if (quiet_repeats)
      std::printf("kiln: data sources began another epoch %ld more times (not listed; the first %ld are above)\n",
                  quiet_repeats, shown_repeats - quiet_repeats);
    const double after = trainer.evaluate();
    trainer.on_eval(trainer.run_step(), after);
    char bpb[48] = "";
    if (data->bytes_per_token > 0)
      std::snprintf(bpb, sizeof bpb, " = %.3f bits/byte", after / std::log(2.0) / data->bytes_per_token);
    std::printf("\nkiln: held-out loss %.4f nats/token%s (from %.4f before training: %.0f%% lower)\n", after, bpb, before,
                100.0 * (1.0 - after / before));
    if (!c.prompts.empty())
      std::printf("\nWhat it learned: continuations (temperature %.2f, top-p %.2f)\n", c.temperature, c.top_p);
    for (size_t i = 0; i < c.prompts.size(); ++i) {
      const eval::SamplingConfig sc{c.temperature, c.top_p, c.seed + i, data->vocab_used};
      int dropped = 0;
      auto out = with_phase<Recipe>(trainer.phase(), [&]<int I>() {  // the model of the phase the run ended in
        using PM = phase_model<Recipe, I>;
        return eval::generate<PM, MaxT, backend::cpu::Decoder<PM, MaxT>>(
            trainer.state(), data->encode(c.prompts[i]), c.sample_tokens, sc, data->end_of_document, &dropped);
      });
      const bool tty = isatty(fileno(stdout));  // the prompt in bold on a terminal, plain in logs
      std::printf("---\n%s%s%s%s\n", tty ? "\033[1m" : "", c.prompts[i].c_str(), tty ? "\033[0m" : "",
                  data->decode(out).c_str());
      if (dropped)
        std::printf("(the prompt's first %d tokens were dropped: prompt + %d new tokens exceed the %d-token context)\n",
                    dropped, c.sample_tokens, MaxT);
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON): a message, not a crash
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln
