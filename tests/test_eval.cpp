// tests/test_eval.cpp: evaluation tasks (kiln/eval/tasks.hpp) and their scoring (kiln/eval/score.hpp): every jsonl
// layout read into contexts, continuations and labels; malformed records named by file and line; accuracy and its
// normalisations by characters and tokens on hand-computed cases; and pairs packed many to a micro-batch score what
// each scores alone, through the CPU executor (intra-document masking keeps them apart); an ablation campaign's
// statistics (kiln/eval/ablation.hpp) on hand-computed cases.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "kiln/backend/cpu.hpp"
#include "kiln/eval/ablation.hpp"
#include "kiln/eval/make_tasks.hpp"
#include "kiln/eval/score.hpp"
#include "kiln/eval/tasks.hpp"

using namespace kiln;
using eval::Example;

namespace {

std::string write_file(const std::string& name, const std::string& text) {
  const std::string dir = std::filesystem::temp_directory_path() / ("kiln_eval_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

void fails(const std::string& name, const std::string& text, const std::string& want) {
  const std::string path = write_file(name, text);
  CAPTURE(text);
  CHECK_THROWS_WITH_AS(eval::read_task(path), doctest::Contains(want.c_str()), Error);
}

}  // namespace

TEST_CASE("eval tasks: the jsonl layouts of HellaSwag, ARC / OpenBookQA, PIQA, WinoGrande and MMLU") {
  const auto h = eval::read_task(write_file("hs.jsonl",
      R"({"ctx": "A man sits down.", "endings": ["He eats.", "He flies.", "He swims.", "He sings."], "label": 0})" "\n"
      "\n"
      R"({"ctx_a": "She opens", "ctx_b": "the door", "endings": ["and leaves.", "slowly."], "label": "1"})" "\n"));
  CHECK(h.layout == "hellaswag");
  REQUIRE(h.examples.size() == 2);
  CHECK(h.examples[0].context(2) == "A man sits down.");
  CHECK(h.examples[0].continuation(1) == " He flies.");
  CHECK(h.examples[0].label == 0);
  CHECK(h.examples[1].question == "She opens the door");
  CHECK(h.examples[1].label == 1);

  const auto a = eval::read_task(write_file("arc.jsonl",
      R"({"question": "What is 2+2?", "choices": {"text": ["3", "4", "5"], "label": ["A", "B", "C"]}, "answerKey": "B"})" "\n"
      R"({"question": {"stem": "Sky color?", "choices": [{"text": "blue", "label": "1"}, {"text": "red", "label": "2"}]}, "answerKey": "1"})" "\n"));
  CHECK(a.layout == "arc");
  CHECK(a.examples[0].context(0) == "Question: What is 2+2?\nAnswer:");
  CHECK(a.examples[0].continuation(1) == " 4");
  CHECK(a.examples[0].label == 1);
  CHECK(a.examples[1].choices == std::vector<std::string>{"blue", "red"});
  CHECK(a.examples[1].label == 0);

  const auto p = eval::read_task(write_file("piqa.jsonl",
      R"({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0})" "\n"));
  CHECK(p.layout == "piqa");
  CHECK(p.examples[0].continuation(0) == " twist the lid");

  const auto w = eval::read_task(write_file("wino.jsonl",
      R"({"sentence": "The cup fell off the table because _ was tilted.", "option1": "the cup", "option2": "the table", "answer": "2"})" "\n"));
  CHECK(w.layout == "winogrande");
  const Example& we = w.examples[0];
  CHECK(we.context(0) == "The cup fell off the table because the cup");
  CHECK(we.context(1) == "The cup fell off the table because the table");
  CHECK(we.continuation(0) == " was tilted.");  // the same continuation after either option
  CHECK(we.continuation(1) == " was tilted.");
  CHECK(we.label == 1);

  const auto m = eval::read_task(write_file("mmlu.jsonl",
      R"({"question": "Capital of France?", "choices": ["Rome", "Paris", "Oslo", "Bern"], "answer": 1})" "\n"
      R"({"question": "2*3?", "choices": ["5", "6"], "answer": "B"})" "\n"));
  CHECK(m.layout == "mmlu");
  CHECK(m.examples[0].label == 1);
  CHECK(m.examples[1].label == 1);
}

TEST_CASE("eval tasks: malformed records name the file, the line and the field") {
  fails("missing.jsonl", R"({"ctx": "x", "endings": ["a", "b"]})" "\n", "missing.jsonl:1: field label is missing");
  fails("range.jsonl", R"({"ctx": "x", "endings": ["a", "b"], "label": 0})" "\n" R"({"ctx": "y", "endings": ["a", "b"], "label": 2})" "\n",
        "range.jsonl:2: field label = 2: expected the index of one of the 2 choices");
  fails("empty.jsonl", R"({"goal": "g", "sol1": "", "sol2": "b", "label": 0})", "empty.jsonl:1: choice 0 is empty");
  fails("json.jsonl", "{\"ctx\": \n", "json.jsonl:1: not valid JSON");
  fails("unknown.jsonl", R"({"text": "hello"})", "unknown.jsonl:1: not a record of a known task layout");
  fails("mixed.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 0})" "\n" R"({"question": "q", "choices": ["a", "b"], "answer": 0})",
        "mixed.jsonl:2: a mmlu record in a piqa task");
  fails("blank.jsonl", R"({"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"})",
        "blank.jsonl:1: field sentence = \"no blank here\": expected one blank (_)");
  fails("wino.jsonl", R"({"sentence": "x _ y", "option1": "a", "option2": "b", "answer": "3"})",
        "wino.jsonl:1: field answer = \"3\": expected the index of one of the 2 choices (counted from 1)");
  fails("nothing.jsonl", "\n\n", "no examples");
  CHECK_THROWS_WITH_AS(eval::read_task("/nonexistent/task.jsonl"), doctest::Contains("/nonexistent/task.jsonl: cannot open"), Error);
}

TEST_CASE("eval scoring: accuracy, and normalised by characters and by tokens, on hand-computed cases") {
  Example e1;  // acc picks the short wrong answer; per character and per token the long right one wins
  e1.choices = {"a", "bbbbbb"};
  e1.label = 1;
  Example e2;  // every measure picks the right one
  e2.choices = {"x", "y", "z"};
  e2.label = 2;
  std::vector<std::vector<eval::Scored>> s = {
      {{-2.0, 1, 2}, {-3.0, 3, 7}},              // logprob, tokens, characters: -2 > -3; -1 < -0.43; -2 < -1
      {{-5.0, 1, 2}, {-4.0, 1, 2}, {-1.0, 1, 2}},
  };
  const eval::Metrics m = eval::metrics({e1, e2}, s);
  CHECK(m.acc == doctest::Approx(0.5));
  CHECK(m.acc_norm_char == doctest::Approx(1.0));
  CHECK(m.acc_norm_token == doctest::Approx(1.0));
  CHECK(m.random == doctest::Approx((0.5 + 1.0 / 3) / 2));
  CHECK(m.examples == 2);
  // the multiple-choice formulation: the letters after the listed choices
  Example q;
  q.question = "Pick one";
  q.choices = {"red", "green"};
  const auto mcf = eval::pairs_of(q, eval::Formulation::multiple_choice);
  REQUIRE(mcf.size() == 2);
  CHECK(mcf[0].context == "Question: Pick one\nA. red\nB. green\nAnswer:");
  CHECK(mcf[1].continuation == " B");
  CHECK(eval::characters("caf\xc3\xa9") == 4);  // code points, as Python's len
}

namespace {
using Tiny = Decoder<Embedding<vocab<64>, hidden<32>, tied<true>>, layers<2>,
                     Attention<heads<4>, kv_heads<2>, head_dim<8>, RNoPE<2, 10000.0>>, SwiGLU<ffn<48>>>;
constexpr int EB = 2, ET = 16;
}  // namespace

TEST_CASE("eval scoring: pairs packed into micro-batches score what each scores alone (CPU executor)") {
  backend::cpu::State<Tiny> s;
  s.init(0.5, 9);
  auto exec = std::make_unique<backend::cpu::Executor<Tiny, EB, ET>>();
  int batches = 0;
  const eval::RunBatch run = [&](const backend::Batch& b, float* logp) {
    exec->forward(s, b);
    std::copy_n(exec->token_logp(), EB * ET, logp);
    ++batches;
  };
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> ids;
  for (int p = 0; p < 9; ++p) {
    std::vector<int32_t> c, d;
    for (int i = 0; i < 2 + (p * 5) % 7; ++i) c.push_back((p * 13 + i * 7) % 64);
    for (int i = 0; i < 1 + p % 3; ++i) d.push_back((p * 11 + i * 3 + 1) % 64);
    ids.push_back({c, d});
  }
  ids.push_back({std::vector<int32_t>(20, 5), {7, 8}});  // 21 tokens: 5 of context dropped to fit 16
  long truncated = 0;
  const auto packed = eval::score_pairs(ids, EB, ET, run, &truncated);
  CHECK(truncated == 1);
  const int packed_batches = batches;
  for (size_t p = 0; p < ids.size(); ++p) {
    CAPTURE(p);
    const auto alone = eval::score_pairs({ids[p]}, EB, ET, run);
    CHECK(packed[p].tokens == int(ids[p].second.size()));
    CHECK(packed[p].logprob < 0);
    CHECK(packed[p].logprob == doctest::Approx(alone[0].logprob).epsilon(1e-5));
  }
  CHECK(packed_batches < int(ids.size()) / 2);  // several pairs to a batch
  // the truncated pair equals the pair whose context starts 5 tokens later
  const auto kept = eval::score_pairs({{std::vector<int32_t>(15, 5), {7, 8}}}, EB, ET, run);
  CHECK(packed.back().logprob == doctest::Approx(kept[0].logprob).epsilon(1e-5));
  CHECK_THROWS_WITH_AS(eval::score_pairs({{{1}, std::vector<int32_t>(16, 2)}}, EB, ET, run),
                       doctest::Contains("continuation has 16 tokens"), Error);
  // a whole task through a tokenizer: bytes of the text as ids
  const auto encode = [](const std::string& t) {
    std::vector<int32_t> v;
    for (unsigned char c : t) v.push_back(int32_t(c % 64));
    return v;
  };
  Example e;
  e.question = "Q";
  e.choices = {"ab", "cde"};
  e.contexts = {"ctx"};
  e.continuations = {" ab", " cde"};
  e.label = 1;
  const auto r = eval::evaluate({e, e}, eval::Formulation::cloze, encode, EB, ET, run);
  CHECK(r.pairs == 4);
  CHECK(r.scores[0][1].characters == 4);
  CHECK(r.scores[0][1].tokens == 4);
  CHECK(r.scores[0][0].logprob == doctest::Approx(r.scores[1][0].logprob).epsilon(1e-6));
  CHECK(r.metrics.examples == 2);
}

TEST_CASE("eval tasks made from text: HellaSwag's layout, the true ending at the label, deterministic") {
  std::vector<std::pair<std::string, std::string>> docs;
  for (int i = 0; i < 12; ++i) {
    std::string d = "Document number " + std::to_string(i) + " begins here and";
    for (int w = 0; w < 3 + i % 5; ++w) d += " then\n goes on  " + std::to_string(w);
    docs.push_back({d, "src" + std::to_string(i % 2)});
  }
  docs.push_back({"short", "src0"});  // under min_chars: not used
  eval::CompletionOptions o;
  o.count = 8, o.min_chars = 40, o.max_chars = 400, o.seed = 7;
  const auto records = eval::completion_task(docs, o);
  REQUIRE(records.size() == 8);
  std::string text;
  for (const auto& r : records) text += r.dump() + "\n";
  const auto task = eval::read_task(write_file("made.jsonl", text));  // the reader takes it as HellaSwag
  CHECK(task.layout == "hellaswag");
  std::vector<int> labels(4, 0);
  for (size_t k = 0; k < records.size(); ++k) {
    const Example& e = task.examples[k];
    CHECK(e.count() == 4);
    ++labels[size_t(e.label)];
    // ctx + " " + the labelled ending is a whole (whitespace-folded) document; no other ending is its own
    const std::string whole = e.question + " " + e.choices[size_t(e.label)];
    bool found = false;
    for (const auto& [d, src] : docs) found |= eval::fold_whitespace(d) == whole;
    CHECK(found);
    for (int i = 0; i < 4; ++i)
      if (i != e.label) CHECK(e.choices[size_t(i)] != e.choices[size_t(e.label)]);
  }
  CHECK(*std::max_element(labels.begin(), labels.end()) < 8);  // the right answer's place varies
  CHECK(eval::completion_task(docs, o) == records);              // the same seed: the same task
  o.seed = 8;
  CHECK(eval::completion_task(docs, o) != records);
  CHECK(eval::fold_whitespace("  a \n\t b  ") == "a b");
  o.min_chars = 1000, o.max_chars = 2000;
  CHECK_THROWS_WITH_AS(eval::completion_task(docs, o), doctest::Contains("0 usable documents"), Error);
}

TEST_CASE("eval: bits per byte of a text, every token but the first scored once, through packed sequences") {
  constexpr int B = 2, T = 8;
  const eval::RunBatch half_bit = [](const backend::Batch& b, float* logp) {  // log p = -ln(2) / 2 everywhere
    for (int k = 0; k < B * T; ++k) logp[k] = b.targets[k] >= 0 ? float(-std::log(2.0) / 2) : 0.0f;
  };
  std::vector<int32_t> ids(50);
  for (int i = 0; i < 50; ++i) ids[size_t(i)] = i % 7;
  const auto b = eval::bits_per_byte(ids, B, T, half_bit, [](const std::vector<int32_t>& v) { return long(v.size()) * 2; });
  CHECK(b.tokens == 49);
  CHECK(b.bytes == 98);
  CHECK(b.bits_per_byte == doctest::Approx(49 * 0.5 / 98));
  CHECK_THROWS_WITH_AS(eval::bits_per_byte({3}, B, T, half_bit, [](const std::vector<int32_t>&) { return 1L; }),
                       doctest::Contains("at least 2 are needed"), Error);
}

TEST_CASE("ablation statistics: Spearman and Kendall tau-b, ties included, on hand-computed cases") {
  // no ties: d = (-1, 1, -1, 1, -1, 1), rho = 1 - 6 * 6 / (6 * 35); 3 discordant pairs of 15
  const std::vector<double> x = {1, 2, 3, 4, 5, 6}, y = {2, 1, 4, 3, 6, 5};
  CHECK(eval::spearman(x, y) == doctest::Approx(1.0 - 36.0 / 210.0));
  CHECK(eval::kendall_tau_b(x, y) == doctest::Approx((12.0 - 3.0) / 15.0));
  // ties: ranks (1.5, 1.5, 3, 4) and (1, 2.5, 2.5, 4): rho = 3.75 / 4.5; tau-b = 4 / sqrt((6 - 1) (6 - 1))
  const std::vector<double> a = {1, 1, 2, 3}, b = {1, 2, 2, 3};
  CHECK(eval::ranks_of(a) == std::vector<double>{1.5, 1.5, 3, 4});
  CHECK(eval::spearman(a, b) == doctest::Approx(3.75 / 4.5));
  CHECK(eval::kendall_tau_b(a, b) == doctest::Approx(0.8));
  CHECK(eval::spearman(x, {1, 1, 1, 1, 1, 1}) != eval::spearman(x, {1, 1, 1, 1, 1, 1}));  // constant: NaN
  CHECK(eval::std_of({1, 2, 3, 4}) == doctest::Approx(std::sqrt(5.0 / 3.0)));
  CHECK(std::isnan(eval::std_of({1})));
}

TEST_CASE("ablation campaign: the recipes' table and a task's four criteria on runs made up by hand") {
  // Two recipes x 2 seeds, evaluated at 0, 100, 200 tokens. "base" scores 0.25 -> 0.40 -> 0.50 (+0.02 on seed 2),
  // "worse" 0.25 -> 0.30 -> 0.35 (+0.04 on seed 2): monotonic, the same ranking at 100 and 200 tokens.
  auto run = [](const std::string& recipe, uint64_t seed, std::vector<double> score, double val) {
    eval::RunMetrics r;
    r.recipe = recipe, r.seed = seed, r.dir = recipe + "/seed" + std::to_string(seed);
    r.parameters = recipe == "base" ? 1000 : 900, r.tokens_per_step = 10;
    for (long s = 1; s <= 20; ++s) r.train_loss.push_back({s, s * 10, 5.0 - 0.1 * double(s)});
    for (size_t i = 0; i < score.size(); ++i) {
      r.scores["t/CF"].push_back({long(i) * 10, long(i) * 100, score[i]});
      r.val_loss.push_back({long(i) * 10, long(i) * 100, val + 1.0 - 0.5 * double(i)});
    }
    r.random["t/CF"] = 0.25;
    return r;
  };
  std::vector<eval::RunMetrics> runs = {run("worse", 1, {0.25, 0.30, 0.35}, 3.10), run("base", 1, {0.25, 0.40, 0.50}, 3.00),
                                        run("base", 2, {0.27, 0.42, 0.52}, 3.02), run("worse", 2, {0.29, 0.34, 0.39}, 3.16)};
  const eval::Campaign c = eval::summarize(runs, {"base"});
  REQUIRE(c.recipes.size() == 2);
  CHECK(c.recipes[0].recipe == "base");
  CHECK(c.recipes[1].recipe == "worse");
  CHECK(c.recipes[0].tokens == 200);
  // the last tenth of 20 steps: step 19 and 20, loss 3.1 and 3.0
  CHECK(c.recipes[0].train_loss.mean == doctest::Approx(3.05));
  CHECK(c.recipes[0].val_loss.mean == doctest::Approx(3.01));  // the last evaluation: 3.00 and 3.02
  // paired by seed: 3.10 - 3.00 and 3.16 - 3.02
  CHECK(c.recipes[1].val_delta.mean == doctest::Approx(0.12));
  CHECK(c.recipes[1].val_delta.std == doctest::Approx(std::sqrt(2 * 0.02 * 0.02)));
  CHECK(c.recipes[0].score.at("t/CF").mean == doctest::Approx(0.51));
  CHECK(c.recipes[1].score.at("t/CF").std == doctest::Approx(std::sqrt(2 * 0.02 * 0.02)));
  REQUIRE(c.criteria.size() == 1);
  const eval::Criteria& cr = c.criteria[0];
  CHECK(cr.monotonicity == doctest::Approx(1.0));
  CHECK(cr.noise == doctest::Approx((std::sqrt(2 * 0.01 * 0.01) + std::sqrt(2 * 0.02 * 0.02)) / 2));
  CHECK(cr.above_random == doctest::Approx((0.25 + 0.27 + 0.10 + 0.14) / 4));
  CHECK(cr.checkpoints == 2);
  CHECK(cr.consistency == doctest::Approx(1.0));
  CHECK(cr.usable());
  const std::string md = eval::report_markdown(c);
  CHECK(md.find("| worse | 900 |") != std::string::npos);
  // t = 0.12 / (0.0283 / sqrt(2)) = 6 < 12.706 (1 degree of freedom): not starred with 2 seeds; 3 seeds would be
  CHECK(md.find("+0.1200 ± 0.0283 |") != std::string::npos);
  CHECK(!eval::significant(0.12, 0.0283, 2));
  CHECK(eval::significant(0.12, 0.0283, 3));  // 0.12 > 4.303 x 0.0283 / sqrt(3) = 0.0703
  CHECK(!eval::significant(0.06, 0.0283, 3));
  CHECK(eval::t_critical_95(1) == doctest::Approx(12.706));
  CHECK(eval::t_critical_95(200) == doctest::Approx(1.96));
  CHECK(md.find("| t/CF | 0.250 | 1.00 |") != std::string::npos);

  // Rankings that swap between the evaluations: Kendall -1, not usable.
  runs[0].scores["t/CF"][1].value = 0.45, runs[3].scores["t/CF"][1].value = 0.47;
  const eval::Campaign s = eval::summarize(runs, {"base"});
  CHECK(s.criteria[0].consistency == doctest::Approx(-1.0));
  CHECK(!s.criteria[0].usable());
}

TEST_CASE("ablation campaign: a run's metrics read back; a malformed line is named by file and line") {
  const std::string dir = std::filesystem::temp_directory_path() / ("kiln_ablate_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/run.json") << R"({"recipe": "demo", "seed": 2, "parameters": 100,
    "phases": [{"name": "main", "tokens_per_step": 64, "train_flops_per_token": 600.0}]})";
  std::ofstream(dir + "/metrics.jsonl")
      << R"({"step": 0, "tokens": 0, "val_loss": 5.0})" "\n"
      << R"({"step": 0, "tokens": 0, "task": "t", "formulation": "CF", "acc": 0.2, "acc_norm_char": 0.3, "acc_norm_token": 0.4, "random": 0.25})" "\n"
      << R"({"step": 1, "loss": 4.5, "tokens_per_s": 1000})" "\n"
      << R"({"step": 2, "loss": null, "skipped": true})" "\n"
      << R"({"step": 3, "loss": 4.0, "tokens_per_s": 3000})" "\n";
  const eval::RunMetrics r = eval::read_run(dir, "acc_norm_token");
  CHECK(r.recipe == "demo");
  CHECK(r.seed == 2);
  CHECK(r.flops_per_token == 600.0);
  REQUIRE(r.train_loss.size() == 2);  // the skipped step is not a point
  CHECK(r.train_loss[1].tokens == 192);
  CHECK(r.final_score("t/CF") == doctest::Approx(0.4));
  CHECK(r.random.at("t/CF") == 0.25);
  CHECK(r.median_tokens_per_s() == 3000);
  CHECK_THROWS_WITH_AS(eval::read_run(dir, "accuracy"), doctest::Contains("--metric must be"), Error);
  std::ofstream(dir + "/metrics.jsonl", std::ios::app) << R"({"step": 4, "tokens": 1, "task": "t", "formulation": "CF"})" "\n";
  CHECK_THROWS_WITH_AS(eval::read_run(dir, "acc"), doctest::Contains("metrics.jsonl:6: field \"acc\" is missing"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("retrieval documents and task: a password, filler of whole documents, the question; deterministic") {
  const std::vector<std::string> docs = {"one two\nthree", "four five six", "seven", "eight nine ten eleven"};
  data::RetrievalOptions o;
  o.min_chars = 20, o.max_chars = 40, o.seed = 3;
  const auto a = data::retrieval_documents(docs, 50, o);
  REQUIRE(a.size() == 50);
  CHECK(a == data::retrieval_documents(docs, 50, o));
  for (const std::string& d : a) {
    CAPTURE(d);
    REQUIRE(d.rfind("The password is ", 0) == 0);
    const std::string key = d.substr(16, d.find('.') - 16);
    const std::string tail = " What is the password? The password is " + key + ".";
    REQUIRE(d.size() > tail.size());
    CHECK(d.substr(d.size() - tail.size()) == tail);
    const size_t filler = d.size() - tail.size() - (16 + key.size() + 2);  // "The password is <key>. "
    CHECK(filler >= 20);
    CHECK(filler <= 40);
    CHECK(d.find('\n') == std::string::npos);  // whitespace folded
  }
  const auto t = eval::retrieval_task(docs, 30, 4, o);
  REQUIRE(t.size() == 30);
  for (const auto& r : t) {
    const std::string ctx = r["ctx"], truth = r["endings"][r["label"].get<int>()];
    CHECK(ctx.rfind("The password is " + truth.substr(0, truth.size() - 1) + ". ", 0) == 0);
    CHECK(ctx.substr(ctx.size() - 15) == "The password is");
    const std::vector<std::string> e = r["endings"];
    CHECK(std::set<std::string>(e.begin(), e.end()).size() == 4);
  }
  CHECK_THROWS_WITH_AS(eval::retrieval_task(docs, 3, 1, o), doctest::Contains("2 <= choices"), Error);
}

TEST_CASE("loss by position: rows of T + 1 tokens from position 0, the mean loss of each bucket") {
  constexpr int B = 2, T = 8;
  long calls = 0;
  const eval::RunBatch by_position = [&](const backend::Batch& b, float* logp) {  // loss = position / 10
    ++calls;
    for (int k = 0; k < B * T; ++k) {
      CHECK(b.positions[k] == k % T);
      CHECK(b.doc_start[k] == 0);
      logp[k] = b.targets[k] >= 0 ? -float(b.positions[k]) / 10.0f : 0.0f;
    }
  };
  std::vector<int32_t> ids(3 * T + 5);  // 3 whole rows of T + 1 (sharing their ends), a short tail dropped
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  const eval::PositionLoss p = eval::loss_by_position(ids, B, T, by_position, {6, 2, 99});
  CHECK(calls == 2);  // rows 0, 1 then row 2 with a padding row
  CHECK(p.rows == 3);
  CHECK(p.edges == std::vector<int>{0, 2, 6, 8});  // sorted, the edge past T dropped, 0 and T added
  CHECK(p.tokens == std::vector<long>{6, 12, 6});
  CHECK(p.nats[0] == doctest::Approx(0.05));   // positions 0, 1
  CHECK(p.nats[1] == doctest::Approx(0.35));   // 2..5
  CHECK(p.nats[2] == doctest::Approx(0.65));   // 6, 7
  CHECK_THROWS_WITH_AS(eval::loss_by_position(std::vector<int32_t>(T), B, T, by_position, {}),
                       doctest::Contains("fewer than the 9 one row of the phase needs"), Error);
}
