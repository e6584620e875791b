// tpkit/gpu/cuda_ops.cuh: CudaOps, the execution policy that runs tpkit's layers and model on
// a GPU. It has the members of HostOps (tpkit/ops/host_ops.hpp) over device memory:
// Layer<T, CudaOps> and TransformerModel<T, CudaOps> are the host code unchanged, with weights,
// activations and the KV cache in device memory.
//
// A CudaOps is a handle to a CudaContext (tpkit/gpu/context.cuh): every call launches on that
// context's stream and returns without waiting, except where a result comes back to the host
// (row_argmax, sample, download) or host memory is read after the call (load_block). Launcher
// Status codes and CUDA errors become tpkit::Error here (the layer error layer).
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "tpkit/core/tensor.hpp"
#include "tpkit/gpu/context.cuh"
#include "tpkit/kernels/fused_kernels.cuh"
#include "tpkit/kernels/gemm.cuh"
#include "tpkit/kernels/paged_attention.cuh"
#include "tpkit/kernels/sampling.cuh"
#include "tpkit/ops/host_ops.hpp"
#include "tpkit/ops/step.hpp"
#include "tpkit/parallel/shard.hpp"
#include "tpkit/sampling/sampler.hpp"

namespace tpkit {

class CudaOps {
 public:
  static constexpr MemoryKind memory = MemoryKind::device;
  template <class T>
  using Buffer = gpu::DeviceBuffer<T>;

  // A handle without a context: every call throws (layers built without one fail at once).
  CudaOps() = default;
  explicit CudaOps(gpu::CudaContext& context) : context_(&context) {}

  gpu::CudaContext& context() const {
    if (!context_) throw Error("CudaOps has no CUDA context: construct it as CudaOps(context)");
    return *context_;
  }
  cudaStream_t stream() const { return context().stream(); }

  // Converts on the host (load_host_block reads only the block), then copies it up.
  template <class T>
  void load_block(const RawTensorView& src, Range rows, Range cols, T* dst, std::int64_t dst_ld) const {
    std::vector<T> staged(std::size_t(rows.size() * cols.size()));
    load_host_block(src, rows, cols, staged.data(), cols.size());
    gpu::check_cuda(cudaMemcpy2DAsync(dst, std::size_t(dst_ld) * sizeof(T), staged.data(),
                                      std::size_t(cols.size()) * sizeof(T), std::size_t(cols.size()) * sizeof(T),
                                      std::size_t(rows.size()), cudaMemcpyHostToDevice, stream()),
                    "loading weights to the device");
    context().synchronize("loading weights to the device");  // `staged` is freed on return
  }

  template <class T>
  void fill_zero(T* dst, std::size_t count) const {
    gpu::check_cuda(cudaMemsetAsync(dst, 0, count * sizeof(T), stream()), "cudaMemsetAsync");
  }
  template <class T>
  void copy(const T* src, T* dst, std::size_t count) const {
    gpu::check_cuda(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToDevice, stream()), "device copy");
  }
  // To host memory; waits for the copy.
  template <class T>
  void download(const T* src, T* host, std::size_t count) const {
    gpu::check_cuda(cudaMemcpyAsync(host, src, count * sizeof(T), cudaMemcpyDeviceToHost, stream()), "download");
    context().synchronize("download");
  }
  // From pageable host memory: the runtime stages it before returning, so `host` may be reused.
  template <class T>
  void upload(const T* host, T* dst, std::size_t count) const {
    gpu::check_cuda(cudaMemcpyAsync(dst, host, count * sizeof(T), cudaMemcpyHostToDevice, stream()), "upload");
  }

