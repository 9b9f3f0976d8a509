// tools/registry/main.cpp: kiln_recipes, the recipe registry's command line (the logic `tools/kiln` once did in
// bash with grep and sed). Compiled once; the recipes are the entries of the generated list (entry.hpp).
//   kiln_recipes list                      every registered recipe: name, header, parameters, phases
//   kiln_recipes match <config.json>       the one recipe whose model fits a Hugging Face config: its header on
//                                          stdout (exit 0); none: what differs for each (exit 3); several: exit 4
//   kiln_recipes diff <a> <b>              what differs between two recipes' plans (names or header paths)
//   kiln_recipes checkpoint <dir>          the recipe a checkpoint was trained with: its header, then the checkpoint
//                                          directory (dir: a step_N directory, a checkpoints root or a run directory)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "kiln/io/checkpoint.hpp"
#include "kiln/io/hf_config_core.hpp"
#include "kiln/train/checkpointing.hpp"
#include "registry/entry.hpp"

namespace kiln::registry {
namespace {

namespace fs = std::filesystem;

std::string names_of(const std::vector<RegistryEntry>& rs) {
  std::string s;
  for (const auto& r : rs) s += (s.empty() ? "" : ", ") + r.name;
  return s.empty() ? "none" : s;
}

// A recipe by name (`demo`), by the path of its header, or by a header name that is not a file here (`demo.hpp`,
// `recipes/demo.hpp` from elsewhere: its stem).
const RegistryEntry& find(const std::vector<RegistryEntry>& rs, const std::string& key) {
  for (const auto& r : rs)
    if (r.name == key) return r;
  std::error_code ec;
  if (fs::exists(key, ec)) {
    const fs::path p = fs::canonical(key, ec);
    for (const auto& r : rs) {
      std::error_code ec2;
      if (!ec && fs::canonical(r.header, ec2) == p) return r;
    }
  } else if (key.ends_with(".hpp")) {
    const std::string stem = fs::path(key).stem().string();
    for (const auto& r : rs)
      if (r.name == stem) return r;
  }
  KILN_FAIL("recipe '", key, "' is not registered (registered: ", names_of(rs),
            "); `tools/kiln train <header>` or the CMake cache variable KILN_USER_RECIPES registers a recipe");
}

int list(const std::vector<RegistryEntry>& rs) {
  for (const auto& r : rs) {
    std::string params, phases;
    for (const auto& [k, v] : r.summary) {
      if (k == "params.total") params = v;
      if (k == "phases") phases = v;
    }
    std::printf("%-20s %14s parameters  phases %s  %s\n", r.name.c_str(), params.c_str(), phases.c_str(),
                r.header.c_str());
  }
  return 0;
}

int match(const std::vector<RegistryEntry>& rs, const std::string& config) {
  const io::HfConfig cfg = io::read_hf_config(config);
  std::vector<const RegistryEntry*> fits;
  std::string report;
  for (const auto& r : rs) {
    const auto diffs = r.hf_mismatches(cfg);
    if (diffs.empty()) {
      fits.push_back(&r);
      continue;
    }
    report += "  " + r.name + " (" + r.header + "):\n";
    for (const auto& d : diffs) report += "    " + d + "\n";
  }
  if (fits.size() == 1) {
    std::fprintf(stderr, "kiln: import: recipe %s fits %s\n", fits[0]->name.c_str(), config.c_str());
    std::printf("%s\n", fits[0]->header.c_str());
    return 0;
  }
  if (fits.empty()) {
    std::fprintf(stderr, "kiln: import: no registered recipe fits %s; what differs:\n%s", config.c_str(), report.c_str());
    std::fprintf(stderr, "kiln: write a recipe with that model (or pass --recipe <recipe.hpp> to see its mismatches)\n");
    return 3;
  }
  std::string several;
  for (const auto* r : fits) several += (several.empty() ? "" : ", ") + r->header;
  std::fprintf(stderr, "kiln: import: several recipes fit %s (%s); choose one with --recipe <recipe.hpp>\n",
               config.c_str(), several.c_str());
  return 4;
}

int diff(const std::vector<RegistryEntry>& rs, const std::string& a_key, const std::string& b_key) {
  const RegistryEntry& a = find(rs, a_key);
  const RegistryEntry& b = find(rs, b_key);
  std::vector<std::string> keys;  // in a's order, then b's new ones
  std::map<std::string, std::string> av, bv;
  for (const auto& [k, v] : a.summary) {
    if (!av.count(k)) keys.push_back(k);
    av[k] = v;
  }
  for (const auto& [k, v] : b.summary) {
    if (!av.count(k) && !bv.count(k)) keys.push_back(k);
    bv[k] = v;
  }
  std::printf("plan differences: %s (%s) -> %s (%s)\n", a.name.c_str(), a.header.c_str(), b.name.c_str(),
              b.header.c_str());
  size_t width = 0;
  for (const auto& k : keys) width = std::max(width, k.size());
  int n = 0;
  for (const auto& k : keys) {
    const std::string x = av.count(k) ? av[k] : "(absent)", y = bv.count(k) ? bv[k] : "(absent)";
    if (x == y) continue;
    std::printf("  %-*s %s -> %s\n", int(width + 1), (k + ":").c_str(), x.c_str(), y.c_str());
    ++n;
  }
  if (n == 0) std::printf("  no differences\n");
  return 0;
}

int checkpoint(const std::vector<RegistryEntry>& rs, const std::string& path) {
  fs::path dir = path;
  std::error_code ec;
  if (!fs::exists(dir / "manifest.json", ec) && fs::is_directory(dir / "checkpoints", ec)) dir /= "checkpoints";
  // Sizes only: the trainer verifies every checksum when it opens the checkpoint.
  const fs::path ck_dir = resolve_checkpoint(dir.string(), [](const std::string& w) {
    std::fprintf(stderr, "kiln: warning: %s\n", w.c_str());
  }, io::Verify::sizes);
  const io::Checkpoint ck(ck_dir, io::Verify::sizes);
  const auto& extra = ck.state().extra;
  KILN_CHECK(extra.contains("recipe") && extra["recipe"].is_string(), ck_dir.string(),
             "/state.json: no field extra.recipe (a string; not written by a Kiln trainer?)");
  const std::string name = extra["recipe"].get<std::string>();
  for (const auto& r : rs)
    if (r.name == name) {
      std::printf("%s\n%s\n", r.header.c_str(), ck_dir.c_str());
      return 0;
    }
  KILN_FAIL(ck_dir.string(), "/state.json: field extra.recipe is \"", name, "\", which is not registered (registered: ",
            names_of(rs), "); name its header: tools/kiln <command> <recipe.hpp> --checkpoint ", ck_dir.string());
}

}  // namespace

int main(int argc, char** argv, const std::vector<RegistryEntry>& recipes) {
  CLI::App app{"The registry of Kiln's recipes: what tools/kiln knows of each without building its trainer"};
  app.require_subcommand(1);
  std::string config, a, b, dir;
  auto* l = app.add_subcommand("list", "every registered recipe");
  auto* m = app.add_subcommand("match", "the recipe whose model fits a Hugging Face config.json (its header on stdout)");
  m->add_option("config", config, "config.json")->required();
  auto* d = app.add_subcommand("diff", "what differs between two recipes' plans");
  d->add_option("a", a, "recipe name or header")->required();
  d->add_option("b", b, "recipe name or header")->required();
  auto* c = app.add_subcommand("checkpoint", "the recipe of a checkpoint: its header, then the checkpoint directory");
  c->add_option("dir", dir, "a step_N directory, a checkpoints root or a run directory")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (l->parsed()) return list(recipes);
    if (m->parsed()) return match(recipes, config);
    if (d->parsed()) return diff(recipes, a, b);
    return checkpoint(recipes, dir);
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (JSON, filesystem)
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::registry
