// kiln/eval/tasks.hpp: multiple-choice evaluation tasks read from the jsonl layouts the public sets ship in, one
// example a line. The layout is told by the fields of each record:
//   HellaSwag             ctx (or ctx_a + " " + ctx_b), endings [n], label (int, or a digit string); optional
//                         target_delimiter (lm-eval's: what joins ctx and an ending, " " when absent)
//   ARC / OpenBookQA      question (a string, or {stem, choices: [{text, label}]}), choices {text: [n], label: [n]}
//                         (absent when the question holds them), answerKey ("A".., or "1"..)
//   PIQA                  goal, sol1, sol2, label (0 / 1)
//   WinoGrande            sentence (one "_"), option1, option2, answer ("1" / "2"): the option fills the blank,
//                         and what follows the blank is scored (lm-eval's partial scoring)
//   MMLU                  question, choices [n], answer (an index, or a letter)
// Each example becomes a context and its n continuations, or (WinoGrande) n contexts and one continuation; the
// right one's index is `label`. A record that is not JSON, lacks a field, has an empty choice, or a label out of
// range is an error naming the file, the line and the field: nothing is skipped in silence.
#pragma once
#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/io/jsonl.hpp"

namespace kiln::eval {

struct Example {
  std::vector<std::string> contexts;       // one for every choice, or one shared by all
  std::vector<std::string> continuations;  // one for every choice, or one shared by all (WinoGrande)
  int label = 0;                           // the right choice
  std::string question;                    // the question alone, for the multiple-choice formulation (MCF)
  std::vector<std::string> choices;        // the choices' texts, for MCF's letters
  std::string where;                       // "file:line", for messages
  int count() const { return int(choices.size()); }
  const std::string& context(int i) const { return contexts.size() == 1 ? contexts[0] : contexts[size_t(i)]; }
  const std::string& continuation(int i) const {
    return continuations.size() == 1 ? continuations[0] : continuations[size_t(i)];
  }
};

struct Task {
  std::string path, layout;  // layout: hellaswag, arc, piqa, winogrande, mmlu
  std::vector<Example> examples;
};

namespace detail {

struct Record {
  const nlohmann::json& j;
  const std::string& where;  // "file:line"
  const nlohmann::json& at(const char* f) const {
    KILN_CHECK(j.contains(f) && !j[f].is_null(), where, ": field ", f, " is missing");
    return j[f];
  }
  std::string text(const char* f) const {
    const auto& v = at(f);
    KILN_CHECK(v.is_string(), where, ": field ", f, " = ", v.dump(), ": expected a string");
    return v.get<std::string>();
  }
  std::vector<std::string> texts(const nlohmann::json& v, const char* f) const {
    KILN_CHECK(v.is_array() && !v.empty(), where, ": field ", f, " = ", v.dump(), ": expected a list of strings");
    std::vector<std::string> out;
    for (const auto& e : v) {
      KILN_CHECK(e.is_string(), where, ": field ", f, " holds ", e.dump(), ": expected strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }
  // An index given as a number or a digit string ("0", "2"), or a letter ("A" -> 0) when letters are allowed;
  // `base` 1 for WinoGrande's "1" / "2".
  int index(const char* f, int n, int base = 0, const std::vector<std::string>* labels = nullptr) const {
    const auto& v = at(f);
    int k = -1;
    if (v.is_number_integer()) {
      k = v.get<int>() - base;
    } else if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (labels)
        for (size_t i = 0; i < labels->size(); ++i)
          if ((*labels)[i] == s) k = int(i);
      if (k < 0 && s.size() == 1 && std::isdigit(static_cast<unsigned char>(s[0]))) k = s[0] - '0' - base;
      if (k < 0 && !labels && s.size() == 1 && std::isupper(static_cast<unsigned char>(s[0]))) k = s[0] - 'A';
    }
    KILN_CHECK(k >= 0 && k < n, where, ": field ", f, " = ", v.dump(), ": expected the index of one of the ", n,
               " choices", base ? " (counted from 1)" : "");
    return k;
  }
};

inline void check_choices(const Example& e, const std::string& where) {
  for (size_t i = 0; i < e.choices.size(); ++i)
    KILN_CHECK(!e.choices[i].empty(), where, ": choice ", i, " is empty (every answer needs text to score)");
  KILN_CHECK(e.choices.size() >= 2, where, ": ", e.choices.size(), " choice: a multiple-choice task needs two or more");
}

}  // namespace detail

// The layout of one record, from its fields (empty: none fits).
inline std::string task_layout(const nlohmann::json& j) {
  if (j.contains("endings")) return "hellaswag";
  if (j.contains("answerKey")) return "arc";
  if (j.contains("sol1")) return "piqa";
  if (j.contains("option1")) return "winogrande";
  if (j.contains("choices") && j.contains("answer")) return "mmlu";
  return "";
}

// One record as an example. `where` names it in messages ("file:line").
inline Example parse_example(const nlohmann::json& j, const std::string& where, std::string* layout_out = nullptr) {
  KILN_CHECK(j.is_object(), where, ": expected a JSON object, got ", j.type_name());
  const std::string layout = task_layout(j);
  KILN_CHECK(!layout.empty(), where, ": not a record of a known task layout: expected the fields of HellaSwag (ctx, "
             "endings, label), ARC / OpenBookQA (question, choices, answerKey), PIQA (goal, sol1, sol2, label), "
             "WinoGrande (sentence, option1, option2, answer) or MMLU (question, choices, answer)");
  if (layout_out) *layout_out = layout;
  const detail::Record r{j, where};
  Example e;
  e.where = where;
  if (layout == "hellaswag") {
    e.question = j.contains("ctx") ? r.text("ctx") : r.text("ctx_a") + " " + r.text("ctx_b");
    e.choices = r.texts(r.at("endings"), "endings");
    e.contexts = {e.question};
    // lm-eval's target_delimiter: what joins the context and an ending (" "; "" where the context ends a prompt,
    // as the chat probes of kiln/data/chat_synthetic.hpp do)
    const std::string delim = j.contains("target_delimiter") ? r.text("target_delimiter") : " ";
    for (const auto& c : e.choices) e.continuations.push_back(delim + c);
    detail::check_choices(e, where);
    e.label = r.index("label", e.count());
  } else if (layout == "arc") {
    const auto& q = r.at("question");
    const nlohmann::json* choices = nullptr;
    if (q.is_object()) {  // OpenBookQA / ARC's original layout: {stem, choices: [{text, label}]}
      KILN_CHECK(q.contains("stem") && q["stem"].is_string(), where, ": field question.stem is missing");
      e.question = q["stem"].get<std::string>();
      KILN_CHECK(q.contains("choices") && q["choices"].is_array(), where, ": field question.choices is missing");
      std::vector<std::string> labels;
      for (const auto& c : q["choices"]) {
        KILN_CHECK(c.is_object() && c.contains("text") && c["text"].is_string() && c.contains("label"), where,
                   ": field question.choices holds ", c.dump(), ": expected {\"text\": ..., \"label\": ...}");
        e.choices.push_back(c["text"].get<std::string>());
        labels.push_back(c["label"].is_string() ? c["label"].get<std::string>() : c["label"].dump());
      }
      detail::check_choices(e, where);
      e.label = r.index("answerKey", e.count(), 0, &labels);
    } else {  // the Hugging Face datasets layout: question, choices {text: [...], label: [...]}
      e.question = r.text("question");
      choices = &r.at("choices");
      KILN_CHECK(choices->is_object() && choices->contains("text"), where, ": field choices = ", choices->dump(),
                 ": expected {\"text\": [...], \"label\": [...]}");
      e.choices = r.texts((*choices)["text"], "choices.text");
      detail::check_choices(e, where);
      std::vector<std::string> labels;
      if (choices->contains("label")) labels = r.texts((*choices)["label"], "choices.label");
      KILN_CHECK(labels.empty() || labels.size() == e.choices.size(), where, ": choices.label has ", labels.size(),
                 " entries for ", e.choices.size(), " choices");
      e.label = r.index("answerKey", e.count(), 0, labels.empty() ? nullptr : &labels);
    }
    e.contexts = {"Question: " + e.question + "\nAnswer:"};
    for (const auto& c : e.choices) e.continuations.push_back(" " + c);
  } else if (layout == "piqa") {
    e.question = r.text("goal");
    e.choices = {r.text("sol1"), r.text("sol2")};
    detail::check_choices(e, where);
    e.contexts = {"Question: " + e.question + "\nAnswer:"};
    for (const auto& c : e.choices) e.continuations.push_back(" " + c);
    e.label = r.index("label", 2);
  } else if (layout == "winogrande") {
    const std::string s = r.text("sentence");
    const size_t blank = s.find('_');
    KILN_CHECK(blank != std::string::npos && s.find('_', blank + 1) == std::string::npos, where,
               ": field sentence = \"", s, "\": expected one blank (_)");
    e.choices = {r.text("option1"), r.text("option2")};
    detail::check_choices(e, where);
    e.question = s;
    for (const auto& c : e.choices) e.contexts.push_back(s.substr(0, blank) + c);
    std::string rest = s.substr(blank + 1);
    KILN_CHECK(!rest.empty(), where, ": field sentence ends at its blank: nothing after it to score");
    e.continuations = {rest};
    e.label = r.index("answer", 2, 1);
  } else {  // mmlu
    e.question = r.text("question");
    e.choices = r.texts(r.at("choices"), "choices");
    detail::check_choices(e, where);
    e.contexts = {"Question: " + e.question + "\nAnswer:"};
    for (const auto& c : e.choices) e.continuations.push_back(" " + c);
    e.label = r.index("answer", e.count());
  }
  return e;
}

// Every line of a jsonl file (blank lines skipped); all records must share a layout.
inline Task read_task(const std::string& path) {
  Task t;
  t.path = path;
  io::read_jsonl(path, "the task file", [&](const nlohmann::json& j, const std::string& where) {
    std::string layout;
    t.examples.push_back(parse_example(j, where, &layout));
    KILN_CHECK(t.layout.empty() || t.layout == layout, where, ": a ", layout, " record in a ", t.layout,
               " task (every line of a task file has one layout)");
    t.layout = layout;
  });
  KILN_CHECK(!t.examples.empty(), path, ": no examples (one JSON object a line expected)");
  return t;
}

}  // namespace kiln::eval
