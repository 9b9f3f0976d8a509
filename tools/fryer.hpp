// tools/fryer.hpp: the fryer's verdict (tools/fryer.cu measures; this judges and prints, and needs no GPU, so CPU CI
// tests it: tests/test_fryer.cpp). A GPU passes when, over the whole run,
//   - its sustained bf16 GEMM rate (median of ~1 s windows) and HBM copy bandwidth reach the card's thresholds,
//   - no window falls below `stability` x the median (a dip is throttling or a neighbour's load),
//   - its temperature stays at or below max_temp_c,
//   - the driver reports no thermal or hardware slowdown, nor power-brake (a power cap under full GEMM load is
//     normal and only shown),
//   - no uncorrectable ECC error is counted (since the driver loaded), and no row remapping failed.
// Default thresholds exist for the cards Kiln targets; they are set well under the datasheet peaks (a healthy card
// clears them easily) and were not measured here: give --min-tflops / --min-gbps from a known-good card of the fleet.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::fryer {

struct Thresholds {
  double min_tflops = 0;   // median bf16 GEMM TFLOP/s; 0: not judged (unknown card)
  double min_gbps = 0;     // median copy GB/s (bytes read + written); 0: not judged
  double stability = 0.85;  // every window at least this fraction of the median
  double max_temp_c = 85;
};

// Datasheet-derived floors by device name (cudaDeviceProp::name): H100 SXM / NVL / PCIe, H200. Dense bf16 peaks
// are 989 (SXM) and 756 (PCIe) TFLOP/s; HBM 3.35 (SXM), 3.9 (NVL), 2.0 (PCIe), 4.8 (H200) TB/s.
inline Thresholds default_thresholds(std::string_view name) {
  Thresholds t;
  auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (has("H200")) t.min_tflops = 550, t.min_gbps = 3500;
  else if (has("H100") && has("PCIe")) t.min_tflops = 400, t.min_gbps = 1500;
  else if (has("H100") && has("NVL")) t.min_tflops = 500, t.min_gbps = 2800;
  else if (has("H100")) t.min_tflops = 550, t.min_gbps = 2400;
  return t;
}

// NVML's clock-event ("throttle") reasons, the bits Kiln reads
enum : uint64_t {
  kIdle = 0x1, kAppClocks = 0x2, kSwPowerCap = 0x4, kHwSlowdown = 0x8, kSyncBoost = 0x10, kSwThermal = 0x20,
  kHwThermal = 0x40, kHwPowerBrake = 0x80, kDisplayClock = 0x100,
};
inline constexpr uint64_t kFailingReasons = kHwSlowdown | kSwThermal | kHwThermal | kHwPowerBrake;

inline std::string reason_names(uint64_t mask) {
  static constexpr std::pair<uint64_t, const char*> names[] = {
      {kIdle, "idle"}, {kAppClocks, "app-clocks"}, {kSwPowerCap, "power-cap"}, {kHwSlowdown, "HW-slowdown"},
      {kSyncBoost, "sync-boost"}, {kSwThermal, "SW-thermal"}, {kHwThermal, "HW-thermal"},
      {kHwPowerBrake, "power-brake"}, {kDisplayClock, "display-clock"}};
  std::string s;
  for (const auto& [bit, n] : names)
    if (mask & bit) s += (s.empty() ? "" : ",") + std::string(n);
  return s.empty() ? "none" : s;
}

// What one GPU's run measured.
struct Result {
  int device = 0;
  std::string name;
  std::vector<double> tflops, gbps;  // one per window
  bool nvml = false;                 // the driver's counters were read (else the fields below are unknown)
  unsigned min_sm_mhz = 0, max_sm_mhz = 0, max_temp_c = 0, max_power_w = 0;
  uint64_t reasons = 0;  // every clock-event reason seen in any sample
  uint64_t ecc_corrected = 0, ecc_uncorrected = 0;  // volatile totals at the end
  uint64_t ecc_corrected_start = 0;
  bool remap_pending = false, remap_failed = false;
  std::string error;  // a measurement that could not be made (a CUDA or cuBLAS error): the GPU fails
};

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
inline double smallest(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }

struct Verdict {
  bool pass = true;
  std::vector<std::string> why;   // each failed check, in a sentence with its numbers
  std::vector<std::string> notes;  // what was not judged, or shown only
};

