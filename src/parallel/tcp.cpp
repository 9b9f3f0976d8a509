// src/parallel/tcp.cpp: the communicator of ranks that torchrun started (kiln/parallel/comm.hpp), without MPI:
// TCP connections from every rank to rank 0 at MASTER_ADDR, which gathers, reduces in rank order and sends back.
// It is for what the host of a GPU rank exchanges (NCCL's unique id, the stop flag, the plans' hashes, evaluation
// sums, the checkpoint's directory): small messages. CPU ranks can train over it too (the same sums in the same
// order as MPI's for two ranks), but all gradients then pass through rank 0, 2 (N - 1) copies a step, after the
// backward: start CPU ranks with mpirun or srun.
// The port: MASTER_PORT, or MASTER_PORT + 1 when torchrun's agent holds MASTER_PORT for its own store
// (TORCHELASTIC_USE_AGENT_STORE=True). Every wait has the communicator's deadline; a rank whose connection closes
// (it died) or that does not answer in time is named, and the process exits, which closes its own connections, so
// the others stop too.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/parallel/comm.hpp"

namespace kiln::parallel {

namespace {

constexpr uint64_t kMagic = 0x6b696c6e74637031;  // "kilntcp1"

// Each collective's header: the collective's number on its rank, what it is, its payload's bytes.
struct Header {
  uint64_t seq, kind, bytes;
};
enum Kind : uint64_t { k_hello = 1, k_sum_f, k_sum_d, k_max_i, k_scatter, k_gather, k_bcast, k_barrier, k_max_f };

const char* kind_name(uint64_t k) {
  switch (k) {
    case k_sum_f: case k_sum_d: return "a sum";
    case k_max_i: case k_max_f: return "a maximum";
    case k_scatter: return "a reduce-scatter";
    case k_gather: return "an all-gather";
    case k_bcast: return "a broadcast";
    case k_barrier: return "a barrier";
    default: return "a greeting";
  }
}

class Tcp final : public Communicator {
 public:
  Tcp(const Launch& l, double timeout_s) : rank_(l.rank), world_(l.world), timeout_s_(timeout_s) {
    KILN_CHECK(timeout_s > 0, "--comm-timeout must be positive, got ", timeout_s);
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    port_ = l.master_port + (agent && std::string(agent) == "True" ? 1 : 0);
    KILN_CHECK(port_ > 0 && port_ < 65536, "launch: MASTER_PORT ", l.master_port, " gives port ", port_,
               ", outside 1 to 65535");
    where_ = l.master_addr + ":" + std::to_string(port_);
    if (rank_ == 0) listen_and_accept(l);
    else connect_to_root(l);
  }
  ~Tcp() override {
    for (int fd : peers_)
      if (fd >= 0) ::close(fd);
  }

  const char* name() const override { return "TCP via rank 0"; }
  int rank() const override { return rank_; }
  int world() const override { return world_; }

