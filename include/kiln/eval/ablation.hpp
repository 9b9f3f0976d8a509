// kiln/eval/ablation.hpp: an ablation campaign's runs read back and compared (tools/kiln ablate, tools/ablate.cpp).
//
// A campaign trains every recipe once per seed (the same seeds, so the same data order, for every recipe) into
// <campaign>/<recipe>/seed<k>/, each a run directory with run.json and metrics.jsonl. From those:
//   per recipe    parameters, training FLOPs per token, tokens, the final training loss (mean of the last tenth of
//                 the steps), the final held-out loss, its paired difference from the base recipe (seed k against
//                 seed k: the same batches, so the data's noise cancels), each task's final score, tokens/s; as the
//                 mean and the sample standard deviation over seeds
//   per task      the playbook's four criteria for an evaluation that can judge ablations (FineTasks' method):
//                   monotonicity        Spearman's rank correlation of score and tokens, mean over the runs
//                   noise               the standard deviation of the final score over seeds, mean over recipes
//                   above random        the final score minus what guessing scores, mean over the runs
//                   ranking consistency Kendall's tau-b between the recipes' rankings at consecutive evaluations
//                                       (tokens > 0; scores averaged over seeds), mean over the pairs
// A task "scored" is one (task, formulation) pair, e.g. fortunes/CF, at one metric (acc_norm_char by default).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"

namespace kiln::eval {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- statistics ---------------------------------------------------------------------------------------------
inline double mean_of(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}
// The sample standard deviation (n - 1); NaN below two values.
inline double std_of(const std::vector<double>& v) {
  if (v.size() < 2) return kNaN;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}
// Ranks 1..n, ties given the mean of the ranks they span.
inline std::vector<double> ranks_of(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) r[order[k]] = 0.5 * double(i + j) + 1.0;
    i = j + 1;
  }
  return r;
}
inline double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size() || x.size() < 2) return kNaN;
  const double mx = mean_of(x), my = mean_of(y);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : kNaN;  // a constant series has no rank order
}
// Spearman's rho: Pearson's correlation of the ranks (ties averaged).
inline double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return pearson(ranks_of(x), ranks_of(y));
}
// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)), n0 = n (n - 1) / 2.
inline double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size() || x.size() < 2) return kNaN;
  double conc = 0, disc = 0, tx = 0, ty = 0;
  const double n0 = double(x.size()) * double(x.size() - 1) / 2;
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = i + 1; j < x.size(); ++j) {
      const double dx = x[i] - x[j], dy = y[i] - y[j];
      if (dx == 0) tx += 1;
      if (dy == 0) ty += 1;
      if (dx * dy > 0) conc += 1;
      if (dx * dy < 0) disc += 1;
    }
  const double d = std::sqrt((n0 - tx) * (n0 - ty));
  return d > 0 ? (conc - disc) / d : kNaN;
}
// Student's t at 97.5% (a two-sided 95% test) for `dof` degrees of freedom (table; 1.96 beyond 120).
inline double t_critical_95(int dof) {
  static constexpr double t[] = {0,     12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201, 2.179,  2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086};
  if (dof < 1) return kNaN;
  if (dof <= 20) return t[dof];
  return dof <= 30 ? 2.042 : dof <= 60 ? 2.000 : dof <= 120 ? 1.980 : 1.960;
}
// Whether paired differences (mean, sample std, n) differ from 0 by a two-sided t-test at 5%.
inline bool significant(double mean, double sd, int n) {
  if (n < 2 || !std::isfinite(sd)) return false;
  return std::fabs(mean) > t_critical_95(n - 1) * sd / std::sqrt(double(n));
}

// Mean of the finite values (NaN when none is).
inline double finite_mean(const std::vector<double>& v) {
  std::vector<double> f;
  for (double x : v)
    if (std::isfinite(x)) f.push_back(x);
  return mean_of(f);
}

// ---- one run read back --------------------------------------------------------------------------------------
struct Point {
  long step = 0, tokens = 0;
  double value = 0;
};

