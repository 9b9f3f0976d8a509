// kiln/parallel/comm.hpp: the collectives a layout needs, behind one interface, so that the trainer and the
// backends (which reduce their own buffers) do not know which library carries them:
//   Single   one process: every collective returns its input (the default)
//   MPI      CPU ranks (src/parallel/mpi.cpp, Open MPI): host buffers
//   TCP      torchrun's ranks without MPI (src/parallel/tcp.cpp): host buffers through rank 0, for small messages
//   NCCL     GPU ranks: DeviceCollectives on device memory, enqueued on a stream (src/parallel/nccl.cpp), attached
//            to the MPI communicator that bootstraps them (the unique id is broadcast over MPI); the groups split
//            from it (a layout's tensor- and data-parallel groups) get NCCL communicators of their own
//   Host     HostDeviceCollectives: "device" memory that is host memory (the CUDA backend built over the SIMT layer),
//            summed through the host communicator, so the CUDA backend's parallel code runs in CPU CI
// Every call names what it is for, and a collective that waits longer than the communicator's timeout for the other
// ranks ends the process with a message naming the call, the step and the ranks that did not arrive at it, instead
// of hanging (a rank that dies is reported the same way, or sooner by mpirun itself).
// Sums are taken in a fixed order for a given world size, so every rank gets the same bits, run after run.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "kiln/core/bf16.hpp"
#include "kiln/parallel/launch.hpp"

namespace kiln::parallel {

// Reductions over the ranks of device memory, enqueued on a CUDA stream (NCCL): they return before they have run,
// and the stream orders them with the kernels around them. In place; every rank gets the same bits. bf16 sums are
// the tensor-parallel activations' (Megatron reduces them in the activations' type); a max is the vocabulary-
// parallel loss's row maxima. Enqueued while the stream captures a CUDA graph, a collective runs at each replay;
// watch() then follows the replay as a whole (a hang or a dead rank is named by what the replay was for).
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual const char* name() const = 0;
  virtual void allreduce_sum(float* data, size_t n, void* stream, const char* what) = 0;
  virtual void allreduce_sum(double* data, size_t n, void* stream, const char* what) = 0;
  virtual void allreduce_sum(bf16* data, size_t n, void* stream, const char* what) = 0;
  virtual void allreduce_max(float* data, size_t n, void* stream, const char* what) = 0;
  // ZeRO-1, as the Communicator's (below), with counts[r] floats per rank (uneven: the shards are cut at the norm's
  // chunks): send (the sum of the counts) -> recv (counts[rank]) the sum over the ranks of this rank's piece; and
  // in place, each rank's piece of data to every rank.
  virtual void reduce_scatter_sum(const float* send, float* recv, const size_t* counts, void* stream,
                                  const char* what) = 0;
  virtual void allgather(float* data, const size_t* counts, void* stream, const char* what) = 0;
  // The work enqueued on `stream` so far (a replayed CUDA graph whose collectives were captured) is followed by the
  // watchdog as one collective named `what`.
  virtual void watch(void* stream, const char* what) { (void)stream, (void)what; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  // The device collectives of these ranks (GPU ranks: NCCL), or nullptr.
  DeviceCollectives* device() const { return device_.get(); }
  void attach(std::unique_ptr<DeviceCollectives> d) { device_ = std::move(d); }
  // Device collectives made by `make` over a group of ranks (collective over the group: NCCL's id goes over it), for
  // these ranks and for every group split from them later (attach_split).
  using DeviceFactory = std::function<std::unique_ptr<DeviceCollectives>(Communicator& group)>;
  void attach(DeviceFactory make) {
    make_device_ = std::move(make);
    device_ = make_device_(*this);
  }
  // A group split from `parent` gets device collectives of the parent's kind, when it has a factory (collective:
  // every rank of the group calls it).
  void attach_split(const Communicator& parent) {
    if (parent.make_device_) attach(parent.make_device_);
  }

  virtual const char* name() const = 0;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // In place: data on every rank becomes the sum over the ranks.
  virtual void allreduce_sum(float* data, size_t n, const char* what) = 0;
  virtual void allreduce_sum(double* data, size_t n, const char* what) = 0;
  // Non-blocking sums for buckets of gradients reduced while the backward still runs: start_allreduce_sum begins
  // one (data untouched until finish_all returns), progress() lets the started ones advance (call it between the
  // backward's ops), finish_all() waits for every one started.
  virtual void start_allreduce_sum(float* data, size_t n, const char* what) = 0;
  virtual void progress() = 0;
  virtual void finish_all(const char* what) = 0;
  // ZeRO-1: a non-blocking reduce-scatter, waited for by finish_all. send holds counts[0] + ... + counts[world-1]
  // floats, the ranks' pieces in rank order; recv (counts[rank] floats, not overlapping send) receives the sum over
  // the ranks of this rank's piece. counts is copied; every count must be below 2^31.
  virtual void start_reduce_scatter_sum(const float* send, float* recv, const size_t* counts, const char* what) = 0;
  // In place: data holds the ranks' pieces (counts[r] floats each, in rank order); each rank's piece is sent to
  // every other rank (ZeRO-1's updated weights). Offsets and counts must be below 2^31 floats (MPI's int counts).
  virtual void allgather(float* data, const size_t* counts, const char* what) = 0;
  // In place: the largest value over the ranks (flags: a stop signal on any rank; hashes that must agree; the
  // vocabulary-parallel loss's row maxima).
  virtual void allreduce_max(int64_t* data, size_t n, const char* what) = 0;
  virtual void allreduce_max(float* data, size_t n, const char* what) = 0;
  // The ranks with the same color, as a communicator of their own, ranked by key (a layout's tensor- and
  // data-parallel groups). Collective: every rank calls it.
  virtual std::unique_ptr<Communicator> split(int color, int key, const char* what) = 0;
  virtual void broadcast(void* data, size_t bytes, int root, const char* what) = 0;
  virtual void barrier(const char* what) = 0;
  // The step the ranks are at, for the messages of a collective that times out (which ranks reached this step).
  virtual void arrive(long step) = 0;
  // Ends every rank now, with this exit code (an error on one rank: the others would wait for it).
  [[noreturn]] virtual void abort(int code) = 0;

  bool any(bool local, const char* what) {
    int64_t v = local ? 1 : 0;
    allreduce_max(&v, 1, what);
    return v != 0;
  }

 private:
  std::unique_ptr<DeviceCollectives> device_;
  DeviceFactory make_device_;
};

class Single final : public Communicator {
 public:
  const char* name() const override { return "single process"; }
  int rank() const override { return 0; }
  int world() const override { return 1; }
  void allreduce_sum(float*, size_t, const char*) override {}
  void allreduce_sum(double*, size_t, const char*) override {}
  void allreduce_max(int64_t*, size_t, const char*) override {}
  void allreduce_max(float*, size_t, const char*) override {}
  std::unique_ptr<Communicator> split(int, int, const char*) override { return std::make_unique<Single>(); }
  void start_allreduce_sum(float*, size_t, const char*) override {}
  void progress() override {}
  void finish_all(const char*) override {}
  void start_reduce_scatter_sum(const float* send, float* recv, const size_t* counts, const char*) override {
    std::copy(send, send + counts[0], recv);
  }
  void allgather(float*, const size_t*, const char*) override {}
  void broadcast(void*, size_t, int, const char*) override {}
  void barrier(const char*) override {}
  void arrive(long) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

// Device collectives over a host communicator, for a build whose device memory is host memory and whose launches
// have finished when they return (the CUDA backend over the SIMT layer): the CUDA backend's data- and tensor-
// parallel code then runs under mpirun on CPU ranks, in CI. bf16 values are summed in fp32 in rank order and rounded
// once (NCCL's sum of two bf16 ranks rounds the same way); doubles are exact through the host communicator.
class HostDeviceCollectives final : public DeviceCollectives {
 public:
  explicit HostDeviceCollectives(Communicator& host) : host_(host) {}
  const char* name() const override { return "host collectives (SIMT)"; }
  void allreduce_sum(float* d, size_t n, void*, const char* what) override { host_.allreduce_sum(d, n, what); }
  void allreduce_sum(double* d, size_t n, void*, const char* what) override { host_.allreduce_sum(d, n, what); }
  void allreduce_sum(bf16* d, size_t n, void*, const char* what) override {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = float(d[i]);
    host_.allreduce_sum(f.data(), n, what);
    for (size_t i = 0; i < n; ++i) d[i] = bf16(f[i]);
  }
  void allreduce_max(float* d, size_t n, void*, const char* what) override { host_.allreduce_max(d, n, what); }
  void reduce_scatter_sum(const float* send, float* recv, const size_t* counts, void*, const char* what) override {
    host_.start_reduce_scatter_sum(send, recv, counts, what);
    host_.finish_all(what);
  }
  void allgather(float* d, const size_t* counts, void*, const char* what) override { host_.allgather(d, counts, what); }