  void allreduce_sum(float* d, size_t n, const char* what) override { reduce(k_sum_f, d, n, what); }
  void allreduce_sum(double* d, size_t n, const char* what) override { reduce(k_sum_d, d, n, what); }
  void allreduce_max(int64_t* d, size_t n, const char* what) override { reduce(k_max_i, d, n, what); }
  void allreduce_max(float* d, size_t n, const char* what) override { reduce(k_max_f, d, n, what); }
  std::unique_ptr<Communicator> split(int, int, const char* what) override {
    KILN_FAIL("TCP (torchrun's ranks without MPI): ", what, ": groups of ranks (tensor parallelism) need MPI: start "
              "the ranks with mpirun or srun");
  }
  // No overlap: the sums started run at finish_all, in the order started.
  void start_allreduce_sum(float* d, size_t n, const char* what) override { pending_.push_back({d, n, what}); }
  void progress() override {}
  void finish_all(const char*) override {
    for (const auto& p : pending_) reduce(k_sum_f, p.data, p.n, p.what);
    pending_.clear();
    for (auto& s : scatters_) reduce_scatter_now(s.send, s.recv, s.counts, s.what);
    scatters_.clear();
  }
  void start_reduce_scatter_sum(const float* send, float* recv, const size_t* counts, const char* what) override {
    scatters_.push_back({send, recv, std::vector<size_t>(counts, counts + world_), what});
  }
  void allgather(float* data, const size_t* counts, const char* what) override {
    std::vector<size_t> at(size_t(world_) + 1, 0);
    for (int r = 0; r < world_; ++r) at[size_t(r) + 1] = at[size_t(r)] + counts[r];
    const size_t total = at[size_t(world_)] * sizeof(float);
    const uint64_t seq = ++seq_;
    if (rank_ != 0) {
      send_msg(0, {seq, k_gather, counts[rank_] * sizeof(float)}, data + at[size_t(rank_)], what);
      recv_msg(0, {seq, k_gather, total}, data, what);
      return;
    }
    for (int r = 1; r < world_; ++r) recv_msg(r, {seq, k_gather, counts[r] * sizeof(float)}, data + at[size_t(r)], what);
    for (int r = 1; r < world_; ++r) send_msg(r, {seq, k_gather, total}, data, what);
  }
  void broadcast(void* data, size_t bytes, int root, const char* what) override {
    const uint64_t seq = ++seq_;
    if (rank_ == 0) {
      if (root != 0) recv_msg(root, {seq, k_bcast, bytes}, data, what);
      for (int r = 1; r < world_; ++r)
        if (r != root) send_msg(r, {seq, k_bcast, bytes}, data, what);
    } else if (rank_ == root) {
      send_msg(0, {seq, k_bcast, bytes}, data, what);
    } else {
      recv_msg(0, {seq, k_bcast, bytes}, data, what);
    }
  }
  void barrier(const char* what) override {
    int64_t v = 0;
    reduce(k_barrier, &v, 1, what);
  }
  void arrive(long step) override { step_ = step; }
  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);  // closes the connections: the other ranks see it and stop
  }

 private:
  struct Pending {
    float* data;
    size_t n;
    const char* what;
  };
  struct Scatter {
    const float* send;
    float* recv;
    std::vector<size_t> counts;
    const char* what;
  };

  // Rank 0 sums (or maximises) in rank order: ((x0 + x1) + x2) + ..., and sends the result to every rank.
  template <class T>
  void reduce(Kind kind, T* d, size_t n, const char* what) {
    const uint64_t seq = ++seq_;
    const Header h{seq, uint64_t(kind), n * sizeof(T)};
    if (rank_ != 0) {
      send_msg(0, h, d, what);
      recv_msg(0, h, d, what);
      return;
    }
    std::vector<T> in(n);
    for (int r = 1; r < world_; ++r) {
      recv_msg(r, h, in.data(), what);
      for (size_t i = 0; i < n; ++i) d[i] = kind == k_max_i || kind == k_max_f ? std::max(d[i], in[i]) : T(d[i] + in[i]);
    }
    for (int r = 1; r < world_; ++r) send_msg(r, h, d, what);
  }
  void reduce_scatter_now(const float* send, float* recv, const std::vector<size_t>& counts, const char* what) {
    size_t total = 0;
    for (int r = 0; r < world_; ++r) total += counts[size_t(r)];
    const uint64_t seq = ++seq_;
    if (rank_ != 0) {
      send_msg(0, {seq, k_scatter, total * sizeof(float)}, send, what);
      recv_msg(0, {seq, k_scatter, counts[size_t(rank_)] * sizeof(float)}, recv, what);
      return;
    }
    std::vector<float> sum(send, send + total), in(total);
    for (int r = 1; r < world_; ++r) {
      recv_msg(r, {seq, k_scatter, total * sizeof(float)}, in.data(), what);
      for (size_t i = 0; i < total; ++i) sum[i] += in[i];
    }
    size_t at = counts[0];
    for (int r = 1; r < world_; at += counts[size_t(r)], ++r)
      send_msg(r, {seq, k_scatter, counts[size_t(r)] * sizeof(float)}, sum.data() + at, what);
    std::copy(sum.begin(), sum.begin() + long(counts[0]), recv);
  }