struct RunMetrics {
  std::string dir, recipe;
  uint64_t seed = 0;
  double parameters = 0, flops_per_token = 0;
  long tokens_per_step = 0;
  std::vector<Point> train_loss, val_loss;          // finite values only
  std::map<std::string, std::vector<Point>> scores;  // "task/CF" -> the metric at each evaluation
  std::map<std::string, double> random;              // "task/CF" -> what guessing scores
  std::vector<double> tokens_per_s;                  // of the steps that report it
  long tokens() const { return train_loss.empty() ? 0 : train_loss.back().tokens; }
  // The mean training loss of the last tenth of the steps (at least one): the end of a noisy curve.
  double final_train_loss() const {
    if (train_loss.empty()) return kNaN;
    const size_t k = std::max<size_t>(1, train_loss.size() / 10);
    double s = 0;
    for (size_t i = train_loss.size() - k; i < train_loss.size(); ++i) s += train_loss[i].value;
    return s / double(k);
  }
  double final_val_loss() const { return val_loss.empty() ? kNaN : val_loss.back().value; }
  double final_score(const std::string& key) const {
    const auto it = scores.find(key);
    return it == scores.end() || it->second.empty() ? kNaN : it->second.back().value;
  }
  double median_tokens_per_s() const {
    if (tokens_per_s.empty()) return kNaN;
    std::vector<double> v = tokens_per_s;
    std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
    return v[v.size() / 2];
  }
};

inline const char* kScoreMetrics[] = {"acc", "acc_norm_char", "acc_norm_token"};

// Reads <dir>/run.json and <dir>/metrics.jsonl; `metric` is the task score kept (acc, acc_norm_char, acc_norm_token).
// A malformed line is an error naming the file and the line.
inline RunMetrics read_run(const std::string& dir, const std::string& metric) {
  namespace fs = std::filesystem;
  KILN_CHECK(std::find(std::begin(kScoreMetrics), std::end(kScoreMetrics), metric) != std::end(kScoreMetrics),
             "--metric must be acc, acc_norm_char or acc_norm_token, got '", metric, "'");
  RunMetrics r;
  r.dir = dir;
  const std::string info_path = (fs::path(dir) / "run.json").string();
  std::ifstream info_in(info_path);
  KILN_CHECK(info_in, info_path, ": cannot read it (a run directory of a Kiln trainer holds run.json)");
  const nlohmann::json info = nlohmann::json::parse(info_in, nullptr, false);
  KILN_CHECK(info.is_object() && info.contains("recipe") && info["recipe"].is_string() && info.contains("phases") &&
                 info["phases"].is_array() && !info["phases"].empty(),
             info_path, ": not a run description (expected an object with \"recipe\" and a non-empty \"phases\")");
  r.recipe = info["recipe"].get<std::string>();
  r.seed = info.value("seed", uint64_t(0));
  r.parameters = info.value("parameters", 0.0);
  const nlohmann::json& ph = info["phases"][0];
  r.flops_per_token = ph.value("train_flops_per_token", 0.0);
  r.tokens_per_step = ph.value("tokens_per_step", 0L);

  const std::string path = (fs::path(dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  KILN_CHECK(in, path, ": cannot read it (the run wrote no metrics)");
  std::string line;
  long lineno = 0;
  auto field_number = [&](const nlohmann::json& j, const char* key, bool required) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      KILN_CHECK(!required, path, ":", lineno, ": field \"", key, "\" is missing");
      return kNaN;
    }
    KILN_CHECK(it->is_number(), path, ":", lineno, ": field \"", key, "\" is not a number");
    return it->get<double>();
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    KILN_CHECK(!j.is_discarded() && j.is_object(), path, ":", lineno, ": not a JSON object");
    Point p;
    p.step = long(field_number(j, "step", true));
    if (j.contains("task")) {
      KILN_CHECK(j["task"].is_string() && j.contains("formulation") && j["formulation"].is_string(), path, ":", lineno,
                 ": a task record needs the strings \"task\" and \"formulation\"");
      p.tokens = long(field_number(j, "tokens", true));
      p.value = field_number(j, metric.c_str(), true);
      const std::string key = j["task"].get<std::string>() + "/" + j["formulation"].get<std::string>();
      r.scores[key].push_back(p);
      r.random[key] = field_number(j, "random", false);
    } else if (j.contains("val_loss")) {
      p.tokens = long(field_number(j, "tokens", true));
      p.value = field_number(j, "val_loss", true);
      if (std::isfinite(p.value)) r.val_loss.push_back(p);
    } else if (j.contains("loss")) {
      p.value = field_number(j, "loss", false);
      p.tokens = p.step * r.tokens_per_step;
      const double tps = field_number(j, "tokens_per_s", false);
      if (std::isfinite(tps) && tps > 0) r.tokens_per_s.push_back(tps);
      if (std::isfinite(p.value) && !j.value("skipped", false)) r.train_loss.push_back(p);
    }
  }
  KILN_CHECK(!r.train_loss.empty(), path, ": no training step recorded (did the run fail? see its train.log)");
  return r;
}

