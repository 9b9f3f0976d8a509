// tests/fuzz/fuzz_safetensors.cpp: libFuzzer target for kiln::io::Safetensors. Any input must either open (and then
// every tensor must be readable within the mapping) or throw kiln::Error; ASan reports any out-of-bounds access.
// The reader maps files, so each input is written to a per-process temporary file first.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "kiln/io/safetensors.hpp"

namespace {
const std::string& input_path() {
  static const std::string p = "/tmp/kiln_fuzz_safetensors." + std::to_string(::getpid());
  return p;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = input_path();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) __builtin_trap();
  kiln::core::write_all(fd, data, size, path);
  ::close(fd);
  try {
    kiln::io::Safetensors st(path);
    double sum = 0;
    for (const kiln::io::Tensor& t : st.tensors()) {
      if (t.nbytes > (size_t(1) << 24)) continue;  // shapes are checked against the file size; keep runs fast
      for (float v : st.to_vector<float>(t.name)) sum += v;
      if (t.numel() * int64_t(kiln::io::dtype_size(t.dtype)) != int64_t(t.nbytes)) __builtin_trap();
    }
    for (const auto& [k, v] : st.metadata()) sum += double(k.size() + v.size());
    volatile double sink = sum;
    (void)sink;
  } catch (const kiln::Error&) {
  }
  return 0;
}
