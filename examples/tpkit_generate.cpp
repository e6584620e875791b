// tpkit-generate: generate text from a llama2.c .bin or a Hugging Face directory with the
// tpkit example engine over a world of TP x PP ranks: threads over the mock backend in one
// process, or one process per rank under mpirun (or srun) when built with MPI.
//
//   tpkit-generate --model PATH [--tokenizer PATH] [--prompt TEXT | --prompt-ids 1,2,3]
//                  [--tp N] [--pp N] [--layers-per-stage 2,3] [--micro-batches N]
//                  [--backend auto|threads|mpi|nccl] [--comm-timeout-ms MS] [--fault SPEC]
//                  [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
//                  [--min-p P] [--seed S] [--stop TEXT]... [--dtype f32|bf16|f16]
//                  [--device cpu|cuda] [--gpu N] [--gpu-memory-utilization F] [--enforce-eager]
//
// --device cuda runs every rank as a thread on one GPU (tpkit/cuda/engine.cuh) or, under a
// launcher (mpirun, srun, torchrun-style variables) or with --backend nccl, one process per GPU
// over NCCL (tpkit/cuda/nccl_engine.cuh). It needs a build with the CUDA toolkit (and NCCL).
//
//   mpirun -np 4 tpkit-generate --model M --tp 2 --pp 2 --prompt "Once"
//   mpirun -np 2 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=29511 tpkit-generate --device cuda --tp 2 ...
//
// The generated text goes to stdout as it is produced (by the sampling rank); a summary goes
// to stderr.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <tpkit/engine/engine.hpp>

#include "generate_run.hpp"
#ifdef TPKIT_WITH_MPI
#include <tpkit/comm/mpi.hpp>
#endif

#ifdef TPKIT_WITH_CUDA
// generate_cuda.cu: the GPU engine (returns the exit status).
int generate_on_gpu(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options);
#ifdef TPKIT_WITH_NCCL
// One GPU per process over NCCL, the world from the launcher's variables.
int generate_over_nccl(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                       std::chrono::milliseconds timeout);
#endif
#endif

using generate::Request;
using generate::run;
using generate::usage;

[[noreturn]] void generate::usage(const std::string& error) {
  std::fprintf(stderr,
               "error: %s\n"
               "usage: tpkit-generate --model PATH [--tokenizer PATH] [--prompt TEXT | --prompt-ids 1,2,3]\n"
               "       [--tp N] [--pp N] [--layers-per-stage 2,3] [--micro-batches N]\n"
               "       [--backend auto|threads|mpi|nccl] [--comm-timeout-ms MS] [--fault SPEC]\n"
               "       [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
               "       [--seed S] [--stop TEXT]... [--dtype f32|bf16|f16]\n"
               "       [--device cpu|cuda] [--gpu N] [--gpu-memory-utilization F] [--enforce-eager]\n",
               error.c_str());
  std::exit(2);
}

namespace {
template <class T>
T number(const std::string& flag, const std::string& value) {
  std::istringstream in(value);
  T v;
  if (!(in >> v) || !in.eof()) usage(flag + " expects a number, got \"" + value + "\"");
  return v;
}
template <class T>
std::vector<T> numbers(const std::string& flag, const std::string& list) {
  std::vector<T> out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) out.push_back(number<T>(flag, item));
  return out;
}

// Launched by mpirun / srun (Open MPI, MPICH and PMIx set these).
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}
// Launched by any launcher, torchrun-style ones included.
bool launched() { return launched_by_mpi() || std::getenv("WORLD_SIZE") || std::getenv("SLURM_NTASKS"); }

}  // namespace