inline Verdict judge(const Result& r, const Thresholds& t) {
  Verdict v;
  char line[256];
  auto fail = [&](const std::string& s) { v.pass = false, v.why.push_back(s); };
  if (!r.error.empty()) fail(r.error);
  auto rate = [&](const std::vector<double>& w, double floor, const char* what, const char* unit, const char* flag) {
    if (w.empty()) {
      fail(std::string("no ") + what + " window was measured (run longer: --seconds)");
      return;
    }
    const double m = median(w), lo = smallest(w);
    if (floor <= 0) {
      std::snprintf(line, sizeof line, "%s not judged: no threshold for %s (give %s)", what, r.name.c_str(), flag);
      v.notes.push_back(line);
    } else if (m < floor) {
      std::snprintf(line, sizeof line, "%s %.0f %s (median), below the %.0f expected", what, m, unit, floor);
      fail(line);
    }
    if (lo < t.stability * m) {
      std::snprintf(line, sizeof line, "%s dipped to %.0f %s, %.0f%% of its median %.0f (at least %.0f%% expected)",
                    what, lo, unit, 100 * lo / m, m, 100 * t.stability);
      fail(line);
    }
  };
  rate(r.tflops, t.min_tflops, "bf16 GEMM", "TFLOP/s", "--min-tflops");
  rate(r.gbps, t.min_gbps, "HBM copy", "GB/s", "--min-gbps");
  if (!r.nvml) {
    v.notes.push_back("clocks, temperature, throttling and ECC not read (NVML, libnvidia-ml.so.1, not found)");
    return v;
  }
  if (r.max_temp_c > t.max_temp_c) {
    std::snprintf(line, sizeof line, "reached %u C, above the %.0f C allowed", r.max_temp_c, t.max_temp_c);
    fail(line);
  }
  if (r.reasons & kFailingReasons) fail("the driver slowed the clocks: " + reason_names(r.reasons & kFailingReasons));
  if (r.reasons & ~kFailingReasons)
    v.notes.push_back("clock events (not failures): " + reason_names(r.reasons & ~kFailingReasons));
  if (r.ecc_uncorrected > 0) {
    std::snprintf(line, sizeof line, "%llu uncorrectable ECC errors since the driver loaded",
                  static_cast<unsigned long long>(r.ecc_uncorrected));
    fail(line);
  }
  if (r.ecc_corrected > r.ecc_corrected_start) {
    std::snprintf(line, sizeof line, "%llu corrected ECC errors during the run",
                  static_cast<unsigned long long>(r.ecc_corrected - r.ecc_corrected_start));
    v.notes.push_back(line);
  }
  if (r.remap_failed) fail("a row remapping failed (the card needs service)");
  if (r.remap_pending) v.notes.push_back("a row remapping is pending: reset the GPU before a long run");
  return v;
}

// One line per GPU, then each failure and note under it.
inline void print_table(std::ostream& os, const std::vector<Result>& rs, const std::vector<Verdict>& vs) {
  char line[320];
  std::snprintf(line, sizeof line, "%-3s %-26s %9s %9s %9s %9s %11s %6s %6s  %s\n", "gpu", "name", "TFLOP/s", "min",
                "GB/s", "min", "SM MHz", "max C", "max W", "verdict");
  os << line;
  for (size_t i = 0; i < rs.size(); ++i) {
    const Result& r = rs[i];
    char clocks[32] = "-", temp[16] = "-", power[16] = "-";
    if (r.nvml) {
      std::snprintf(clocks, sizeof clocks, "%u-%u", r.min_sm_mhz, r.max_sm_mhz);
      std::snprintf(temp, sizeof temp, "%u", r.max_temp_c);
      std::snprintf(power, sizeof power, "%u", r.max_power_w);
    }
    std::snprintf(line, sizeof line, "%-3d %-26.26s %9.1f %9.1f %9.0f %9.0f %11s %6s %6s  %s\n", r.device,
                  r.name.c_str(), median(r.tflops), smallest(r.tflops), median(r.gbps), smallest(r.gbps), clocks, temp,
                  power, vs[i].pass ? "PASS" : "FAIL");
    os << line;
    for (const auto& w : vs[i].why) os << "      FAIL: " << w << "\n";
    for (const auto& n : vs[i].notes) os << "      note: " << n << "\n";
  }
}

}  // namespace kiln::fryer
