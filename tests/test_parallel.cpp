// kiln/parallel: which rank a process is, read from mpirun's, srun's and torchrun's environments (and the errors
// for a launcher's variables set in part or out of range), and the one-process communicator. The MPI communicator
// runs under mpirun in tests/dp_test.sh and tests/zero_test.sh (ctest: parallel.dp2, parallel.zero1). Layouts: their
// degrees, the world they need, and ZeRO-1's shards.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>

#include "kiln/parallel/comm.hpp"
#include "kiln/parallel/layout.hpp"
#include "kiln/parallel/launch.hpp"

using namespace kiln;
using namespace kiln::parallel;

namespace {
Launch launch_of(const std::map<std::string, std::string>& env) {
  return discover_launch([&](const char* n) -> const char* {
    const auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}
}  // namespace

TEST_CASE("launch: mpirun, srun and torchrun name this process's rank, local rank and world") {
  const Launch none = launch_of({});
  CHECK(none.launcher == "none");
  CHECK((none.rank == 0 && none.world == 1 && none.local_rank == 0));
  const Launch ompi = launch_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                 {"OMPI_COMM_WORLD_SIZE", "4"}, {"SLURM_PROCID", "9"}, {"SLURM_STEP_NUM_TASKS", "16"}});
  CHECK(ompi.launcher == "mpirun");  // mpirun inside a Slurm allocation: its own variables win
  CHECK((ompi.rank == 3 && ompi.local_rank == 1 && ompi.world == 4));
  const Launch srun = launch_of({{"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}, {"SLURM_STEP_NUM_TASKS", "8"},
                                 {"SLURM_NTASKS", "8"}});
  CHECK(srun.launcher == "srun");
  CHECK((srun.rank == 5 && srun.local_rank == 1 && srun.world == 8));
  // a batch script alone (no srun step): Slurm's job variables are not a world of processes
  CHECK(launch_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}}).world == 1);
  const Launch torch = launch_of({{"RANK", "1"}, {"LOCAL_RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "node7"},
                                  {"MASTER_PORT", "29500"}});
  CHECK(torch.launcher == "torchrun");
  CHECK((torch.rank == 1 && torch.world == 2 && torch.master_addr == "node7" && torch.master_port == 29500));
}

