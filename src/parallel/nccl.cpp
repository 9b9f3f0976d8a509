// src/parallel/nccl.cpp: NCCL's all-reduce for GPU ranks (kiln/parallel/comm.hpp's DeviceCollectives), compiled once
// into kiln_nccl when the CUDA toolkit has nccl.h. NCCL itself is loaded with dlopen when a run has more than one
// rank: its library is large (200 MiB) and a one-rank trainer, or a machine without it, must not need it.
// NCCL waits for a dead or hung rank forever: a watchdog thread follows each collective by an event and, past the
// timeout or on an error NCCL reports, names it and ends the process (PyTorch's NCCL watchdog does the same).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/parallel/comm.hpp"

namespace kiln::parallel {

namespace {

// The entry points Kiln calls, from libnccl.so.2 (NCCL's C ABI is stable across 2.x).
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommDestroy) destroy = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclCommAbort) abort = nullptr;
  decltype(&ncclCommGetAsyncError) async_error = nullptr;
  decltype(&ncclReduce) reduce = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclGroupStart) group_start = nullptr;
  decltype(&ncclGroupEnd) group_end = nullptr;

  static const NcclApi& get() {
    static const NcclApi api = load();
    return api;
  }

 private:
  static NcclApi load() {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    KILN_CHECK(lib, "NCCL: cannot load libnccl.so.2 (", dlerror(), "); GPU ranks need it: put the CUDA toolkit's "
               "lib64 or PyTorch's nvidia/nccl/lib on LD_LIBRARY_PATH");
    NcclApi a;
    auto sym = [&](auto& f, const char* name) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(dlsym(lib, name));
      KILN_CHECK(f, "NCCL: libnccl.so.2 has no ", name);
    };
    sym(a.get_unique_id, "ncclGetUniqueId");
    sym(a.init_rank, "ncclCommInitRank");
    sym(a.all_reduce, "ncclAllReduce");
    sym(a.destroy, "ncclCommDestroy");
    sym(a.error_string, "ncclGetErrorString");
    sym(a.abort, "ncclCommAbort");
    sym(a.async_error, "ncclCommGetAsyncError");
    sym(a.reduce, "ncclReduce");
    sym(a.broadcast, "ncclBroadcast");
    sym(a.group_start, "ncclGroupStart");
    sym(a.group_end, "ncclGroupEnd");
    return a;
  }
};