// ---- the campaign -------------------------------------------------------------------------------------------
struct Stat {
  double mean = kNaN, std = kNaN;
  int n = 0;
};
inline Stat stat_of(const std::vector<double>& v) {
  std::vector<double> f;
  for (double x : v)
    if (std::isfinite(x)) f.push_back(x);
  return {mean_of(f), std_of(f), int(f.size())};
}

struct RecipeSummary {
  std::string recipe;
  std::vector<const RunMetrics*> runs;  // one a seed, in seed order
  double parameters = 0, flops_per_token = 0;
  long tokens = 0;
  Stat train_loss, val_loss, val_delta, tokens_per_s;  // val_delta: held-out loss minus the base's, seed by seed
  std::map<std::string, Stat> score;                   // final score per task/formulation
};

struct Criteria {
  std::string key;                 // task/formulation
  double random = kNaN;
  double monotonicity = kNaN;      // Spearman rho, mean over runs
  double noise = kNaN;             // seed std of the final score, mean over recipes
  double above_random = kNaN;      // final score - random, mean over runs
  double consistency = kNaN;       // Kendall tau-b of consecutive rankings, mean
  int checkpoints = 0;             // evaluations with tokens > 0 shared by every run
  // The thresholds this report uses (the playbook gives none): monotonic rho >= 0.6, above random by at least twice
  // the seed noise, rankings that agree (tau >= 0.5, where two recipes or more make rankings).
  bool monotonic() const { return monotonicity >= 0.6; }
  bool signal() const { return above_random > 0 && (!std::isfinite(noise) || above_random >= 2 * noise); }
  bool consistent() const { return !std::isfinite(consistency) || consistency >= 0.5; }
  bool usable() const { return monotonic() && signal() && consistent(); }
};

struct Campaign {
  std::vector<RunMetrics> runs;
  std::vector<RecipeSummary> recipes;  // recipes[0] is the base
  std::vector<std::string> keys;       // every task/formulation some run scored
  std::vector<Criteria> criteria;
  std::vector<std::string> warnings;
};

// The tokens at which every run of the campaign scored `key` (sorted), tokens > 0 when `trained_only`.
inline std::vector<long> shared_tokens(const Campaign& c, const std::string& key, bool trained_only) {
  std::set<long> shared;
  bool first = true;
  for (const RunMetrics& r : c.runs) {
    std::set<long> mine;
    const auto it = r.scores.find(key);
    if (it != r.scores.end())
      for (const Point& p : it->second)
        if (!trained_only || p.tokens > 0) mine.insert(p.tokens);
    if (first) {
      shared = mine, first = false;
    } else {
      std::set<long> both;
      std::set_intersection(shared.begin(), shared.end(), mine.begin(), mine.end(), std::inserter(both, both.end()));
      shared = both;
    }
  }
  return {shared.begin(), shared.end()};
}
inline double score_at(const RunMetrics& r, const std::string& key, long tokens) {
  const auto it = r.scores.find(key);
  if (it == r.scores.end()) return kNaN;
  double v = kNaN;  // the last record at these tokens (a phase's start follows its predecessor's end)
  for (const Point& p : it->second)
    if (p.tokens == tokens) v = p.value;
  return v;
}