int main(int argc, char** argv) {
  std::string model, backend = "auto", device = "cpu";
  Request request;
  tpkit::EngineOptions options;
  tpkit::SamplingParams& params = request.params;
  params.temperature = 0.0f;
  params.max_tokens = 256;
  std::chrono::milliseconds timeout{30000};
  std::vector<tpkit::Fault> faults;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage("help requested");
    if (flag == "--enforce-eager") {  // GPU: no CUDA graphs
      options.enforce_eager = true;
      continue;
    }
    if (i + 1 >= argc) usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model")
      model = value;
    else if (flag == "--tokenizer")
      options.tokenizer = value;
    else if (flag == "--prompt")
      request.prompt = value;
    else if (flag == "--prompt-ids")
      request.ids = numbers<std::int32_t>(flag, value);
    else if (flag == "--tp")
      options.tp_size = number<int>(flag, value);
    else if (flag == "--pp")
      options.pp_size = number<int>(flag, value);
    else if (flag == "--layers-per-stage")
      options.layers_per_stage = numbers<std::int64_t>(flag, value);
    else if (flag == "--micro-batches")
      options.micro_batches = number<int>(flag, value);
    else if (flag == "--backend")
      backend = value;
    else if (flag == "--device")
      device = value;
    else if (flag == "--gpu")
      options.gpu = number<int>(flag, value);
    else if (flag == "--gpu-memory-utilization")
      options.gpu_memory_utilization = number<double>(flag, value);
    else if (flag == "--comm-timeout-ms")
      timeout = std::chrono::milliseconds(number<long long>(flag, value));
    else if (flag == "--fault") {
      try {
        faults = tpkit::parse_faults(value);
      } catch (const std::exception& e) {
        usage(e.what());
      }
    } else if (flag == "--max-tokens")
      params.max_tokens = number<int>(flag, value);
    else if (flag == "--temperature")
      params.temperature = number<float>(flag, value);
    else if (flag == "--top-k")
      params.top_k = number<int>(flag, value);
    else if (flag == "--top-p")
      params.top_p = number<float>(flag, value);
    else if (flag == "--min-p")
      params.min_p = number<float>(flag, value);
    else if (flag == "--seed")
      params.seed = number<std::uint64_t>(flag, value);
    else if (flag == "--stop")
      params.stop.push_back(value);
    else if (flag == "--dtype") {
      if (value == "f32")
        options.dtype = tpkit::DType::f32;
      else if (value == "bf16")
        options.dtype = tpkit::DType::bf16;
      else if (value == "f16")
        options.dtype = tpkit::DType::f16;
      else
        usage("--dtype must be f32, bf16 or f16");
    } else
      usage("unknown option " + flag);
  }
  if (model.empty()) usage("--model is required");
  if (device != "cpu" && device != "cuda") usage("--device must be cpu or cuda");
  if (device == "cuda") {
#ifdef TPKIT_WITH_CUDA
    if (backend == "auto") backend = launched() ? "nccl" : "threads";
    if (backend == "nccl") {
#ifdef TPKIT_WITH_NCCL
      if (!faults.empty()) usage("--fault works with the threads and mpi backends, not nccl");
      return generate_over_nccl(model, request, options, timeout);
#else
      usage("this tpkit-generate was built without NCCL (--device cuda --backend nccl needs it)");
#endif
    }
    if (backend != "threads") usage("with --device cuda, --backend must be auto, threads or nccl");
    if (launched()) usage("--device cuda --backend threads runs every rank in this process; drop the launcher");
    options.comm.timeout = timeout;
    options.comm.faults = faults;
    return generate_on_gpu(model, request, options);
#else
    usage("this tpkit-generate was built without the CUDA toolkit (--device cuda needs it)");
#endif
  }
  if (backend == "auto") backend = launched_by_mpi() ? "mpi" : "threads";
  if (backend == "threads") {
    try {
      options.comm.timeout = timeout;
      options.comm.faults = faults;
      tpkit::Engine engine(model, options);
      run(engine, request, true, options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tpkit-generate: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  if (backend != "mpi") usage("--backend must be auto, threads or mpi (nccl needs --device cuda)");
#ifdef TPKIT_WITH_MPI
  MPI_Init(&argc, &argv);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  try {
    tpkit::MpiOptions mpi;
    mpi.timeout = timeout;
    mpi.faults = faults;
    tpkit::Communicator<tpkit::MpiBackend> world(tpkit::MpiBackend::world(mpi));
    tpkit::DistributedEngine<tpkit::MpiBackend> engine(world, model, options);
    run(engine, request, engine.leader(), options);
  } catch (const std::exception& e) {
    // Every rank reports its own view; the first to get here ends the job.
    std::fprintf(stderr, "tpkit-generate (world rank %d): %s\n", world_rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
#else
  usage("this tpkit-generate was built without MPI (configure with MPI installed for --backend mpi)");
#endif
}
