// kiln/parallel/launch.hpp: which rank this process is, read from the launcher's environment.
//   Open MPI's mpirun   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_SIZE
//   Slurm's srun        SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS (an srun step; a batch script alone
//                       sets SLURM_NTASKS for the job but starts one process, so it is not read as a world)
//   torchrun            RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   none of them        rank 0 of 1
// The first launcher whose variables are there wins, in this order (mpirun inside an allocation sets both its own
// and Slurm's). A launcher whose variables are there only in part, or that disagree (a rank outside the world),
// is an error naming the variable.
#pragma once
#include <cstdlib>
#include <functional>
#include <string>

#include "kiln/core/error.hpp"

namespace kiln::parallel {

struct Launch {
  std::string launcher = "none";  // mpirun, srun, torchrun or none
  int rank = 0, local_rank = 0, world = 1;
  std::string master_addr;  // torchrun's rendezvous (NCCL's bootstrap without MPI)
  int master_port = 0;
};

using GetEnv = std::function<const char*(const char*)>;

namespace detail {
inline int env_int(const GetEnv& get, const char* name, const char* launcher, int lo) {
  const char* v = get(name);
  KILN_CHECK(v && *v, "launch: ", launcher, "'s variables are set in part: ", name, " is missing");
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  KILN_CHECK(end && *end == 0 && x >= lo && x <= 1'000'000, "launch: ", name, "=", v, " is not an integer >= ", lo);
  return int(x);
}
}  // namespace detail

inline Launch discover_launch(const GetEnv& get = [](const char* n) { return std::getenv(n); }) {
  auto has = [&](const char* n) {
    const char* v = get(n);
    return v && *v;
  };
  Launch l;
  if (has("OMPI_COMM_WORLD_SIZE") || has("OMPI_COMM_WORLD_RANK")) {
    l.launcher = "mpirun";
    l.world = detail::env_int(get, "OMPI_COMM_WORLD_SIZE", "Open MPI", 1);
    l.rank = detail::env_int(get, "OMPI_COMM_WORLD_RANK", "Open MPI", 0);
    l.local_rank = detail::env_int(get, "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI", 0);
  } else if (has("SLURM_STEP_NUM_TASKS")) {
    l.launcher = "srun";
    l.world = detail::env_int(get, "SLURM_STEP_NUM_TASKS", "Slurm", 1);
    l.rank = detail::env_int(get, "SLURM_PROCID", "Slurm", 0);
    l.local_rank = detail::env_int(get, "SLURM_LOCALID", "Slurm", 0);
  } else if (has("WORLD_SIZE") || has("RANK")) {
    l.launcher = "torchrun";
    l.world = detail::env_int(get, "WORLD_SIZE", "torchrun", 1);
    l.rank = detail::env_int(get, "RANK", "torchrun", 0);
    l.local_rank = detail::env_int(get, "LOCAL_RANK", "torchrun", 0);
    if (l.world > 1) {
      KILN_CHECK(has("MASTER_ADDR"), "launch: torchrun's variables are set in part: MASTER_ADDR is missing");
      l.master_addr = get("MASTER_ADDR");
      l.master_port = detail::env_int(get, "MASTER_PORT", "torchrun", 1);
    }
  }
  KILN_CHECK(l.rank < l.world, "launch: ", l.launcher, " says rank ", l.rank, " of a world of ", l.world);
  KILN_CHECK(l.local_rank <= l.rank, "launch: ", l.launcher, " says local rank ", l.local_rank, " for rank ", l.rank);
  return l;
}

}  // namespace kiln::parallel
