// src/train/checkpointing.cpp: kiln/train/checkpointing.hpp, compiled once for every trainer.
#include "kiln/train/checkpointing.hpp"

#include <cstring>
#include <vector>

#include "kiln/io/optimizer_shards.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/schedule.hpp"

namespace kiln {

io::CheckpointInfo save_checkpoint(TrainerBase& t, const std::string& root, int keep, const std::string& recipe,
                                   const io::CheckpointWarning& warn, const nlohmann::json& data_info) {
  KILN_CHECK(!t.step_in_flight(), "checkpoint: step ", t.run_step() + 1, " is already running, so the state is not "
             "that of step ", t.run_step(), " (save from after_step only where step_in_flight() is false: trainer_base.hpp)");
  t.sync_host();  // tensor parallelism: every rank gathers the full model (collective)
  io::CheckpointState st;
  st.step = t.run_step();
  st.schedule_step = t.step();
  st.tokens_seen = t.tokens_seen();
  st.data_state = t.data().state();
  const auto g = t.guard().state();
  st.extra = {{"recipe", recipe},
              {"program", program_fingerprint(t)},
              {"layout", {{"text", t.layout()}, {"ranks", t.world()}, {"optimizer_sharded", t.optimizer_sharded()}}},
              {"phase", std::string(t.phase_name(t.phase()))},
              {"phase_index", t.phase()},
              {"phase_step", t.step()},
              {"adam_updates", t.updates()},
              {"guard", {{"ring", g.ring}, {"count", g.count}, {"bad_in_a_row", g.bad_in_a_row}}},
              {"data", data_info}};
  if (t.merged_phase >= 0) st.extra["merged_phase"] = std::string(t.phase_name(t.merged_phase));
  const TrainConfig& c = t.config();
  const PhaseShape& shape = t.phase_shape(t.phase());
  st.config = {{"lr", c.lr}, {"min_lr", c.min_lr}, {"warmup", c.warmup}, {"steps", c.steps},
               {"schedule", schedule_name(c.schedule)}, {"grad_accum", c.grad_accum}, {"global_batch", c.global_batch},
               {"seed", c.seed}, {"data", c.data}, {"micro_batch", shape.micro_batch}, {"seq_len", shape.seq_len}};
  using backend::Tensor;
  const auto table = t.parameter_table();
  if (!t.optimizer_sharded()) {  // every rank holds the whole state: rank 0 writes it
    if (t.rank() != 0) return {std::filesystem::path(root) / io::detail::checkpoint_dir_name(st.step), st.step};
    std::vector<io::CheckpointBlob> blobs = {{"parameters", io::param_views(table, t.host(Tensor::params))},
                                             {"adam_m", io::param_views(table, t.host(Tensor::adam_m))},
                                             {"adam_v", io::param_views(table, t.host(Tensor::adam_v))}};
    if (t.reference()) blobs.push_back({"reference", io::param_views(table, t.reference())});  // a preference phase's
    return io::write_checkpoint(root, st, blobs, keep, warn);
  }
  // ZeRO-1: rank 0 makes the directory and writes the parameters; every rank writes its shard of the moments; once
  // all are there, rank 0 writes the manifest and moves the directory into place.
  parallel::Communicator& comm = *t.communicator();
  const int me = t.rank(), n = t.world();
  char tmp[4096] = {};
  if (me == 0) {
    const std::string d = io::begin_checkpoint(root, st.step, warn).string();
    KILN_CHECK(d.size() < sizeof tmp, d, ": a checkpoint path longer than ", sizeof tmp - 1, " bytes");
    std::memcpy(tmp, d.data(), d.size());
  }
  comm.broadcast(tmp, sizeof tmp, 0, "sharing the checkpoint's temporary directory");
  const std::filesystem::path dir(tmp);
  if (me == 0) io::write_blob(dir, {"parameters", io::param_views(table, t.host(Tensor::params))}, st.step);
  if (me == 0 && t.reference()) io::write_blob(dir, {"reference", io::param_views(table, t.reference())}, st.step);
  for (const auto& [blob, k] : {std::pair{"adam_m", Tensor::adam_m}, std::pair{"adam_v", Tensor::adam_v}})
    io::write_blob(dir, io::shard_blob(table, t.parameter_floats(), blob, t.host(k), t.optimizer_shard(), me, n), st.step);
  comm.barrier("waiting for every rank's shard of the checkpoint");
  if (me != 0) return {std::filesystem::path(root) / io::detail::checkpoint_dir_name(st.step), st.step};
  std::vector<std::string> expect;  // every rank's shards
  for (const char* blob : {"adam_m", "adam_v"})
    for (int r = 0; r < n; ++r) expect.push_back(io::shard_blob_name(blob, r, n) + ".safetensors");
  return io::finish_checkpoint(root, dir, st, keep, warn, expect);
}

int checkpoint_phase(const io::Checkpoint& ck, std::span<const PhaseShape> phases) {
  const auto& extra = ck.state().extra;
  if (!extra.contains("phase")) return 0;
  const auto& field = extra["phase"];
  KILN_CHECK(field.is_string(), ck.dir().string(), "/state.json: field extra.phase is ", field.dump(),
             ", expected a phase name (a string)");
  const std::string name = field.get<std::string>();
  std::string known;
  for (size_t i = 0; i < phases.size(); ++i) {
    if (phases[i].name == name) return int(i);
    known += (known.empty() ? "" : ", ") + std::string(phases[i].name);
  }
  KILN_FAIL(ck.dir().string(), "/state.json: field extra.phase is \"", name, "\", which is not a phase of this recipe (",
            known, ")");
}

std::filesystem::path resolve_checkpoint(const std::string& path, const io::CheckpointWarning& warn, io::Verify verify) {
  namespace fs = std::filesystem;
  std::error_code ec;
  KILN_CHECK(fs::exists(path, ec), path, ": no such checkpoint directory or checkpoints root");
  if (fs::exists(fs::path(path) / "manifest.json", ec)) return path;
  const auto found = io::find_latest_valid(path, warn, verify);
  if (!found) {
    const auto all = io::list_checkpoints(path);
    KILN_FAIL(path, all.empty() ? ": no checkpoint here (train first, or name a step_N directory)"
                                : ": holds " + std::to_string(all.size()) + " checkpoints but none is valid (see the warnings)");
  }
  return found->dir;
}

std::string program_fingerprint(const TrainerBase& t) {
  io::Xxh64 h;
  const auto add = [&](const std::string& s) { h.update(s.data(), s.size() + 1); };
  add(std::to_string(t.parameter_floats()));
  for (const plan::ParamEntry& e : t.parameter_table())
    add(std::string(e.name.view()) + "@" + std::to_string(e.offset) + ":" + std::to_string(e.rows) + "x" +
        std::to_string(e.cols));
  for (const PhaseShape& p : t.phases())
    add(std::string(p.name) + ":" + std::to_string(p.micro_batch) + "x" + std::to_string(p.seq_len));
  add(t.model_text());
  return io::hex64(h.digest());
}

bool check_checkpoint_recipe(const io::Checkpoint& ck, std::string_view recipe, std::string_view fingerprint) {
  const auto& extra = ck.state().extra;
  const std::string theirs = extra.contains("recipe") && extra["recipe"].is_string() ? extra["recipe"].get<std::string>()
                                                                                    : std::string();
  if (theirs == recipe) return true;
  const std::string program = extra.contains("program") && extra["program"].is_string() ? extra["program"].get<std::string>()
                                                                                       : std::string();
  if (!fingerprint.empty() && program == fingerprint) return false;
  KILN_FAIL(ck.dir().string(), ": field extra.recipe is \"", theirs, "\", but this trainer is for recipe \"", recipe, "\"",
            fingerprint.empty() ? "" : " (and its model and phases differ: extra.program " +
                                           (program.empty() ? std::string("is not there") : program) + ", this recipe's " +
                                           std::string(fingerprint) + ")");
}

void load_checkpoint(TrainerBase& t, const io::Checkpoint& ck, const std::string& recipe, bool keep_data) {
  const std::string origin = ck.dir().string();
  const auto& st = ck.state();
  check_checkpoint_recipe(ck, recipe, program_fingerprint(t));
  using backend::Tensor;
  const auto table = t.parameter_table();
  io::load_params(table, ck.blob("parameters"), t.host_mut(Tensor::params), origin + "/parameters.safetensors");
  for (const auto& [blob, k] : {std::pair{"adam_m", Tensor::adam_m}, std::pair{"adam_v", Tensor::adam_v}})
    io::load_sharded(table, t.parameter_floats(), ck, blob, t.host_mut(k), t.optimizer_shard());
  for (Tensor k : {Tensor::params, Tensor::adam_m, Tensor::adam_v}) t.commit(k);
  KILN_CHECK(st.extra.contains("adam_updates") && st.extra.contains("guard"), origin,
             "/state.json: field extra needs adam_updates and guard (written by Kiln's trainer)");
  t.updates() = st.extra["adam_updates"].get<long>();
  const int phase = checkpoint_phase(ck, t.phases());
  if (keep_data)
    KILN_CHECK(phase == t.phase(), origin, ": a rollback stays in its phase, but this checkpoint is of phase ",
               t.phase_name(phase), " and the run is in phase ", t.phase_name(t.phase()));
  else if (phase != t.phase())
    t.start_phase(phase);  // its data, executor and guard
  const auto& g = st.extra["guard"];
  t.guard().restore({g.at("ring").get<std::vector<double>>(), g.at("count").get<long>(), g.at("bad_in_a_row").get<int>()});
  t.step() = long(st.extra.value("phase_step", st.schedule_step));
  t.merged_phase = -1;
  if (st.extra.contains("merged_phase") && st.extra["merged_phase"].is_string())
    for (size_t i = 0; i < t.phases().size(); ++i)
      if (t.phases()[i].name == st.extra["merged_phase"].get<std::string>()) t.merged_phase = int(i);
  t.run_step() = long(st.step);
  t.tokens_seen() = long(st.tokens_seen);
  if (!keep_data && !st.data_state.empty()) t.data().restore(st.data_state);
  // A preference phase's reference: the checkpoint's, or (a checkpoint of the phase before, or of its step 0) the
  // weights it starts from.
  if (t.reference()) {
    if (ck.has_blob("reference")) {
      std::vector<float> ref(t.parameter_floats());
      io::load_params(table, ck.blob("reference"), ref.data(), origin + "/reference.safetensors");
      t.set_reference(ref.data());
    } else {
      KILN_CHECK(t.step() == 0, origin, ": a checkpoint at step ", t.step(), " of preference phase ",
                 t.phase_name(t.phase()), " has no reference blob (the frozen weights the phase started from)");
      t.set_reference(t.host(Tensor::params));
    }
  }
}

}  // namespace kiln
