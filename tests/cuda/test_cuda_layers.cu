// The parallel linear layers with CudaOps (cuBLASLt) on device memory, N ranks on one GPU over
// DeviceMockBackend, against the unsharded float64 product (tests/reference), with the bound
// test::linear_tolerance argues for the host layers: cuBLASLt accumulates in float in some
// order (the bound holds for any order) and rounds to T once per product, as the host does.
// Outputs are poisoned first. Also the embedding and the LM head's greedy argmax. Skipped
// (exit 77) without a GPU.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_test_support.hpp"
#include "support.hpp"
#include "tpkit/gpu/cuda_ops.cuh"
#include "tpkit/gpu/device_mock.cuh"
#include "tpkit/layers/embedding.hpp"
#include "tpkit/layers/linear.hpp"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;
using tpkit::gpu::DeviceMockBackend;

namespace {

template <class T>
std::vector<double> device_to_doubles(const T* d, std::size_t n) {
  std::vector<T> h(n);
  tpkit::gpu::check_cuda(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), "copy back");
  std::vector<double> out;
  for (T v : h) out.push_back(test::as_double(v));
  return out;
}

template <class T>
void column_and_row(int tp, int batch, bool with_bias) {
  ref::Rng rng(1000 + std::uint64_t(tp * 64 + batch));
  const int in = 64, mid = 172;  // the stories260K MLP shape: 172 splits unevenly
  const std::vector<float> w1 = rng.uniform_vector(std::size_t(mid) * in),
                           w2 = rng.uniform_vector(std::size_t(in) * mid);
  const std::vector<float> b1 = with_bias ? rng.uniform_vector(mid) : std::vector<float>{};
  const std::vector<float> x = rng.uniform_vector(std::size_t(batch) * in);
  const auto first = ref::linear(test::rounded<T>(x), test::rounded<T>(w1), test::rounded<T>(b1), batch, mid, in);
  auto contexts = tpkit::gpu::make_contexts(tp);
  std::vector<std::vector<double>> gathered(static_cast<std::size_t>(tp)), partial(static_cast<std::size_t>(tp));
  std::vector<Range> ranges(static_cast<std::size_t>(tp));
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const ShardSpec shard{comm.rank(), tp};
    const CudaOps ops(*contexts[std::size_t(comm.rank())]);
    ColumnParallelLinear<T, CudaOps> gather_layer(ops, test::raw(w1, mid, in),
                                                  b1.empty() ? RawTensorView{} : test::raw(b1, mid), shard, {true});
    ColumnParallelLinear<T, CudaOps> split_layer(ops, test::raw(w1, mid, in),
                                                 b1.empty() ? RawTensorView{} : test::raw(b1, mid), shard, {false});
    tpkit::gpu::DeviceBuffer<T> d_x(x.size()), d_full(std::size_t(batch * mid)),
        d_part(std::size_t(batch * split_layer.output_width()));
    const std::vector<T> xs = test::to_storage<T>(x);
    ops.upload(xs.data(), d_x.data(), xs.size());
    tpkit::gpu::check_cuda(cudaMemset(d_full.data(), 0xff, d_full.size() * sizeof(T)), "poison");
    tpkit::gpu::check_cuda(cudaMemset(d_part.data(), 0xff, d_part.size() * sizeof(T)), "poison");
    gather_layer.forward(comm, TensorView<const T>(d_x.data(), {batch, in}, MemoryKind::device),
                         TensorView<T>(d_full.data(), {batch, mid}, MemoryKind::device));
    split_layer.forward(comm, TensorView<const T>(d_x.data(), {batch, in}, MemoryKind::device),
                        TensorView<T>(d_part.data(), {batch, split_layer.output_width()}, MemoryKind::device));
    ops.context().synchronize();
    gathered[std::size_t(comm.rank())] = device_to_doubles(d_full.data(), d_full.size());
    partial[std::size_t(comm.rank())] = device_to_doubles(d_part.data(), d_part.size());
    ranges[std::size_t(comm.rank())] = split_layer.output_range();
  });
  const std::string what = std::string(test::type_name<T>()) + " tp " + std::to_string(tp) + " batch " +
                           std::to_string(batch) + (with_bias ? " bias" : "");
  for (int r = 0; r < tp; ++r) {
    expect(test::compare<T>(gathered[std::size_t(r)], first, in, tp, 1).violations == 0,
           "ColumnParallelLinear (gathered) " + what);
    std::vector<double> assembled = first.y;  // this rank's columns from its own output
    const Range range = ranges[std::size_t(r)];
    for (int b = 0; b < batch; ++b)
      for (std::int64_t n = range.begin; n < range.end; ++n)
        assembled[std::size_t(b * mid + n)] = partial[std::size_t(r)][std::size_t(b * range.size() + n - range.begin)];
    expect(test::compare<T>(assembled, first, in, tp, 1).violations == 0, "ColumnParallelLinear (split) " + what);
  }

  // Row-parallel: 172 -> 64 with the input split unevenly; all-reduced over the device mock.
  const std::vector<float> h = rng.uniform_vector(std::size_t(batch) * mid);
  const std::vector<float> b2 = with_bias ? rng.uniform_vector(in) : std::vector<float>{};
  const auto second = ref::linear(test::rounded<T>(h), test::rounded<T>(w2), test::rounded<T>(b2), batch, in, mid);
  std::vector<std::vector<double>> reduced(static_cast<std::size_t>(tp));
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const CudaOps ops(*contexts[std::size_t(comm.rank())]);
    RowParallelLinear<T, CudaOps> layer(ops, test::raw(w2, in, mid), b2.empty() ? RawTensorView{} : test::raw(b2, in),
                                        {comm.rank(), tp});
    const Range r = layer.input_range();
    std::vector<float> local;
    for (int b = 0; b < batch; ++b)
      for (std::int64_t k = r.begin; k < r.end; ++k) local.push_back(h[std::size_t(b * mid + k)]);
    const std::vector<T> ls = test::to_storage<T>(local);
    tpkit::gpu::DeviceBuffer<T> d_x(ls.size() + 1), d_y(std::size_t(batch * in));
    ops.upload(ls.data(), d_x.data(), ls.size());
    tpkit::gpu::check_cuda(cudaMemset(d_y.data(), 0xff, d_y.size() * sizeof(T)), "poison");
    layer.forward(comm, TensorView<const T>(d_x.data(), {batch, r.size()}, MemoryKind::device),
                  TensorView<T>(d_y.data(), {batch, in}, MemoryKind::device));
    ops.context().synchronize();
    reduced[std::size_t(comm.rank())] = device_to_doubles(d_y.data(), d_y.size());
  });
  for (int r = 0; r < tp; ++r) {
    expect(reduced[std::size_t(r)] == reduced[0], "RowParallelLinear ranks agree " + what);
    expect(test::compare<T>(reduced[std::size_t(r)], second, mid, tp, 3).violations == 0, "RowParallelLinear " + what);
  }
}

