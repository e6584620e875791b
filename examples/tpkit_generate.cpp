// tpkit-generate: generate text from a llama2.c .bin or a Hugging Face directory with the
// tpkit example engine over a world of TP x PP ranks: threads over the mock backend in one
// process, or one process per rank under mpirun (or srun) when built with MPI. `--help` lists
// every option.
//
// --device cuda runs every rank as a thread on one GPU (tpkit/engine/cuda_engine.cuh) or, under
// a launcher (mpirun, srun, torchrun-style variables) or with --backend nccl, one process per
// GPU over NCCL (tpkit/engine/nccl_engine.cuh). It needs a build with the CUDA toolkit (and
// NCCL).
//
//   mpirun -np 4 tpkit-generate --model M --tp 2 --pp 2 --prompt "Once"
//   mpirun -np 2 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=29511 tpkit-generate --device cuda --tp 2 ...
//
// The generated text goes to stdout as it is produced (by the sampling rank); a summary goes
// to stderr. Errors are one line on stderr and exit status 1 (2 for a bad command line).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <tpkit/engine/engine.hpp>

#include "generate_run.hpp"
#ifdef TPKIT_WITH_MPI
#include <tpkit/comm/mpi.hpp>
#endif

#ifdef TPKIT_WITH_CUDA
// generate_cuda.cu: the GPU engine (returns the exit status).
int generate_on_gpu(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                    const tpkit::GpuOptions& gpu);
#ifdef TPKIT_WITH_NCCL
// One GPU per process over NCCL, the world from the launcher's variables.
int generate_over_nccl(const std::string& model, const generate::Request& request, const tpkit::EngineOptions& options,
                       const tpkit::GpuOptions& gpu, std::chrono::milliseconds timeout);
#endif
#endif

namespace {
// Launched by mpirun / srun (Open MPI, MPICH and PMIx set these).
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}
// Launched by any launcher, torchrun-style ones included.
bool launched() { return launched_by_mpi() || std::getenv("WORLD_SIZE") || std::getenv("SLURM_NTASKS"); }

// A usage error found after parsing: the same form and exit status as CLI11's own.
[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "tpkit-generate: %s\nRun with --help for more information.\n", message.c_str());
  std::exit(2);
}