  template <class T, class Out>
  void linear(const T* x, std::int64_t ldx, std::int64_t batch, const T* w, std::int64_t ldw, std::int64_t N,
              std::int64_t K, const T* bias, Out* y, std::int64_t ldy) const {
    TPKIT_REQUIRE((std::is_same_v<Out, T> || bias == nullptr),
                  "a linear layer with float output from 16-bit weights takes no bias");
    gpu::CudaContext& c = context();
    gpu::check_status(gpu::linear<T, Out>(c.lt(), c.gemm_plans(), x, ldx, batch, w, ldw, N, K, bias, y, ldy,
                                          c.gemm_workspace(), c.gemm_workspace_bytes(), c.stream()),
                      "cuBLASLt linear");
  }

  template <class T>
  void add_bias(T* y, std::int64_t ldy, std::int64_t batch, const T* bias, std::int64_t N) const {
    gpu::check_status(gpu::add_bias(y, ldy, batch, bias, N, stream()), "add_bias");
  }
  template <class T>
  void rms_norm(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols, const float* weight, float eps,
                T* y, std::int64_t ldy) const {
    gpu::check_status(gpu::rms_norm(x, ldx, rows, cols, weight, eps, y, ldy, stream()), "rms_norm");
  }
  template <class T>
  void rope(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim, const float* cos,
            const float* sin, bool interleaved) const {
    gpu::check_status(gpu::rope(x, ld, rows, heads, head_dim, cos, sin, interleaved, stream()), "rope");
  }
  template <class T>
  void silu_and_mul(const T* gate_up, std::int64_t rows, std::int64_t n, T* out) const {
    gpu::check_status(gpu::silu_and_mul(gate_up, rows, n, out, stream()), "silu_and_mul");
  }
  template <class T>
  void add(T* x, const T* y, std::int64_t n) const {
    gpu::check_status(gpu::add(x, y, n, stream()), "add");
  }

  // ids are host memory (checked by the embedding layer); they go up through staging.
  template <class T>
  void gather_rows(const T* table, std::int64_t first_id, std::int64_t rows, std::int64_t width,
                   const std::int32_t* ids, std::int64_t count, T* out, std::int64_t ldo) const {
    if (count == 0) return;
    std::int32_t* d_ids = context().staging<std::int32_t>(std::size_t(count));
    upload(ids, d_ids, std::size_t(count));
    gpu::check_status(gpu::embedding_lookup(d_ids, count, table, first_id, rows, width, out, ldo, stream()),
                      "embedding lookup");
  }

  // out[i] = row rows[i] of x (width elements), for i < count (HostOps::gather_rows_at). rows is
  // host memory; it goes up through staging slot 0, so it may be reused when the call returns.
  template <class T>
  void gather_rows_at(const T* x, std::int64_t ldx, std::int64_t width, const std::int32_t* rows, std::int64_t count,
                      T* out, std::int64_t ldo) const {
    if (count <= 0)  // nothing to stage; the launcher refuses a negative count
      return gpu::check_status(gpu::gather_rows_at(x, ldx, width, nullptr, count, out, ldo, stream()),
                               "gather_rows_at");
    gpu::CudaContext& c = context();
    std::int32_t* d_rows = c.staging<std::int32_t>(std::size_t(count), 0);
    upload(rows, d_rows, std::size_t(count));
    gpu::check_status(gpu::gather_rows_at(x, ldx, width, d_rows, count, out, ldo, c.stream()), "gather_rows_at");
  }

  // y[rows[i]] += weights[i] * src[i] (weight 1 when weights is null), in float and rounded once
  // per element, for i < count (HostOps::scatter_add_rows). rows and weights are host memory,
  // staged in slots 0 and 1 (so the two do not overwrite each other); the rows of one call are
  // distinct. Calls apply in stream order, so a row may repeat across calls.
  template <class T>
  void scatter_add_rows(const T* src, std::int64_t lds, std::int64_t width, const std::int32_t* rows,
                        const float* weights, std::int64_t count, T* y, std::int64_t ldy) const {
    if (count <= 0)
      return gpu::check_status(gpu::scatter_add_rows(src, lds, width, nullptr, nullptr, count, y, ldy, stream()),
                               "scatter_add_rows");
    gpu::CudaContext& c = context();
    std::int32_t* d_rows = c.staging<std::int32_t>(std::size_t(count), 0);
    upload(rows, d_rows, std::size_t(count));
    float* d_weights = nullptr;
    if (weights) {
      d_weights = c.staging<float>(std::size_t(count), 1);
      upload(weights, d_weights, std::size_t(count));
    }
    gpu::check_status(gpu::scatter_add_rows(src, lds, width, d_rows, d_weights, count, y, ldy, c.stream()),
                      "scatter_add_rows");
  }

