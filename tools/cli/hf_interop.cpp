// tools/cli/hf_interop.cpp: a trainer's `export` and `import` subcommands: Kiln checkpoints <-> Hugging Face model
// directories (FACTS.md "Formats"). Compiled once into kiln_trainer_cli; the recipe's model is a RecipeProgram.
//
// `train_<recipe> export --checkpoint <dir|root> --out <hf dir>` writes
//   config.json               hf_config_of<M>: model_type smollm3 when the model has NoPE layers, else llama (or
//                             --model-type); max_position_embeddings = the stage's seq_len; eos_token_id = the
//                             checkpoint's end-of-document id; torch_dtype float32; tie_word_embeddings per the model
//   model.safetensors         the parameters, F32, HF names (or model-0000i-of-0000K.safetensors + index.json above
//                             --max-shard-mb)
//   tokenizer.json            a copy of the checkpoint's tokenizer (none for a byte-level checkpoint, or one imported
//                             without a tokenizer: said so)
//   tokenizer_config.json,    with tokenizer.json: PreTrainedTokenizerFast, eos and pad = the end-of-document token,
//   special_tokens_map.json   no bos, model_max_length = the recipe's context (what AutoTokenizer reads); the chat
//                             template (kiln/data/chat.hpp) where the tokenizer has the chat tokens
//   generation_config.json    eos_token_id (and <|im_end|> with the chat tokens), do_sample, SmolLM3's recommended
//                             temperature 0.6 / top_p 0.95
//   kiln.json                 what HF has no field for: recipe, step, byte-level or not, vocab_used (the ids the
//                             tokenizer can produce; sampling stays below it); `import` reads it back when present
// Everything is written into a temp directory next to --out and renamed into place; a non-empty --out is refused
// unless --force (then the old one is moved aside and removed after the rename).
//
// `train_<recipe> import --hf <hf dir> --out <checkpoints root>` checks config.json against the recipe's model
// (mismatches<M>: every differing field is printed, exit 3), loads the weights (one file or shards; BF16/F16/F32/F64
// converted to fp32) and writes a step-0 checkpoint: parameters, zero AdamW moments, a fresh loss guard, the
// tokenizer (<hf dir>/tokenizer.json, absolute, when present) and end-of-document id (eos_token_id), no data
// position. `train_<recipe> --out <run> --resume auto` then starts training from it (with --out <run>/checkpoints
// as the import target), and `generate --checkpoint` continues prompts with it.
//
// Hidden options for tests/reference/check_hf_export.py and the fixture test: `export --dump-logits "<ids>"` writes
// kiln_logits.safetensors (input_ids I64 [T], logits F32 [T, V], Kiln's fp32 forward) into the export;
// `export --check-logits <file>` reads input_ids and logits from a safetensors file (e.g. transformers' logits of an
// imported model), computes Kiln's and fails (exit 4) when max|diff| / max|ref| exceeds --check-tol.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/data/bytes.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/tokenizer.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"
#include "kiln/io/checkpoint.hpp"
#include "kiln/io/hf_config_core.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/checkpointing.hpp"
#include "kiln/train/guards.hpp"
#include "cli/commands.hpp"

namespace kiln::cli {
namespace {

namespace fs = std::filesystem;

void warn_stderr(const std::string& w) { std::fprintf(stderr, "kiln: warning: %s\n", w.c_str()); }

bool nonempty_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && fs::directory_iterator(p, ec) != fs::directory_iterator();
}

std::string read_file(const std::string& path) { return io::detail::read_text(path); }

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::string t = s;
  std::replace(t.begin(), t.end(), ',', ' ');
  std::istringstream in(t);
  long v;
  while (in >> v) ids.push_back(int32_t(v));
  KILN_CHECK(in.eof(), "--dump-logits \"", s, "\": expected token ids separated by spaces or commas");
  KILN_CHECK(!ids.empty(), "--dump-logits: no token ids given");
  return ids;
}

// Writes `text` to dir/name (atomically).
void write_json(const fs::path& dir, const char* name, const nlohmann::ordered_json& j) {
  core::write_text_atomic((dir / name).string(), j.dump(2) + "\n");
}

}  // namespace

