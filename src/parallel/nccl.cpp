// src/parallel/nccl.cpp: NCCL's all-reduce for GPU ranks (kiln/parallel/comm.hpp's DeviceCollectives), compiled once
// into kiln_nccl when the CUDA toolkit has nccl.h. NCCL itself is loaded with dlopen when a run has more than one
// rank: its library is large (200 MiB) and a one-rank trainer, or a machine without it, must not need it.
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <string>
#include <type_traits>

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
    return a;
  }
};

class Nccl final : public DeviceCollectives {
 public:
  Nccl(Communicator& host, int local_rank) : api_(NcclApi::get()) {
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
  }
  ~Nccl() override {
    if (comm_) api_.destroy(comm_);
  }
  const char* name() const override { return "NCCL"; }
  void allreduce_sum(float* data, size_t n, void* stream, const char* what) override {
    ok(api_.all_reduce(data, data, n, ncclFloat32, ncclSum, comm_, static_cast<cudaStream_t>(stream)), what);
  }
  void allreduce_sum(double* data, size_t n, void* stream, const char* what) override {
    ok(api_.all_reduce(data, data, n, ncclFloat64, ncclSum, comm_, static_cast<cudaStream_t>(stream)), what);
  }

 private:
  void ok(ncclResult_t r, const char* what) const {
    KILN_CHECK(r == ncclSuccess, "NCCL: ", what, ": ", api_.error_string(r));
  }
  const NcclApi& api_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceCollectives> make_nccl(Communicator& host, int local_rank) {
  return std::make_unique<Nccl>(host, local_rank);
}

}  // namespace kiln::parallel
