// A consumer of tpkit::mpi: the MPI backend's world and one all-reduce (run under mpirun).
#include <cstdio>

#include <tpkit/comm/mpi.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  {
    tpkit::Communicator<tpkit::MpiBackend> world(tpkit::MpiBackend::world());
    int one = 1, ranks = 0;
    world.all_reduce(&one, &ranks, 1);
    if (world.rank() == 0) std::printf("%d ranks\n", ranks);
  }
  MPI_Finalize();
}
