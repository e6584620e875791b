// Collective bandwidth of the MPI backend (one process per rank), nccl-tests style.
//   mpirun -np N bench_collectives_mpi [max_bytes=268435456] [verify_calls=1]
#include <mpi.h>

#include <cstdlib>

#include <tpkit/comm/mpi.hpp>

#include "collectives.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    const std::size_t max_bytes = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : std::size_t(256) << 20;
    tpkit::MpiOptions options;
    options.verify_calls = argc > 2 ? std::atoi(argv[2]) != 0 : true;
    tpkit::Communicator<tpkit::MpiBackend> comm(tpkit::MpiBackend::world(options));
    bench::collective_sweep(comm, max_bytes,
                            options.verify_calls ? "MPI backend (processes), verify_calls on"
                                                 : "MPI backend (processes), verify_calls off");
  }
  MPI_Finalize();
}