  // ---- messages: a header, then the payload; every wait has the deadline
  void send_msg(int peer, const Header& h, const void* data, const char* what) {
    write_all(peer, &h, sizeof h, what);
    write_all(peer, data, h.bytes, what);
  }
  void recv_msg(int peer, const Header& want, void* data, const char* what) {
    Header h{};
    read_all(peer, &h, sizeof h, what);
    if (h.seq != want.seq || h.kind != want.kind || h.bytes != want.bytes)
      fail(peer, what, who(peer) + " is in its collective " + std::to_string(h.seq) + " (" +
                           kind_name(h.kind) + " of " + std::to_string(h.bytes) + " bytes), this one in its " +
                           std::to_string(want.seq) + " (" + kind_name(want.kind) + " of " +
                           std::to_string(want.bytes) + " bytes): the ranks run different programs");
    read_all(peer, data, h.bytes, what);
  }
  void write_all(int peer, const void* p, size_t n, const char* what) { write_fd(fd(peer), peer, p, n, what); }
  void read_all(int peer, void* p, size_t n, const char* what) { read_fd(fd(peer), peer, p, n, what); }
  void write_fd(int sock, int peer, const void* p, size_t n, const char* what) {
    const char* b = static_cast<const char*>(p);
    auto t0 = std::chrono::steady_clock::now();
    while (n > 0) {
      const ssize_t w = ::send(sock, b, n, MSG_NOSIGNAL);
      if (w > 0) {
        b += w, n -= size_t(w);
        t0 = std::chrono::steady_clock::now();  // the deadline runs from the last progress
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wait_fd(sock, peer, POLLOUT, t0, what);
        continue;
      }
      fail(peer, what, who(peer) + "'s connection failed (" + std::strerror(errno) +
                           "): it died or its machine is gone");
    }
  }
  void read_fd(int sock, int peer, void* p, size_t n, const char* what) {
    char* b = static_cast<char*>(p);
    auto t0 = std::chrono::steady_clock::now();
    while (n > 0) {
      const ssize_t r = ::recv(sock, b, n, 0);
      if (r > 0) {
        b += r, n -= size_t(r);
        t0 = std::chrono::steady_clock::now();
        continue;
      }
      if (r == 0) fail(peer, what, who(peer) + " closed its connection: it died or stopped");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait_fd(sock, peer, POLLIN, t0, what);
        continue;
      }
      fail(peer, what, who(peer) + "'s connection failed (" + std::strerror(errno) + ")");
    }
  }
  void wait_fd(int sock, int peer, short events, std::chrono::steady_clock::time_point t0, const char* what) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (waited > timeout_s_)
      fail(peer, what, who(peer) + " has not " + (events == POLLIN ? "sent anything" : "read anything") +
                           " for " + std::to_string(int(waited)) + " s (--comm-timeout): it hangs");
    pollfd q{sock, events, 0};
    const int wait_ms = int(std::min(100.0, (timeout_s_ - waited) * 1000) + 1);
    ::poll(&q, 1, wait_ms);
  }
  static std::string who(int peer) { return peer < 0 ? "a rank connecting" : "rank " + std::to_string(peer); }
  int fd(int peer) const { return peers_[size_t(rank_ == 0 ? peer : 0)]; }
  [[noreturn]] void fail(int peer, const char* what, const std::string& why) {
    std::fprintf(stderr, "kiln: rank %d of %d (TCP via %s): %s at step %ld: %s; every rank stops now\n", rank_, world_,
                 where_.c_str(), what, step_, why.c_str());
    (void)peer;
    abort(3);
  }

  // ---- connecting
  static void nonblocking(int s) { ::fcntl(s, F_SETFL, ::fcntl(s, F_GETFL) | O_NONBLOCK); }
  static void no_delay(int s) {
    int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  void listen_and_accept(const Launch& l) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    KILN_CHECK(s >= 0, "TCP: socket: ", std::strerror(errno));
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons(uint16_t(port_));
    KILN_CHECK(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "TCP: rank 0 cannot listen on port ", port_,
               " (MASTER_PORT", port_ != l.master_port ? " + 1: torchrun's agent holds MASTER_PORT" : "", "): ",
               std::strerror(errno));
    KILN_CHECK(::listen(s, world_) == 0, "TCP: listen on port ", port_, ": ", std::strerror(errno));
    nonblocking(s);
    peers_.assign(size_t(world_), -1);
    const auto t0 = std::chrono::steady_clock::now();
    for (int joined = 1; joined < world_;) {
      const int c = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (waited > timeout_s_) {
          std::string missing;
          for (int r = 1; r < world_; ++r)
            if (peers_[size_t(r)] < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
          ::close(s);
          KILN_FAIL("TCP: rank 0 waited ", int(waited), " s (--comm-timeout) at ", where_, " for ranks ", missing,
                    ", which did not connect");
        }
        pollfd q{s, POLLIN, 0};
        ::poll(&q, 1, 100);
        continue;
      }
      nonblocking(c);
      no_delay(c);
      uint64_t hello[3] = {};
      if (!read_greeting(c, hello) || hello[0] != kMagic) {  // not a Kiln rank (a port scan, a stray client)
        std::fprintf(stderr, "kiln: rank 0 (TCP at %s): ignoring a connection that did not greet as a Kiln rank\n",
                     where_.c_str());
        ::close(c);
        continue;
      }
      const int r = int(hello[1]);
      KILN_CHECK(hello[2] == uint64_t(world_) && r > 0 && r < world_ && peers_[size_t(r)] < 0, "TCP: rank 0 at ",
                 where_, ": a Kiln rank ", hello[1], " of a world of ", hello[2], " connected; this world has ", world_,
                 " ranks", r > 0 && r < world_ && peers_[size_t(r)] >= 0 ? " and that rank is here already" : "",
                 " (two jobs on one MASTER_PORT?)");
      peers_[size_t(r)] = c;
      ++joined;
    }
    ::close(s);
  }
  // A connecting rank's 24-byte greeting within 10 s; false when it closes, stalls or fails first.
  static bool read_greeting(int c, uint64_t* hello) {
    char* b = reinterpret_cast<char*>(hello);
    size_t n = 3 * sizeof(uint64_t);
    const auto t0 = std::chrono::steady_clock::now();
    while (n > 0) {
      const ssize_t r = ::recv(c, b, n, 0);
      if (r > 0) {
        b += r, n -= size_t(r);
        continue;
      }
      if (r == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return false;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) return false;
      pollfd q{c, POLLIN, 0};
      ::poll(&q, 1, 100);
    }
    return true;
  }
  void connect_to_root(const Launch& l) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    const int e = ::getaddrinfo(l.master_addr.c_str(), std::to_string(port_).c_str(), &hints, &res);
    KILN_CHECK(e == 0 && res, "TCP: MASTER_ADDR ", l.master_addr, ": ", ::gai_strerror(e));
    const auto t0 = std::chrono::steady_clock::now();
    int s = -1;
    for (;;) {  // rank 0 may not listen yet; each try waits at most 1 s (an unreachable host would block minutes)
      s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s >= 0) {
        nonblocking(s);
        int e = ::connect(s, res->ai_addr, res->ai_addrlen) == 0 ? 0 : errno;
        if (e == EINPROGRESS) {
          pollfd q{s, POLLOUT, 0};
          socklen_t len = sizeof e;
          e = ::poll(&q, 1, 1000) == 1 && ::getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) == 0 ? e : ETIMEDOUT;
        }
        if (e == 0) break;
        errno = e;
      }
      const std::string why = std::strerror(errno);
      if (s >= 0) ::close(s);
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > timeout_s_) {
        ::freeaddrinfo(res);
        KILN_FAIL("TCP: rank ", rank_, " could not connect to rank 0 at ", where_, " for ", int(waited),
                  " s (--comm-timeout): ", why);
      }
      ::usleep(50000);
    }
    ::freeaddrinfo(res);
    nonblocking(s);
    no_delay(s);
    peers_.assign(1, s);
    const uint64_t hello[3] = {kMagic, uint64_t(rank_), uint64_t(world_)};
    write_all(0, hello, sizeof hello, "greeting rank 0");
  }

  int rank_, world_;
  double timeout_s_;
  int port_ = 0;
  std::string where_;
  std::vector<int> peers_;  // rank 0: one socket per rank (its own slot unused); others: rank 0's
  uint64_t seq_ = 0;
  long step_ = -1;
  std::vector<Pending> pending_;
  std::vector<Scatter> scatters_;
};

}  // namespace

std::unique_ptr<Communicator> make_tcp(const Launch& launch, double timeout_s) {
  return std::make_unique<Tcp>(launch, timeout_s);
}

}  // namespace kiln::parallel