TEST_CASE("launch: a launcher's variables set in part, or that disagree, are errors naming the variable") {
  CHECK_THROWS_WITH_AS(launch_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
                       doctest::Contains("OMPI_COMM_WORLD_LOCAL_RANK is missing"), Error);
  CHECK_THROWS_WITH_AS(launch_of({{"RANK", "0"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}),
                       doctest::Contains("MASTER_ADDR is missing"), Error);
  CHECK_THROWS_WITH_AS(launch_of({{"SLURM_PROCID", "8"}, {"SLURM_LOCALID", "0"}, {"SLURM_STEP_NUM_TASKS", "8"}}),
                       doctest::Contains("srun says rank 8 of a world of 8"), Error);
  CHECK_THROWS_WITH_AS(launch_of({{"RANK", "x"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "2"}}),
                       doctest::Contains("RANK=x is not an integer"), Error);
}

namespace {
int free_port() {  // a port nothing listens on now
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(s);
  return ntohs(a.sin_port);
}
// Every collective of the TCP communicator on rank `r` of 2; true when each result is the expected one.
bool tcp_collectives(Communicator& c) {
  const int r = c.rank();
  bool ok = c.world() == 2;
  float f[3] = {1.5f + float(r), 2.0f, -3.0f * float(r + 1)};
  c.allreduce_sum(f, 3, "a sum");
  ok &= f[0] == 4.0f && f[1] == 4.0f && f[2] == -9.0f;
  double d = 0.25 * (r + 1);
  c.allreduce_sum(&d, 1, "a double sum");
  ok &= d == 0.75;
  int64_t m[2] = {r == 0 ? 7 : 3, r == 0 ? -1 : 5};
  c.allreduce_max(m, 2, "a maximum");
  ok &= m[0] == 7 && m[1] == 5;
  char b[6] = {};
  if (r == 1) std::memcpy(b, "hello", 6);
  c.broadcast(b, 6, 1, "a broadcast from rank 1");
  ok &= std::string(b) == "hello";
  float g[5] = {1, 2, 3, 4, 5};  // both ranks: the pieces of 2 and 3 floats summed, each rank receiving its own
  float mine[3] = {};
  const size_t counts[2] = {2, 3};
  c.start_reduce_scatter_sum(g, mine, counts, "a reduce-scatter");
  float h[4] = {1, 1, 1, 1};
  c.start_allreduce_sum(h, 4, "a started sum");
  c.finish_all("the started ones");
  ok &= r == 0 ? (mine[0] == 2 && mine[1] == 4) : (mine[0] == 6 && mine[1] == 8 && mine[2] == 10);
  ok &= h[0] == 2 && h[3] == 2;
  float all[5] = {};  // rank 0 holds floats 0-1, rank 1 floats 2-4
  for (int i = 0; i < 5; ++i)
    if ((i < 2) == (r == 0)) all[i] = float(10 * i);
  c.allgather(all, counts, "an all-gather");
  for (int i = 0; i < 5; ++i) ok &= all[i] == float(10 * i);
  c.barrier("a barrier");
  return ok;
}
}  // namespace

TEST_CASE("communicator: torchrun's ranks without MPI connect to rank 0 over TCP, and every collective sums there") {
  const std::string port = std::to_string(free_port());
  const auto launch = [&](int r) {
    return launch_of({{"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)}, {"WORLD_SIZE", "2"},
                      {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", port}});
  };
  std::fflush(stdout);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // rank 1
    bool ok = false;
    try {
      const auto c = make_communicator(launch(1), 30);
      ok = tcp_collectives(*c);
    } catch (...) {
    }
    std::_Exit(ok ? 0 : 1);
  }
  const auto c = make_communicator(launch(0), 30);
  CHECK(std::string(c->name()) == "TCP via rank 0");
  CHECK(tcp_collectives(*c));
  int status = -1;
  ::waitpid(child, &status, 0);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

TEST_CASE("communicator: one process is rank 0 of 1 and every collective keeps its input") {
  const auto c = make_communicator(Launch{}, 60);
  CHECK(c->world() == 1);
  CHECK(c->rank() == 0);
  float x[2] = {1.5f, -2.f};
  c->allreduce_sum(x, 2, "test");
  CHECK((x[0] == 1.5f && x[1] == -2.f));
  CHECK(c->any(true, "test"));
  CHECK_FALSE(c->any(false, "test"));
}

TEST_CASE("layout: degrees with their defaults, and the world a layout needs") {
  using Default = Layout<>;
  CHECK((Default::dp == rest && Default::tp == 1 && Default::zero == 0));
  CHECK(Default::text() == "Layout<DP<rest>>");
  using Z = Layout<ZeRO<1>, DP<4>>;  // any order
  CHECK((Z::dp == 4 && Z::tp == 1 && Z::zero == 1));
  CHECK(Z::text() == "Layout<DP<4>, ZeRO<1>>");
  using T = Layout<DP<rest>, TP<2>>;
  CHECK(T::text() == "Layout<DP<rest>, TP<2>>");
  CHECK(resolve_layout<Default>(3).dp == 3);
  CHECK(resolve_layout<T>(8).dp == 4);
  CHECK_THROWS_WITH_AS(resolve_layout<T>(3), doctest::Contains("the launcher started 3 ranks, which is not a multiple "
                                                               "of the tensor-parallel degree 2"), kiln::Error);
  CHECK_THROWS_WITH_AS(resolve_layout<Z>(2), doctest::Contains("layout Layout<DP<4>, ZeRO<1>> needs 4 x 1 = 4 ranks, but "
                                                               "the launcher started 2"), kiln::Error);
  using Sm = Decoder<Embedding<vocab<128256>, hidden<2048>>, layers<36>, Attention<heads<16>, kv_heads<4>>,
                     SwiGLU<ffn<11008>>>;  // SmolLM3-3B's shape divides by TP 2 and 4
  CHECK(check_layout<Sm, Layout<TP<2>>>());
  CHECK(check_layout<Sm, Layout<TP<4>>>());
}

TEST_CASE("layout: ZeRO-1's shards tile the buffer in rank order, cut at the norm's chunks") {
  for (size_t floats : {size_t(1), size_t(100), size_t(32768), size_t(3640512), size_t(10000019)})
    for (int n : {1, 2, 3, 7, 64}) {
      size_t at = 0;
      for (int r = 0; r < n; ++r) {
        const Shard s = shard_of(floats, r, n, 32768);
        CHECK(s.begin == at);
        CHECK(s.end >= s.begin);
        CHECK((s.begin % 32768 == 0 || s.begin == floats));
        at = s.end;
      }
      CHECK(at == floats);
    }
  // even shares of whole chunks: 3,640,512 floats are 112 chunks, 56 each over two ranks
  CHECK(shard_of(3640512, 0, 2, 32768).end == 56 * 32768);
  CHECK(shard_of(3640512, 1, 2, 32768).size() == 3640512 - 56 * 32768);
  // more ranks than chunks: some hold nothing
  CHECK(shard_of(100, 0, 2, 32768).size() == 0);
  CHECK(shard_of(100, 1, 2, 32768).size() == 100);
}
