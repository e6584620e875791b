// GPU benchmarks of issue 5, in one run, against the machine's own limits measured first:
//   1. limits: device-to-device copy bandwidth (bytes read + written per second, 1 GiB, best of
//      10) and a large bf16 GEMM through cuBLASLt (8192^3, TFLOP/s);
//   2. paged decode attention, head_dim 128, 32 query heads, group sizes 4 and 8, batch 1..256
//      x context 1k..32k: KV bytes read per second as a fraction of the copy bandwidth;
//   3. the linear layers of Llama-3-8B at batch 1 and 16 (CudaOps::linear): weight bytes per
//      second as a fraction of the copy bandwidth;
//   4. decode of a random-weight Llama-3-8B-shaped bf16 model (TransformerModel<bfloat16,
//      CudaOps>, TP 1) at batch 1, 32 and 128, each step launched eagerly and replayed from a
//      CUDA graph (StepRunner): tokens/s, and the fraction of the weight-streaming
//      limit (copy bandwidth / weight bytes) at batch 1;
//   5. sampling (tpkit/kernels/sampling.cuh) of batch 1..128 rows of a 128256-token vocabulary with
//      top-k 50 and top-p 0.9, next to the row argmax of the same logits: time per step and the
//      logit bytes read once per second as a fraction of the copy bandwidth.
// Times are CUDA-event medians over repeated launches after a warm-up.
//   bench_gpu [--skip-model]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <tpkit/engine/step_runner.hpp>
#include <tpkit/gpu/cuda_ops.cuh>
#include <tpkit/gpu/device_mock.cuh>
#include <tpkit/kernels/sampling.cuh>
#include <tpkit/model/transformer.hpp>

using namespace tpkit;

namespace {
// Median seconds of `reps` runs of fn on `stream`, after `warmup` runs.
template <class F>
double time_median(cudaStream_t stream, int reps, F&& fn, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms * 1e-3);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fill_random(bfloat16* d, std::size_t n, std::uint64_t seed) {
  std::vector<bfloat16> h(std::min<std::size_t>(n, std::size_t(1) << 24));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto& v : h) v = from_float<bfloat16>(normal(rng));
  for (std::size_t at = 0; at < n; at += h.size())
    tpkit::gpu::check_cuda(
        cudaMemcpy(d + at, h.data(), std::min(h.size(), n - at) * sizeof(bfloat16), cudaMemcpyHostToDevice), "fill");
}

double copy_bandwidth(tpkit::gpu::CudaContext& c) {
  const std::size_t bytes = std::size_t(1) << 30;
  tpkit::gpu::DeviceBuffer<unsigned char> a(bytes), b(bytes);
  cudaMemset(a.data(), 1, bytes);
  const double t = time_median(
      c.stream(), 10, [&] { cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, c.stream()); });
  return 2.0 * double(bytes) / t;  // read + write
}

double gemm_flops(tpkit::gpu::CudaContext& c) {
  const std::int64_t n = 8192;
  tpkit::gpu::DeviceBuffer<bfloat16> x(std::size_t(n * n)), w(std::size_t(n * n)), y(std::size_t(n * n));
  fill_random(x.data(), x.size(), 1), fill_random(w.data(), w.size(), 2);
  const double t = time_median(c.stream(), 10, [&] {
    tpkit::gpu::check_status(
        tpkit::gpu::linear<bfloat16, bfloat16>(c.lt(), c.gemm_plans(), x.data(), n, n, w.data(), n, n, n, nullptr,
                                               y.data(), n, c.gemm_workspace(), c.gemm_workspace_bytes(), c.stream()),
        "gemm");
  });
  return 2.0 * double(n) * double(n) * double(n) / t;
}