// Groups runs by recipe (in the order of `order`, the base first; recipes not in it follow by name) and computes the
// summaries and criteria.
inline Campaign summarize(std::vector<RunMetrics> runs, const std::vector<std::string>& order) {
  Campaign c;
  c.runs = std::move(runs);
  std::vector<std::string> names = order;
  std::set<std::string> seen(order.begin(), order.end());
  std::vector<std::string> rest;
  for (const RunMetrics& r : c.runs)
    if (seen.insert(r.recipe).second) rest.push_back(r.recipe);
  std::sort(rest.begin(), rest.end());
  names.insert(names.end(), rest.begin(), rest.end());
  std::set<std::string> keys;
  for (const RunMetrics& r : c.runs)
    for (const auto& [k, v] : r.scores) keys.insert(k);
  c.keys.assign(keys.begin(), keys.end());

  for (const std::string& name : names) {
    RecipeSummary s;
    s.recipe = name;
    for (const RunMetrics& r : c.runs)
      if (r.recipe == name) s.runs.push_back(&r);
    if (s.runs.empty()) {
      c.warnings.push_back("recipe " + name + " has no runs");
      continue;
    }
    std::sort(s.runs.begin(), s.runs.end(), [](auto* a, auto* b) { return a->seed < b->seed; });
    s.parameters = s.runs[0]->parameters, s.flops_per_token = s.runs[0]->flops_per_token;
    s.tokens = s.runs[0]->tokens();
    std::vector<double> tl, vl, tps;
    for (const RunMetrics* r : s.runs) {
      tl.push_back(r->final_train_loss()), vl.push_back(r->final_val_loss()), tps.push_back(r->median_tokens_per_s());
      if (r->tokens() != s.tokens)
        c.warnings.push_back(r->dir + " trained " + std::to_string(r->tokens()) + " tokens, seed " +
                             std::to_string(s.runs[0]->seed) + " of " + name + " " + std::to_string(s.tokens));
    }
    s.train_loss = stat_of(tl), s.val_loss = stat_of(vl), s.tokens_per_s = stat_of(tps);
    for (const std::string& k : c.keys) {
      std::vector<double> f;
      for (const RunMetrics* r : s.runs) f.push_back(r->final_score(k));
      s.score[k] = stat_of(f);
    }
    c.recipes.push_back(std::move(s));
  }
  if (!c.recipes.empty()) {  // paired differences from the base: seed k against seed k
    const RecipeSummary& base = c.recipes[0];
    std::map<uint64_t, double> base_val;
    for (const RunMetrics* r : base.runs) base_val[r->seed] = r->final_val_loss();
    for (RecipeSummary& s : c.recipes) {
      std::vector<double> d;
      for (const RunMetrics* r : s.runs)
        if (base_val.count(r->seed)) d.push_back(r->final_val_loss() - base_val[r->seed]);
      s.val_delta = stat_of(d);
    }
  }
  for (const std::string& k : c.keys) {
    Criteria cr;
    cr.key = k;
    std::vector<double> rho, above, randoms;
    for (const RunMetrics& r : c.runs) {
      const auto it = r.scores.find(k);
      if (it == r.scores.end()) continue;
      std::vector<double> t, v;
      for (const Point& p : it->second) t.push_back(double(p.tokens)), v.push_back(p.value);
      rho.push_back(spearman(t, v));
      if (const auto rit = r.random.find(k); rit != r.random.end() && std::isfinite(rit->second)) {
        randoms.push_back(rit->second);
        above.push_back(r.final_score(k) - rit->second);
      }
    }
    cr.monotonicity = finite_mean(rho);
    cr.above_random = finite_mean(above);
    cr.random = finite_mean(randoms);
    std::vector<double> noise;
    for (const RecipeSummary& s : c.recipes) noise.push_back(s.score.at(k).std);
    cr.noise = finite_mean(noise);
    const std::vector<long> at = shared_tokens(c, k, true);
    cr.checkpoints = int(at.size());
    if (c.recipes.size() >= 2 && at.size() >= 2) {
      std::vector<std::vector<double>> by_point;  // recipes' seed-mean scores at each shared evaluation
      for (long tok : at) {
        std::vector<double> row;
        for (const RecipeSummary& s : c.recipes) {
          std::vector<double> v;
          for (const RunMetrics* r : s.runs) v.push_back(score_at(*r, k, tok));
          row.push_back(finite_mean(v));
        }
        by_point.push_back(row);
      }
      std::vector<double> taus;
      for (size_t i = 0; i + 1 < by_point.size(); ++i) taus.push_back(kendall_tau_b(by_point[i], by_point[i + 1]));
      cr.consistency = finite_mean(taus);
    }
    c.criteria.push_back(cr);
  }
  return c;
}

