// src/parallel/mpi.cpp: the MPI communicator (kiln/parallel/comm.hpp) over Open MPI, compiled once into kiln_mpi.
// Every collective is started non-blocking and waited for with a deadline: past it, the rank prints what it was
// waiting in, at which step, and which ranks have not reached that collective (before each one, a rank tells every
// other one how many collectives it has entered: world - 1 small messages each), then MPI_Abort ends the job on
// every rank.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/parallel/comm.hpp"

namespace kiln::parallel {

bool have_mpi() { return true; }

namespace {

constexpr int kArriveTag = 7301;

class Mpi final : public Communicator {
 public:
  Mpi(const Launch& l, double timeout_s) : timeout_s_(timeout_s) {
    KILN_CHECK(timeout_s > 0, "--comm-timeout must be positive, got ", timeout_s);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      KILN_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                 "MPI: MPI_Init_thread failed (started by ", l.launcher, " as rank ", l.rank, " of ", l.world, ")");
      owns_ = true;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    start();
    KILN_CHECK(rank_ == l.rank && world_ == l.world, "MPI: this process is rank ", rank_, " of ", world_, " but ",
               l.launcher, "'s environment says rank ", l.rank, " of ", l.world);
  }
  // A communicator of part of the world (split): this object owns `c`, not MPI itself.
  Mpi(MPI_Comm c, double timeout_s) : comm_(c), timeout_s_(timeout_s) { start(); }
  // Errors returned, rank and size, and the receives of the other ranks' arrivals (timeout messages).
  void start() {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &world_);
    seen_.assign(size_t(world_), -1);
    in_.assign(size_t(world_), 0);
    recv_.assign(size_t(world_), MPI_REQUEST_NULL);
    send_.assign(size_t(world_), MPI_REQUEST_NULL);
    for (int r = 0; r < world_; ++r)
      if (r != rank_) post(r);
  }
  ~Mpi() override {
    for (auto* reqs : {&recv_, &send_})
      for (MPI_Request& q : *reqs)
        if (q != MPI_REQUEST_NULL) {
          MPI_Cancel(&q);
          MPI_Request_free(&q);
        }
    MPI_Comm_free(&comm_);
    if (owns_) MPI_Finalize();
  }

  const char* name() const override { return "MPI"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }

