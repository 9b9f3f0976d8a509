// Training end to end on the CPU backend: a fixed batch is memorised, real text is learned, the same seed gives
// bitwise the same run, gradient accumulation equals one larger batch, and packing keeps documents apart.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "kiln/backend/cpu.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/checkpointing.hpp"
#include "kiln/train/trainer.hpp"

using namespace kiln;

namespace {

struct tiny {
  using model = Decoder<Embedding<vocab<320>, hidden<64>, tied<true>>, layers<2>,
                        Attention<heads<4>, kv_heads<2>, RNoPE<2, 10000.0>>, SwiGLU<ffn<192>>, RMSNorm<1e-6>>;
  using stage = Stage<micro_batch<8>, seq_len<128>>;
  static TrainConfig defaults() {
    TrainConfig c;
    c.lr = 3e-3, c.min_lr = 3e-4, c.warmup = 20, c.steps = 300, c.weight_decay = 0.1;
    c.no_decay = {"embed_tokens", "norm"};
    return c;
  }
};

const char* kFortunes = "/usr/share/games/fortunes";

data::Corpus fortunes() {
  REQUIRE_MESSAGE(std::filesystem::exists(kFortunes),
                  "the demo corpus is missing: install the Debian package 'fortunes' (tools/kiln setup does)");
  return data::load_fortunes(kFortunes, 20);
}

// A small synthetic corpus: documents of pseudo-random words.
data::Corpus synthetic() {
  data::Corpus c;
  Rng rng(7);
  const char* words[] = {"alpha ", "beta ", "gamma ", "delta ", "kiln ", "fire ", "clay ", "pot "};
  for (int d = 0; d < 200; ++d) {
    std::string s;
    for (int w = int(rng.below(20)) + 3; w > 0; --w) s += words[rng.below(8)];
    (d % 10 == 0 ? c.val : c.train).push_back(data::ByteTokenizer::encode(s));
  }
  return c;
}

}  // namespace

TEST_CASE("a fixed batch is memorised: loss < 0.05") {
  using M = tiny::model;
  using S = Stage<micro_batch<2>, seq_len<64>>;
  HostBatch<2, 64> mb;
  Rng rng(3);
  for (size_t i = 0; i < mb.tokens.size(); ++i) mb.tokens[i] = int32_t(rng.below(256));
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 64; ++i) {
      const size_t k = size_t(b) * 64 + i;
      mb.targets[k] = i + 1 < 64 ? mb.tokens[k + 1] : int32_t(rng.below(256));
      mb.doc_start[k] = i < 40 ? 0 : 40;  // two documents in each row
      mb.positions[k] = i - mb.doc_start[k];
    }
  TrainConfig c = tiny::defaults();
  c.lr = 1e-2, c.warmup = 10, c.steps = 200, c.schedule = Schedule::constant, c.weight_decay = 0;
  backend::cpu::State<M> state;
  state.init(c.init_std, c.seed);
  state.set_decay(decay_ranges<M>(c.no_decay));
  auto exec = std::make_unique<backend::cpu::Executor<M, S::micro_batch, S::seq_len>>();
  const long n = mb.count_targets();
  double loss = 0;
  for (long s = 0; s < c.steps; ++s) {
    state.zero_grad();
    loss = exec->forward_backward(state, mb.view(), 1.0f / float(n)) / double(n);
    state.adamw(adamw_step(c, learning_rate(c, s), state.grad_norm(), s + 1));
  }
  CHECK(loss < 0.05);
}

TEST_CASE("training on real text lowers held-out loss by at least 40% from ln(vocab)") {
  const data::Corpus corpus = fortunes();
  Trainer<tiny> t(tiny::defaults(), corpus);
  t.run(true);
  const double held_out = t.evaluate();
  const double uniform = std::log(double(tiny::model::vocab));
  MESSAGE("held-out loss ", held_out, " nats/byte after 300 steps; ln(vocab) = ", uniform);
  CHECK(held_out < 0.6 * uniform);
  CHECK(t.losses().back() < t.losses().front());
}