// `train_<recipe> export`: a checkpoint as a Hugging Face model directory.
int hf_export_main(int argc, char** argv, const RecipeProgram& r) {
  namespace fs = std::filesystem;
  const char* name = r.name.c_str();
  const int MaxT = r.max_seq_len, V = r.vocab;
  CLI::App app{std::string("Export a checkpoint of recipe ") + name + " as a Hugging Face model directory"};
  std::string checkpoint = std::string("runs/") + name + "/checkpoints", out, model_type = "auto", dump_ids, check;
  double max_shard_mb = 5000, check_tol = 1e-4;
  bool force = false;
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory, or a checkpoints root (its newest valid one)")
      ->capture_default_str();
  app.add_option("--out", out, "the Hugging Face model directory to write")->required();
  app.add_option("--model-type", model_type, "auto (smollm3 when the model has NoPE layers, else llama) | llama | smollm3")
      ->check(CLI::IsMember({"auto", "llama", "smollm3"}))
      ->capture_default_str();
  app.add_option("--max-shard-mb", max_shard_mb, "shard the weights above this many MB (10^6 bytes) of tensor data")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--force", force, "replace a non-empty --out");
  app.add_option("--dump-logits", dump_ids, "token ids: also write kiln_logits.safetensors")->group("");
  app.add_option("--check-logits", check, "safetensors with input_ids and logits to compare Kiln's logits with")->group("");
  app.add_option("--check-tol", check_tol, "relative tolerance of --check-logits")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const fs::path dir = resolve_checkpoint(checkpoint, warn_stderr);
    const io::Checkpoint ck(dir);
    check_checkpoint_recipe(ck, name);
    std::vector<float> params(r.table_floats, 0.0f);
    io::load_params(r.table, ck.blob("parameters"), params.data(), dir.string() + "/parameters.safetensors");
    const int phase = checkpoint_phase(ck, r.shapes());  // its RoPE theta (or positional policy) is the one exported
    const auto logits = [&](const std::vector<int32_t>& ids) { return r.logits(phase, params.data(), ids); };
    const nlohmann::json info = ck.state().extra.value("data", nlohmann::json::object());
    const std::string tok_path = info.value("tokenizer", std::string());
    const int32_t eod = info.value("end_of_document", tok_path.empty() ? data::ByteTokenizer::end_of_document : -1);
    const int vocab_used = info.value("vocab_used", 0);
    // Byte-level: ids 0-255 are bytes. A trainer's checkpoint without a tokenizer is; an import records it, since a
    // Hugging Face model imported without tokenizer.json is not.
    const bool byte_level = info.value("byte_level", tok_path.empty());

    // --check-logits first: a failed comparison writes nothing.
    if (!check.empty()) {
      const io::Safetensors ref(check);
      const auto ids64 = ref.to_vector<int64_t>("input_ids");
      const std::vector<int32_t> ids(ids64.begin(), ids64.end());
      const auto want = ref.to_vector<float>("logits");
      KILN_CHECK(want.size() == ids.size() * size_t(V), check, ": logits hold ", want.size(),
                 " values, expected ", ids.size(), " x ", V);
      const auto got = logits(ids);
      double max_diff = 0, max_ref = 0;
      long argmax_same = 0;
      for (size_t t = 0; t < ids.size(); ++t) {
        const float* g = got.data() + t * V;
        const float* w = want.data() + t * V;
        for (int v = 0; v < V; ++v) {
          max_diff = std::max(max_diff, std::fabs(double(g[v]) - double(w[v])));
          max_ref = std::max(max_ref, std::fabs(double(w[v])));
        }
        argmax_same += (std::max_element(g, g + V) - g) == (std::max_element(w, w + V) - w);
      }
      const double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
      std::printf("kiln: logits check against %s: %zu tokens x %d, max |diff| %.3g, max |ref| %.3g, relative %.3g "
                  "(tolerance %.1g), argmax equal at %ld of %zu positions\n",
                  check.c_str(), ids.size(), V, max_diff, max_ref, rel, check_tol, argmax_same, ids.size());
      if (!(rel <= check_tol)) {
        std::fprintf(stderr, "kiln: error: Kiln's logits differ from %s by %.3g relative (tolerance %.1g)\n",
                     check.c_str(), rel, check_tol);
        return 4;
      }
      std::printf("kiln: logits match\n");
    }

    io::HfConfig cfg = r.hf_config(phase, model_type);
    model_type = cfg.model_type;
    // the context it trained at; a YaRN model's is the one hf_config wrote (factor x original) when that is longer
    if (!cfg.rope_scaling || cfg.max_position_embeddings < MaxT) cfg.max_position_embeddings = MaxT;
    if (eod >= 0) cfg.eos_token_id = eod;
    cfg.torch_dtype = "float32";

    const fs::path target = fs::absolute(fs::path(out)).lexically_normal();
    const fs::path out_dir = target.has_filename() ? target : target.parent_path();
    KILN_CHECK(!nonempty_dir(out_dir) || force, out_dir.string(),
               ": exists and is not empty; choose another --out or add --force to replace it");
    KILN_CHECK(!fs::exists(out_dir) || fs::is_directory(out_dir), out_dir.string(), ": exists and is not a directory");
    fs::create_directories(out_dir.parent_path());
    const fs::path tmp = out_dir.parent_path() / ("." + out_dir.filename().string() + ".tmp." + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp);
    try {
      io::write_hf_config((tmp / "config.json").string(), cfg);
      const auto views = io::param_views(r.table, params.data());
      const auto w = io::write_safetensors_sharded(tmp.string(), views, uint64_t(max_shard_mb * 1e6),
                                                   {{"kiln_recipe", name}, {"kiln_step", std::to_string(ck.step())}});
      int32_t im_end = -1;  // the chat format's end of a turn, where the tokenizer has it
      if (!tok_path.empty()) {
        KILN_CHECK(fs::exists(tok_path), dir.string(), "/state.json: field extra.data.tokenizer names ", tok_path,
                   ", which does not exist (the export needs it as tokenizer.json)");
        core::write_text_atomic((tmp / "tokenizer.json").string(), read_file(tok_path));
        // What AutoTokenizer reads besides tokenizer.json: the class and the special tokens (end of document = eos,
        // and pad, as Kiln pads with it; no bos: Kiln's documents do not start with one).
        const data::Tokenizer tok = data::Tokenizer::load(tok_path);
        nlohmann::ordered_json tc, sm;
        tc["tokenizer_class"] = "PreTrainedTokenizerFast";
        tc["model_max_length"] = MaxT;
        tc["clean_up_tokenization_spaces"] = false;
        tc["bos_token"] = nullptr;
        if (eod >= 0) {
          const std::string e = tok.id_to_token(eod);
          tc["eos_token"] = sm["eos_token"] = e;
          tc["pad_token"] = sm["pad_token"] = e;
        }
        // A tokenizer with the chat tokens (every BPE Kiln trains: data/prepare.hpp) gets the chat template
        // (data/chat.hpp), so that apply_chat_template renders conversations as SFT trained on them, and generation
        // stops at <|im_end|> too (generation_config.json below).
        if (data::missing_chat_tokens(tok).empty()) {
          tc["chat_template"] = data::chat_template_jinja();
          im_end = *tok.token_to_id(data::kImEnd);
        }
        write_json(tmp, "tokenizer_config.json", tc);
        write_json(tmp, "special_tokens_map.json", sm);
      }
      nlohmann::ordered_json gen;
      if (eod >= 0 && im_end >= 0) gen["eos_token_id"] = {eod, im_end}, gen["pad_token_id"] = eod;
      else if (eod >= 0) gen["eos_token_id"] = eod, gen["pad_token_id"] = eod;
      gen["do_sample"] = true;
      gen["temperature"] = 0.6;
      gen["top_p"] = 0.95;
      write_json(tmp, "generation_config.json", gen);
      nlohmann::ordered_json k;
      k["format"] = "kiln-hf-export/1";
      k["recipe"] = name;
      k["step"] = ck.step();
      k["checkpoint"] = fs::absolute(dir).string();
      k["byte_level"] = byte_level;
      k["end_of_document"] = eod;
      k["vocab_used"] = vocab_used;
      write_json(tmp, "kiln.json", k);
      if (!dump_ids.empty()) {
        const auto ids = parse_ids(dump_ids);
        const auto lg = logits(ids);
        const std::vector<int64_t> ids64(ids.begin(), ids.end());
        io::write_safetensors((tmp / "kiln_logits.safetensors").string(),
                              {{"input_ids", io::Dtype::I64, {int64_t(ids.size())}, ids64.data()},
                               {"logits", io::Dtype::F32, {int64_t(ids.size()), V}, lg.data()}},
                              {});
      }
      core::fsync_dir(tmp);
      // Into place: an empty or forced-away old directory first moves aside.
      fs::path aside;
      if (fs::exists(out_dir)) {
        aside = out_dir.parent_path() / ("." + out_dir.filename().string() + ".old." + std::to_string(::getpid()));
        fs::remove_all(aside, ec);
        fs::rename(out_dir, aside);
      }
      fs::rename(tmp, out_dir);
      core::fsync_dir(out_dir.parent_path());
      if (!aside.empty()) fs::remove_all(aside, ec);
      std::printf("kiln: exported %s (step %lld) to %s: model_type %s, %s%s, %s\n", dir.c_str(), (long long)ck.step(),
                  out_dir.c_str(), model_type.c_str(),
                  w.sharded ? (std::to_string(w.files.size() - 1) + " safetensors shards + index").c_str()
                            : "model.safetensors",
                  (" (" + std::to_string(w.total_size) + " bytes, F32)").c_str(),
                  !tok_path.empty() ? ("tokenizer.json (and tokenizer_config.json, special_tokens_map.json) from " +
                                       tok_path).c_str()
                  : byte_level ? "no tokenizer.json: the checkpoint is byte-level (ids 0-255 are bytes, 256 ends a "
                                 "document); Hugging Face has no tokenizer for that"
                               : "no tokenizer.json: the checkpoint was imported without one, and its ids are not "
                                 "bytes (export the tokenizer it was made with beside it)");
    } catch (...) {
      fs::remove_all(tmp, ec);
      throw;
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and library errors (filesystem, JSON) alike: a message
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

// `train_<recipe> import`: a Hugging Face model directory as a step-0 checkpoint of this recipe.
int hf_import_main(int argc, char** argv, const RecipeProgram& r) {
  namespace fs = std::filesystem;
  const char* name = r.name.c_str();  // an imported model starts the recipe's program: its first phase
  const int MaxT = r.max_seq_len;
  CLI::App app{std::string("Import a Hugging Face model directory as a step-0 checkpoint of recipe ") + name};
  std::string hf, out = std::string("runs/") + name + "/checkpoints";
  app.add_option("--hf", hf, "the Hugging Face model directory (config.json, model.safetensors or shards + index)")
      ->required();
  app.add_option("--out", out, "checkpoints root to write step_00000000 into (a run's <out>/checkpoints)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const fs::path src = fs::absolute(fs::path(hf)).lexically_normal();
    const std::string cfg_path = (src / "config.json").string();
    const io::HfConfig cfg = io::read_hf_config(cfg_path);
    const auto diffs = r.hf_mismatches(cfg);
    if (!diffs.empty()) {
      std::fprintf(stderr, "kiln: error: %s does not fit recipe %s's model (%zu %s):\n", cfg_path.c_str(),
                   name, diffs.size(), diffs.size() == 1 ? "field differs" : "fields differ");
      for (const auto& d : diffs) std::fprintf(stderr, "  %s\n", d.c_str());
      return 3;
    }
    if (cfg.max_position_embeddings > MaxT)
      std::printf("kiln: note: the model was made for %d positions; recipe %s trains and generates with %d\n",
                  cfg.max_position_embeddings, name, MaxT);
    KILN_CHECK(io::list_checkpoints(out).empty(), out, ": already holds checkpoints; import into an empty "
               "checkpoints root (a newer checkpoint there would be the one `--resume auto` takes)");
    const io::SafetensorsModel weights(src.string());
    std::vector<float> params(r.table_floats, 0.0f);
    io::load_params(r.table, weights, params.data(), weights.sharded() ? weights.index_path() : weights.files().at(0));
    long unused = 0;
    std::string unused_names;
    for (const auto& n : weights.names()) {
      bool known = n == "lm_head.weight";
      for (const auto& e : r.table) known |= e.name.view() == n;
      if (!known) unused_names += (unused++ < 4 ? (unused_names.empty() ? "" : ", ") + n : std::string());
    }
    if (unused)
      std::printf("kiln: warning: %ld tensor%s the model does not use (ignored): %s%s\n", unused, unused == 1 ? "" : "s",
                  unused_names.c_str(), unused > 4 ? ", ..." : "");

    // Tokenizer and the ids HF has no field for: kiln.json of a Kiln export, else tokenizer.json and eos_token_id.
    nlohmann::json kj = nlohmann::json::object();
    if (fs::exists(src / "kiln.json")) kj = core::parse_json(read_file((src / "kiln.json").string()), (src / "kiln.json").string());
    const bool byte_level = kj.value("byte_level", false);
    std::string tok_path;
    int vocab_used = kj.value("vocab_used", 0);
    if (!byte_level && fs::exists(src / "tokenizer.json")) {
      tok_path = (src / "tokenizer.json").string();
      if (!kj.contains("vocab_used")) {
        try {
          vocab_used = std::min(data::Tokenizer::load(tok_path).vocab_size(), r.vocab);
        } catch (const Error& e) {
          std::printf("kiln: warning: Kiln's tokenizer cannot read %s (%s); the checkpoint names it anyway\n",
                      tok_path.c_str(), e.what());
        }
      }
    }
    const int32_t eod = cfg.eos_token_id ? *cfg.eos_token_id : kj.value("end_of_document", -1);

    std::vector<float> zeros(params.size(), 0.0f);
    io::CheckpointState st;
    const auto g = LossGuard(r.defaults(0).guard).state();
    st.extra = {{"recipe", name},
                {"adam_updates", 0},
                {"guard", {{"ring", g.ring}, {"count", g.count}, {"bad_in_a_row", g.bad_in_a_row}}},
                {"data", {{"tokenizer", tok_path}, {"end_of_document", eod}, {"vocab_used", vocab_used},
                          {"byte_level", byte_level}}}};
    st.config = {{"imported_from", src.string()}, {"model_type", cfg.model_type}};
    const auto info = io::write_checkpoint(out, st,
                                           {{"parameters", io::param_views(r.table, params.data())},
                                            {"adam_m", io::param_views(r.table, zeros.data())},
                                            {"adam_v", io::param_views(r.table, zeros.data())}},
                                           1 << 30, [](const std::string& w) {
                                             std::printf("kiln: warning: %s\n", w.c_str());
                                           });
    std::printf("kiln: imported %s (%s, %s%s) as %s: step 0, fresh optimizer | %s\n", src.c_str(),
                cfg.model_type.c_str(), weights.sharded() ? "sharded, " : "", cfg.torch_dtype.empty() ? "?" : cfg.torch_dtype.c_str(),
                info.dir.c_str(), tok_path.empty() ? (byte_level ? "byte-level (no tokenizer)"
                                                 : "no tokenizer.json: `generate` would read ids as bytes")
                                : ("tokenizer " + tok_path).c_str());
    const fs::path root = fs::absolute(fs::path(out)).lexically_normal();
    const fs::path leaf = root.has_filename() ? root : root.parent_path();
    if (leaf.filename() == "checkpoints")
      std::printf("kiln: train from it: tools/kiln train %s --out %s --resume auto   (generate: tools/kiln generate %s)\n",
                  r.header.c_str(), leaf.parent_path().c_str(), out.c_str());
    else
      std::printf("kiln: note: the trainer resumes from <run>/checkpoints; import into <run>/checkpoints to train from "
                  "it with --out <run> --resume auto (generate --checkpoint %s works as it is)\n", out.c_str());
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and library errors (filesystem, JSON) alike: a message
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