  void allreduce_sum(float* data, size_t n, const char* what) override { reduce(data, n, MPI_FLOAT, MPI_SUM, what); }
  void allreduce_sum(double* data, size_t n, const char* what) override { reduce(data, n, MPI_DOUBLE, MPI_SUM, what); }
  void allreduce_max(int64_t* data, size_t n, const char* what) override {
    reduce(data, n, MPI_INT64_T, MPI_MAX, what);
  }
  void allreduce_max(float* data, size_t n, const char* what) override { reduce(data, n, MPI_FLOAT, MPI_MAX, what); }
  std::unique_ptr<Communicator> split(int color, int key, const char* what) override {
    announce();
    MPI_Comm c = MPI_COMM_NULL;
    ok(MPI_Comm_split(comm_, color, key, &c), what);  // blocking: every rank is at this point of its start-up
    return std::unique_ptr<Communicator>(new Mpi(c, timeout_s_));
  }
  void start_allreduce_sum(float* data, size_t n, const char* what) override {
    announce();
    for (size_t at = 0; at < n; at += kChunk) {
      MPI_Request q;
      ok(MPI_Iallreduce(MPI_IN_PLACE, data + at, int(std::min(kChunk, n - at)), MPI_FLOAT, MPI_SUM, comm_, &q), what);
      pending_.push_back(q);
    }
    pending_what_ = what;
  }
  void progress() override {
    for (MPI_Request& q : pending_) {
      int done = 0;
      if (q != MPI_REQUEST_NULL) ok(MPI_Test(&q, &done, MPI_STATUS_IGNORE), pending_what_);
    }
  }
  void finish_all(const char* what) override {
    for (MPI_Request& q : pending_) wait(q, what);
    pending_.clear();
    pending_counts_.clear();
  }
  void start_reduce_scatter_sum(const float* send, float* recv, const size_t* counts, const char* what) override {
    announce();
    std::vector<int>& c = pending_counts_.emplace_back(size_t(world_));  // must outlive the operation
    for (int r = 0; r < world_; ++r) c[size_t(r)] = count(counts[r], what);
    MPI_Request q;
    ok(MPI_Ireduce_scatter(send, recv, c.data(), MPI_FLOAT, MPI_SUM, comm_, &q), what);
    pending_.push_back(q);
    pending_what_ = what;
  }
  void allgather(float* data, const size_t* counts, const char* what) override {
    announce();
    std::vector<int> c(size_t(world_), 0), at(size_t(world_), 0);
    size_t offset = 0;
    for (int r = 0; r < world_; ++r) {
      c[size_t(r)] = count(counts[r], what);
      at[size_t(r)] = count(offset, what);
      offset += counts[r];
    }
    MPI_Request q;
    ok(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, c.data(), at.data(), MPI_FLOAT, comm_, &q), what);
    wait(q, what);
  }
  void broadcast(void* data, size_t bytes, int root, const char* what) override {
    announce();
    auto* p = static_cast<char*>(data);
    for (size_t at = 0; at < bytes; at += kChunk) {
      MPI_Request q;
      ok(MPI_Ibcast(p + at, int(std::min(kChunk, bytes - at)), MPI_BYTE, root, comm_, &q), what);
      wait(q, what);
    }
  }
  void barrier(const char* what) override {
    announce();
    MPI_Request q;
    ok(MPI_Ibarrier(comm_, &q), what);
    wait(q, what);
  }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }
  void arrive(long step) override { step_ = step; }

 private:
  static constexpr size_t kChunk = size_t(1) << 30;  // elements per call: MPI counts are int

  // Tells the other ranks that this one enters its next collective.
  void announce() {
    for (MPI_Request& q : send_) wait(q, "telling the other ranks which collective this one is in");  // eager: done
    out_ = ++entered_;  // read by the sends below until they complete
    for (int r = 0; r < world_; ++r)
      if (r != rank_) ok(MPI_Isend(&out_, 1, MPI_LONG, r, kArriveTag, comm_, &send_[size_t(r)]), "MPI_Isend");
  }
  template <class T>
  void reduce(T* data, size_t n, MPI_Datatype type, MPI_Op op, const char* what) {
    announce();
    for (size_t at = 0; at < n; at += kChunk) {
      MPI_Request q;
      ok(MPI_Iallreduce(MPI_IN_PLACE, data + at, int(std::min(kChunk, n - at)), type, op, comm_, &q), what);
      wait(q, what);
    }
  }
  int count(size_t n, const char* what) const {
    KILN_CHECK(n <= size_t(INT_MAX), "MPI (rank ", rank_, " of ", world_, "): ", what, ": ", n, " floats is beyond MPI's "
               "int counts and offsets (2^31 - 1): ZeRO-1 over MPI takes flat buffers of up to 2^31 floats");
    return int(n);
  }
  void ok(int e, const char* what) const {
    if (e == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(e, msg, &len);
    KILN_FAIL("MPI (rank ", rank_, " of ", world_, "): ", what, ": ", std::string(msg, size_t(len)));
  }
  void post(int r) {
    ok(MPI_Irecv(&in_[size_t(r)], 1, MPI_LONG, r, kArriveTag, comm_, &recv_[size_t(r)]), "MPI_Irecv of a step");
  }
  void poll_arrivals() {
    for (int r = 0; r < world_; ++r) {
      if (r == rank_) continue;
      for (;;) {
        int done = 0;
        MPI_Test(&recv_[size_t(r)], &done, MPI_STATUS_IGNORE);
        if (!done) break;
        seen_[size_t(r)] = in_[size_t(r)];
        post(r);
      }
    }
  }
  // Waits for q, polling: MPI_Test drives the collective (Open MPI progresses non-blocking collectives inside MPI
  // calls), so the first 2 ms spin; a longer wait (another rank still computing) tests every 50 us. Past the
  // timeout, ends the job.
  void wait(MPI_Request& q, const char* what) {
    if (q == MPI_REQUEST_NULL) return;
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      int done = 0;
      ok(MPI_Test(&q, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > timeout_s_) timed_out(what, waited);
      if (waited > 2e-3) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  [[noreturn]] void timed_out(const char* what, double waited) {
    poll_arrivals();
    std::string missing;
    for (int r = 0; r < world_; ++r)
      if (r != rank_ && seen_[size_t(r)] < entered_) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    std::fprintf(stderr,
                 "kiln: rank %d of %d: %s has waited %.0f s (--comm-timeout) for the other ranks at step %ld; %s: a "
                 "rank died or hangs, so every rank stops now\n",
                 rank_, world_, what, waited, step_,
                 missing.empty() ? "every rank entered this collective (one hangs inside it)"
                                 : ("ranks that did not reach it: " + missing).c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 3);
    std::_Exit(3);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_ = 1;
  bool owns_ = false;
  double timeout_s_;
  long step_ = -1, out_ = -1, entered_ = 0;  // the step (for messages); collectives this rank has entered
  std::vector<long> seen_, in_;  // collectives each rank said it has entered; the receive buffers
  std::vector<MPI_Request> recv_, send_;
  std::vector<MPI_Request> pending_;  // started by start_allreduce_sum / start_reduce_scatter_sum, not yet finished
  std::deque<std::vector<int>> pending_counts_;  // the reduce-scatters' counts, alive until they finish
  const char* pending_what_ = "";
};

}  // namespace

std::unique_ptr<Communicator> make_mpi(const Launch& launch, double timeout_s) {
  return std::make_unique<Mpi>(launch, timeout_s);
}

}  // namespace kiln::parallel