 private:
  Communicator& host_;
};

// Whether this build has MPI (src/parallel/mpi.cpp compiled in: CMake found Open MPI).
bool have_mpi();
// The MPI communicator of an mpirun / srun launch (MPI_Init here, MPI_Finalize when it is destroyed); a collective
// waiting longer than timeout_s ends the job. Refused, saying why, in a build without MPI.
std::unique_ptr<Communicator> make_mpi(const Launch& launch, double timeout_s);

// NCCL over the ranks of `host` (which broadcasts NCCL's unique id), on GPU local_rank of this node. NCCL is
// loaded at run time (libnccl.so.2, from the CUDA toolkit or PyTorch's nvidia-nccl), so a trainer that runs one
// rank needs no NCCL; refused, saying why, when it cannot be loaded. Defined in kiln_nccl (src/parallel/nccl.cpp),
// which CMake builds where the CUDA toolkit has nccl.h and the CUDA trainers link.
// A watchdog thread follows every collective enqueued: one not finished timeout_s after it was enqueued (a rank
// died or hangs, and NCCL waits for it), or an error NCCL reports, calls on_hang with a message naming it; by
// default that prints the message, aborts the NCCL communicator and ends the process (exit 3), which ends the
// job (mpirun, torchrun) instead of a silent hang.
using HangHandler = std::function<void(const std::string& message)>;
std::unique_ptr<DeviceCollectives> make_nccl(Communicator& host, int local_rank, double timeout_s,
                                             HangHandler on_hang = {});

// The TCP communicator of torchrun's ranks (src/parallel/tcp.cpp): every rank connected to rank 0 at
// MASTER_ADDR:MASTER_PORT (+ 1 when torchrun's agent holds that port), which reduces in rank order. For the host
// side of GPU ranks (NCCL's id, flags, hashes); CPU ranks train over it, but slowly: mpirun is their launcher.
std::unique_ptr<Communicator> make_tcp(const Launch& launch, double timeout_s);

// The communicator for this launch: Single when the world is one process, TCP for torchrun's ranks, MPI for
// mpirun's and srun's.
inline std::unique_ptr<Communicator> make_communicator(const Launch& launch, double timeout_s) {
  if (launch.world == 1) return std::make_unique<Single>();
  if (launch.launcher == "torchrun") return make_tcp(launch, timeout_s);
  return make_mpi(launch, timeout_s);
}

}  // namespace kiln::parallel