// The embedding gathers the right rows across vocabulary shards; the LM head's greedy argmax is
// the float64 argmax of the logits (inputs chosen with distinct maxima).
template <class T>
void embedding_and_head(int tp) {
  ref::Rng rng(77 + std::uint64_t(tp));
  const int vocab = 500, hidden = 64, batch = 5;
  const std::vector<float> table = rng.uniform_vector(std::size_t(vocab) * hidden);
  const std::vector<std::int32_t> ids = {0, 499, 123, 250, 7};
  const std::vector<double> rounded = test::rounded<T>(table);
  auto contexts = tpkit::gpu::make_contexts(tp);
  std::vector<std::vector<double>> rows(static_cast<std::size_t>(tp));
  std::vector<std::vector<std::int32_t>> tokens(static_cast<std::size_t>(tp), std::vector<std::int32_t>(batch));
  tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const CudaOps ops(*contexts[std::size_t(comm.rank())]);
    VocabParallelEmbedding<T, CudaOps> embedding(ops, test::raw(table, vocab, hidden), {comm.rank(), tp});
    auto head = ParallelLMHead<T, CudaOps>::tied_to(embedding);
    tpkit::gpu::DeviceBuffer<T> d_y(std::size_t(batch * hidden));
    embedding.forward(comm, ids.data(), batch, TensorView<T>(d_y.data(), {batch, hidden}, MemoryKind::device));
    head.greedy(comm, TensorView<const T>(d_y.data(), {batch, hidden}, MemoryKind::device),
                tokens[std::size_t(comm.rank())].data());
    ops.context().synchronize();
    rows[std::size_t(comm.rank())] = device_to_doubles(d_y.data(), d_y.size());
  });
  for (int r = 0; r < tp; ++r) {
    bool same = true;
    for (int b = 0; b < batch; ++b)
      for (int c = 0; c < hidden; ++c)
        same &=
            rows[std::size_t(r)][std::size_t(b * hidden + c)] == rounded[std::size_t(ids[std::size_t(b)] * hidden + c)];
    expect(same, std::string("embedding rows ") + test::type_name<T>() + " tp " + std::to_string(tp));
    for (int b = 0; b < batch; ++b) {
      // Reference: argmax over the vocabulary of row . table[v] in float64.
      int best = 0;
      double best_value = -1e300;
      for (int v = 0; v < vocab; ++v) {
        double s = 0;
        for (int c = 0; c < hidden; ++c)
          s += rounded[std::size_t(ids[std::size_t(b)] * hidden + c)] * rounded[std::size_t(v * hidden + c)];
        if (s > best_value) best_value = s, best = v;
      }
      expect(tokens[std::size_t(r)][std::size_t(b)] == best,
             std::string("LM head greedy ") + test::type_name<T>() + " tp " + std::to_string(tp));
    }
  }
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  try {
    for (int tp : {1, 2, 3, 4, 8})
      for (int batch : {1, 7, 64}) {
        column_and_row<float>(tp, batch, batch == 7);
        column_and_row<bfloat16>(tp, batch, batch != 1);
        column_and_row<tpkit::half>(tp, batch, false);
      }
    for (int tp : {1, 2, 4}) embedding_and_head<float>(tp), embedding_and_head<bfloat16>(tp);
    // A misuse is an exception naming the problem, not a crash: host memory into a device layer.
    auto contexts = tpkit::gpu::make_contexts(1);
    bool refused = false;
    tpkit::gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
      const std::vector<float> w(16, 1.0f);
      ColumnParallelLinear<float, CudaOps> layer(CudaOps(*contexts[0]), test::raw(w, 4, 4), {}, {0, 1});
      std::vector<float> x(4), y(4);
      try {
        layer.forward(comm, TensorView<const float>(x.data(), {1, 4}), TensorView<float>(y.data(), {1, 4}));
      } catch (const Error& e) {
        refused = std::string(e.what()).find("host memory but the layer runs on device") != std::string::npos;
      }
    });
    expect(refused, "host tensors given to a CudaOps layer are refused by name");
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    ++failures;
  }
  std::printf("CUDA layers: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
