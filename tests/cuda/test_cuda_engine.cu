// The engine on the GPU (tpkit/engine/cuda_engine.cuh) on the real stories260K weights, both file
// formats. Skipped (exit 77) without a GPU.
//   * float32: the 64 greedy tokens of each golden prompt equal the float64 reference
//     (tests/reference/llama_reference.hpp) at TP 1, 2 and 4 over the one-GPU mock, and the
//     logits of a prefill and every decode step agree with it within the bound argued in
//     tests/test_engine_stories.cpp (5e-4 x max(1, |logit|)).
//   * bfloat16 and float16 weights: the GPU's greedy tokens equal the host engine's in the same
//     dtype, at TP 1, 2 and 4.
//   * Seeded sampling (temperature, top-k, top-p) on the device: the same seeds give the same
//     tokens twice, and the host engine's tokens. The draws are the host's (one per token from
//     the request's generator); a token can differ from the host's only where a draw falls
//     within the float32 logit difference (about 1e-6 relative; tests/test_engine_stories.cpp
//     bounds it by 5e-4) of a boundary between two candidates' cumulative mass, a chance of
//     about 1e-3 over these 320 tokens. The test is deterministic: it passes or fails the same
//     way on every run on one machine.
//   * Decode steps from CUDA graphs (the default at TP 1): most steps replay a graph, and the
//     tokens are the golden ones with at most 16, 3 or 1 sequences at once (other row and
//     block-table paddings); with enforce_eager, and at TP 2 over the mock, no step does.
//   * Chunked prefill (8-token budget) and preemption (a KV cache too small for every request
//     at once) give the same tokens.
//   * Errors: a gpu_memory_utilization that leaves no room, a device that does not exist.
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "cuda_test_support.hpp"
#include "reference/stories_golden.hpp"
#include "tpkit/engine/cuda_engine.cuh"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;