void attention(tpkit::gpu::CudaContext& c, double copy_bw) {
  std::printf("\n## Paged decode attention (bf16, head_dim 128, 32 query heads, page 16)\n\n");
  std::printf("| group | batch | context | KV read | time | bandwidth | of copy |\n|---|---|---|---|---|---|---|\n");
  const int hd = 128, q_heads = 32, page = 16;
  for (int group : {4, 8}) {
    const int kv_heads = q_heads / group;
    for (int batch : {1, 8, 32, 64, 128, 256})
      for (int context : {1024, 4096, 16384, 32768}) {
        const std::size_t kv_bytes = std::size_t(batch) * context * kv_heads * hd * 2 * sizeof(bfloat16);
        if (kv_bytes > (std::size_t(40) << 30)) continue;
        const int blocks_per_seq = context / page;
        const std::size_t slots = std::size_t(batch) * blocks_per_seq * page;
        tpkit::gpu::DeviceBuffer<bfloat16> k(slots * kv_heads * hd), v(slots * kv_heads * hd),
            q(std::size_t(batch) * q_heads * hd), out(std::size_t(batch) * q_heads * hd);
        fill_random(k.data(), k.size(), 3), fill_random(v.data(), v.size(), 4), fill_random(q.data(), q.size(), 5);
        std::vector<std::int32_t> tables(std::size_t(batch) * blocks_per_seq);
        std::iota(tables.begin(), tables.end(), 0);
        std::shuffle(tables.begin(), tables.end(), std::mt19937(6));
        std::vector<std::int32_t> lens(std::size_t(batch), context);
        tpkit::gpu::DeviceBuffer<std::int32_t> d_tables(tables.size()), d_lens(lens.size());
        cudaMemcpy(d_tables.data(), tables.data(), tables.size() * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(d_lens.data(), lens.data(), lens.size() * 4, cudaMemcpyHostToDevice);
        tpkit::gpu::PagedDecodePlan plan;
        tpkit::gpu::check_status(tpkit::gpu::plan_paged_decode(batch, q_heads, hd, context, &plan), "plan");
        tpkit::gpu::DeviceBuffer<unsigned char> ws(plan.workspace_bytes + 1);
        tpkit::gpu::PagedDecodeArgs a;
        a.q = q.data(), a.ldq = q_heads * hd, a.k_cache = k.data(), a.v_cache = v.data(), a.kv_heads = kv_heads;
        a.group_size = group, a.block_tables = d_tables.data(), a.max_blocks_per_seq = blocks_per_seq;
        a.context_lens = d_lens.data(), a.page_size = page, a.scale = 0.088f, a.out = out.data(), a.ldo = q_heads * hd;
        const double t = time_median(c.stream(), 10, [&] {
          tpkit::gpu::check_status(tpkit::gpu::paged_decode<bfloat16>(plan, a, ws.data(), c.stream()), "paged_decode");
        });
        std::printf("| %d | %d | %d | %.1f MB | %.1f us | %.0f GB/s | %.0f%% |\n", group, batch, context,
                    kv_bytes / 1e6, t * 1e6, kv_bytes / t / 1e9, 100.0 * kv_bytes / t / copy_bw);
      }
  }
}

void linears(tpkit::gpu::CudaContext& c, double copy_bw) {
  std::printf("\n## Linear layers of Llama-3-8B (bf16, cuBLASLt)\n\n");
  std::printf("| layer | N x K | batch | time | weight bandwidth | of copy |\n|---|---|---|---|---|---|\n");
  const struct {
    const char* name;
    std::int64_t n, k;
  } shapes[] = {{"qkv_proj", 6144, 4096},
                {"o_proj", 4096, 4096},
                {"gate_up_proj", 28672, 4096},
                {"down_proj", 4096, 14336},
                {"lm_head", 128256, 4096}};
  for (const auto& s : shapes)
    for (std::int64_t batch : {1, 16}) {
      tpkit::gpu::DeviceBuffer<bfloat16> w(std::size_t(s.n * s.k)), x(std::size_t(batch * s.k)),
          y(std::size_t(batch * s.n));
      fill_random(w.data(), w.size(), 7), fill_random(x.data(), x.size(), 8);
      const double t = time_median(c.stream(), 20, [&] {
        tpkit::gpu::check_status(tpkit::gpu::linear<bfloat16, bfloat16>(
                                     c.lt(), c.gemm_plans(), x.data(), s.k, batch, w.data(), s.k, s.n, s.k, nullptr,
                                     y.data(), s.n, c.gemm_workspace(), c.gemm_workspace_bytes(), c.stream()),
                                 "linear");
      });
      const double bytes = double(s.n * s.k) * 2;
      std::printf("| %s | %lld x %lld | %lld | %.1f us | %.0f GB/s | %.0f%% |\n", s.name, (long long)s.n,
                  (long long)s.k, (long long)batch, t * 1e6, bytes / t / 1e9, 100.0 * bytes / t / copy_bw);
    }
}

void sampling(tpkit::gpu::CudaContext& c, double copy_bw) {
  std::printf("\n## Sampling a 128256-token vocabulary (float logits; top-k 50, top-p 0.9)\n\n");
  std::printf("| batch | sample_rows | of copy | row_argmax | of copy |\n|---|---|---|---|---|\n");
  const std::int64_t vocab = 128256;
  for (int batch : {1, 8, 32, 128}) {
    std::vector<float> host(std::size_t(batch) * vocab);
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& x : host) x = normal(rng);
    tpkit::gpu::DeviceBuffer<float> logits(host.size()), best_value(static_cast<std::size_t>(batch));
    tpkit::gpu::DeviceBuffer<std::int64_t> best_index(static_cast<std::size_t>(batch));
    tpkit::gpu::check_cuda(cudaMemcpy(logits.data(), host.data(), host.size() * 4, cudaMemcpyHostToDevice), "logits");
    std::vector<tpkit::gpu::SamplingRow> rows(static_cast<std::size_t>(batch));
    for (std::size_t r = 0; r < rows.size(); ++r)
      rows[r].temperature = 0.8f, rows[r].top_k = 50, rows[r].top_p = 0.9f, rows[r].u = (double(r) + 0.5) / batch;
    tpkit::gpu::DeviceBuffer<tpkit::gpu::SamplingRow> d_rows(rows.size());
    tpkit::gpu::DeviceBuffer<std::int32_t> tokens(rows.size());
    tpkit::gpu::check_cuda(
        cudaMemcpy(d_rows.data(), rows.data(), rows.size() * sizeof(rows[0]), cudaMemcpyHostToDevice), "rows");
    tpkit::gpu::SamplingPlan plan;
    tpkit::gpu::check_status(tpkit::gpu::plan_sampling(batch, vocab, &plan), "sampling plan");
    tpkit::gpu::DeviceBuffer<unsigned char> ws(plan.workspace_bytes);
    const double t_sample = time_median(c.stream(), 20, [&] {
      tpkit::gpu::check_status(
          tpkit::gpu::sample_rows(plan, logits.data(), vocab, d_rows.data(), ws.data(), tokens.data(), c.stream()),
          "sample_rows");
    });
    const double t_argmax = time_median(c.stream(), 20, [&] {
      tpkit::gpu::check_status(
          tpkit::gpu::row_argmax(logits.data(), vocab, batch, vocab, best_value.data(), best_index.data(), c.stream()),
          "row_argmax");
    });
    const double bytes = double(batch) * vocab * 4;
    std::printf("| %d | %.1f us | %.0f%% | %.1f us | %.0f%% |\n", batch, t_sample * 1e6,
                100.0 * bytes / t_sample / copy_bw, t_argmax * 1e6, 100.0 * bytes / t_argmax / copy_bw);
  }
}

