// Under mpirun: world rank 1 stalls (an injected fault) while the others enter a barrier. They
// must fail within the timeout with an error naming world rank 1. Rank 0 prints the error;
// ctest matches it (the processes then abort, as an application would).
#include <mpi.h>

#include <cstdio>

#include "tpkit/comm/mpi.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  using namespace std::chrono_literals;
  tpkit::MpiOptions options;
  options.timeout = 300ms;
  options.faults.push_back(tpkit::Fault::stall_at(1, 1, 5000ms));  // before its operation #1
  tpkit::Communicator<tpkit::MpiBackend> comm(tpkit::MpiBackend::world(options));
  int x = 1;
  const auto start = std::chrono::steady_clock::now();
  try {
    comm.all_reduce(&x, 1);  // operation #0
    comm.barrier();          // rank 1 stalls before it
  } catch (const tpkit::CollectiveTimeout& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("rank %d after %.2f s: %s\n", comm.rank(), s, e.what());
    std::fflush(stdout);
    if (comm.rank() == 0) MPI_Abort(MPI_COMM_WORLD, 3);
    std::this_thread::sleep_for(10s);  // rank 0 aborts the job
  }
  std::printf("rank %d: no timeout was reported\n", comm.rank());
  MPI_Abort(MPI_COMM_WORLD, 4);
}
