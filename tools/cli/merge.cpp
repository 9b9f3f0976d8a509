// tools/cli/merge.cpp: `train_<recipe> merge`, compiled once into kiln_trainer_cli: checkpoints of the recipe merged
// into a new one (kiln/train/merge.hpp: soup, linear, task arithmetic), as SmolLM3's post-training ended.
//   train_<recipe> merge --model A --model B [--weight 0.9 --weight 0.1] [--method soup|linear|task] [--base C]
//                        --out runs/<recipe>-merged/checkpoints
// Every input must be a checkpoint of this recipe (its program: the same parameter table and phases) and read with
// the same tokenizer; anything else is refused before a byte is written. The output is a checkpoint at step 0 of the
// first input's phase with a fresh optimizer (what generate, eval, export and `--resume` read), written atomically;
// its state.json records the method, the inputs and their weights.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "kiln/io/checkpoint.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/checkpointing.hpp"
#include "kiln/train/guards.hpp"
#include "kiln/train/merge.hpp"
#include "cli/commands.hpp"

namespace kiln::cli {

int merge_main(int argc, char** argv, const RecipeProgram& r) {
  const char* name = r.name.c_str();
  CLI::App app{std::string("Merge checkpoints of recipe ") + name + " (soup, linear, task arithmetic)"};
  std::vector<std::string> models;
  std::vector<double> weights;
  std::string method = "", base, out;
  app.add_option("--model", models, "a checkpoint directory or checkpoints root (its newest valid one); repeatable")
      ->required();
  app.add_option("--weight", weights, "one weight a --model, in order (linear: normalised by their sum; task: the "
                 "task vectors' scales; none: a uniform soup)");
  app.add_option("--method", method, "soup | linear | task (default: soup without weights, linear with them; task "
                 "with --base)")->check(CLI::IsMember({"", "soup", "linear", "task"}));
  app.add_option("--base", base, "task arithmetic: the model the task vectors are taken from");
  app.add_option("--out", out, "the checkpoints root to write the merge into (a step_00000000 directory)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const MergeMethod m = method == "task" || (method.empty() && !base.empty()) ? MergeMethod::task_arithmetic
                          : method == "linear" || (method.empty() && !weights.empty()) ? MergeMethod::linear
                                                                                       : MergeMethod::soup;
    KILN_CHECK(m == MergeMethod::soup || weights.size() == models.size() || (m == MergeMethod::task_arithmetic && weights.empty()),
               "--weight: ", weights.size(), " given for ", models.size(), " --model (one each, in order)");
    KILN_CHECK(m != MergeMethod::soup || weights.empty(), "--method soup averages uniformly: drop --weight, or use "
               "--method linear");
    KILN_CHECK((m == MergeMethod::task_arithmetic) == !base.empty(), m == MergeMethod::task_arithmetic
                   ? "--method task needs --base (the model the task vectors are differences from)"
                   : "--base is for --method task");
    if (m == MergeMethod::task_arithmetic && weights.empty()) weights.assign(models.size(), 1.0);
    KILN_CHECK(!std::filesystem::exists(std::filesystem::path(out) / "step_00000000"), out,
               "/step_00000000 exists: --out must name a new checkpoints root (nothing was written)");
    // Every input first: same recipe (program), same tokenizer; nothing is written until all are read.
    std::vector<ToolCheckpoint> in;
    for (const auto& path : models) in.push_back(open_checkpoint(path, r));
    std::optional<ToolCheckpoint> b;
    if (!base.empty()) b = open_checkpoint(base, r);
    for (size_t i = 0; i < in.size() + (b ? 1 : 0); ++i) {
      const ToolCheckpoint& c = i < in.size() ? in[i] : *b;
      KILN_CHECK(c.tokenizer_path == in[0].tokenizer_path, c.dir.string(), " was trained with tokenizer \"",
                 c.tokenizer_path, "\" and ", in[0].dir.string(), " with \"", in[0].tokenizer_path,
                 "\": merged weights would mix two meanings of the ids");
      const io::Checkpoint ck(c.dir);
      const std::string program = ck.state().extra.value("program", std::string());
      const std::string first = io::Checkpoint(in[0].dir).state().extra.value("program", std::string());
      KILN_CHECK(program.empty() || first.empty() || program == first, c.dir.string(), ": its program (extra.program ",
                 program, ") is not ", in[0].dir.string(), "'s (", first, "): the checkpoints have different plans");
    }
    std::vector<const float*> ptrs;
    for (const auto& c : in) ptrs.push_back(c.params.data());
    const std::vector<float> merged = merge_params(m, ptrs, weights, b ? b->params.data() : nullptr, r.table_floats);

    nlohmann::json inputs = nlohmann::json::array();
    for (size_t i = 0; i < in.size(); ++i)
      inputs.push_back({{"checkpoint", std::filesystem::absolute(in[i].dir).string()},
                        {"weight", m == MergeMethod::soup ? 1.0 / double(in.size()) : weights[i]}});
    const std::vector<float> zeros(merged.size(), 0.0f);
    io::CheckpointState st;
    const auto g = LossGuard(r.defaults(in[0].phase).guard).state();
    st.extra = {{"recipe", name},
                {"program", io::Checkpoint(in[0].dir).state().extra.value("program", std::string())},
                {"phase", std::string(r.phases[size_t(in[0].phase)].shape.name)},
                {"phase_index", in[0].phase},
                {"phase_step", 0},
                {"adam_updates", 0},
                {"guard", {{"ring", g.ring}, {"count", g.count}, {"bad_in_a_row", g.bad_in_a_row}}},
                {"data", in[0].info},
                {"merge", {{"method", merge_method_name(m)}, {"inputs", inputs},
                           {"base", b ? std::filesystem::absolute(b->dir).string() : std::string()}}}};
    st.config = {{"merged", true}};
    const auto info = io::write_checkpoint(out, st,
                                           {{"parameters", io::param_views(r.table, merged.data())},
                                            {"adam_m", io::param_views(r.table, zeros.data())},
                                            {"adam_v", io::param_views(r.table, zeros.data())}},
                                           1 << 30, [](const std::string& w) {
                                             std::printf("kiln: warning: %s\n", w.c_str());
                                           });
    std::printf("kiln: merged %zu checkpoint%s (%s", in.size(), in.size() == 1 ? "" : "s", merge_method_name(m));
    for (size_t i = 0; i < in.size(); ++i)
      std::printf("%s%s x %.4g", i ? ", " : ": ", in[i].dir.c_str(), inputs[i]["weight"].get<double>());
    if (b) std::printf("; base %s", b->dir.c_str());
    std::printf(") into %s: phase %s, step 0, fresh optimizer\n", info.dir.c_str(),
                std::string(r.phases[size_t(in[0].phase)].shape.name).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