  // Per row: the largest value and its lowest index, returned to host memory (waits).
  template <class V>
  void row_argmax(const V* values, std::int64_t ld, std::int64_t batch, std::int64_t N, float* best_value,
                  std::int64_t* best_index) const {
    if (batch == 0) return;
    gpu::CudaContext& c = context();
    float* d_value = c.staging<float>(std::size_t(batch), 0);
    std::int64_t* d_index = c.staging<std::int64_t>(std::size_t(batch), 1);
    gpu::check_status(gpu::row_argmax(values, ld, batch, N, d_value, d_index, c.stream()), "row_argmax");
    gpu::check_cuda(
        cudaMemcpyAsync(best_value, d_value, std::size_t(batch) * sizeof(float), cudaMemcpyDeviceToHost, c.stream()),
        "row_argmax result");
    gpu::check_cuda(cudaMemcpyAsync(best_index, d_index, std::size_t(batch) * sizeof(std::int64_t),
                                    cudaMemcpyDeviceToHost, c.stream()),
                    "row_argmax result");
    c.synchronize("row_argmax");
  }

  // tokens[r] (host memory) = a token sampled on the device from row r of `logits` under
  // requests[r]: the draws are taken on the host, as HostOps takes them, and only the tokens
  // come back. A step where every row is greedy takes the row argmax instead of the sort.
  struct SamplingState {
    gpu::SamplingPlan plan;
    Buffer<unsigned char> workspace;
    Buffer<gpu::SamplingRow> rows;
    Buffer<std::int32_t> tokens;
    std::vector<gpu::SamplingRow> host_rows;
    std::vector<float> best_value;
    std::vector<std::int64_t> best_index;
  };
  void sample(SamplingState& s, const float* logits, std::int64_t rows, std::int64_t vocab,
              const SampleRequest* requests, std::int32_t* tokens) const {
    if (rows == 0) return;
    bool all_greedy = true;
    s.host_rows.resize(std::size_t(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
      const SamplingRule& p = *requests[r].rule;
      gpu::SamplingRow& row = s.host_rows[std::size_t(r)];
      row.temperature = p.temperature, row.top_k = p.top_k, row.top_p = p.top_p, row.min_p = p.min_p;
      row.u = p.greedy() ? 0.0 : uniform_draw(*requests[r].rng);
      all_greedy &= p.greedy();
    }
    if (all_greedy) {
      s.best_value.resize(std::size_t(rows)), s.best_index.resize(std::size_t(rows));
      row_argmax(logits, vocab, rows, vocab, s.best_value.data(), s.best_index.data());
      for (std::int64_t r = 0; r < rows; ++r) tokens[r] = std::int32_t(s.best_index[std::size_t(r)]);
      return;
    }
    if (s.plan.rows != rows || s.plan.vocab != vocab) {
      gpu::check_status(gpu::plan_sampling(int(rows), vocab, &s.plan), "sampling plan");
      s.workspace.reserve_at_least(s.plan.workspace_bytes);
    }
    s.rows.reserve_at_least(std::size_t(rows));
    s.tokens.reserve_at_least(std::size_t(rows));
    upload(s.host_rows.data(), s.rows.data(), std::size_t(rows));
    gpu::check_status(
        gpu::sample_rows(s.plan, logits, vocab, s.rows.data(), s.workspace.data(), s.tokens.data(), stream()),
        "sampling");
    download(s.tokens.data(), tokens, std::size_t(rows));
  }

  // One step's attention metadata on the device: the K/V slot of every row, the block tables,
  // and either decode lengths (every sequence brings one token) or prefill tiles. It is packed on
  // the host into a pinned buffer and uploaded in one copy; two pinned buffers take turns, each
  // refilled only once its previous copy has run. A decode step's attention plan is made here,
  // once for all the layers.
  struct StepState {
    std::int64_t rows = 0;
    int num_seqs = 0, max_blocks = 0;
    bool decode = false;  // one row per sequence: the flash-decoding kernel
    std::int64_t max_span = 0;
    int num_tiles = 0;
    gpu::PagedDecodePlan plan;  // decode steps
    const std::int64_t* slots = nullptr;
    const std::int32_t *block_tables = nullptr, *context_lens = nullptr;
    const gpu::PrefillTile* tiles = nullptr;
    void* workspace = nullptr;       // the context's attention workspace
    Buffer<unsigned char> metadata;  // slots | block tables | context lengths or tiles
    gpu::PinnedBuffer staging[2];
    gpu::Event uploaded[2];
    int next_staging = 0;
    std::vector<std::int64_t> first_row, count, start;
    std::vector<gpu::PrefillTile> host_tiles;

    // The device buffers a captured step reads (see run_graph).
    void append_addresses(std::vector<const void*>& out) const {
      out.push_back(metadata.data());
      out.push_back(workspace);
    }
  };

  template <class Shape>
  void prepare_step(StepState& s, const StepLayout& layout, const Shape& shape) const {
    s.rows = std::int64_t(layout.slots.size());
    s.num_seqs = int(layout.sequences.size());
    s.max_blocks = 1;
    s.decode = true;
    s.max_span = 0;
    for (const StepLayout::Sequence& q : layout.sequences) {
      s.max_blocks = std::max(s.max_blocks, int(q.blocks->size()));
      s.decode &= q.count == 1;
      s.max_span = std::max(s.max_span, q.start_position + q.count);
    }
    if (layout.table_width > 0) {  // a fixed shape: the same plan and arguments for every such step
      TPKIT_REQUIRE(layout.table_width >= s.max_blocks, "a step's block tables are wider than its table_width");
      s.max_blocks = int(layout.table_width);
      s.max_span = layout.table_width * shape.block_size;
    }
    if (s.decode) {
      TPKIT_REQUIRE(layout.q_heads >= 1, "a step layout must say how many query heads its attention runs");
      gpu::check_status(gpu::plan_paged_decode(s.num_seqs, layout.q_heads, int(shape.head_dim), s.max_span, &s.plan),
                        "paged decode plan");
      s.workspace = context().attention_workspace(s.plan.workspace_bytes);
    } else {
      s.first_row.clear(), s.count.clear(), s.start.clear();
      for (const StepLayout::Sequence& q : layout.sequences)
        s.first_row.push_back(q.first_row), s.count.push_back(q.count), s.start.push_back(q.start_position);
      gpu::check_status(gpu::make_prefill_tiles(int(shape.head_dim), s.num_seqs, s.first_row.data(), s.count.data(),
                                                s.start.data(), s.host_tiles),
                        "prefill tiles");
      s.num_tiles = int(s.host_tiles.size());
    }
    // Pack: [slots: int64 x rows] [tables: int32 x seqs x max_blocks] [lengths: int32 x seqs, or
    // tiles], each part 256-byte aligned.
    const auto aligned = [](std::size_t n) { return (n + 255) / 256 * 256; };
    const std::size_t slots_bytes = std::size_t(s.rows) * sizeof(std::int64_t);
    const std::size_t tables_at = aligned(slots_bytes);
    const std::size_t tables_bytes = std::size_t(s.num_seqs) * std::size_t(s.max_blocks) * sizeof(std::int32_t);
    const std::size_t third_at = aligned(tables_at + tables_bytes);
    const std::size_t third_bytes =
        s.decode ? std::size_t(s.num_seqs) * sizeof(std::int32_t) : s.host_tiles.size() * sizeof(gpu::PrefillTile);
    const std::size_t total = std::max<std::size_t>(third_at + third_bytes, 1);
    const int k = s.next_staging;
    s.next_staging ^= 1;
    s.uploaded[k].synchronize("waiting for an earlier step's metadata upload");  // before refilling its buffer
    s.staging[k].reserve_at_least(total);
    unsigned char* host = s.staging[k].data();
    std::memcpy(host, layout.slots.data(), slots_bytes);
    auto* tables = reinterpret_cast<std::int32_t*>(host + tables_at);
    std::fill(tables, tables + std::size_t(s.num_seqs) * std::size_t(s.max_blocks), 0);
    for (int i = 0; i < s.num_seqs; ++i) {
      const auto& blocks = *layout.sequences[std::size_t(i)].blocks;
      std::copy(blocks.begin(), blocks.end(), tables + std::ptrdiff_t(i) * s.max_blocks);
    }
    if (s.decode) {
      auto* lens = reinterpret_cast<std::int32_t*>(host + third_at);
      for (int i = 0; i < s.num_seqs; ++i) lens[i] = std::int32_t(layout.sequences[std::size_t(i)].start_position + 1);
    } else if (third_bytes) {
      std::memcpy(host + third_at, s.host_tiles.data(), third_bytes);
    }
    s.metadata.reserve_at_least(total);
    gpu::check_cuda(cudaMemcpyAsync(s.metadata.data(), host, total, cudaMemcpyHostToDevice, stream()),
                    "uploading a step's attention metadata");
    s.uploaded[k].record(stream());
    unsigned char* device = s.metadata.data();
    s.slots = reinterpret_cast<const std::int64_t*>(device);
    s.block_tables = reinterpret_cast<const std::int32_t*>(device + tables_at);
    s.context_lens = s.decode ? reinterpret_cast<const std::int32_t*>(device + third_at) : nullptr;
    s.tiles = s.decode ? nullptr : reinterpret_cast<const gpu::PrefillTile*>(device + third_at);
  }

  // can_implement for a linear layer's local shape at `batch` rows: cuBLASLt has an algorithm
  // for it (dense strides, 256-byte aligned buffers, as the model's are) within the context's
  // workspace. Throws naming `layer` and the shape.
  template <class T, class Out>
  void check_linear(const std::string& layer, std::int64_t batch, std::int64_t N, std::int64_t K, bool bias) const {
    gpu::CudaContext& c = context();
    const gpu::GemmPlanCache::Plan* plan = nullptr;
    const gpu::Status s = gpu::plan_linear<T, Out>(c.lt(), c.gemm_plans(), batch, N, K, K, K, N, bias, 256, 256, 256,
                                                   256, c.gemm_workspace_bytes(), &plan);
    if (s != gpu::Status::ok)
      TPKIT_THROW(Error, layer, ": cuBLASLt has no algorithm for its product of [", batch, " x ", K, "] by [", N, " x ",
                  K, "]^T (", dtype_name(dtype_of_v<T>), " weights, ", dtype_name(dtype_of_v<Out>), " output",
                  bias ? ", bias" : "", "): ", gpu::status_name(s));
  }

  // Before a model's first step (at load): every linear layer's shard shape has a cuBLASLt
  // algorithm at 1, max_seqs and max_tokens rows (with float output where the layer writes
  // float: the LM head, a MoE router and shared-expert gate), the attention kernels take this
  // rank's heads (can_implement), and the attention workspace for max_seqs sequences of the
  // full context is allocated now, so that no step fails or allocates later. Errors name the
  // layer and the shape.
  template <class Model>
  void check_model(const Model& model, std::int64_t max_tokens, std::int64_t max_seqs) const {
    using T = typename Model::value_type;
    // The row counts steps use: every power of two up to max_seqs (decode steps padded to a
    // graph's shape), max_seqs, and max_tokens (the longest prefill step). A MoE expert's
    // products run at however many of the step's rows were routed to it (1 to max_tokens); an
    // algorithm found at both ends of that range is taken to exist between them, as for the
    // prefill steps shorter than max_tokens.
    std::vector<std::int64_t> batches = {max_seqs, max_tokens};
    for (std::int64_t b = 1; b < max_seqs; b *= 2) batches.push_back(b);
    // Float output no longer means one row per sequence (a MoE router scores every row of a
    // step), so every product is checked at every count, the LM head at max_tokens too: more
    // than it runs, and a few cached heuristic queries.
    model.for_each_linear([&](const std::string& name, std::int64_t N, std::int64_t K, bool bias, bool float_output) {
      for (std::int64_t batch : batches) {
        if (float_output)
          check_linear<T, float>(name, batch, N, K, bias);
        else
          check_linear<T, T>(name, batch, N, K, bias);
      }
    });
    const HeadPartition& heads = model.heads();
    if (heads.local_q_heads() == 0) return;  // a stage without layers
    const auto& c = model.config();
    const int block_size = int(model.cache().shape().block_size);
    const gpu::Status attention = gpu::can_implement_paged_attention(
        int(c.head_dim), heads.local_q_heads(), heads.local_kv_heads(), heads.group_size, block_size);
    if (attention != gpu::Status::ok)
      TPKIT_THROW(Error, "attention: tpkit's GPU kernels do not take head_dim ", c.head_dim, " with ",
                  heads.local_q_heads(), " query heads on this rank, ", heads.group_size, " per KV head (page size ",
                  block_size, "): ", gpu::status_name(attention), "; they take head_dim up to 256");
    // The longest span a step attends to: a full-length sequence, or a graph step's block table
    // padded to whole blocks.
    const std::int64_t longest = (c.max_position + block_size - 1) / block_size * block_size;
    gpu::PagedDecodePlan largest;
    gpu::check_status(gpu::plan_paged_decode(int(max_seqs), heads.local_q_heads(), int(c.head_dim), longest, &largest),
                      "paged decode plan for the largest step");
    context().attention_workspace(largest.workspace_bytes);
  }

  // Decode steps replayed from CUDA graphs (tpkit/engine/step_runner.hpp): one graph per
  // step shape (key). The first step of a shape runs eagerly, which sizes every buffer it uses
  // and loads its kernels; the second is captured and replayed, and later ones are replayed.
  // A graph is captured again when a buffer it reads has moved (`addresses` differ).
  class StepGraphs {
   public:
    std::int64_t captures = 0, replays = 0;
    std::string failure;  // the last shape the runtime could not capture, and why ("": none)

   private:
    friend class CudaOps;
    struct DestroyExec {
      void operator()(cudaGraphExec_t exec) const { cudaGraphExecDestroy(exec); }
    };
    struct Graph {
      std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, DestroyExec> exec;
      std::vector<const void*> addresses;  // the buffers it reads, as captured
      bool warmed = false;                 // ran eagerly once
      bool eager_only = false;             // the runtime could not capture it
    };
    std::map<std::int64_t, Graph> graphs_;
  };

  template <class Body>
  void run_graph(StepGraphs& graphs, std::int64_t key, const std::vector<const void*>& addresses, Body&& body) const {
    StepGraphs::Graph& g = graphs.graphs_[key];
    if (g.exec && g.addresses != addresses) g.exec.reset();
    if (!g.warmed || g.eager_only) {
      body();
      g.warmed = true;
      return;
    }
    const cudaStream_t s = stream();
    if (!g.exec) {
      // Relaxed: the layers ask the runtime about pointers (the backends' memory checks), which
      // no mode needs to forbid; the body allocates nothing, as its eager run sized everything.
      gpu::check_cuda(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), "beginning a decode-step capture");
      try {
        body();
      } catch (...) {  // the body's own error (a failed launch, a collective): the step fails
        cudaGraph_t partial = nullptr;
        cudaStreamEndCapture(s, &partial);
        if (partial) cudaGraphDestroy(partial);
        cudaGetLastError();
        throw;
      }
      cudaGraph_t captured = nullptr;
      cudaError_t e = cudaStreamEndCapture(s, &captured);
      cudaGraphExec_t exec = nullptr;
      if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, captured, 0);
      if (captured) cudaGraphDestroy(captured);
      if (e != cudaSuccess) {
        // The runtime could not make a graph of this step (nothing it captured has run): this
        // shape runs eagerly from now on, and the reason is kept for diagnostics.
        cudaGetLastError();
        g.eager_only = true;
        graphs.failure = std::string("decode steps of shape ") + std::to_string(key >> 32) + " x " +
                         std::to_string(key & 0xffffffff) + " run eagerly: " + cudaGetErrorName(e) + ": " +
                         cudaGetErrorString(e);
        body();
        return;
      }
      g.exec.reset(exec);
      g.addresses = addresses;
      ++graphs.captures;
    }
    gpu::check_cuda(cudaGraphLaunch(g.exec.get(), s), "replaying a decode-step graph");
    ++graphs.replays;
  }

  template <class T, class Cache>
  void write_kv(Cache& cache, std::int64_t layer, const StepState& s, const T* k, const T* v, std::int64_t ld) const {
    const std::int64_t width = cache.shape().slot_elements();
    gpu::check_status(
        gpu::write_kv(k, v, ld, s.rows, s.slots, width, cache.key(layer, 0), cache.value(layer, 0), stream()),
        "write_kv");
  }

  template <class T, class Cache>
  void paged_attention(const Cache& cache, std::int64_t layer, const HeadPartition& heads, const T* q, std::int64_t ldq,
                       StepState& s, float scale, std::int64_t window, T* out, std::int64_t ldo) const {
    if (s.rows == 0) return;
    const int hd = int(cache.shape().head_dim);
    if (s.decode) {
      TPKIT_REQUIRE(s.plan.num_q_heads == heads.local_q_heads(), "the step was planned for ", s.plan.num_q_heads,
                    " query heads but attention runs ", heads.local_q_heads());
      gpu::PagedDecodeArgs a;
      a.q = q, a.ldq = ldq, a.k_cache = cache.key(layer, 0), a.v_cache = cache.value(layer, 0);
      a.kv_heads = heads.local_kv_heads(), a.q_head_begin = int(heads.q_heads.begin);
      a.kv_head_begin = int(heads.kv_heads.begin), a.group_size = heads.group_size;
      a.block_tables = s.block_tables, a.max_blocks_per_seq = s.max_blocks, a.context_lens = s.context_lens;
      a.page_size = int(cache.shape().block_size), a.scale = scale, a.window = int(window), a.out = out, a.ldo = ldo;
      gpu::check_status(gpu::paged_decode<T>(s.plan, a, s.workspace, stream()), "paged decode attention");
      return;
    }
    gpu::PagedPrefillArgs a;
    a.q = q, a.ldq = ldq, a.k_cache = cache.key(layer, 0), a.v_cache = cache.value(layer, 0);
    a.kv_heads = heads.local_kv_heads(), a.q_head_begin = int(heads.q_heads.begin);
    a.kv_head_begin = int(heads.kv_heads.begin), a.group_size = heads.group_size;
    a.block_tables = s.block_tables, a.max_blocks_per_seq = s.max_blocks, a.tiles = s.tiles;
    a.num_tiles = s.num_tiles, a.num_q_heads = heads.local_q_heads(), a.page_size = int(cache.shape().block_size);
    a.scale = scale, a.window = int(window), a.out = out, a.ldo = ldo;
    gpu::check_status(gpu::paged_prefill<T>(a, hd, stream()), "paged prefill attention");
  }

 private:
  gpu::CudaContext* context_ = nullptr;
};

}  // namespace tpkit
