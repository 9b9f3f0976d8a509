// tools/ablate.cpp: kiln_ablate, an ablation campaign (tools/kiln ablate builds the trainers and calls it).
//
//   kiln_ablate --trainer build/train_demo_pretrain --trainer build/train_demo_mqa --seeds 3 --steps 200 --evals 4
//               --task task.jsonl --out runs/ablate/demo [-- trainer options for every run]
// trains every trainer's recipe once per seed 1..S (the same seeds for every recipe: the same data order) into
// <out>/<recipe>/seed<k>/ (train.log beside the run's metrics), evaluating at the same token counts, then reads the
// runs back (kiln/eval/ablation.hpp) and prints one table: parameters, FLOPs, tokens, losses, the difference from
// the first (base) recipe, each task's score with its spread over seeds, tokens/s; and each task's four criteria.
// The table also goes to <out>/ablation.md, the curves of all runs to <out>/ablation.png (gnuplot). A run that
// finished with the same command before is not trained again, so an interrupted campaign goes on where it stopped.
//   kiln_ablate --report <out> [--base <recipe>]  only the report, from runs on disk.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/eval/ablation.hpp"

namespace fs = std::filesystem;
using kiln::eval::Campaign;
using kiln::eval::RunMetrics;

namespace {

// Runs argv with stdout and stderr into `log`; the exit status (or 128 + signal).
int run_logged(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = fork();
  KILN_CHECK(pid >= 0, "cannot start ", argv[0], ": ", kiln::core::errno_text());
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1), dup2(fd, 2), close(fd);
    execv(args[0], args.data());
    std::fprintf(stderr, "kiln_ablate: cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string last_lines(const std::string& path, int n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > size_t(n) ? lines.size() - size_t(n) : 0; i < lines.size(); ++i)
    out += "    " + lines[i] + "\n";
  return out;
}

// The recipe a trainer was built for: train_<recipe>[_cuda|_simt].
std::string recipe_of_trainer(const std::string& trainer) {
  std::string stem = fs::path(trainer).filename().string();
  KILN_CHECK(stem.rfind("train_", 0) == 0, "--trainer ", trainer, ": expected a Kiln trainer named train_<recipe>");
  return stem.substr(6);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

// The curves of every recipe (means over seeds) into <out>/ablation.png: training loss (smoothed) and held-out loss,
// then each task's score with what guessing scores. Data files stay in <out>/curves/.
void draw(const Campaign& c, const std::string& out) {
  const fs::path dir = fs::path(out) / "curves";
  fs::create_directories(dir);
  std::vector<std::string> train_plots, val_plots;
  std::map<std::string, std::vector<std::string>> task_plots;
  int color = 1;
  for (const auto& s : c.recipes) {
    const std::string name = s.recipe;
    // training loss: the seeds' mean at each step, then a moving average over ~1/25 of the run
    std::map<long, std::pair<double, int>> by_tokens;
    for (const RunMetrics* r : s.runs)
      for (const auto& p : r->train_loss) by_tokens[p.tokens].first += p.value, by_tokens[p.tokens].second += 1;
    std::vector<std::pair<long, double>> mean;
    for (const auto& [t, v] : by_tokens) mean.emplace_back(t, v.first / v.second);
    const size_t w = std::max<size_t>(1, mean.size() / 25);
    {
      std::ofstream f(dir / (name + ".train.dat"));
      double sum = 0;
      for (size_t i = 0; i < mean.size(); ++i) {
        sum += mean[i].second;
        if (i >= w) sum -= mean[i - w].second;
        if (i + 1 >= w) f << mean[i].first << " " << sum / double(w) << "\n";
      }
    }
    auto write_mean = [&](const std::string& file, auto points_of) {
      std::map<long, std::pair<double, int>> at;
      for (const RunMetrics* r : s.runs)
        for (const auto& p : points_of(*r)) at[p.tokens].first += p.value, at[p.tokens].second += 1;
      std::ofstream f(dir / file);
      for (const auto& [t, v] : at) f << t << " " << v.first / v.second << "\n";
    };
    write_mean(name + ".val.dat", [](const RunMetrics& r) { return r.val_loss; });
    const std::string style = " lc " + std::to_string(color) + " lw 2";
    train_plots.push_back("'" + (dir / (name + ".train.dat")).string() + "' using 1:2 with lines" + style + " title '" +
                          name + "'");
    val_plots.push_back("'" + (dir / (name + ".val.dat")).string() + "' using 1:2 with linespoints" + style +
                        " title '" + name + "'");
    for (const std::string& k : c.keys) {
      std::string file = name + "." + k + ".dat";
      for (char& ch : file)
        if (ch == '/') ch = '_';
      write_mean(file, [&](const RunMetrics& r) {
        const auto it = r.scores.find(k);
        return it == r.scores.end() ? std::vector<kiln::eval::Point>{} : it->second;
      });
      task_plots[k].push_back("'" + (dir / file).string() + "' using 1:2 with linespoints" + style + " title '" + name +
                              "'");
    }
    ++color;
  }
  const int rows = 1 + int(c.keys.size() + 1) / 2;
  FILE* gp = popen("gnuplot", "w");
  KILN_CHECK(gp, "cannot start gnuplot (apt-get install gnuplot-nox; tools/kiln setup does)");
  std::string vp;
  for (const auto& p : val_plots) vp += (vp.empty() ? "" : ", ") + p;
  std::string tp;
  for (const auto& p : train_plots) tp += (tp.empty() ? "" : ", ") + p;
  std::string script = "set terminal pngcairo noenhanced size 1400," + std::to_string(420 * rows) + "\nset output '" +
           (fs::path(out) / "ablation.png").string() + "'\nset multiplot layout " + std::to_string(rows) +
           ",2 title 'ablation campaign " + fs::path(out).filename().string() +
           " (means over seeds)'\nset grid\nset key top right\nset xlabel 'tokens'\n" +
           "set ylabel 'training loss (smoothed)'\nplot " + tp + "\nset ylabel 'held-out loss'\nplot " + vp + "\n" +
           "set key bottom right\n";
  for (const auto& cr : c.criteria) {
    std::string p;
    for (const auto& q : task_plots[cr.key]) p += (p.empty() ? "" : ", ") + q;
    if (std::isfinite(cr.random)) p += ", " + kiln::eval::fmt("%g", cr.random) + " with lines dt 2 lc 'black' title 'random'";
    script += "set ylabel '" + cr.key + "'\nplot " + p + "\n";
  }
  script += "unset multiplot\n";
  std::fputs(script.c_str(), gp);
  KILN_CHECK(pclose(gp) == 0, "gnuplot failed drawing ", (fs::path(out) / "ablation.png").string());
}

// The runs of a campaign directory: <out>/<recipe>/seed<k>/, all of them, or (`only` not empty) those recipes' seeds
// 1..seeds.
Campaign read_campaign(const std::string& out, const std::vector<std::string>& order, const std::string& metric,
                       const std::vector<std::string>& only = {}, int seeds = 0) {
  std::vector<RunMetrics> runs;
  KILN_CHECK(fs::is_directory(out), out, ": no such campaign directory");
  std::vector<fs::path> dirs;
  if (!only.empty()) {
    for (const auto& name : only)
      for (int k = 1; k <= seeds; ++k) dirs.push_back(fs::path(out) / name / ("seed" + std::to_string(k)));
  } else {
    for (const auto& recipe : fs::directory_iterator(out)) {
      if (!recipe.is_directory()) continue;
      for (const auto& seed : fs::directory_iterator(recipe.path()))
        if (seed.is_directory() && seed.path().filename().string().rfind("seed", 0) == 0 &&
            fs::exists(seed.path() / "run.json"))
          dirs.push_back(seed.path());
    }
    std::sort(dirs.begin(), dirs.end());  // directory order is the file system's
  }
  for (const auto& d : dirs) runs.push_back(kiln::eval::read_run(d.string(), metric));
  KILN_CHECK(!runs.empty(), out, ": holds no runs (<recipe>/seed<k>/ directories with run.json and metrics.jsonl)");
  std::vector<std::string> recipes = order;  // the recipes as their runs name them (train_demo_cuda's are "demo")
  if (!only.empty()) {
    recipes.clear();
    for (const RunMetrics& r : runs)
      if (std::find(recipes.begin(), recipes.end(), r.recipe) == recipes.end()) recipes.push_back(r.recipe);
  }
  return kiln::eval::summarize(std::move(runs), recipes);
}

int ablate(int argc, char** argv) {
  CLI::App app{"An ablation campaign: every trainer's recipe trained once per seed on the same data order, evaluated "
               "at the same token counts, compared in one table (and ablation.png)"};
  std::vector<std::string> trainers, tasks, extra;
  std::string out, report, base, metric = "acc_norm_char";
  int seeds = 3, evals = 4;
  long steps = 0, eval_tokens = 0, task_examples = 0;
  app.add_option("--trainer", trainers, "a trainer (train_<recipe>); the first is the base (repeatable)");
  app.add_option("--out", out, "the campaign directory: <out>/<recipe>/seed<k>/ per run");
  app.add_option("--report", report, "only the report, from the runs in this campaign directory");
  app.add_option("--base", base, "with --report: the recipe the others are compared to (default: by name)");
  app.add_option("--seeds", seeds, "seeds 1..n per recipe")->capture_default_str()->check(CLI::Range(1, 100));
  app.add_option("--steps", steps, "steps of every run (0: each recipe's own)")->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--evals", evals, "evaluations during a run, evenly spaced in steps (needs --steps); the run's "
                 "start and end are evaluated too")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--eval-every-tokens", eval_tokens, "evaluate whenever a run's tokens pass a multiple of n (for "
                 "recipes of different batch shapes; replaces --evals)")->check(CLI::NonNegativeNumber);
  app.add_option("--task", tasks, "a multiple-choice task (jsonl) scored at every evaluation (repeatable)");
  app.add_option("--task-examples", task_examples, "score the first n examples of each task (0: all)")
      ->capture_default_str();
  app.add_option("--metric", metric, "the task score compared: acc, acc_norm_char (lm-eval's acc_norm) or "
                 "acc_norm_token")->capture_default_str();
  app.add_option("extra", extra, "after --: options given to every trainer (e.g. -- --lr 1e-3)");
  app.positionals_at_end();
  CLI11_PARSE(app, argc, argv);
  try {
    if (!report.empty()) {
      KILN_CHECK(trainers.empty(), "--report reads runs on disk; it takes no --trainer");
      const Campaign c = read_campaign(report, base.empty() ? std::vector<std::string>{} : std::vector{base}, metric);
      const std::string md = kiln::eval::report_markdown(c);
      std::printf("%s", md.c_str());
      kiln::core::write_text_atomic((fs::path(report) / "ablation.md").string(), md);
      draw(c, report);
      return 0;
    }
    KILN_CHECK(!trainers.empty(), "give the trainers to compare (--trainer train_<base> --trainer train_<variant> "
               "...), or --report <campaign dir>");
    KILN_CHECK(!out.empty(), "--out: the campaign directory is needed");
    KILN_CHECK(eval_tokens > 0 || steps > 0, "--evals needs --steps (or give --eval-every-tokens)");
    std::vector<std::string> names;
    for (const auto& t : trainers) {
      KILN_CHECK(fs::is_regular_file(t) && access(t.c_str(), X_OK) == 0, "--trainer ", t, ": no such executable");
      names.push_back(recipe_of_trainer(t));
      for (size_t i = 0; i + 1 < names.size(); ++i)
        KILN_CHECK(names[i] != names.back(), "--trainer ", t, ": recipe ", names.back(), " is given twice");
    }
    for (const auto& t : tasks) KILN_CHECK(fs::is_regular_file(t), "--task ", t, ": no such file");
    fs::create_directories(out);
    const long every = eval_tokens > 0 ? 0 : std::max(1L, steps / evals);
    const int total = int(trainers.size()) * seeds;
    std::printf("kiln_ablate: %zu recipes x %d seeds = %d runs%s, evaluated %s; into %s\n", trainers.size(), seeds,
                total, steps > 0 ? (" of " + std::to_string(steps) + " steps").c_str() : "",
                eval_tokens > 0 ? ("every " + std::to_string(eval_tokens) + " tokens").c_str()
                                : ("every " + std::to_string(every) + " steps").c_str(),
                out.c_str());
    const auto t0 = std::chrono::steady_clock::now();
    int k = 0;
    for (int seed = 1; seed <= seeds; ++seed) {  // seed-major: after the first round every recipe has one run
      for (size_t i = 0; i < trainers.size(); ++i) {
        ++k;
        const std::string dir = (fs::path(out) / names[i] / ("seed" + std::to_string(seed))).string();
        std::vector<std::string> argv = {fs::absolute(trainers[i]).string(), "--out", dir, "--seed",
                                         std::to_string(seed), "--resume", "none", "--sample-tokens", "0",
                                         "--checkpoint-every", "0", "--keep-checkpoints", "1"};
        if (steps > 0) argv.insert(argv.end(), {"--steps", std::to_string(steps)});
        if (eval_tokens > 0)
          argv.insert(argv.end(), {"--eval-every-tokens", std::to_string(eval_tokens)});
        else
          argv.insert(argv.end(), {"--eval-every", std::to_string(every)});
        for (const auto& t : tasks) argv.insert(argv.end(), {"--eval-task", fs::absolute(t).string()});
        if (task_examples > 0) argv.insert(argv.end(), {"--eval-task-examples", std::to_string(task_examples)});
        argv.insert(argv.end(), extra.begin(), extra.end());
        const std::string command = join(argv), stamp = dir + "/ablate.done";
        std::string before;
        if (std::ifstream s(stamp); s) std::getline(s, before);
        if (before == command) {
          std::printf("[%d/%d] %s seed %d: done before (%s), kept\n", k, total, names[i].c_str(), seed, dir.c_str());
          continue;
        }
        fs::create_directories(dir);
        std::printf("[%d/%d] %s seed %d ...", k, total, names[i].c_str(), seed);
        std::fflush(stdout);
        const auto r0 = std::chrono::steady_clock::now();
        const std::string log = dir + "/train.log";
        const int rc = run_logged(argv, log);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
        if (rc != 0) {
          std::printf(" failed (exit %d)\n", rc);
          KILN_CHECK(false, names[i], " seed ", seed, " failed (exit ", rc, "): ", log, " ends with\n",
                     last_lines(log, 12), "the campaign stops here (runs already finished are kept and reused)");
        }
        const RunMetrics m = kiln::eval::read_run(dir, metric);
        std::printf(" %.0f s, held-out loss %.4f\n", secs, m.final_val_loss());
        kiln::core::write_text_atomic(stamp, command + "\n");
      }
    }
    std::printf("kiln_ablate: %d runs in %.0f s\n\n", total,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    const Campaign c = read_campaign(out, names, metric, names, seeds);
    const std::string md = kiln::eval::report_markdown(c);
    std::printf("%s", md.c_str());
    kiln::core::write_text_atomic((fs::path(out) / "ablation.md").string(), md);
    draw(c, out);
    std::printf("\nkiln_ablate: the table is in %s, the curves in %s\n", (fs::path(out) / "ablation.md").c_str(),
                (fs::path(out) / "ablation.png").c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "kiln_ablate: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) { return ablate(argc, argv); }
