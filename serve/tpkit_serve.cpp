// tpkit-serve: an OpenAI-compatible HTTP server over tpkit's running engine. Ranks are threads
// of this process, or, under mpirun / srun (a build with MPI), one process per rank: world rank 0
// serves HTTP and the others follow. `--help` lists every option; docs/serving.md explains them.
//
//   tpkit-serve --model M --tp 2 --port 8000
//   mpirun -np 4 tpkit-serve --model M --tp 2 --pp 2 --port 0
//
// Prints `listening on http://HOST:PORT` on stdout once it accepts requests. SIGTERM or SIGINT:
// /health turns 503, new requests are refused, the requests in flight finish (at most
// --drain-timeout seconds, then they are aborted), and it exits 0.
#include <CLI/CLI.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include <tpkit/engine/engine.hpp>
#include <tpkit/tokenizer/load.hpp>

#include "server.hpp"
#ifdef TPKIT_WITH_MPI
#include <tpkit/comm/mpi.hpp>
#endif

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "tpkit-serve: %s\nRun with --help for more information.\n", message.c_str());
  std::exit(2);
}

// Serves on `server` until a signal, then drains: stops accepting, lets the engine finish what
// is in flight within `drain_timeout` (then aborts it), and stops HTTP once no response is left.
template <class EngineT>
void serve_http(EngineT& engine, tpkit::serve::Server<EngineT>& server, int port, const std::string& host,
                double drain_timeout) {
  std::thread http([&] { server.run(); });
  std::printf("listening on http://%s:%d\n",
              host.find(':') != std::string::npos ? ("[" + host + "]").c_str() : host.c_str(), port);
  std::fflush(stdout);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::fprintf(stderr, "tpkit-serve: draining (at most %.0f s)\n", drain_timeout);
  server.begin_drain();
  engine.begin_shutdown(tpkit::ShutdownMode::drain);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(drain_timeout);
  for (;;) {
    const tpkit::EngineStatus s = engine.status();
    if (s.unfinished == 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr, "tpkit-serve: drain timeout: aborting %lld request(s)\n",
                   static_cast<long long>(s.unfinished));
      engine.begin_shutdown(tpkit::ShutdownMode::abort);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // The last streams write their end; then HTTP stops.
  const auto responses_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.active() > 0 && std::chrono::steady_clock::now() < responses_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  server.stop();
  http.join();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("An OpenAI-compatible server (completions, chat, streaming, metrics) over tpkit's engine.",
               "tpkit-serve");
  std::string model, dtype = "f32", backend = "auto";
  tpkit::EngineOptions options;
  tpkit::serve::ServerOptions server_options;
  double drain_timeout = 30;
  int timeout_ms = 30000;
  app.add_option("--model,model", model, "llama2.c .bin file or Hugging Face directory")->required();
  app.add_option("--tokenizer", options.tokenizer,
                 "tokenizer.json, llama2.c tokenizer .bin or a folder with one (default: beside the model)");
  app.add_option("--host", server_options.host, "address to listen on")->capture_default_str();
  app.add_option("--port", server_options.port, "port to listen on; 0 picks a free one")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--served-model-name", server_options.served_model_name,
                 "the model name clients send and /v1/models lists (default: the model path)");
  app.add_option("--api-key", server_options.api_key, "require 'Authorization: Bearer KEY' on /v1/ endpoints");
  app.add_option("--tp", options.tp_size, "tensor-parallel ranks")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--pp", options.pp_size, "pipeline stages")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--dtype", dtype, "weights and activations: f32, bf16 or f16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  app.add_option("--backend", backend, "auto (mpi under mpirun/srun, else threads), threads or mpi")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "threads", "mpi"}));
  app.add_option("--max-num-seqs", options.max_num_seqs, "sequences batched together")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 20));
  app.add_option("--max-num-batched-tokens", options.max_num_batched_tokens, "tokens computed per step")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 30));
  app.add_option("--long-prefill-token-threshold", options.long_prefill_token_threshold,
                 "a prompt with more tokens left takes at most this many per step, so others start too (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--block-size", options.block_size, "tokens per KV-cache block")->capture_default_str();
  app.add_option("--num-kv-blocks", options.num_kv_blocks, "KV-cache blocks (0: sized by the engine)")
      ->capture_default_str();
  app.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", options.enable_prefix_caching,
               "reuse the KV blocks of earlier prompts that began with the same tokens (default: on)");
  std::string moe_layout = "tp", placement_file;
  app.add_option("--moe-layout", moe_layout,
                 "mixture-of-experts layers over the TP group: tp (experts split), ep (whole experts per rank), "
                 "ep-dispatch (tokens sent to the experts' ranks)")
      ->capture_default_str()
      ->check(CLI::IsMember({"tp", "ep", "ep-dispatch"}));
  app.add_option("--expert-placement", placement_file,
                 "with --moe-layout ep/ep-dispatch: which rank holds which experts (a tpkit-placement file)");
  app.add_option("--threads-per-rank", options.threads_per_rank, "CPU threads inside each rank (0: cores / ranks)")
      ->capture_default_str();
  app.add_option("--max-queue", server_options.max_queue, "requests waiting beyond which new ones get 429")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t(0), std::int64_t(1) << 30));
  app.add_option("--request-timeout", server_options.request_timeout, "seconds a request may take before it is aborted")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--drain-timeout", drain_timeout, "on SIGTERM, seconds the requests in flight may take to finish")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--http-threads", server_options.http_threads,
                 "concurrent HTTP connections (each stream holds one; default: 2 x max-num-seqs + 16)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-body-bytes", server_options.max_body_bytes, "larger request bodies get 413")
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "how long a rank waits for the others in one collective")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600 * 1000));
  app.add_option("--idle-heartbeat-ms", options.idle_heartbeat,
                 "processes: how often an idle rank 0 tells the others it is alive");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  options.moe_layout = tpkit::parse_moe_layout(moe_layout);
  try {
    if (!placement_file.empty()) options.expert_placements = tpkit::read_expert_placements(placement_file);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-serve: --expert-placement: %s\n", tpkit::user_message(e).c_str());
    return 2;
  }
  if (app.count("--http-threads") == 0) server_options.http_threads = int(2 * options.max_num_seqs + 16);
  if (dtype == "bf16") options.dtype = tpkit::DType::bf16;
  if (dtype == "f16") options.dtype = tpkit::DType::f16;
  if (options.tokenizer.empty()) options.tokenizer = tpkit::find_tokenizer_beside(model);
  if (server_options.served_model_name.empty()) server_options.served_model_name = model;
  server_options.chat_template_dir = tpkit::folder_of(options.tokenizer.empty() ? model : options.tokenizer);
  const std::chrono::milliseconds timeout(timeout_ms);

  signal(SIGPIPE, SIG_IGN);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  if (backend == "auto") backend = launched_by_mpi() ? "mpi" : "threads";
  if (backend == "threads") {
    try {
      options.comm.timeout = timeout;
      tpkit::Engine engine(model, options);
      tpkit::serve::Server<tpkit::Engine> server(engine, server_options);
      const int port = server.bind();
      serve_http(engine, server, port, server_options.host, drain_timeout);
      engine.shutdown(tpkit::ShutdownMode::abort);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tpkit-serve: %s\n", tpkit::user_message(e).c_str());
      return 1;
    }
    std::fprintf(stderr, "tpkit-serve: stopped\n");
    return 0;
  }
#ifdef TPKIT_WITH_MPI
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);  // MPI only on this (the main) thread
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  try {
    tpkit::MpiOptions mpi;
    mpi.timeout = timeout;
    tpkit::Communicator<tpkit::MpiBackend> world(tpkit::MpiBackend::world(mpi));
    using Distributed = tpkit::DistributedEngine<tpkit::MpiBackend>;
    Distributed engine(world, model, options);
    if (world_rank == 0) {
      tpkit::serve::Server<Distributed> server(engine, server_options);
      const int port = server.bind();
      std::thread front([&] { serve_http(engine, server, port, server_options.host, drain_timeout); });
      try {
        engine.serve();  // the step loop, on the thread that called MPI_Init
      } catch (...) {
        g_stop = true;  // the HTTP side drains and stops; the requests in flight have failed already
        front.join();
        throw;
      }
      front.join();
    } else {
      engine.serve();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tpkit-serve (world rank %d): %s\n", world_rank, tpkit::user_message(e).c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  if (world_rank == 0) std::fprintf(stderr, "tpkit-serve: stopped\n");
  return 0;
#else
  usage_error("this tpkit-serve was built without MPI (configure with MPI installed for --backend mpi)");
#endif
}
