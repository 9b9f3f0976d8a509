// tools/fryer.cu: kiln_fryer (tools/kiln fryer), the GPU burn-in before a long run. Every chosen GPU at once, each
// on its own host thread: first sustained bf16 GEMMs (cuBLAS, 8192^3, fp32 accumulation) for half the time, then
// device-to-device copies of 2 GiB for the other half, timed with CUDA events in windows of about a second; after
// each window the driver's counters through NVML (SM clock, temperature, power, clock-event reasons; ECC totals and
// row remapping at the start and the end). tools/fryer.hpp judges each GPU and prints one table; exit 0 when every
// GPU passes, 2 when one fails, 1 when none could be measured (no device, no driver).
//   kiln_fryer [--seconds 60] [--devices 0,1] [--min-tflops X] [--min-gbps Y] [--max-temp 85] [--stability 0.85]
// NVML is opened at run time (libnvidia-ml.so.1 ships with the driver, not the toolkit); without it the rates are
// still measured and judged, and the table says what was not read.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fryer.hpp"

namespace {

using kiln::fryer::Result;

// ---- NVML through dlopen: the few entry points of its stable C ABI that the fryer reads ----
struct Nvml {
  using Device = void*;
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  int (*by_pci)(const char*, Device*) = nullptr;
  int (*clock)(Device, int, unsigned*) = nullptr;        // type 1: SM
  int (*temperature)(Device, int, unsigned*) = nullptr;  // sensor 0: GPU
  int (*power)(Device, unsigned*) = nullptr;             // milliwatts
  int (*reasons)(Device, unsigned long long*) = nullptr;
  int (*ecc)(Device, int, int, unsigned long long*) = nullptr;  // (corrected 0 | uncorrected 1, volatile 0)
  int (*remapped)(Device, unsigned*, unsigned*, unsigned*, unsigned*) = nullptr;
  void* lib = nullptr;

  bool open() {
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!lib) return false;
    auto sym = [&](auto& f, const char* name, const char* fallback = nullptr) {
      void* p = dlsym(lib, name);
      if (!p && fallback) p = dlsym(lib, fallback);
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(p);
    };
    sym(init, "nvmlInit_v2");
    sym(shutdown, "nvmlShutdown");
    sym(by_pci, "nvmlDeviceGetHandleByPciBusId_v2");
    sym(clock, "nvmlDeviceGetClockInfo");
    sym(temperature, "nvmlDeviceGetTemperature");
    sym(power, "nvmlDeviceGetPowerUsage");
    sym(reasons, "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons");
    sym(ecc, "nvmlDeviceGetTotalEccErrors");
    sym(remapped, "nvmlDeviceGetRemappedRows");
    return init && by_pci && clock && temperature && power && reasons && init() == 0;
  }
};

// The counters of one sample go into the GPU's result.
void sample(const Nvml& nv, Nvml::Device d, Result& r) {
  unsigned mhz = 0, temp = 0, mw = 0;
  unsigned long long why = 0;
  if (nv.clock(d, 1, &mhz) == 0) {
    r.min_sm_mhz = r.min_sm_mhz ? std::min(r.min_sm_mhz, mhz) : mhz;
    r.max_sm_mhz = std::max(r.max_sm_mhz, mhz);
  }
  if (nv.temperature(d, 0, &temp) == 0) r.max_temp_c = std::max(r.max_temp_c, temp);
  if (nv.power(d, &mw) == 0) r.max_power_w = std::max(r.max_power_w, mw / 1000);
  if (nv.reasons(d, &why) == 0) r.reasons |= why;
}

void health(const Nvml& nv, Nvml::Device d, Result& r, bool start) {
  unsigned long long c = 0, u = 0;
  if (nv.ecc && nv.ecc(d, 0, 0, &c) == 0) (start ? r.ecc_corrected_start : r.ecc_corrected) = c;
  if (nv.ecc && nv.ecc(d, 1, 0, &u) == 0 && !start) r.ecc_uncorrected = u;
  unsigned corr = 0, unc = 0, pending = 0, failed = 0;
  if (!start && nv.remapped && nv.remapped(d, &corr, &unc, &pending, &failed) == 0)
    r.remap_pending = pending != 0, r.remap_failed = failed != 0;
}

std::mutex print_mutex;

