// tpkit/engine/engine.hpp: the example engine, whole. Loads a checkpoint, shards it over a world
// of tp_size x pp_size ranks (tensor-parallel groups in pipeline stages) and generates with
// continuous batching, a paged KV cache and per-request sampling. The pieces, one job each:
//
//   request.hpp             SamplingParams, GenerationResult, GenerationStats, TokenCallback,
//                           RequestOutput, EngineStatus
//   control.hpp             EngineControl: the running engine's inbox, outputs and status
//   options.hpp             EngineOptions, resolve_options, threads per rank
//   placement.hpp           expert placements and statistics as files, placement_for_load
//   scheduler.hpp           continuous batching over the paged KV cache
//   stop_checker.hpp        end-of-sequence, max_tokens, stop strings and the text stream
//   step_runner.hpp         one rank's steps, and which replay from CUDA graphs
//   rank_model.hpp          the model of one rank behind a dtype-free interface
//   engine_rank.hpp         EngineRank: one rank and the step loop every rank runs
//   agreement.hpp           fingerprints that processes compare before they run
//   engine_base.hpp         what the engines share: checkpoint, options, tokenizer, requests,
//                           submit/abort/status, generate() as a client of the loop
//   threaded_engine.hpp     Engine: every rank a thread of this process (the mock backend)
//   distributed_engine.hpp  DistributedEngine: one rank per process (MPI, NCCL)
//   gpu_options.hpp         GpuOptions, what the GPU engines take beyond EngineOptions
// The GPU engines are tpkit/engine/cuda_engine.cuh and nccl_engine.cuh (they need nvcc).
#pragma once

#include "tpkit/engine/agreement.hpp"
#include "tpkit/engine/control.hpp"
#include "tpkit/engine/distributed_engine.hpp"
#include "tpkit/engine/engine_base.hpp"
#include "tpkit/engine/engine_rank.hpp"
#include "tpkit/engine/gpu_options.hpp"
#include "tpkit/engine/options.hpp"
#include "tpkit/engine/placement.hpp"
#include "tpkit/engine/rank_model.hpp"
#include "tpkit/engine/request.hpp"
#include "tpkit/engine/scheduler.hpp"
#include "tpkit/engine/step_runner.hpp"
#include "tpkit/engine/stop_checker.hpp"
#include "tpkit/engine/threaded_engine.hpp"