TEST_CASE("the same seed gives bitwise identical losses; another seed does not") {
  const data::Corpus corpus = synthetic();
  TrainConfig c = tiny::defaults();
  c.steps = 12;
  c.grad_accum = 2;
  auto run = [&](uint64_t seed) {
    c.seed = seed;
    Trainer<tiny> t(c, corpus);
    t.run(true);
    return t.losses();
  };
  const auto a = run(11), b = run(11), d = run(12);
  REQUIRE(a.size() == 12);
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::memcmp(&a[i], &b[i], sizeof(double)) == 0);
  CHECK(a != d);
}

TEST_CASE("gradient accumulation over two micro-batches equals one batch twice as large") {
  using M = tiny::model;
  const data::Corpus corpus = synthetic();
  data::Packer p1(&corpus.train, 5, true), p2(&corpus.train, 5, true);
  HostBatch<2, 32> small[2];
  HostBatch<4, 32> big;
  small[0].fill(p1);
  small[1].fill(p1);
  big.fill(p2);  // the same four rows
  REQUIRE(std::equal(small[1].tokens.begin(), small[1].tokens.end(), big.tokens.begin() + 64));
  backend::cpu::State<M> acc, one;
  acc.init(0.1, 1);
  one.init(0.1, 1);
  const float* g_acc = acc.host(backend::Tensor::grads);
  const float* g_big = one.host(backend::Tensor::grads);
  const long n = big.count_targets();
  auto m2 = std::make_unique<backend::cpu::Executor<M, 2, 32>>();
  auto m4 = std::make_unique<backend::cpu::Executor<M, 4, 32>>();
  double l_acc = 0;
  for (auto& mb : small) l_acc += m2->forward_backward(acc, mb.view(), 1.0f / float(n));
  const double l_big = m4->forward_backward(one, big.view(), 1.0f / float(n));
  CHECK(l_acc == doctest::Approx(l_big).epsilon(1e-6));
  double num = 0, den = 0;
  for (size_t i = 0; i < plan::ParamPlan<M>::table.total; ++i) {
    num = std::max(num, double(std::abs(g_acc[i] - g_big[i])));
    den = std::max(den, double(std::abs(g_big[i])));
  }
  CHECK(num / den < 1e-5);
}

TEST_CASE("packing: targets are the next tokens, positions restart after each end-of-document token") {
  const data::Corpus corpus = synthetic();
  data::Packer p(&corpus.train, 9, true);
  HostBatch<4, 100> mb;
  int docs_seen = 0;
  for (int rep = 0; rep < 80; ++rep) {
    mb.fill(p);
    for (int b = 0; b < 4; ++b)
      for (int i = 0; i < 100; ++i) {
        const size_t k = size_t(b) * 100 + i;
        if (i + 1 < 100) CHECK(mb.targets[k] == mb.tokens[k + 1]);
        const bool starts = i == 0 || mb.tokens[k - 1] == data::ByteTokenizer::end_of_document;
        CHECK(mb.positions[k] == (starts ? 0 : mb.positions[k - 1] + 1));
        CHECK(mb.doc_start[k] == i - mb.positions[k]);
        docs_seen += starts;
      }
  }
  CHECK(p.epoch() >= 1);  // 80 x 400 tokens pass the ~180-document training set at least once
  CHECK(docs_seen > 200);
  // Rows continue one another: a row's last target is the next row's first token.
  data::Packer q(&corpus.train, 9, true);
  HostBatch<1, 50> r1, r2;
  r1.fill(q);
  r2.fill(q);
  CHECK(r1.targets[49] == r2.tokens[0]);
}

TEST_CASE("fortune files split into documents at % lines") {
  const auto docs = data::split_fortunes("one\n%\ntwo\nlines\n%\n%\nthree");
  REQUIRE(docs.size() == 3);
  CHECK(docs[1] == "two\nlines");
  CHECK_THROWS_AS(data::load_fortunes("/nonexistent/corpus", 20), Error);
}