namespace {
using stories::kBin, stories::kHf, stories::kTokenizer;

using stories::Golden;

const auto tokens_of = stories::token_ids;
SamplingParams greedy64() { return stories::greedy(64); }

std::vector<std::vector<std::int32_t>> run_gpu(const std::string& path, const Golden& g, EngineOptions o) {
  o.tokenizer = kTokenizer;
  GpuOptions gpu;
  gpu.gpu_memory_utilization = 0.5;
  CudaEngine engine(path, o, gpu);
  return tokens_of(engine.generate(g.prompt_ids, std::vector<SamplingParams>(g.prompt_ids.size(), greedy64())));
}

void logits_against_reference(const std::string& path, const Golden& g, int tp) {
  const Checkpoint ckpt = Checkpoint::open(path);
  const std::int64_t V = ckpt.config().vocab_size;
  auto contexts = tpkit::gpu::make_contexts(tp);
  std::vector<double> worst(static_cast<std::size_t>(tp), 0.0);
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<tpkit::gpu::DeviceMockBackend>& comm) {
    const CudaOps ops(*contexts[std::size_t(comm.rank())]);
    TransformerModel<float, CudaOps> model(ops, ckpt, {comm.rank(), tp}, 8);
    std::vector<std::int32_t> blocks = {7, 3, 0, 5, 1, 6, 2, 4};  // pages out of order
    tpkit::gpu::DeviceBuffer<float> d_logits(static_cast<std::size_t>(V));
    std::vector<float> logits(static_cast<std::size_t>(V));
    for (std::size_t i = 0; i < g.prompt_ids.size(); ++i) {
      std::vector<std::int32_t> tokens = g.prompt_ids[i];
      const std::int64_t prompt = std::int64_t(tokens.size());
      for (std::int32_t t : g.tokens[i]) tokens.push_back(t);
      // Prefill the prompt in one step (the prefill kernel), then decode one token at a time.
      for (std::int64_t pos = prompt - 1, start = 0; pos < std::int64_t(tokens.size()) - 1; ++pos) {
        StepSequence s{tokens.data() + start, pos + 1 - start, start, &blocks, true};
        model.forward(comm, {s}, TensorView<float>(d_logits.data(), {1, V}, MemoryKind::device));
        ops.download(d_logits.data(), logits.data(), logits.size());
        start = pos + 1;
        const auto& want = g.logits[i][std::size_t(pos - (prompt - 1))];
        for (std::int64_t v = 0; v < V; ++v) {
          const double bound = 5e-4 * std::max(1.0, std::fabs(want[std::size_t(v)]));
          double& w = worst[std::size_t(comm.rank())];
          const double e = std::fabs(logits[std::size_t(v)] - want[std::size_t(v)]) / bound;
          w = e == e ? std::max(w, e) : 1e300;  // NaN fails
        }
      }
    }
  });
  for (double w : worst)
    expect(w <= 1.0, path + " tp " + std::to_string(tp) + ": float32 logits off the reference (worst " +
                         std::to_string(worst[0]) + " of the bound)");
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  try {
    const Golden g = stories::make_golden();
    for (const std::string& path : {kBin, kHf}) {
      for (int tp : {1, 2, 4}) {
        EngineOptions o;
        o.tp_size = tp;
        expect(run_gpu(path, g, o) == g.tokens, path + " float32 tp " + std::to_string(tp) + ": tokens differ");
      }
      logits_against_reference(path, g, 1);
      logits_against_reference(path, g, 2);
    }
    for (DType dtype : {DType::bf16, DType::f16}) {
      EngineOptions o;
      o.dtype = dtype;
      o.tokenizer = kTokenizer;
      Engine host(kBin, o);
      const auto want =
          tokens_of(host.generate(g.prompt_ids, std::vector<SamplingParams>(g.prompt_ids.size(), greedy64())));
      for (int tp : {1, 2, 3, 4}) {  // TP 3: odd shards (down_proj's K is 58), checked at load
        o.tp_size = tp;
        expect(run_gpu(kBin, g, o) == want,
               std::string(dtype_name(dtype)) + " tp " + std::to_string(tp) + ": GPU tokens differ from the host's");
      }
    }
    {  // seeded sampling on the device
      EngineOptions o;
      o.tokenizer = kTokenizer;
      std::vector<SamplingParams> params;
      for (std::size_t i = 0; i < g.prompt_ids.size(); ++i) {
        SamplingParams p = greedy64();
        p.temperature = 0.8f, p.top_k = 40, p.top_p = 0.9f, p.seed = 1234 + i;
        params.push_back(p);
      }
      Engine host(kBin, o);
      const auto want = tokens_of(host.generate(g.prompt_ids, params));
      GpuOptions half_memory;
      half_memory.gpu_memory_utilization = 0.5;
      CudaEngine gpu(kBin, o, half_memory);
      const auto first = tokens_of(gpu.generate(g.prompt_ids, params));
      expect(first == tokens_of(gpu.generate(g.prompt_ids, params)), "seeded sampling on the GPU does not repeat");
      expect(first == want, "seeded sampling on the GPU differs from the host engine's");
      expect(first != g.tokens, "seeded sampling gave the greedy tokens: the sampler did not sample");
    }
    {  // CUDA graphs
      for (std::int64_t seqs : {16, 3, 1}) {
        for (bool eager : {false, true}) {
          EngineOptions o;
          o.tokenizer = kTokenizer;
          o.max_num_seqs = seqs;
          GpuOptions gpu;
          gpu.gpu_memory_utilization = 0.5;
          gpu.enforce_eager = eager;
          CudaEngine engine(kBin, o, gpu);
          const auto got =
              tokens_of(engine.generate(g.prompt_ids, std::vector<SamplingParams>(g.prompt_ids.size(), greedy64())));
          const GenerationStats& st = engine.last_stats();
          const std::string name = "max_num_seqs " + std::to_string(seqs) + (eager ? " eager" : " graphs");
          expect(got == g.tokens, name + ": tokens differ from the golden");
          // Steps that do not replay: prefill steps and the first step of each (rows, table width).
          expect(
              eager ? st.graph_steps == 0 : st.graph_steps * 2 >= st.steps && st.graph_steps < st.steps,
              name + ": " + std::to_string(st.graph_steps) + " of " + std::to_string(st.steps) + " steps from graphs");
        }
      }
      EngineOptions o;
      o.tokenizer = kTokenizer;
      o.tp_size = 2;
      GpuOptions gpu;
      gpu.gpu_memory_utilization = 0.5;
      CudaEngine engine(kBin, o, gpu);
      engine.generate(g.prompt_ids, std::vector<SamplingParams>(g.prompt_ids.size(), greedy64()));
      expect(engine.last_stats().graph_steps == 0, "TP 2 over the one-GPU mock does not capture its host rendezvous");
    }
    {  // chunked prefill and preemption
      EngineOptions o;
      o.tp_size = 2;
      o.max_num_batched_tokens = 8;
      o.num_kv_blocks = 9;  // 5 requests of up to 73 positions in 16-slot blocks need 25
      expect(run_gpu(kBin, g, o) == g.tokens, "chunked prefill with preemption: tokens differ");
    }
    {  // a shape the kernels cannot take fails at load, naming what it is
      ModelConfig c;
      c.hidden_size = 64, c.intermediate_size = 64, c.num_layers = 1, c.num_heads = 1, c.num_kv_heads = 1;
      c.head_dim = 512, c.vocab_size = 64, c.max_position = 64;
      std::vector<float> values(512 * 64);
      for (std::size_t i = 0; i < values.size(); ++i) values[i] = float(std::sin(double(i)));
      const auto mat = [&](std::int64_t r, std::int64_t k) { return RawTensorView(values.data(), DType::f32, {r, k}); };
      const auto vec = [&](std::int64_t n) { return RawTensorView(values.data(), DType::f32, {n}); };
      std::map<std::string, RawTensorView> t = {
          {"model.embed_tokens.weight", mat(64, 64)}, {"lm_head.weight", mat(64, 64)}, {"model.norm.weight", vec(64)}};
      const auto n = [](const char* s) { return Checkpoint::layer_name(0, s); };
      t[n("self_attn.q_proj.weight")] = mat(512, 64), t[n("self_attn.k_proj.weight")] = mat(512, 64);
      t[n("self_attn.v_proj.weight")] = mat(512, 64), t[n("self_attn.o_proj.weight")] = mat(64, 512);
      t[n("mlp.gate_proj.weight")] = mat(64, 64), t[n("mlp.up_proj.weight")] = mat(64, 64);
      t[n("mlp.down_proj.weight")] = mat(64, 64);
      t[n("input_layernorm.weight")] = vec(64), t[n("post_attention_layernorm.weight")] = vec(64);
      const Checkpoint wide = Checkpoint::from_tensors(c, t, "head_dim 512");
      auto contexts = tpkit::gpu::make_contexts(1);
      std::string error;
      tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<tpkit::gpu::DeviceMockBackend>&) {
        try {
          EngineOptions o;
          o.num_kv_blocks = 4;
          TypedRankModel<float, tpkit::gpu::DeviceMockBackend, CudaOps> model(CudaOps(*contexts[0]), wide, {0, 1}, o,
                                                                              Range{0, 1}, 0);
        } catch (const Error& e) {
          error = e.what();
        }
      });
      expect(error.find("attention: tpkit's GPU kernels do not take head_dim 512") != std::string::npos,
             "head_dim 512 is refused at load, by name (got: " + error + ")");
    }
    bool refused = false;
    try {
      GpuOptions gpu;
      gpu.gpu_memory_utilization = 1e-6;
      CudaEngine engine(kBin, {}, gpu);
    } catch (const Error& e) {
      refused = std::string(e.what()).find("leaves no room for the KV cache") != std::string::npos;
    }
    expect(refused, "a gpu_memory_utilization too small for the KV cache is refused by name");
    refused = false;
    try {
      GpuOptions gpu;
      gpu.device = 4096;
      CudaEngine engine(kBin, {}, gpu);
    } catch (const Error& e) {
      refused = std::string(e.what()).find("gpu 4096 does not exist") != std::string::npos;
    }
    expect(refused, "a device that does not exist is refused by name");
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    ++failures;
  }
  std::printf("CUDA engine: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
