// kiln/train/trainer_base.hpp: what of a trainer does not depend on its recipe. Trainer<Recipe, Backend>
// (trainer.hpp) derives from TrainerBase; checkpoints, the trainer program's command line, metrics and sampling
// (tools/cli, compiled once into a library) see a run only through this class, so they need not be compiled again
// for every recipe:
//   counters      the phase, its step, the run's step, tokens seen, AdamW updates, the loss guard
//   settings      one TrainConfig per phase; the phases' names and shapes; the parameter table (names, shapes,
//                 offsets into the flat buffers)
//   hooks         after_step, rollback, wants_state, on_step, on_eval, on_phase_start / on_phase_end
//   virtual calls start_phase, run, evaluate, and the backend's buffers on the host (host / host_mut / commit)
#pragma once
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/backend/batch.hpp"
#include "kiln/core/error.hpp"
#include "kiln/data/row_source.hpp"
#include "kiln/parallel/comm.hpp"
#include "kiln/parallel/layout.hpp"
#include "kiln/plan/objective.hpp"
#include "kiln/plan/params.hpp"
#include "kiln/train/config.hpp"
#include "kiln/train/guards.hpp"

namespace kiln {

// One step's record (metrics files, tests).
struct StepLog {
  long step;  // steps of the whole run (all phases)
  double loss, lr, grad_norm, tokens_per_s;
  bool skipped;
  int phase;
  long phase_step;  // steps of this phase
  std::vector<std::pair<const char*, double>> extra = {};  // a preference step's statistics (TRL's names)
};

// The data of one phase: its training stream and a maker of fresh held-out streams (the same rows every time).
struct PhaseData {
  std::unique_ptr<data::RowSource> train;
  std::function<std::unique_ptr<data::RowSource>()> make_eval;
};

// A phase as the recipe-independent code sees it.
struct PhaseShape {
  std::string_view name;
  int micro_batch, seq_len;
  Objective objective = Objective::pretrain;  // what its data is (pretraining text, conversations, pairs)
  PreferenceLoss preference_loss = PreferenceLoss::dpo;  // preference phases
};

class TrainerBase {
 public:
  using Log = StepLog;
  // data_for(phase, its config) opens a phase's data when the phase starts.
  using DataFor = std::function<PhaseData(int phase, const TrainConfig&)>;

  virtual ~TrainerBase() = default;
  TrainerBase(const TrainerBase&) = delete;
  TrainerBase& operator=(const TrainerBase&) = delete;

  // Called after every step with the run's step number (1-based); returns true when the trainer must stop (a stop
  // signal). Checkpointing plugs in here; `rollback` restores the last checkpoint and returns false if none.
  // On a backend whose steps overlap (backend::Cuda), the next step may already be running when after_step is
  // called: step_in_flight() says so, and then the state is not this step's (no checkpoint can be taken, and
  // stopping must wait). The trainer does not start the next step early after a phase's last step, an eval_every
  // or checkpoint_every step, or a step for which wants_state(run step, phase step) returns true (a stop signal
  // arrived): after_step of those sees the state exact. rollback is called with no step running.
  std::function<bool(long step)> after_step;
  std::function<bool()> rollback;
  std::function<bool(long step, long phase_step)> wants_state;
  bool step_in_flight() const { return in_flight_; }

  // Data parallelism: the ranks of `comm` (world N) share every step's global batch of N x grad_accum micro-batches.
  // Each rank reads the whole global stream (the same on every rank, whatever N: the data order does not depend on
  // the layout, so a checkpoint resumes under another one) and runs micro-batches r, r + N, r + 2N, ... of it; the
  // backend sums gradients and losses over the ranks before the step's decision, which every rank then takes alike.
  // Default: one process. The communicator must outlive the run.
  // The recipe's layout (kiln/parallel/layout.hpp) is checked against the world here, and ZeRO-1 shards the
  // optimizer state: call it before loading a checkpoint.
  virtual void set_communicator(parallel::Communicator* comm) { comm_ = comm; }
  parallel::Communicator* communicator() const { return comm_; }
  // The data-parallel degree and this rank's place in it (with TP<t>: world / t; the ranks of one TP group share
  // their micro-batches).
  virtual int dp_world() const { return world(); }
  virtual int dp_rank() const { return rank(); }
  // Tensor parallelism: gathers the model's full buffers from the group, for host() (collective: every rank calls
  // it before a checkpoint or anything else that reads host()); a no-op otherwise.
  virtual void sync_host() {}
  // Every phase's model in words (sizes, norm, z-loss, the positional policy and its theta): with the table and
  // the phases' shapes, what a checkpoint's program fingerprint covers.
  virtual std::string model_text() const = 0;
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int world() const { return comm_ ? comm_->world() : 1; }
  // The layout as written in the recipe ("Layout<DP<rest>>"), and the range of the flat buffers whose AdamW
  // moments this rank holds: host(adam_m) / host(adam_v) are its floats (the whole buffer but under ZeRO-1).
  virtual std::string layout() const = 0;
  virtual parallel::Shard optimizer_shard() const = 0;
  virtual bool optimizer_sharded() const = 0;  // ZeRO-1 over more than one rank
  // Every step's record (metrics files), and every held-out evaluation.
  std::function<void(const Log&)> on_step;
  std::function<void(long step, double val_loss)> on_eval;
  // A phase begins (after its data is open) / has run all its steps (before the next one begins).
  std::function<void(int phase)> on_phase_start, on_phase_end;