TEST_CASE("loss guard: non-finite and spiking steps are flagged, accepted ones form the window") {
  GuardConfig g;
  g.spike_zscore = 4, g.spike_window = 10, g.max_bad_steps = 2;
  LossGuard guard(g);
  for (int i = 0; i < 10; ++i) CHECK(guard.judge(2.0 + 0.01 * (i % 3), 1.0) == LossGuard::Verdict::ok);
  CHECK(guard.judge(2.01, 1.0) == LossGuard::Verdict::ok);
  CHECK(guard.judge(3.0, 1.0) == LossGuard::Verdict::spike);  // ~100 std above a flat window
  CHECK_FALSE(guard.must_roll_back());
  CHECK(guard.judge(NAN, 1.0) == LossGuard::Verdict::not_finite);
  CHECK(guard.must_roll_back());
  guard.clear_bad();
  CHECK(guard.judge(2.0, INFINITY) == LossGuard::Verdict::not_finite);
  CHECK(guard.judge(2.0, 1.0) == LossGuard::Verdict::ok);  // a good step resets the run of bad ones
  CHECK(guard.bad_in_a_row() == 0);
  LossGuard copy(g);
  copy.restore(guard.state());
  CHECK(copy.zscore(2.5) == guard.zscore(2.5));
}

namespace {
// The CPU backend with the CUDA backend's schedule: the trainer starts step s + 1 before it reads step s's record.
struct CpuOverlapped : backend::Cpu {
  static constexpr bool overlap_steps = true;
};

template <class Bk>
void nan_case() {
  const data::Corpus corpus = synthetic();
  TrainConfig c = tiny::defaults();
  c.steps = 10;
  Trainer<tiny, Bk> t(c, corpus);
  const long before = t.updates();
  t.state().host_mut(backend::Tensor::params)[plan::ParamPlan<tiny::model>::table.final_norm] = NAN;  // every logit
  t.state().commit(backend::Tensor::params);
  std::vector<bool> skipped;
  try {
    t.run(true, [&](const auto& log) { skipped.push_back(log.skipped); });
    FAIL("the run went on past repeated NaN losses");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("3 bad steps in a row up to step 3 and no checkpoint to roll back to") !=
          std::string::npos);
  }
  REQUIRE_FALSE(skipped.empty());
  CHECK(std::all_of(skipped.begin(), skipped.end(), [](bool b) { return b; }));  // every logged step was skipped
  CHECK(t.updates() == before);  // no update was applied
  CHECK(t.step() == 3);
}

