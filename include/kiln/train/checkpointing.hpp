// kiln/train/checkpointing.hpp: what a checkpoint of a run holds and how a trainer comes back from one.
//   blobs:  parameters, adam_m, adam_v    F32 safetensors with HF names (tied models omit lm_head.weight)
//   state:  step (of the whole run), schedule_step (= the step within the phase, the schedule's position), tokens
//           seen, the data stream's position (opaque bytes), and in `extra`: the phase (name, index, step within
//           it), AdamW's update count, the loss guard's window, the recipe's name, the data's tokenizer (generate)
// Data order and initialisation are counter-based functions of the seed, so there is no other RNG state to keep.
// On the CPU backend a run resumed from a checkpoint takes bitwise the same steps as one never stopped (same
// thread count): tests/resume_test.sh checks it by killing a real trainer.
#pragma once
#include <string>

#include "kiln/io/checkpoint.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/trainer.hpp"

namespace kiln {

template <class Recipe, class Backend>
io::CheckpointInfo save_checkpoint(Trainer<Recipe, Backend>& t, const std::string& root, int keep, const std::string& recipe,
                                   const io::CheckpointWarning& warn = {},
                                   const nlohmann::json& data_info = nlohmann::json::object()) {
  using M = typename Recipe::model;
  io::CheckpointState st;
  st.step = t.run_step();
  st.schedule_step = t.step();
  st.tokens_seen = t.tokens_seen();
  st.data_state = t.data().state();
  const auto g = t.guard().state();
  st.extra = {{"recipe", recipe},
              {"phase", std::string(phases_of<Recipe>::names[t.phase()])},
              {"phase_index", t.phase()},
              {"phase_step", t.step()},
              {"adam_updates", t.updates()},
              {"guard", {{"ring", g.ring}, {"count", g.count}, {"bad_in_a_row", g.bad_in_a_row}}},
              {"data", data_info}};
  const TrainConfig& c = t.config();
  const auto [B, T] = with_phase<Recipe>(t.phase(), []<int I>() {
    return std::pair<int, int>{phase_stage<Recipe, I>::micro_batch, phase_stage<Recipe, I>::seq_len};
  });
  st.config = {{"lr", c.lr}, {"min_lr", c.min_lr}, {"warmup", c.warmup}, {"steps", c.steps},
               {"schedule", schedule_name(c.schedule)}, {"grad_accum", c.grad_accum}, {"seed", c.seed},
               {"data", c.data}, {"micro_batch", B}, {"seq_len", T}};
  using backend::Tensor;
  const std::vector<io::CheckpointBlob> blobs = {{"parameters", io::param_views<M>(t.state().host(Tensor::params))},
                                                 {"adam_m", io::param_views<M>(t.state().host(Tensor::adam_m))},
                                                 {"adam_v", io::param_views<M>(t.state().host(Tensor::adam_v))}};
  return io::write_checkpoint(root, st, blobs, keep, warn);
}

// The phase a checkpoint was written in (its index in the recipe); a checkpoint without one is of the first phase.
template <class Recipe>
int checkpoint_phase(const io::Checkpoint& ck) {
  const auto& extra = ck.state().extra;
  if (!extra.contains("phase")) return 0;
  const std::string name = extra["phase"].get<std::string>();
  const int i = phases_of<Recipe>::find(name);
  if (i < 0) {
    std::string known;
    for (auto n : phases_of<Recipe>::names) known += (known.empty() ? "" : ", ") + std::string(n);
    KILN_FAIL(ck.dir().string(), "/state.json: field extra.phase is \"", name, "\", which is not a phase of this recipe (",
              known, ")");
  }
  return i;
}

// Restores parameters, optimizer, guard, phase and step; the data position too unless `keep_data` (a rollback keeps
// reading forward so that the batches that caused it are not replayed, and stays in its phase).
template <class Recipe, class Backend>
void load_checkpoint(Trainer<Recipe, Backend>& t, const io::Checkpoint& ck, const std::string& recipe, bool keep_data = false) {
  using M = typename Recipe::model;
  const std::string origin = ck.dir().string();
  const auto& st = ck.state();
  const std::string theirs = st.extra.value("recipe", std::string());
  KILN_CHECK(theirs == recipe, origin, ": field extra.recipe is \"", theirs, "\", but this trainer is for recipe \"",
             recipe, "\"");
  using backend::Tensor;
  auto& s = t.state();
  io::load_params<M>(ck.blob("parameters"), s.host_mut(Tensor::params), origin + "/parameters.safetensors");
  io::load_params<M>(ck.blob("adam_m"), s.host_mut(Tensor::adam_m), origin + "/adam_m.safetensors");
  io::load_params<M>(ck.blob("adam_v"), s.host_mut(Tensor::adam_v), origin + "/adam_v.safetensors");
  for (Tensor k : {Tensor::params, Tensor::adam_m, Tensor::adam_v}) s.commit(k);
  KILN_CHECK(st.extra.contains("adam_updates") && st.extra.contains("guard"), origin,
             "/state.json: field extra needs adam_updates and guard (written by Kiln's trainer)");
  t.updates() = st.extra["adam_updates"].get<long>();
  const int phase = checkpoint_phase<Recipe>(ck);
  if (keep_data)
    KILN_CHECK(phase == t.phase(), origin, ": a rollback stays in its phase, but this checkpoint is of phase ",
               phases_of<Recipe>::names[phase], " and the run is in phase ", phases_of<Recipe>::names[t.phase()]);
  else if (phase != t.phase())
    t.start_phase(phase);  // its data, executor and guard
  const auto& g = st.extra["guard"];
  t.guard().restore({g.at("ring").get<std::vector<double>>(), g.at("count").get<long>(), g.at("bad_in_a_row").get<int>()});
  t.step() = long(st.extra.value("phase_step", st.schedule_step));
  t.run_step() = long(st.step);
  t.tokens_seen() = long(st.tokens_seen);
  if (!keep_data && !st.data_state.empty()) t.data().restore(st.data_state);
}

}  // namespace kiln