// One GPU's run. Errors end up in r.error (the GPU fails), never as an exception across threads.
void fry(int dev, double seconds, const Nvml* nv, Result& r) {
  auto ok = [&](cudaError_t e, const char* what) {
    if (e != cudaSuccess && r.error.empty()) r.error = std::string(what) + ": " + cudaGetErrorString(e);
    return e == cudaSuccess;
  };
  if (!ok(cudaSetDevice(dev), "select the device")) return;
  Nvml::Device nd = nullptr;
  char bus[32] = {};
  if (nv && cudaDeviceGetPCIBusId(bus, sizeof bus, dev) == cudaSuccess && nv->by_pci(bus, &nd) == 0) r.nvml = true;
  if (r.nvml) health(*nv, nd, r, true);

  constexpr int n = 8192;
  constexpr size_t copy_bytes = size_t(2) << 30;
  __nv_bfloat16 *a = nullptr, *b = nullptr, *c = nullptr;
  char *src = nullptr, *dst = nullptr;
  const size_t mat = size_t(n) * n * sizeof(__nv_bfloat16);
  if (!ok(cudaMalloc(&a, mat), "allocate") || !ok(cudaMalloc(&b, mat), "allocate") ||
      !ok(cudaMalloc(&c, mat), "allocate") || !ok(cudaMalloc(&src, copy_bytes), "allocate 2 GiB") ||
      !ok(cudaMalloc(&dst, copy_bytes), "allocate 2 GiB"))
    return;
  // small values, so the products stay finite; the rate does not depend on them
  ok(cudaMemset(a, 0x3c, mat), "fill"), ok(cudaMemset(b, 0x3c, mat), "fill");
  ok(cudaMemset(src, 1, copy_bytes), "fill");
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    r.error = "cublasCreate failed";
    return;
  }
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const float one = 1.f, zero = 0.f;
  auto gemm = [&] {
    return cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                        CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
  };
  auto copy = [&] { return cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice) == cudaSuccess; };
  // Runs `work` in windows of ~1 s for `secs`, pushing work-per-window / time into `rates`.
  auto phase = [&](auto&& work, double per_call, std::vector<double>& rates, double secs, const char* what,
                   const char* unit) {
    if (!work() || !ok(cudaDeviceSynchronize(), what)) {  // warm-up, and the time of one call
      if (r.error.empty()) r.error = std::string(what) + " failed";
      return;
    }
    cudaEventRecord(e0);
    work();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    const int calls = std::max(1, int(1000.0 / std::max(ms, 0.01f)));
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
    while (std::chrono::steady_clock::now() < end) {
      cudaEventRecord(e0);
      for (int i = 0; i < calls; ++i) work();
      cudaEventRecord(e1);
      if (!ok(cudaEventSynchronize(e1), what)) return;
      cudaEventElapsedTime(&ms, e0, e1);
      rates.push_back(per_call * calls / (double(ms) * 1e-3));
      if (r.nvml) sample(*nv, nd, r);
      if (rates.size() % 10 == 0) {
        std::lock_guard<std::mutex> lock(print_mutex);
        std::printf("kiln fryer: gpu %d %s %.1f %s", dev, what, rates.back(), unit);
        if (r.nvml) std::printf(", SM %u MHz, %u C, %u W", r.max_sm_mhz, r.max_temp_c, r.max_power_w);
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  };
  phase(gemm, 2.0 * n * n * double(n) * 1e-12, r.tflops, seconds / 2, "bf16 GEMM", "TFLOP/s");
  phase(copy, 2.0 * double(copy_bytes) * 1e-9, r.gbps, seconds / 2, "HBM copy", "GB/s");
  ok(cudaGetLastError(), "the last launch");
  if (r.nvml) health(*nv, nd, r, false);
  cublasDestroy(h);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(src), cudaFree(dst);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln fryer: sustained bf16 GEMM and HBM bandwidth per GPU, the driver's clocks, temperatures, "
               "throttling and ECC, judged against thresholds (the GPU burn-in before a long run)"};
  double seconds = 60;
  std::vector<int> devices;
  double min_tflops = -1, min_gbps = -1, max_temp = 85, stability = 0.85;
  app.add_option("--seconds", seconds, "the run's length per GPU: half GEMM, half copies")
      ->check(CLI::Range(2.0, 86400.0))->capture_default_str();
  app.add_option("--devices", devices, "CUDA devices to run on (default: all), e.g. --devices 0,1")->delimiter(',');
  app.add_option("--min-tflops", min_tflops, "bf16 GEMM floor, median TFLOP/s (default: by card; H100 SXM 550)");
  app.add_option("--min-gbps", min_gbps, "HBM copy floor, median GB/s read + written (default: by card; H200 3500)");
  app.add_option("--max-temp", max_temp, "the hottest a GPU may get, C")->capture_default_str();
  app.add_option("--stability", stability, "every ~1 s window at least this fraction of the median")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::fprintf(stderr, "kiln fryer: no CUDA device (%s): the fryer measures GPUs and needs one\n",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 1;
  }
  if (devices.empty())
    for (int i = 0; i < count; ++i) devices.push_back(i);
  for (int d : devices)
    if (d < 0 || d >= count) {
      std::fprintf(stderr, "kiln fryer: --devices %d: this machine has devices 0 to %d\n", d, count - 1);
      return 1;
    }
  Nvml nvml;
  const bool have_nvml = nvml.open();
  if (!have_nvml) std::printf("kiln fryer: NVML (libnvidia-ml.so.1) not available: clocks, temperatures, "
                              "throttling and ECC are not read\n");
  std::vector<Result> results(devices.size());
  std::vector<kiln::fryer::Thresholds> limits(devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    cudaDeviceProp p{};
    cudaGetDeviceProperties(&p, devices[i]);
    results[i].device = devices[i];
    results[i].name = p.name;
    limits[i] = kiln::fryer::default_thresholds(p.name);
    if (min_tflops >= 0) limits[i].min_tflops = min_tflops;
    if (min_gbps >= 0) limits[i].min_gbps = min_gbps;
    limits[i].max_temp_c = max_temp, limits[i].stability = stability;
    std::printf("kiln fryer: gpu %d %s: %.0f s (thresholds: %.0f TFLOP/s, %.0f GB/s, %.0f C)\n", devices[i], p.name,
                seconds, limits[i].min_tflops, limits[i].min_gbps, limits[i].max_temp_c);
  }
  std::vector<std::thread> threads;
  for (size_t i = 0; i < devices.size(); ++i)
    threads.emplace_back(fry, devices[i], seconds, have_nvml ? &nvml : nullptr, std::ref(results[i]));
  for (auto& t : threads) t.join();
  if (have_nvml && nvml.shutdown) nvml.shutdown();
  std::vector<kiln::fryer::Verdict> verdicts;
  bool pass = true;
  for (size_t i = 0; i < results.size(); ++i) {
    verdicts.push_back(kiln::fryer::judge(results[i], limits[i]));
    pass = pass && verdicts.back().pass;
  }
  std::printf("\n");
  kiln::fryer::print_table(std::cout, results, verdicts);
  std::printf("kiln fryer: %s\n", pass ? "every GPU passed" : "FAILED");
  return pass ? 0 : 2;
}
