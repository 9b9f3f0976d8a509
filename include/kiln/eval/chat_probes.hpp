// kiln/eval/chat_probes.hpp: what post-training is for, measured by generation: additions answered in think mode
// (the worked column addition in the think block, then the sum) and in no-think mode (the sum at once), each
// answer checked exactly. The problems are drawn among the held-out additions (data::held_out_addition), which
// the generated training data never holds: an answer the model gets right it computed.
// Greedy decoding; the answer is what follows the last </think> (no-think mode: the template's empty block), its
// leading whitespace dropped; it is right when it is the sum's digits and nothing else follows but the end of turn.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/rng.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/chat_synthetic.hpp"

namespace kiln::eval {

struct ArithmeticResult {
  int problems = 0;
  int right[2] = {0, 0};        // [no-think, think]
  double answer_tokens[2] = {0, 0};  // mean generated tokens
  double accuracy(bool think) const { return problems ? double(right[think]) / problems : 0.0; }
};

// The answer of a generated turn: after the last </think>, leading whitespace dropped.
inline std::string final_answer(const std::string& generated) {
  const size_t at = generated.rfind(data::kThinkClose);
  std::string a = at == std::string::npos ? generated : generated.substr(at + std::string(data::kThinkClose).size());
  const size_t b = a.find_first_not_of(" \n\t");
  return b == std::string::npos ? std::string() : a.substr(b);
}

// generate(prompt ids, max new tokens) -> the new ids (greedy, stopping at <|im_end|>, which it leaves out).
inline ArithmeticResult arithmetic_probe(int problems, int digits, uint64_t seed,
                                         const std::function<std::vector<int32_t>(const std::string&)>& encode,
                                         const std::function<std::string(const std::vector<int32_t>&)>& decode,
                                         const std::function<std::vector<int32_t>(const std::vector<int32_t>&, int)>& generate) {
  ArithmeticResult r;
  Rng rng(mix64(seed ^ 0x51a7e));
  for (int k = 0; k < problems; ++k) {
    const auto [a, b] = data::draw_addition(rng, digits, /*held_out=*/true);  // never one of the training problems
    for (const bool think : {false, true}) {
      auto chat = data::addition_chat(a, b, think);
      chat.pop_back();  // the answer
      const std::vector<int32_t> prompt = encode(data::render_chat(chat, /*add_generation_prompt=*/true).text);
      const std::vector<int32_t> out = generate(prompt, think ? 24 * (digits + 2) : 4 * (digits + 2));
      r.answer_tokens[think] += double(out.size()) / problems;
      r.right[think] += final_answer(decode(out)) == std::to_string(a + b);
    }
    ++r.problems;
  }
  return r;
}

}  // namespace kiln::eval