template <class Bk>
std::vector<double> rollback_case() {
  const data::Corpus corpus = synthetic();
  TrainConfig c = tiny::defaults();
  c.steps = 12;
  Trainer<tiny, Bk> t(c, corpus);
  const std::string root = (std::filesystem::temp_directory_path() / ("kiln_rollback_" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(root);
  bool poisoned = false;
  int rollbacks = 0;
  t.wants_state = [](long step, long) { return step == 4 || step == 6; };  // after_step touches the state there
  t.after_step = [&](long step) {
    if (step == 4 || step == 6) CHECK_FALSE(t.step_in_flight());
    if (step == 4) save_checkpoint(t, root, 2, "tiny");
    if (step == 6 && !poisoned) {  // a corrupted update: every later loss is NaN until the rollback
      t.state().host_mut(backend::Tensor::params)[plan::ParamPlan<tiny::model>::table.final_norm] = NAN;
      t.state().commit(backend::Tensor::params);
      poisoned = true;
    }
    return false;
  };
  t.rollback = [&] {
    const auto found = io::find_latest_valid(root);
    if (!found) return false;
    load_checkpoint(t, io::Checkpoint(*found), "tiny", /*keep_data=*/true);
    ++rollbacks;
    return true;
  };
  std::vector<bool> skipped;
  t.on_step = [&](const auto& log) { skipped.push_back(log.skipped); };
  REQUIRE(t.run(true));
  CHECK(rollbacks == 1);
  CHECK(t.step() == 12);
  CHECK(std::isfinite(t.losses().back()));
  // Steps 7-9 were bad (skipped); the rollback returned to step 4, so steps 5.. ran again on new data.
  CHECK(std::count(skipped.begin(), skipped.end(), true) == 3);
  CHECK(t.updates() == 4 + 8);  // 4 updates before the checkpoint, then steps 5..12 after the rollback
  std::filesystem::remove_all(root);
  return t.losses();
}
}  // namespace

TEST_CASE("a run whose loss turns NaN skips those steps, then stops with a clear error when it cannot roll back") {
  nan_case<backend::Cpu>();
  nan_case<CpuOverlapped>();
}

TEST_CASE("repeated bad steps roll back to the last checkpoint, keep reading forward, and the run finishes") {
  const auto one_by_one = rollback_case<backend::Cpu>();
  const auto overlapped = rollback_case<CpuOverlapped>();  // the step started early is run again after the rollback
  REQUIRE(one_by_one.size() == overlapped.size());
  CHECK(std::memcmp(one_by_one.data(), overlapped.data(), one_by_one.size() * sizeof(double)) == 0);
}

TEST_CASE("overlapped steps (the CUDA backend's schedule) take bitwise the same run as steps one after the other") {
  const data::Corpus corpus = synthetic();
  TrainConfig c = tiny::defaults();
  c.steps = 14, c.grad_accum = 2, c.eval_every = 5, c.log_every = 1, c.warmup = 4;
  Trainer<tiny> a(c, corpus);
  Trainer<tiny, CpuOverlapped> b(c, corpus);
  std::vector<double> evals_a, evals_b;
  a.on_eval = [&](long, double v) { evals_a.push_back(v); };
  b.on_eval = [&](long, double v) { evals_b.push_back(v); };
  int early = 0, waited = 0;
  b.on_step = [&](const StepLog& l) {  // step l.phase_step's record is read: was the next one started before it?
    const long ended = b.state().steps_ended();
    CHECK((ended == l.phase_step + 1 || ended == l.phase_step));
    CHECK(b.step_in_flight() == (ended == l.phase_step + 1));
    ++(ended == l.phase_step + 1 ? early : waited);
  };
  REQUIRE(a.run(true));
  REQUIRE(b.run(true));
  CHECK(waited == 3);  // steps 5 and 10 (evaluations) and 14 (the end) wait for the host
  CHECK(early == 11);
  REQUIRE(a.losses().size() == 14);
  REQUIRE(b.losses().size() == 14);
  CHECK(std::memcmp(a.losses().data(), b.losses().data(), 14 * sizeof(double)) == 0);
  CHECK(evals_a == evals_b);
  CHECK(evals_a.size() == 2);
  CHECK(a.updates() == b.updates());
  constexpr size_t n = plan::ParamPlan<tiny::model>::table.total;
  CHECK(std::memcmp(a.state().host(backend::Tensor::params), b.state().host(backend::Tensor::params), n * 4) == 0);
  CHECK(std::memcmp(a.state().host(backend::Tensor::adam_v), b.state().host(backend::Tensor::adam_v), n * 4) == 0);

  // A checkpoint of the overlapped run (checkpoint_every: those steps wait) resumes bitwise.
  const std::string root = (std::filesystem::temp_directory_path() / ("kiln_overlap_" + std::to_string(getpid()))).string();
  std::filesystem::remove_all(root);
  c.checkpoint_every = 4, c.eval_every = 0;
  Trainer<tiny, CpuOverlapped> d(c, corpus);
  d.after_step = [&](long) {
    if (d.step() == 8) {
      CHECK_FALSE(d.step_in_flight());
      save_checkpoint(d, root, 2, "tiny");
    }
    return false;
  };
  REQUIRE(d.run(true));
  Trainer<tiny, CpuOverlapped> e(c, corpus);
  load_checkpoint(e, io::Checkpoint(*io::find_latest_valid(root)), "tiny");
  CHECK(e.step() == 8);
  REQUIRE(e.run(true));
  REQUIRE(e.losses().size() == 6);
  CHECK(std::memcmp(e.losses().data(), d.losses().data() + 8, 6 * sizeof(double)) == 0);
  // a checkpoint cannot be taken while the next step runs
  Trainer<tiny, CpuOverlapped> f(c, corpus);
  bool refused = false;
  f.after_step = [&](long step) {
    if (step == 2) {
      CHECK(f.step_in_flight());
      CHECK_THROWS_WITH_AS(save_checkpoint(f, root, 2, "tiny"), doctest::Contains("is already running"), Error);
      refused = true;
    }
    return false;
  };
  REQUIRE(f.run(true));
  CHECK(refused);
  std::filesystem::remove_all(root);
}


namespace {
// Two phases: a short-context phase, then a long-context one with a new RoPE theta (the parameter table is kept).
struct two_phase {
  using model = tiny::model;
  using phases = Phases<Phase<"short", Stage<micro_batch<4>, seq_len<32>>>,
                        Phase<"long", Stage<micro_batch<2>, seq_len<64>>, RNoPE<2, 50000.0>>>;
  static TrainConfig defaults() {
    TrainConfig c = tiny::defaults();
    c.steps = 6, c.warmup = 2, c.log_every = 1;
    return c;
  }
  static TrainConfig defaults(std::string_view phase) {
    TrainConfig c = defaults();
    if (phase == "long") c.steps = 5, c.lr = 1e-3, c.warmup = 1;
    return c;
  }
};
static_assert(std::is_same_v<phase_model<two_phase, 0>, tiny::model>);
static_assert(phase_model<two_phase, 1>::positional::theta == 50000.0 && max_seq_len<two_phase> == 64);

using TwoTrainer = Trainer<two_phase>;
std::vector<TrainConfig> two_phase_configs() { return {phase_defaults<two_phase>(0), phase_defaults<two_phase>(1)}; }
TwoTrainer::DataFor two_phase_data(const data::Corpus& corpus) {
  return [&corpus](int phase, const TrainConfig& c) {
    return PhaseData{std::make_unique<data::PackedBytes>(&corpus.train, c.seed + uint64_t(phase), true),
                     [&corpus] { return std::make_unique<data::PackedBytes>(&corpus.val, 0, false); }};
  };
}
std::string temp_root(const char* what) {
  const auto p = std::filesystem::temp_directory_path() / (std::string(what) + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}
}  // namespace

TEST_CASE("phases: phase 2 starts from phase 1's checkpoint at its own shape and theta, and resumes bitwise") {
  const data::Corpus corpus = synthetic();
  const std::string root = temp_root("kiln_phases");
  // Phase 1 alone, checkpointed at its end.
  TwoTrainer a(two_phase_configs(), two_phase_data(corpus));
  a.stop_after_phase(0);
  REQUIRE(a.run(true));
  CHECK(a.phase() == 0);
  CHECK(a.step() == 6);
  const auto end1 = save_checkpoint(a, root, 10, "two_phase");

  // An evaluation of phase 1's final parameters at phase 2's shape and model, on phase 2's first batch.
  using M2 = phase_model<two_phase, 1>;
  backend::cpu::Executor<M2, 2, 64> eval2;
  HostBatch<2, 64> first;
  auto phase2_data = two_phase_data(corpus)(1, phase_defaults<two_phase>(1));
  first.fill(*phase2_data.train);
  const double expect = eval2.forward(a.state(), first.view()) / double(first.count_targets());

  // Phase 2 from that checkpoint: its first loss is that evaluation; a checkpoint after its 2nd step.
  TwoTrainer b(two_phase_configs(), two_phase_data(corpus));
  load_checkpoint(b, io::Checkpoint(end1.dir), "two_phase");
  CHECK(b.phase() == 0);
  CHECK(b.run_step() == 6);
  b.start_phase(1);
  CHECK(b.step() == 0);
  std::string mid;
  b.after_step = [&](long) {
    if (b.step() == 2) mid = save_checkpoint(b, root, 10, "two_phase").dir.string();
    return false;
  };
  std::vector<TwoTrainer::Log> logs;
  b.on_step = [&](const TwoTrainer::Log& l) { logs.push_back(l); };
  REQUIRE(b.run(true));
  REQUIRE(logs.size() == 5);
  CHECK(logs[0].phase == 1);
  CHECK(logs[0].phase_step == 1);
  CHECK(logs[0].step == 7);  // the run's step count goes on
  MESSAGE("phase 2's first loss " << logs[0].loss << ", phase 1's parameters evaluated at phase 2's shape " << expect
                                  << " (difference " << logs[0].loss - expect << ")");
  CHECK(logs[0].loss == doctest::Approx(expect).epsilon(1e-6));

  // Resuming phase 2's checkpoint gives bitwise the same remaining losses.
  TwoTrainer c(two_phase_configs(), two_phase_data(corpus));
  load_checkpoint(c, io::Checkpoint(mid), "two_phase");
  CHECK(c.phase() == 1);
  CHECK(c.step() == 2);
  std::vector<double> resumed;
  c.on_step = [&](const TwoTrainer::Log& l) { resumed.push_back(l.loss); };
  REQUIRE(c.run(true));
  REQUIRE(resumed.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(std::memcmp(&resumed[i], &logs[2 + i].loss, sizeof(double)) == 0);

  // The whole program in one run takes the same steps as the two runs.
  TwoTrainer whole(two_phase_configs(), two_phase_data(corpus));
  std::vector<int> phase_starts;
  whole.on_phase_start = [&](int p) { phase_starts.push_back(p); };
  REQUIRE(whole.run(true));
  CHECK(phase_starts == std::vector<int>{0, 1});
  REQUIRE(whole.losses().size() == 11);
  for (size_t i = 0; i < 5; ++i) CHECK(std::memcmp(&whole.losses()[6 + i], &logs[i].loss, sizeof(double)) == 0);
  std::filesystem::remove_all(root);
}

namespace {
// A communicator of two ranks whose other rank holds the same gradients: every sum doubles its input. It records
// where each bucket starts, and how many backward ops had run by then.
struct Doubling final : parallel::Communicator {
  std::vector<std::pair<size_t, size_t>> started;  // (offset in the buffer, floats)
  std::vector<int> at_op;
  int ops = 0;
  float* base = nullptr;
  std::vector<std::pair<float*, size_t>> open;
  const char* name() const override { return "test"; }
  int rank() const override { return 0; }
  int world() const override { return 2; }
  void allreduce_sum(float* d, size_t n, const char*) override { for (size_t i = 0; i < n; ++i) d[i] *= 2; }
  void allreduce_sum(double* d, size_t n, const char*) override { for (size_t i = 0; i < n; ++i) d[i] *= 2; }
  void allreduce_max(int64_t*, size_t, const char*) override {}
  void allreduce_max(float*, size_t, const char*) override {}
  std::unique_ptr<parallel::Communicator> split(int, int, const char*) override { return nullptr; }
  void start_allreduce_sum(float* d, size_t n, const char*) override {
    started.push_back({size_t(d - base), n});
    at_op.push_back(ops);
    open.push_back({d, n});
  }
  void progress() override { ++ops; }
  void finish_all(const char*) override {
    for (auto [d, n] : open) allreduce_sum(d, n, "");
    open.clear();
  }
  void start_reduce_scatter_sum(const float*, float*, const size_t*, const char*) override {
    FAIL("the bucket test runs DP, not ZeRO-1");
  }
  void allgather(float*, const size_t*, const char*) override { FAIL("the bucket test runs DP, not ZeRO-1"); }
  void broadcast(void*, size_t, int, const char*) override {}
  void barrier(const char*) override {}
  void arrive(long) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
}  // namespace

TEST_CASE("data parallelism: gradient buckets start while the backward runs, and cover every gradient once") {
  using M = tiny::model;
  using P = plan::ParamPlan<M>;
  const data::Corpus corpus = synthetic();
  data::PackedBytes rows(&corpus.train, 1, true);
  HostBatch<8, 128> mb;
  mb.fill(rows);
  backend::cpu::State<M> s, ref;
  s.init(0.02, 3);
  ref.init(0.02, 3);
  backend::cpu::Executor<M, 8, 128> exec;
  Doubling comm;
  comm.base = s.grads();
  s.begin_step();
  exec.accumulate(s, mb.view(), 0.01f, &comm);
  s.all_reduce(comm);
  ref.begin_step();
  exec.accumulate(ref, mb.view(), 0.01f);
  // every float of the buffer summed exactly once, most of it in buckets started before the backward ended
  auto ranges = comm.started;
  std::sort(ranges.begin(), ranges.end());
  size_t at = 0, early = 0;
  for (size_t k = 0; k < ranges.size(); ++k) {
    CHECK(ranges[k].first == at);
    at = ranges[k].first + ranges[k].second;
  }
  CHECK(at == P::table.total);
  const int n_ops = backend::cpu::Executor<M, 8, 128>::Train::data.n_ops;
  for (size_t k = 0; k < comm.started.size(); ++k)
    if (comm.at_op[k] < n_ops - 1) early += comm.started[k].second;
  MESSAGE(comm.started.size() << " buckets; " << early << " of " << P::table.total
                              << " gradient floats started before the program's last op");
  CHECK(comm.started.size() >= 2);
  CHECK(early * 2 > P::table.total);
  // the sum over the two ranks: twice the one-rank gradients, bit for bit
  const float* g = s.host(backend::Tensor::grads);
  const float* g1 = ref.host(backend::Tensor::grads);
  size_t wrong = 0;
  for (size_t i = 0; i < P::table.total; ++i) wrong += g[i] != 2 * g1[i];
  CHECK(wrong == 0);
}