// ---- the report ---------------------------------------------------------------------------------------------
inline std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
// mean ± std; the std in the mean's format without its sign
inline std::string fmt_stat(const char* f, const Stat& s) {
  if (!std::isfinite(s.mean)) return "n/a";
  std::string sd = fmt(f, s.std);
  if (!sd.empty() && sd[0] == '+') sd.erase(0, 1);
  return std::isfinite(s.std) ? fmt(f, s.mean) + " ± " + sd : fmt(f, s.mean);
}
inline std::string human_count(double v) {
  if (v >= 1e9) return fmt("%.2fB", v / 1e9);
  if (v >= 1e6) return fmt("%.2fM", v / 1e6);
  if (v >= 1e3) return fmt("%.1fk", v / 1e3);
  return fmt("%.0f", v);
}

// The campaign as markdown: the recipes' table, then the tasks' criteria.
inline std::string report_markdown(const Campaign& c) {
  std::string o;
  const int seeds = c.recipes.empty() ? 0 : int(c.recipes[0].runs.size());
  o += "| recipe | parameters | GFLOP/token | tokens | train loss | held-out loss | vs " +
       (c.recipes.empty() ? std::string("base") : c.recipes[0].recipe) + " |";
  for (const std::string& k : c.keys) o += " " + k + " |";
  o += " tokens/s |\n|---|---:|---:|---:|---:|---:|---:|";
  for (size_t i = 0; i < c.keys.size(); ++i) o += "---:|";
  o += "---:|\n";
  for (size_t i = 0; i < c.recipes.size(); ++i) {
    const RecipeSummary& s = c.recipes[i];
    std::string delta = "(base)";
    if (i > 0) {
      delta = fmt_stat("%+.4f", s.val_delta);
      // a paired t-test over the seeds: the change shows above the seeds' noise
      if (significant(s.val_delta.mean, s.val_delta.std, s.val_delta.n)) delta += " *";
    }
    o += "| " + s.recipe + " | " + human_count(s.parameters) + " | " + fmt("%.4f", s.flops_per_token * 1e-9) + " | " +
         human_count(double(s.tokens)) + " | " + fmt_stat("%.4f", s.train_loss) + " | " + fmt_stat("%.4f", s.val_loss) +
         " | " + delta + " |";
    for (const std::string& k : c.keys) o += " " + fmt_stat("%.3f", s.score.at(k)) + " |";
    o += " " + fmt_stat("%.0f", s.tokens_per_s) + " |\n";
  }
  o += "\nMeans over " + std::to_string(seeds) + " seed" + (seeds == 1 ? "" : "s") +
       " ± their standard deviation; \"vs\": the held-out loss minus the base's, seed by seed (the same batches); "
       "* where a paired t-test over the seeds finds it (two-sided, 5%; with 2 seeds it needs 12.7 standard errors).\n";
  if (!c.criteria.empty()) {
    o += "\n| task | random | monotonicity (Spearman) | noise (seed std) | above random | ranking consistency "
         "(Kendall) | usable |\n|---|---:|---:|---:|---:|---:|---|\n";
    for (const Criteria& cr : c.criteria) {
      std::string why;
      if (!cr.monotonic()) why += " not monotonic;";
      if (!cr.signal()) why += " not clear of random;";
      if (!cr.consistent()) why += " rankings disagree;";
      if (!why.empty()) why.pop_back();
      o += "| " + cr.key + " | " + fmt("%.3f", cr.random) + " | " + fmt("%.2f", cr.monotonicity) + " | " +
           fmt("%.3f", cr.noise) + " | " + fmt("%+.3f", cr.above_random) + " | " + fmt("%.2f", cr.consistency) +
           (cr.checkpoints >= 2 ? fmt(" (%.0f evals)", double(cr.checkpoints)) : "") + " | " +
           (cr.usable() ? "yes" : "no:" + why) + " |\n";
    }
    o += "\nA task is usable here when its score rises with tokens (Spearman >= 0.6), ends above random by at least "
         "twice the seeds' spread, and ranks the recipes the same way from one evaluation to the next (Kendall >= "
         "0.5).\n";
  }
  for (const std::string& w : c.warnings) o += "\nwarning: " + w + "\n";
  return o;
}

}  // namespace kiln::eval