  // Moves to phase i at its step 0: a fresh loss guard, its data opened (unless !open_data), its executor (and
  // arena) made and the previous phase's freed. Parameters, optimizer state and the run's step count carry over.
  virtual void start_phase(int i, bool open_data = true) = 0;
  // Run up to and including this phase (default: the last).
  void stop_after_phase(int i) { last_phase_ = i; }
  // Runs the remaining steps of this phase and the phases after it up to stop_after_phase(); `on_log` sees every
  // logged step, `quiet` silences the console. Returns false when stopped early by after_step.
  virtual bool run(bool quiet = false, const std::function<void(const Log&)>& on_log = {}) = 0;
  // Mean loss over the first eval_batches micro-batches of this phase's held-out documents, in a fixed order, at
  // this phase's shape and model (data parallel: the batches shared out among the ranks, every rank gets the mean).
  virtual double evaluate() = 0;
  // What the last evaluate() measured besides its loss (a preference phase's accuracy and margin; empty otherwise).
  std::vector<std::pair<std::string, double>> eval_extra;
  std::string eval_extra_text() const {  // for the console: " (preference accuracy 0.62, margin +0.104)"
    std::string s;
    for (const auto& [k, v] : eval_extra)
      if (k == "rewards/accuracies" || k == "rewards/margins") {
        char b[64];
        std::snprintf(b, sizeof b, k == "rewards/margins" ? "%smargin %+.3f" : "%spreference accuracy %.3f",
                      s.empty() ? " (" : ", ", v);
        s += b;
      }
    return s.empty() ? s : s + ")";
  }
  // Preference phases: the frozen reference's parameters (the full table, on the host; nullptr in other phases), and
  // set_reference, which copies `params` into it (a checkpoint's "reference" blob, or the weights the phase starts
  // from: start_phase does that).
  virtual const float* reference() const { return nullptr; }
  // The phase whose merge step (TrainConfig::merge) has been applied (-1: none), kept in checkpoints so that a run
  // resumed at that phase's end does not merge twice.
  int merged_phase = -1;
  virtual void set_reference(const float* /*params*/) {}

  // The backend's flat buffers (ParameterTable floats each; the moments: optimizer_shard()'s) on the host: host()
  // stays valid until the state changes;
  // after writing through host_mut(), commit() makes the change visible to the backend.
  virtual const float* host(backend::Tensor t) const = 0;
  virtual float* host_mut(backend::Tensor t) = 0;
  virtual void commit(backend::Tensor t) = 0;

  int phase_count() const { return int(phases_.size()); }
  std::span<const PhaseShape> phases() const { return phases_; }
  const PhaseShape& phase_shape(int i) const { return phases_.at(size_t(i)); }
  std::string_view phase_name(int i) const { return phase_shape(i).name; }
  // The phase with this name, or -1.
  int find_phase(std::string_view name) const {
    for (int i = 0; i < phase_count(); ++i)
      if (phases_[size_t(i)].name == name) return i;
    return -1;
  }
  std::span<const plan::ParamEntry> parameter_table() const { return table_; }
  size_t parameter_floats() const { return table_floats_; }  // per flat buffer, padding included

  const std::vector<double>& losses() const { return losses_; }
  data::RowSource& data() { return *data_.train; }
  long& updates() { return updates_; }  // AdamW updates done (skipped steps make none)
  LossGuard& guard() { return guard_; }
  int phase() const { return phase_; }
  long& step() { return step_; }                // steps done in this phase (the schedule's position)
  long& run_step() { return run_step_; }        // steps done in the whole run
  long& tokens_seen() { return tokens_seen_; }  // training tokens of the whole run
  const TrainConfig& config() const { return configs_[size_t(phase_)]; }
  const TrainConfig& config(int phase) const { return configs_.at(size_t(phase)); }

 protected:
  TrainerBase(std::vector<TrainConfig> configs, DataFor data_for, std::vector<PhaseShape> phases,
              std::span<const plan::ParamEntry> table, size_t table_floats)
      : configs_(std::move(configs)), data_for_(std::move(data_for)), phases_(std::move(phases)), table_(table),
        table_floats_(table_floats), guard_(check_configs(configs_, phases_).guard),
        last_phase_(int(phases_.size()) - 1) {}

  // Every phase's settings, checked before any work (with the phase's name when there are several).
  static const TrainConfig& check_configs(const std::vector<TrainConfig>& cs, const std::vector<PhaseShape>& phases) {
    KILN_CHECK(cs.size() == phases.size(), "trainer: ", cs.size(), " phase configurations for a recipe of ",
               phases.size(), " phases");
    for (size_t i = 0; i < cs.size(); ++i)
      validate(cs[i], phases.size() > 1 ? " (phase " + std::string(phases[i].name) + ")" : std::string());
    return cs[0];
  }
  // The recipe-independent half of start_phase: counters, guard and data.
  void enter_phase(int i, bool open_data) {
    KILN_CHECK(i >= 0 && i < phase_count(), "phase ", i, " outside the recipe's ", phase_count(), " phases");
    phase_ = i;
    step_ = 0;
    guard_ = LossGuard(configs_[size_t(i)].guard);
    if (open_data) {
      KILN_CHECK(data_for_, "this trainer was given the data of one phase only: it cannot start phase ", phase_name(i),
                 " (construct it with a DataFor that opens each phase's data)");
      data_ = data_for_(i, configs_[size_t(i)]);
    }
  }

  std::vector<TrainConfig> configs_;
  DataFor data_for_;
  std::vector<PhaseShape> phases_;
  std::span<const plan::ParamEntry> table_;
  size_t table_floats_;
  LossGuard guard_;
  PhaseData data_;
  std::vector<double> losses_;  // every step's loss, skipped ones included
  int phase_ = 0, last_phase_;
  long step_ = 0, run_step_ = 0, tokens_seen_ = 0, updates_ = 0;
  bool in_flight_ = false;  // a step after the one being finished is running (overlapping backends)
  parallel::Communicator* comm_ = nullptr;
};

}  // namespace kiln
