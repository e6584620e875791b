// tpkit/engine/gpu_options.hpp: what the GPU engines (CudaEngine, NcclEngine) take beyond
// EngineOptions. Plain data, so that code compiled without nvcc (a command line) can fill it.
#pragma once

namespace tpkit {

struct GpuOptions {
  int device = 0;                       // CudaEngine: the GPU every rank runs on (NcclEngine: LOCAL_RANK's)
  double gpu_memory_utilization = 0.9;  // the fraction of its memory weights and KV cache may use;
                                        // with num_kv_blocks 0 the KV cache gets what is left
  // Decode steps of a single-stage model replay CUDA graphs of their layers (StepRunner) unless
  // this is set, as with vLLM's enforce_eager.
  bool enforce_eager = false;
};

}  // namespace tpkit
