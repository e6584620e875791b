// Catch2's main for tests run under mpirun: every process runs every test case, with MPI
// initialised around the session. A failing process makes mpirun's exit status non-zero.
#include <mpi.h>

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int result = Catch::Session().run(argc, argv);
  MPI_Finalize();
  return result;
}
