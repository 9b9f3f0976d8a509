// tools/plot.cpp: `tools/kiln plot <run dir>` renders a run's loss, learning-rate and gradient-norm curves (and
// held-out loss where evaluated) from <run>/metrics.jsonl into <run>/curves.png with gnuplot (Debian gnuplot-nox).
// A skipped step (its loss or norm not finite: written as null) is drawn as a red cross at the last finite loss.
// A program's phases are marked where each starts; tasks scored during the run (CF, each by its record's
// "headline" measure, the trainer's table's) and the additions probe get a panel of their own.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {
// A number of a record, or NaN for null / absent / not a number (a skipped step's loss).
double number(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : std::nan("");
}

int plot(int argc, char** argv) {
  CLI::App app{"Plot a Kiln run's metrics (loss, lr, grad norm, held-out loss) to PNG with gnuplot"};
  std::string run, out;
  app.add_option("run", run, "run directory holding metrics.jsonl")->required();
  app.add_option("-o,--output", out, "PNG to write (default: <run>/curves.png)");
  CLI11_PARSE(app, argc, argv);
  namespace fs = std::filesystem;
  const fs::path metrics = fs::path(run) / "metrics.jsonl";
  if (out.empty()) out = (fs::path(run) / "curves.png").string();
  std::ifstream in(metrics);
  if (!in) {
    std::cerr << "kiln plot: cannot read " << metrics << " (a run directory holds metrics.jsonl)\n";
    return 1;
  }
  const fs::path train_dat = fs::path(out).replace_extension(".train.dat");
  const fs::path eval_dat = fs::path(out).replace_extension(".eval.dat");
  const fs::path skip_dat = fs::path(out).replace_extension(".skipped.dat");
  std::ofstream train(train_dat), eval(eval_dat), skip(skip_dat);
  std::string line;
  long n = 0, lineno = 0, evals = 0, skipped = 0;
  double last_loss = std::nan("");
  std::string eval_phase;
  std::vector<std::pair<std::string, long>> phase_starts;             // a program's phases, where each starts
  std::map<std::string, std::vector<std::pair<long, double>>> scores;  // task / probe -> (step, accuracy)
  std::vector<std::string> score_order;
  const auto score = [&](const std::string& name, long step, double v) {
    if (!std::isfinite(v)) return;
    if (!scores.count(name)) score_order.push_back(name);
    scores[name].emplace_back(step, v);
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step")) {
      std::cerr << "kiln plot: " << metrics << ":" << lineno << ": not a metrics record (a JSON object with \"step\")\n";
      return 1;
    }
    if (!j["step"].is_number_integer()) {
      std::cerr << "kiln plot: " << metrics << ":" << lineno << ": field step is not an integer\n";
      return 1;
    }
    const long step = j["step"].get<long>();
    if (j.contains("task") && j.value("formulation", std::string()) == "CF" && j["task"].is_string()) {
      const std::string t = j["task"].get<std::string>();
      score(t, step, number(j, j.contains("headline") ? "headline" : "acc_norm_char"));  // the trainer's choice
      continue;
    }
    if (j.value("probe", std::string()) == "arithmetic") {
      score("additions think", step, number(j, "acc_think"));
      score("additions no-think", step, number(j, "acc_no_think"));
      continue;
    }
    if (j.contains("phase") && j["phase"].is_string() && j.contains("loss") &&
        (phase_starts.empty() || phase_starts.back().first != j["phase"].get<std::string>()))
      phase_starts.emplace_back(j["phase"].get<std::string>(), step - 1);
    if (j.contains("val_loss")) {
      if (const double v = number(j, "val_loss"); std::isfinite(v)) {
        // each phase's held-out data is its own (text, conversations, pairs): a line per phase, not across them
        const std::string ph = j.contains("phase") && j["phase"].is_string() ? j["phase"].get<std::string>() : "";
        if (evals > 0 && ph != eval_phase) eval << "\n";
        eval_phase = ph;
        eval << step << " " << v << "\n";
        ++evals;
      }
    } else if (j.contains("loss")) {
      const double loss = number(j, "loss"), norm = number(j, "grad_norm");
      const bool bad = j.value("skipped", false) || !std::isfinite(loss) || !std::isfinite(norm);
      if (bad) {
        ++skipped;
        if (std::isfinite(last_loss)) skip << step << " " << last_loss << "\n";
        continue;
      }
      train << step << " " << loss << " " << number(j, "lr") << " " << norm << "\n";
      last_loss = loss;
      ++n;
    }
  }
  train.close();
  eval.close();
  skip.close();
  const std::string skipped_plot =
      skipped ? ", '" + skip_dat.string() + "' using 1:2 with points pt 2 ps 2 lc rgb 'red' title 'skipped step'" : "";
  if (n == 0) {
    std::cerr << "kiln plot: " << metrics << " holds no training steps\n";
    return 1;
  }
  std::vector<fs::path> score_dats;
  std::string score_plot;
  for (const auto& name : score_order) {
    score_dats.push_back(fs::path(out).replace_extension("." + std::to_string(score_dats.size()) + ".dat"));
    std::ofstream f(score_dats.back());
    for (const auto& [st, v] : scores[name]) f << st << " " << v << "\n";
    score_plot += std::string(score_plot.empty() ? "plot " : ", ") + "'" + score_dats.back().string() +
                  "' using 1:2 with linespoints title '" + name + "'";
  }
  std::string marks;  // the phases: a dashed line where each starts, its name at the top
  for (size_t i = 0; i < phase_starts.size() && phase_starts.size() > 1; ++i) {
    char b[256];
    std::snprintf(b, sizeof b, "set arrow from %ld, graph 0 to %ld, graph 1 nohead dt 2 lc rgb 'gray'\n"
                  "set label '%s' at %ld, graph 0.95 offset 0.5, 0 font ',9'\n", phase_starts[i].second,
                  phase_starts[i].second, phase_starts[i].first.c_str(), phase_starts[i].second);
    marks += b;
  }
  const int panels = score_plot.empty() ? 3 : 4;
  FILE* gp = popen("gnuplot", "w");
  if (!gp) {
    std::cerr << "kiln plot: cannot start gnuplot (apt-get install gnuplot-nox; tools/kiln setup does)\n";
    return 1;
  }
  std::fprintf(gp,
               "set terminal pngcairo size 1200,%d\nset output '%s'\nset multiplot layout %d,1 title '%s'\n"
               "set grid\nset xlabel 'step'\n%s%sset ylabel 'loss'\n"
               "plot '%s' using 1:2 with lines title 'train loss'%s%s\n"
               "set ylabel 'learning rate'\nplot '%s' using 1:3 with lines title 'lr'\n"
               "set ylabel 'grad norm'\nset logscale y\nplot '%s' using 1:4 with lines title 'grad norm (before clip)'\n",
               panels * 300, out.c_str(), panels, run.c_str(), panels > 3 ? "set rmargin 26\n" : "", marks.c_str(),
               train_dat.c_str(),
               evals ? (", '" + eval_dat.string() + "' using 1:2 with linespoints title 'held-out loss'").c_str() : "",
               skipped_plot.c_str(), train_dat.c_str(), train_dat.c_str());
  if (!score_plot.empty())
    std::fprintf(gp, "unset logscale y\nset ylabel 'held-out accuracy'\nset yrange [0:1]\nset key outside right\n%s\n",
                 score_plot.c_str());
  std::fprintf(gp, "unset multiplot\n");
  const int rc = pclose(gp);
  fs::remove(train_dat);
  fs::remove(eval_dat);
  fs::remove(skip_dat);
  for (const auto& d : score_dats) fs::remove(d);
  if (rc != 0) {
    std::cerr << "kiln plot: gnuplot failed (exit " << rc << ")\n";
    return 1;
  }
  std::cout << "kiln plot: " << n << " steps, " << evals << " evaluations";
  if (!scores.empty()) std::cout << ", " << scores.size() << " scored measures";
  if (phase_starts.size() > 1) std::cout << ", " << phase_starts.size() << " phases";
  if (skipped) std::cout << ", " << skipped << " skipped steps (marked)";
  std::cout << " -> " << out << "\n";
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    return plot(argc, argv);
  } catch (const std::exception& e) {  // filesystem, JSON, anything: one line naming the problem, exit 1
    std::cerr << "kiln plot: error: " << e.what() << "\n";
    return 1;
  }
}
