// kiln/train/checkpointing.hpp: what a checkpoint of a run holds and how a trainer comes back from one.
//   blobs:  parameters, adam_m, adam_v    F32 safetensors with HF names (tied models omit lm_head.weight);
//           reference in a preference phase (the frozen weights it started from)
//           (ZeRO-1 over n ranks: adam_m-shard-<r>-of-<n> and adam_v-..., each rank's part: io/optimizer_shards.hpp;
//           any layout reads either form)
//   state:  step (of the whole run), schedule_step (= the step within the phase, the schedule's position), tokens
//           seen, the data stream's position (opaque bytes), and in `extra`: the phase (name, index, step within
//           it), AdamW's update count, the loss guard's window, the recipe's name and program fingerprint, the
//           layout that wrote it, the data's tokenizer (generate)
// Data order and initialisation are counter-based functions of the seed, so there is no other RNG state to keep.
// Compiled once (src/train/checkpointing.cpp): a trainer is seen through TrainerBase, whatever its recipe.
// On the CPU backend a run resumed from a checkpoint takes bitwise the same steps as one never stopped (same
// thread count): tests/resume_test.sh checks it by killing a real trainer.
#pragma once
#include <span>
#include <string>
#include <string_view>

#include "kiln/io/checkpoint.hpp"
#include "kiln/train/trainer_base.hpp"

namespace kiln {

// Writes <root>/step_<run step> (keeping the newest `keep`); `data_info` goes to extra.data (the tokenizer, the
// end-of-document id and the ids used, which generate and export read back). With data parallelism every rank
// calls it (rank 0 writes what all hold, each rank its optimizer shard under ZeRO-1) and gets the same answer.
io::CheckpointInfo save_checkpoint(TrainerBase& t, const std::string& root, int keep, const std::string& recipe,
                                   const io::CheckpointWarning& warn = {},
                                   const nlohmann::json& data_info = nlohmann::json::object());

// The phase a checkpoint was written in (its index in `phases`); a checkpoint without one is of the first phase.
int checkpoint_phase(const io::Checkpoint& ck, std::span<const PhaseShape> phases);

// A checkpoint directory (holding manifest.json), or the newest valid one under a checkpoints root (verified by
// `verify`); warnings about invalid ones go to `warn`. Throws naming the path when there is none.
std::filesystem::path resolve_checkpoint(const std::string& path, const io::CheckpointWarning& warn = {},
                                         io::Verify verify = io::Verify::checksums);

// The checkpoint's recipe (extra.recipe) must be `recipe`, or (given `fingerprint`, a trainer's
// program_fingerprint) a recipe of the same program: the same parameter table and phases, another layout (a recipe
// and its variant that trains it on ZeRO-1 ranks). Returns true when the names agree; the error names both.
bool check_checkpoint_recipe(const io::Checkpoint& ck, std::string_view recipe, std::string_view fingerprint = {});
// XXH64 of the parameter table (names, offsets, shapes), the phases (names, shapes) and their models in words
// (TrainerBase::model_text: sizes, norm, z-loss, positions and theta), in hex: extra.program.
std::string program_fingerprint(const TrainerBase& t);

// Restores parameters, optimizer, guard, phase and step; the data position too unless `keep_data` (a rollback keeps
// reading forward so that the batches that caused it are not replayed, and stays in its phase).
void load_checkpoint(TrainerBase& t, const io::Checkpoint& ck, const std::string& recipe, bool keep_data = false);

}  // namespace kiln
