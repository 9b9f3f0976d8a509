// src/parallel/no_mpi.cpp: kiln/parallel/comm.hpp's MPI entry points in a build without Open MPI (CMake did not
// find it: tools/kiln setup installs libopenmpi-dev), which refuse more than one rank, saying so.
#include "kiln/core/error.hpp"
#include "kiln/parallel/comm.hpp"

namespace kiln::parallel {

bool have_mpi() { return false; }

std::unique_ptr<Communicator> make_mpi(const Launch& launch, double) {
  KILN_FAIL(launch.launcher, " started ", launch.world, " ranks, but this build has no MPI (CMake did not find Open "
            "MPI: install libopenmpi-dev, or run tools/kiln setup, and build again)");
}

}  // namespace kiln::parallel