int fail(const std::exception& e, const std::string& who = "tpkit-generate") {
  std::fprintf(stderr, "%s: %s\n", who.c_str(), tpkit::user_message(e).c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Generate text with tpkit over a TP x PP world of ranks (threads, MPI processes or GPUs).",
               "tpkit-generate");
  app.get_formatter()->column_width(36);
  std::string model, backend = "auto", device = "cpu", dtype = "f32", fault_spec;
  generate::Request request;
  tpkit::EngineOptions options;
  tpkit::GpuOptions gpu;
  tpkit::SamplingParams& params = request.params;
  params.temperature = 0.0f;
  params.max_tokens = 256;
  long long timeout_ms = 30000;
  std::uint64_t seed = 0;

  app.add_option("--model", model, "llama2.c .bin file or Hugging Face directory")->required();
  app.add_option("--tokenizer", options.tokenizer,
                 "tokenizer.json, llama2.c tokenizer .bin, or a folder with one (default: tokenizer.json, "
                 "tokenizer.bin, tok512.bin or tok32000.bin beside the model)")
      ->check(CLI::ExistingPath);
  auto* prompt = app.add_option("--prompt", request.prompt, "prompt text (encoded with the tokenizer's BOS, if any)");
  auto* chat =
      app.add_flag("--chat", request.chat,
                   "send --prompt as a user message through the model's chat template; stop at its end of turn")
          ->needs(prompt);
  app.add_option("--system", request.system, "--chat: a system message before the prompt")->needs(chat);
  app.add_option("--chat-template-kwargs", request.chat_template_kwargs,
                 "--chat: template variables as a JSON object, e.g. '{\"enable_thinking\": false}'")
      ->needs(chat);
  app.add_flag("--print-prompt-ids", request.print_prompt_ids, "print the prompt's token ids on stderr");
  app.add_option("--prompt-ids", request.ids, "prompt as token ids, e.g. 1,2,3 (for models without a tokenizer)")
      ->delimiter(',')
      ->excludes(prompt);
  app.add_option("--tp", options.tp_size, "tensor-parallel ranks per stage")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--pp", options.pp_size, "pipeline stages")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--layers-per-stage", options.layers_per_stage, "layers of each stage, e.g. 2,3 (default: balanced)")
      ->delimiter(',');
  std::string moe_layout = "tp", placement_file;
  app.add_option("--moe-layout", moe_layout,
                 "mixture-of-experts layers over the TP group: tp (experts split), ep (whole experts per rank), "
                 "ep-dispatch (tokens sent to the experts' ranks)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tp", "ep", "ep-dispatch"}));
  app.add_option("--expert-placement", placement_file,
                 "with --moe-layout ep/ep-dispatch: which rank holds which experts (a tpkit-placement file)");
  app.add_option("--expert-stats", request.expert_stats, "write the tokens routed to each expert (JSON) here");
  app.add_option("--micro-batches", options.micro_batches, "micro-batches in flight in the pipeline (0: pp)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--threads-per-rank", options.threads_per_rank,
                 "CPU threads inside each rank (0: this host's cores divided by its ranks)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--backend", backend, "how ranks communicate")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "threads", "mpi", "nccl"}));
  app.add_option("--comm-timeout-ms", timeout_ms, "how long a rank waits for its peers before naming them")
      ->capture_default_str()
      ->check(CLI::Range(1LL, 86400000LL));
  app.add_option("--fault", fault_spec, "inject faults (tests): fail:RANK:OP or stall:RANK:OP:MS, comma-separated");
  app.add_option("--max-tokens", params.max_tokens, "tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 30));
  app.add_option("--temperature", params.temperature, "sampling temperature (0: greedy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1e6f));
  app.add_option("--top-k", params.top_k, "keep the k most likely tokens (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--top-p", params.top_p, "nucleus: the smallest set of mass p (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(1e-9f, 1.0f));
  app.add_option("--min-p", params.min_p, "drop tokens below p times the most likely one's probability (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 1.0f));
  auto* seed_option = app.add_option("--seed", seed, "sampling seed (default: random)");
  app.add_option("--stop", params.stop, "stop string (repeatable)")->allow_extra_args(false);
  app.add_option("--dtype", dtype, "storage of weights and activations")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  app.add_option("--device", device, "where the model runs")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--gpu", gpu.device, "GPU for --device cuda without a launcher")
      ->capture_default_str()
      ->check(CLI::Range(0, 1023));
  app.add_option("--gpu-memory-utilization", gpu.gpu_memory_utilization,
                 "fraction of GPU memory for weights and KV cache")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 1.0));
  app.add_flag("--enforce-eager", gpu.enforce_eager, "GPU: never replay decode steps from CUDA graphs");
  app.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", options.enable_prefix_caching,
               "reuse the KV blocks of earlier prompts that began with the same tokens (default: on)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a bad command line: 2, with CLI11's message
  }

  if (seed_option->count()) params.seed = seed;
  options.moe_layout = tpkit::parse_moe_layout(moe_layout);
  try {
    if (!placement_file.empty()) options.expert_placements = tpkit::read_expert_placements(placement_file);
  } catch (const std::exception& e) {
    usage_error("--expert-placement: " + tpkit::user_message(e));
  }
  if (dtype == "bf16") options.dtype = tpkit::DType::bf16;
  if (dtype == "f16") options.dtype = tpkit::DType::f16;
  if (options.tokenizer.empty()) options.tokenizer = tpkit::find_tokenizer_beside(model);
  // The chat template sits beside the tokenizer (tokenizer_config.json), else beside the model.
  request.template_dir = tpkit::folder_of(options.tokenizer.empty() ? model : options.tokenizer);
  const std::chrono::milliseconds timeout(timeout_ms);
  std::vector<tpkit::Fault> faults;
  try {
    if (!fault_spec.empty()) faults = tpkit::parse_faults(fault_spec);
  } catch (const std::exception& e) {
    usage_error("--fault: " + tpkit::user_message(e));
  }

  if (device == "cuda") {
#ifdef TPKIT_WITH_CUDA
    if (backend == "auto") backend = launched() ? "nccl" : "threads";
    if (backend == "nccl") {
#ifdef TPKIT_WITH_NCCL
      if (!faults.empty()) usage_error("--fault works with the threads and mpi backends, not nccl");
      return generate_over_nccl(model, request, options, gpu, timeout);
#else
      usage_error("this tpkit-generate was built without NCCL (--device cuda --backend nccl needs it)");
#endif
    }
    if (backend != "threads") usage_error("with --device cuda, --backend must be auto, threads or nccl");
    if (launched()) usage_error("--device cuda --backend threads runs every rank in this process; drop the launcher");
    options.comm.timeout = timeout;
    options.comm.faults = faults;
    return generate_on_gpu(model, request, options, gpu);
#else
    usage_error("this tpkit-generate was built without the CUDA toolkit (--device cuda needs it)");
#endif
  }
  if (backend == "auto") backend = launched_by_mpi() ? "mpi" : "threads";
  if (backend == "threads") {
    try {
      options.comm.timeout = timeout;
      options.comm.faults = faults;
      tpkit::Engine engine(model, options);
      generate::run(engine, request, true, engine.options());
    } catch (const std::exception& e) {
      return fail(e);
    }
    return 0;
  }
  if (backend != "mpi") usage_error("--backend must be auto, threads or mpi (nccl needs --device cuda)");
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
    generate::run(engine, request, engine.leader(), engine.options());
  } catch (const std::exception& e) {
    // Every rank reports its own view; the first to get here ends the job.
    fail(e, "tpkit-generate (world rank " + std::to_string(world_rank) + ")");
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return 0;
#else
  usage_error("this tpkit-generate was built without MPI (configure with MPI installed for --backend mpi)");
#endif
}