class Nccl final : public DeviceCollectives {
 public:
  Nccl(Communicator& host, int local_rank, double timeout_s, HangHandler on_hang)
      : api_(NcclApi::get()), rank_(host.rank()), world_(host.world()), device_(local_rank), timeout_s_(timeout_s),
        on_hang_(std::move(on_hang)) {
    KILN_CHECK(timeout_s > 0, "NCCL: the collectives' timeout must be positive, got ", timeout_s);
    int gpus = 0;
    const cudaError_t e = cudaGetDeviceCount(&gpus);
    KILN_CHECK(e == cudaSuccess && gpus > 0, "NCCL: rank ", host.rank(), " finds no CUDA device (",
               e != cudaSuccess ? cudaGetErrorString(e) : "none", ")");
    KILN_CHECK(local_rank < gpus, "NCCL: rank ", host.rank(), " is local rank ", local_rank, " of its node, which has ",
               gpus, " GPUs: start at most one rank per GPU");
    KILN_CHECK(cudaSetDevice(local_rank) == cudaSuccess, "NCCL: cannot select GPU ", local_rank);
    ncclUniqueId id{};
    if (host.rank() == 0) ok(api_.get_unique_id(&id), "ncclGetUniqueId");
    host.broadcast(&id, sizeof id, 0, "sending NCCL's unique id to every rank");
    ok(api_.init_rank(&comm_, host.world(), id, host.rank()), "ncclCommInitRank");
    watchdog_ = std::thread([this] { watch(); });
  }
  ~Nccl() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    watchdog_.join();
    for (auto& p : pending_) cudaEventDestroy(p.done);
    for (cudaEvent_t e : spare_) cudaEventDestroy(e);
    if (comm_) api_.destroy(comm_);
  }
  const char* name() const override { return "NCCL"; }
  void allreduce_sum(float* data, size_t n, void* stream, const char* what) override {
    ok(api_.all_reduce(data, data, n, ncclFloat32, ncclSum, comm_, static_cast<cudaStream_t>(stream)), what);
    follow(stream, what);
  }
  void allreduce_sum(double* data, size_t n, void* stream, const char* what) override {
    ok(api_.all_reduce(data, data, n, ncclFloat64, ncclSum, comm_, static_cast<cudaStream_t>(stream)), what);
    follow(stream, what);
  }
  void allreduce_sum(bf16* data, size_t n, void* stream, const char* what) override {
    static_assert(sizeof(bf16) == 2, "kiln::bf16 must be NCCL's ncclBfloat16 bit for bit");
    ok(api_.all_reduce(data, data, n, ncclBfloat16, ncclSum, comm_, static_cast<cudaStream_t>(stream)), what);
    follow(stream, what);
  }
  void allreduce_max(float* data, size_t n, void* stream, const char* what) override {
    ok(api_.all_reduce(data, data, n, ncclFloat32, ncclMax, comm_, static_cast<cudaStream_t>(stream)), what);
    follow(stream, what);
  }
  // Uneven pieces (ZeRO-1's shards): one reduce to each rank's piece, or one broadcast from it, in one NCCL group
  // (what ncclReduceScatter and ncclAllGather do for even pieces).
  void reduce_scatter_sum(const float* send, float* recv, const size_t* counts, void* stream,
                          const char* what) override {
    const auto s = static_cast<cudaStream_t>(stream);
    ok(api_.group_start(), what);
    size_t at = 0;
    for (int r = 0; r < world_; ++r) {  // (a bucket of ZeRO-1's holds no floats of some ranks: every rank skips them)
      if (counts[r] > 0)
        ok(api_.reduce(send + at, r == rank_ ? recv : nullptr, counts[r], ncclFloat32, ncclSum, r, comm_, s), what);
      at += counts[r];
    }
    ok(api_.group_end(), what);
    follow(stream, what);
  }
  void allgather(float* data, const size_t* counts, void* stream, const char* what) override {
    const auto s = static_cast<cudaStream_t>(stream);
    ok(api_.group_start(), what);
    size_t at = 0;
    for (int r = 0; r < world_; ++r) {
      if (counts[r] > 0) ok(api_.broadcast(data + at, data + at, counts[r], ncclFloat32, r, comm_, s), what);
      at += counts[r];
    }
    ok(api_.group_end(), what);
    follow(stream, what);
  }
  void watch(void* stream, const char* what) override { follow(stream, what); }

 private:
  void ok(ncclResult_t r, const char* what) const {
    KILN_CHECK(r == ncclSuccess, "NCCL: ", what, ": ", api_.error_string(r));
  }
  // The watchdog: an event after each collective, polled every 20 ms from its own thread.
  struct Pending {
    cudaEvent_t done;
    std::chrono::steady_clock::time_point enqueued;
    const char* what;
    long number;
  };
  // A collective enqueued while its stream captures a CUDA graph runs at each replay, not now: the replay is
  // followed instead (watch(), after the graph's launch).
  void follow(void* stream, const char* what) {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    KILN_CHECK(cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &capturing) == cudaSuccess, "NCCL: ", what,
               ": cannot ask whether its stream captures a CUDA graph");
    if (capturing != cudaStreamCaptureStatusNone) return;
    std::lock_guard<std::mutex> l(mu_);
    cudaEvent_t e = nullptr;
    if (!spare_.empty()) {
      e = spare_.back();
      spare_.pop_back();
    } else {
      KILN_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess, "NCCL: cannot make an event");
    }
    KILN_CHECK(cudaEventRecord(e, static_cast<cudaStream_t>(stream)) == cudaSuccess, "NCCL: ", what,
               ": cannot record its event");
    pending_.push_back({e, std::chrono::steady_clock::now(), what, ++enqueued_});
  }
  void watch() {
    cudaSetDevice(device_);
    for (;;) {
      std::string hang;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) return;
        cudaError_t q = cudaSuccess;
        while (!pending_.empty() && (q = cudaEventQuery(pending_.front().done)) == cudaSuccess) {
          spare_.push_back(pending_.front().done);
          pending_.pop_front();
        }
        ncclResult_t async = ncclSuccess;
        api_.async_error(comm_, &async);
        char b[512];
        if (fired_) {
          // said once: the handler (or the abort) has it
        } else if (!pending_.empty() && q != cudaSuccess && q != cudaErrorNotReady) {
          std::snprintf(b, sizeof b, "kiln: rank %d of %d: the device failed during NCCL's %s (%s); every rank stops "
                        "now", rank_, world_, pending_.front().what, cudaGetErrorString(q));
          hang = b;
        } else if (async != ncclSuccess && async != ncclInProgress) {
          std::snprintf(b, sizeof b, "kiln: rank %d of %d: NCCL reports an error (%s)%s%s: a rank died or the "
                        "network failed; every rank stops now", rank_, world_, api_.error_string(async),
                        pending_.empty() ? "" : " in ", pending_.empty() ? "" : pending_.front().what);
          hang = b;
        } else if (!pending_.empty()) {
          Pending& p = pending_.front();
          const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.enqueued).count();
          if (waited > timeout_s_) {
            std::snprintf(b, sizeof b, "kiln: rank %d of %d: NCCL's %s (collective %ld of this rank) has not finished "
                          "%.0f s after it was enqueued (--comm-timeout): a rank died or hangs, and NCCL waits for "
                          "it; every rank stops now", rank_, world_, p.what, p.number, waited);
            hang = b;
          }
        }
        if (!hang.empty()) fired_ = true;
      }
      if (!hang.empty()) {
        if (on_hang_) {
          on_hang_(hang);
        } else {
          std::fprintf(stderr, "%s\n", hang.c_str());
          std::fflush(stderr);
          api_.abort(comm_);
          std::_Exit(3);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  const NcclApi& api_;
  ncclComm_t comm_ = nullptr;
  int rank_, world_, device_;
  double timeout_s_;
  HangHandler on_hang_;
  std::mutex mu_;
  std::deque<Pending> pending_;  // in the order enqueued (one stream: they finish in that order)
  std::vector<cudaEvent_t> spare_;
  long enqueued_ = 0;
  bool stop_ = false, fired_ = false;
  std::thread watchdog_;  // last: started once the rest is there
};

}  // namespace

std::unique_ptr<DeviceCollectives> make_nccl(Communicator& host, int local_rank, double timeout_s, HangHandler on_hang) {
  return std::make_unique<Nccl>(host, local_rank, timeout_s, std::move(on_hang));
}

}  // namespace kiln::parallel