// A Llama-3-8B-shaped model whose every tensor is a view of one random host buffer.
void model_decode(tpkit::gpu::CudaContext& c, double copy_bw) {
  ModelConfig cfg;
  cfg.hidden_size = 4096, cfg.intermediate_size = 14336, cfg.num_layers = 32, cfg.num_heads = 32;
  cfg.num_kv_heads = 8, cfg.head_dim = 128, cfg.vocab_size = 128256, cfg.max_position = 8192;
  cfg.rope_theta = 500000.0;
  const std::size_t largest = std::size_t(cfg.vocab_size * cfg.hidden_size);
  std::vector<bfloat16> host(largest);
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (std::size_t i = 0; i < (std::size_t(1) << 20); ++i) host[i] = from_float<bfloat16>(normal(rng));
  for (std::size_t i = std::size_t(1) << 20; i < largest; ++i) host[i] = host[i % (std::size_t(1) << 20)];
  std::vector<float> ones(std::size_t(cfg.intermediate_size), 1.0f);
  std::map<std::string, RawTensorView> t;
  const auto mat = [&](std::int64_t r, std::int64_t k) { return RawTensorView(host.data(), DType::bf16, {r, k}); };
  const auto vec = [&](std::int64_t n) { return RawTensorView(ones.data(), DType::f32, {n}); };
  const std::int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  t["model.embed_tokens.weight"] = mat(cfg.vocab_size, H);
  t["lm_head.weight"] = mat(cfg.vocab_size, H);
  t["model.norm.weight"] = vec(H);
  for (std::int64_t l = 0; l < cfg.num_layers; ++l) {
    const auto n = [&](const char* s) { return Checkpoint::layer_name(l, s); };
    t[n("self_attn.q_proj.weight")] = mat(cfg.q_size(), H);
    t[n("self_attn.k_proj.weight")] = mat(cfg.kv_size(), H);
    t[n("self_attn.v_proj.weight")] = mat(cfg.kv_size(), H);
    t[n("self_attn.o_proj.weight")] = mat(H, cfg.q_size());
    t[n("mlp.gate_proj.weight")] = mat(I, H);
    t[n("mlp.up_proj.weight")] = mat(I, H);
    t[n("mlp.down_proj.weight")] = mat(H, I);
    t[n("input_layernorm.weight")] = vec(H);
    t[n("post_attention_layernorm.weight")] = vec(H);
  }
  const Checkpoint ckpt = Checkpoint::from_tensors(cfg, t, "random Llama-3-8B shape");
  const double weight_bytes = 2.0 * double(2 * cfg.vocab_size * H +
                                           cfg.num_layers * (2 * H * cfg.q_size() + 2 * H * cfg.kv_size() + 3 * H * I));
  std::printf("\n## Decode, random-weight Llama-3-8B shape (bf16, TP 1)\n\n");
  std::printf("weights %.2f GB; weight-streaming limit at batch 1: %.1f tok/s\n\n", weight_bytes / 1e9,
              copy_bw / weight_bytes);
  std::printf("| batch | launch | step time | tokens/s | of the weight-streaming limit |\n|---|---|---|---|---|\n");
  const int prompt = 16, steps = 32, max_batch = 128;
  const std::int64_t blocks_per_seq = (prompt + steps + 3 + 15) / 16;
  auto contexts = tpkit::gpu::make_contexts(1);
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<tpkit::gpu::DeviceMockBackend>& comm) {
    const CudaOps ops(*contexts[0]);
    TransformerModel<bfloat16, CudaOps> model(ops, ckpt, {0, 1}, max_batch * blocks_per_seq, 16);
    tpkit::gpu::DeviceBuffer<float> logits(std::size_t(max_batch) * std::size_t(cfg.vocab_size));
    std::vector<std::vector<std::int32_t>> tables(max_batch);
    for (int b = 0; b < max_batch; ++b)
      for (std::int64_t i = 0; i < blocks_per_seq; ++i)
        tables[std::size_t(b)].push_back(std::int32_t(b * blocks_per_seq + i));
    std::vector<std::int32_t> tokens(std::size_t(prompt + steps + 3), 1000);
    for (int batch : {1, 32, 128})
      for (bool graphs : {false, true}) {
        StepRunner<TransformerModel<bfloat16, CudaOps>> runner(model, graphs ? max_batch : 0);
        using Stage = PipelineStage<tpkit::gpu::DeviceMockBackend>;
        std::vector<StepSequence> step;
        for (int b = 0; b < batch; ++b) step.push_back({tokens.data(), prompt, 0, &tables[std::size_t(b)], true});
        runner.run(comm, step, TensorView<float>(logits.data(), {batch, cfg.vocab_size}, MemoryKind::device),
                   static_cast<Stage*>(nullptr));
        std::int64_t position = prompt;
        const auto decode = [&] {
          for (auto& s : step) s.count = 1, s.start_position = position;
          runner.run(comm, step, TensorView<float>(logits.data(), {batch, cfg.vocab_size}, MemoryKind::device),
                     static_cast<Stage*>(nullptr));
          ++position;
        };
        for (int i = 0; i < 3; ++i) decode();  // warm-up: GEMM plans, workspaces, the graph's capture
        ops.context().synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < steps; ++i) decode();
        ops.context().synchronize();
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
        const double rate = batch / t;
        std::printf(
            "| %d | %s | %.2f ms | %.1f | %s |\n", batch, graphs ? "CUDA graph" : "eager", t * 1e3, rate,
            batch == 1 ? (std::to_string(int(100.0 * rate / (copy_bw / weight_bytes) + 0.5)) + "%").c_str() : "-");
      }
  });
}
}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 77;
  }
  const bool skip_model = argc > 1 && std::strcmp(argv[1], "--skip-model") == 0;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  tpkit::gpu::CudaContext c(0);
  const double copy_bw = copy_bandwidth(c);
  const double flops = gemm_flops(c);
  std::printf("# tpkit GPU benchmarks on %s (%d SMs, %.0f GiB)\n\n", prop.name, prop.multiProcessorCount,
              prop.totalGlobalMem / double(1 << 30));
  std::printf("copy bandwidth (read + write): %.0f GB/s\nbf16 GEMM 8192^3 (cuBLASLt): %.0f TFLOP/s\n", copy_bw / 1e9,
              flops / 1e12);
  attention(c, copy_bw);
  linears(c, copy_bw);
  sampling(c, copy_bw);
  if (!skip_model) model_decode(c, copy_bw);
  return 0;
}
