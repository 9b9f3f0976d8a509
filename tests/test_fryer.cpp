// tests/test_fryer.cpp: the fryer's verdict (tools/fryer.hpp) on made-up measurements: what passes a healthy card
// and what fails it, each failure named with its numbers. The measuring half (tools/fryer.cu) needs a GPU.
#include <doctest/doctest.h>

#include <sstream>

#include "fryer.hpp"

using namespace kiln::fryer;

namespace {
Result healthy() {
  Result r;
  r.name = "NVIDIA H100 80GB HBM3";
  r.tflops = {702, 698, 705, 700, 699};
  r.gbps = {2910, 2905, 2915};
  r.nvml = true;
  r.min_sm_mhz = 1755, r.max_sm_mhz = 1980, r.max_temp_c = 71, r.max_power_w = 690;
  r.reasons = kSwPowerCap;  // a power cap under full GEMM load is normal
  return r;
}
bool mentions(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v)
    if (x.find(s) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST_CASE("fryer: a healthy H100 passes; the power cap is shown, not failed") {
  const Result r = healthy();
  const Thresholds t = default_thresholds(r.name);
  CHECK(t.min_tflops == 550);
  CHECK(t.min_gbps == 2400);
  const Verdict v = judge(r, t);
  CHECK(v.pass);
  CHECK(mentions(v.notes, "power-cap"));
  std::ostringstream os;
  print_table(os, {r}, {v});
  CHECK(os.str().find("PASS") != std::string::npos);
  CHECK(os.str().find("1755-1980") != std::string::npos);
}

TEST_CASE("fryer: thresholds by card, and unknown cards' rates are not judged") {
  CHECK(default_thresholds("NVIDIA H200").min_gbps == 3500);
  CHECK(default_thresholds("NVIDIA H100 PCIe").min_tflops == 400);
  CHECK(default_thresholds("NVIDIA H100 NVL").min_gbps == 2800);
  Result r = healthy();
  r.name = "NVIDIA A10";
  const Verdict v = judge(r, default_thresholds(r.name));
  CHECK(v.pass);
  CHECK(mentions(v.notes, "not judged: no threshold for NVIDIA A10 (give --min-tflops)"));
}

TEST_CASE("fryer: each failure, with its numbers") {
  const Thresholds t = default_thresholds("NVIDIA H100 80GB HBM3");
  Result slow = healthy();
  slow.tflops = {410, 405, 412};
  Verdict v = judge(slow, t);
  CHECK(!v.pass);
  CHECK(mentions(v.why, "bf16 GEMM 410 TFLOP/s (median), below the 550 expected"));

  Result dip = healthy();
  dip.gbps = {2900, 2900, 2100, 2900};
  v = judge(dip, t);
  CHECK(!v.pass);
  CHECK(mentions(v.why, "HBM copy dipped to 2100 GB/s, 72% of its median 2900"));

  Result hot = healthy();
  hot.max_temp_c = 91;
  hot.reasons |= kHwThermal;
  v = judge(hot, t);
  CHECK(!v.pass);
  CHECK(mentions(v.why, "reached 91 C, above the 85 C allowed"));
  CHECK(mentions(v.why, "the driver slowed the clocks: HW-thermal"));

  Result ecc = healthy();
  ecc.ecc_uncorrected = 2;
  ecc.ecc_corrected_start = 5, ecc.ecc_corrected = 9;
  ecc.remap_failed = true;
  v = judge(ecc, t);
  CHECK(!v.pass);
  CHECK(mentions(v.why, "2 uncorrectable ECC errors"));
  CHECK(mentions(v.why, "row remapping failed"));
  CHECK(mentions(v.notes, "4 corrected ECC errors during the run"));

  Result broken = healthy();
  broken.tflops.clear();
  broken.error = "cublasCreate failed";
  v = judge(broken, t);
  CHECK(!v.pass);
  CHECK(mentions(v.why, "cublasCreate failed"));
  CHECK(mentions(v.why, "no bf16 GEMM window was measured"));
}

TEST_CASE("fryer: without NVML the rates are still judged, and the table says what was not read") {
  Result r = healthy();
  r.nvml = false;
  r.max_temp_c = 99;  // not read: not judged
  const Verdict v = judge(r, default_thresholds(r.name));
  CHECK(v.pass);
  CHECK(mentions(v.notes, "NVML"));
  CHECK(reason_names(kHwSlowdown | kSwThermal) == "HW-slowdown,SW-thermal");
  CHECK(reason_names(0) == "none");
}
