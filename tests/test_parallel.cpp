// kiln/parallel: which rank a process is, read from mpirun's, srun's and torchrun's environments (and the errors
// for a launcher's variables set in part or out of range), and the one-process communicator. The MPI communicator
// runs under mpirun in tests/dp_test.sh (ctest: parallel.dp2).
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "kiln/parallel/comm.hpp"
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
  // torchrun with more than one rank: Kiln's CPU ranks need MPI (NCCL's TCP rendezvous is not built)
  const Launch torch = launch_of({{"RANK", "0"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                  {"MASTER_PORT", "1"}});
  CHECK_THROWS_WITH_AS(make_communicator(torch, 60), doctest::Contains("start them with mpirun or srun"), Error);
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
