// Decode throughput of the engine with one process per rank over MPI: run it with tp x pp
// processes, e.g. `mpirun -np 2 bench_decode_mpi MODEL.bin 2 1` (TP 2) or `... 1 2` (PP 2).
// Prompts are one token (BOS), so all steps but the first are decode steps. Prints tokens/s.
//   mpirun -np N bench_decode_mpi MODEL.bin TP PP [batch=16] [decode_tokens=32]
#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include <tpkit/comm/mpi.hpp>
#include <tpkit/engine/engine.hpp>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  if (argc < 4) {
    std::fprintf(stderr, "usage: mpirun -np N bench_decode_mpi MODEL.bin TP PP [batch] [decode_tokens]\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  {
    tpkit::EngineOptions options;
    options.tp_size = std::atoi(argv[2]);
    options.pp_size = std::atoi(argv[3]);
    const int batch = argc > 4 ? std::atoi(argv[4]) : 16, tokens = argc > 5 ? std::atoi(argv[5]) : 32;
    options.max_num_seqs = batch;
    tpkit::MpiOptions mpi;
    mpi.verify_calls = false;  // a correct program; measure the communication itself
    tpkit::Communicator<tpkit::MpiBackend> world(tpkit::MpiBackend::world(mpi));
    tpkit::DistributedEngine<tpkit::MpiBackend> engine(world, argv[1], options);
    tpkit::SamplingParams p;
    p.temperature = 0;
    p.ignore_eos = true;
    const std::vector<std::vector<std::int32_t>> prompts(std::size_t(batch), {1});
    p.max_tokens = 2;  // warm-up: page in the weights, size the workspaces
    engine.generate(prompts, std::vector<tpkit::SamplingParams>(std::size_t(batch), p));
    p.max_tokens = tokens;
    engine.generate(prompts, std::vector<tpkit::SamplingParams>(std::size_t(batch), p));
    if (engine.leader()) {
      const auto& s = engine.last_stats();
      std::printf("tp %d x pp %d (%d processes), batch %d, %d micro-batches: %.1f tok/s\n", options.tp_size,
                  options.pp_size, world.size(), batch, engine.options().micro_batches,
                  double(s.generated_tokens) / s.seconds);
    }
  }
  MPI_Finalize();
}
