// The mixture-of-experts layer on the GPU. Skipped (exit 77) without a GPU.
//
//   * CudaOps::gather_rows_at and scatter_add_rows against HostOps's members of the same name,
//     in float, half and bfloat16: repeated rows in a gather, a scatter with and without
//     weights, a row added to by two calls in a row, count 0, row strides wider than the rows,
//     and outputs poisoned the same way on both sides, so that padding and rows a call must not
//     touch are compared too. Both sides do the same float operations in the same order
//     (y + w * src: a product rounded, then a sum rounded; the device with __fmul_rn and
//     __fadd_rn, this file's host code with -ffp-contract=off) and convert with tpkit's own
//     to_float/from_float, so float is required bitwise; half and bfloat16 within one unit in
//     the last place of T (one rounding), all their contract promises.
//   * MoELayer<T, CudaOps> (float, bfloat16) against MoELayer<T, HostOps> on the same random
//     weights and tokens: the tp layout at one rank and all three layouts (tp, ep, ep-dispatch)
//     at 1 and 2 ranks over DeviceMockBackend (N ranks on one GPU) and the host MockBackend,
//     with top 2 and 3 of 6 experts, with and without Qwen2-MoE's shared expert. Tolerance:
//     tests/test_moe.cpp argues a bound B per output on |layer - float64 reference| that holds
//     for any float summation order (gamma_n bounds a sum in every order, and cuBLASLt computes
//     in float, CUBLAS_COMPUTE_32F, no TF32), so it holds for cuBLASLt's order as for the
//     host's; the reference and B are written again below. So the GPU's output is required
//     within B of the float64 reference, and within 2B of the host layer's (both within B of
//     the same value). Routing must agree exactly: every input routes decisively (the float64
//     probabilities at the top-k boundary differ by more than 1e-4, while the float logits of
//     the two sides differ by about 1e-6), so both choose the same experts, and the expert
//     statistics are required equal. The replicated outputs of the ranks are required bitwise
//     equal. (Not required on the GPU: the host's bitwise agreement of ep and ep-dispatch, which
//     needs a product's rows to round independently of how many rows it has; cuBLASLt may
//     pick a different algorithm for another row count.)
//
// TPKIT_CUDA_TEST_QUICK=1 (compute-sanitizer): fewer sizes and layer cases, every code path.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_test_support.hpp"
#include "reference/moe_reference.hpp"
#include "support.hpp"
#include "tpkit/comm/mock.hpp"
#include "tpkit/gpu/cuda_ops.cuh"
#include "tpkit/gpu/device_mock.cuh"
#include "tpkit/layers/moe.hpp"

using namespace tpkit;
using cuda_test::expect;
using cuda_test::failures;
using moe_ref::Problem, moe_ref::Reference, moe_ref::reference;
using tpkit::gpu::DeviceMockBackend;

namespace {

// ---------------------------------------------------------------------------------------------
// gather_rows_at and scatter_add_rows

template <class T>
std::vector<T> random_storage(ref::Rng& rng, std::size_t n, double scale = 1.0) {
  std::vector<T> v;
  for (float f : rng.uniform_vector(n, scale)) v.push_back(T(f));
  return v;
}

// The distance of a and b in units in the last place of T (adjacent values are 1 apart; +0 and
// -0 are 0 apart): 16-bit values mapped to integers in the order of the values they encode.
template <class T>
long ulps_apart(T a, T b) {
  std::uint16_t x, y;
  std::memcpy(&x, &a, 2), std::memcpy(&y, &b, 2);
  const auto ordered = [](std::uint16_t u) { return u & 0x8000 ? -long(u & 0x7fff) : long(u); };
  return std::labs(ordered(x) - ordered(y));
}

// Bitwise for float; within one unit in the last place for 16-bit types. Both vectors hold the
// same poison where nothing was written (NaN bit patterns compare by bits, not by value).
template <class T>
bool agree(const std::vector<T>& got, const std::vector<T>& want, std::size_t* not_bitwise) {
  if (got.size() != want.size()) return false;
  *not_bitwise = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) == 0) continue;
    ++*not_bitwise;
    if constexpr (std::is_same_v<T, float>) {
      return false;
    } else {
      const float g = to_float(got[i]), w = to_float(want[i]);
      if (g != g || w != w || ulps_apart(got[i], want[i]) > 1) return false;
    }
  }
  return true;
}

template <class T>
std::vector<T> download_all(const CudaOps& ops, const gpu::DeviceBuffer<T>& d) {
  std::vector<T> h(d.size());
  ops.download(d.data(), h.data(), h.size());
  return h;
}

template <class T>
void gather_and_scatter(const CudaOps& ops, std::int64_t width, std::uint64_t seed) {
  const std::string what = std::string(test::type_name<T>()) + ", width " + std::to_string(width);
  ref::Rng rng(seed);
  std::size_t not_bitwise = 0;

  // gather_rows_at: 37 source rows with 3 elements of padding; 10 rows out (one repeated, the
  // first and the last included) into rows with 5 elements of padding.
  const std::int64_t source_rows = 37, ldx = width + 3, ldo = width + 5;
  const std::vector<T> x = random_storage<T>(rng, std::size_t(source_rows * ldx));
  const std::vector<std::int32_t> rows = {5, 0, 36, 5, 17, 2, 30, 11, 36, 9};
  const std::int64_t count = std::int64_t(rows.size());
  std::vector<T> want(std::size_t(count * ldo));
  std::memset(want.data(), 0xff, want.size() * sizeof(T));
  HostOps().gather_rows_at(x.data(), ldx, width, rows.data(), count, want.data(), ldo);
  gpu::DeviceBuffer<T> d_x(x.size()), d_out(want.size());
  ops.upload(x.data(), d_x.data(), x.size());
  gpu::check_cuda(cudaMemsetAsync(d_out.data(), 0xff, d_out.size() * sizeof(T), ops.stream()), "poison");
  ops.gather_rows_at(d_x.data(), ldx, width, rows.data(), count, d_out.data(), ldo);
  ops.gather_rows_at(d_x.data(), ldx, width, static_cast<const std::int32_t*>(nullptr), 0, d_out.data(), ldo);
  expect(std::memcmp(download_all(ops, d_out).data(), want.data(), want.size() * sizeof(T)) == 0,
         "gather_rows_at equals HostOps's bitwise (padding untouched), " + what);

  // scatter_add_rows: 23 rows of y with 2 elements of padding (compared too: never written).
  // Call 1 adds 6 weighted rows, the first and the last of y among them; call 2 adds 4
  // unweighted rows, three of which call 1 added to (7, 3, 22); call 3 adds nothing. The
  // sources' rows have padding of their own.
  const std::int64_t y_rows = 23, ldy = width + 2, lds = width + 1;
  const std::vector<T> y0 = random_storage<T>(rng, std::size_t(y_rows * ldy), 2.0);
  const std::vector<std::int32_t> rows1 = {3, 11, 0, 22, 7, 16}, rows2 = {7, 3, 15, 22};
  const std::vector<float> weights1 = rng.uniform_vector(rows1.size(), 1.5);
  const std::vector<T> src1 = random_storage<T>(rng, rows1.size() * std::size_t(lds), 3.0);
  const std::vector<T> src2 = random_storage<T>(rng, rows2.size() * std::size_t(lds), 3.0);
  std::vector<T> y = y0;
  const HostOps host;
  host.scatter_add_rows(src1.data(), lds, width, rows1.data(), weights1.data(), std::int64_t(rows1.size()), y.data(),
                        ldy);
  host.scatter_add_rows(src2.data(), lds, width, rows2.data(), static_cast<const float*>(nullptr),
                        std::int64_t(rows2.size()), y.data(), ldy);
  gpu::DeviceBuffer<T> d_y(y0.size()), d_src1(src1.size()), d_src2(src2.size());
  ops.upload(y0.data(), d_y.data(), y0.size());
  ops.upload(src1.data(), d_src1.data(), src1.size());
  ops.upload(src2.data(), d_src2.data(), src2.size());
  ops.scatter_add_rows(d_src1.data(), lds, width, rows1.data(), weights1.data(), std::int64_t(rows1.size()), d_y.data(),
                       ldy);
  ops.scatter_add_rows(d_src2.data(), lds, width, rows2.data(), static_cast<const float*>(nullptr),
                       std::int64_t(rows2.size()), d_y.data(), ldy);
  ops.scatter_add_rows(d_src2.data(), lds, width, static_cast<const std::int32_t*>(nullptr),
                       static_cast<const float*>(nullptr), 0, d_y.data(), ldy);
  const std::vector<T> got = download_all(ops, d_y);
  expect(agree(got, y, &not_bitwise),
         "scatter_add_rows (weighted, then unweighted over repeated rows) equals HostOps's" +
             std::string(std::is_same_v<T, float> ? " bitwise" : " within one ulp") + ", " + what);
  if (not_bitwise) std::printf("note: %zu of %zu elements not bitwise, %s\n", not_bitwise, y.size(), what.c_str());
  // The test exercises something: row 7 (added to twice) changed.
  expect(std::memcmp(&y[std::size_t(7 * ldy)], &y0[std::size_t(7 * ldy)], std::size_t(width) * sizeof(T)) != 0,
         "scatter_add_rows changed row 7, " + what);
}

// The launchers return a status and never throw; CudaOps turns a refusal into tpkit::Error.
void bad_arguments(const CudaOps& ops) {
  float* p = nullptr;
  const std::int32_t row = 0;
  expect(gpu::gather_rows_at(p, 4, 8, &row, 1, p, 8, nullptr) == gpu::Status::invalid_argument,
         "gather_rows_at refuses ldx < width");
  expect(gpu::scatter_add_rows(p, 8, 8, &row, p, 1, p, 4, nullptr) == gpu::Status::invalid_argument,
         "scatter_add_rows refuses ldy < width");
  expect(gpu::scatter_add_rows(p, 8, 8, &row, p, -1, p, 8, nullptr) == gpu::Status::invalid_argument,
         "scatter_add_rows refuses a negative count");
  expect(gpu::gather_rows_at(p, 8, 8, static_cast<const std::int32_t*>(nullptr), 0, p, 8, nullptr) == gpu::Status::ok,
         "gather_rows_at of no rows is a no-op");
  bool thrown = false;
  try {
    ops.scatter_add_rows(p, 8, 8, &row, static_cast<const float*>(nullptr), -1, p, 8);
  } catch (const Error& e) {
    thrown = std::string(e.what()).find("scatter_add_rows failed: invalid argument") != std::string::npos;
  }
  expect(thrown, "CudaOps::scatter_add_rows turns a refused launch into tpkit::Error, by name");
}

// ---------------------------------------------------------------------------------------------
// MoELayer<T, CudaOps> against MoELayer<T, HostOps> and the float64 reference (tests/reference/moe_reference.hpp)

struct LayerRun {
  std::vector<std::vector<float>> y;  // per rank, widened
  std::vector<std::vector<std::int64_t>> counts;
};

// Two forward calls (the second reuses every workspace) on each rank; outputs poisoned first.
template <class T>
LayerRun run_host(const Problem& p, const std::vector<float>& x, int n, int ranks, MoELayout layout) {
  LayerRun out;
  out.y.resize(std::size_t(ranks)), out.counts.resize(std::size_t(ranks));
  run_mock_ranks(ranks, [&](Communicator<MockBackend>& comm) {
    MoELayer<T> layer(HostOps(), p.weights(), {p.top_k, p.normalize}, {comm.rank(), ranks}, {layout, {}});
    const std::vector<T> xs = test::to_storage<T>(x);
    std::vector<T> y(std::size_t(n * p.H), T(NAN));
    for (int repeat = 0; repeat < 2; ++repeat)
      layer.forward(comm, TensorView<const T>(xs.data(), {n, p.H}), TensorView<T>(y.data(), {n, p.H}));
    for (T v : y) out.y[std::size_t(comm.rank())].push_back(float(v));
    out.counts[std::size_t(comm.rank())] = layer.tokens_per_expert();
  });
  return out;
}

template <class T>
LayerRun run_gpu(std::vector<std::unique_ptr<gpu::CudaContext>>& contexts, const Problem& p,
                 const std::vector<float>& x, int n, int ranks, MoELayout layout) {
  LayerRun out;
  out.y.resize(std::size_t(ranks)), out.counts.resize(std::size_t(ranks));
  gpu::run_device_mock_ranks(contexts, [&](Communicator<DeviceMockBackend>& comm) {
    const CudaOps ops(*contexts[std::size_t(comm.rank())]);
    MoELayer<T, CudaOps> layer(ops, p.weights(), {p.top_k, p.normalize}, {comm.rank(), ranks}, {layout, {}});
    const std::vector<T> xs = test::to_storage<T>(x);
    gpu::DeviceBuffer<T> d_x(xs.size()), d_y(xs.size());
    ops.upload(xs.data(), d_x.data(), xs.size());
    gpu::check_cuda(cudaMemsetAsync(d_y.data(), 0xff, d_y.size() * sizeof(T), ops.stream()), "poison");
    for (int repeat = 0; repeat < 2; ++repeat)
      layer.forward(comm, TensorView<const T>(d_x.data(), {n, p.H}, MemoryKind::device),
                    TensorView<T>(d_y.data(), {n, p.H}, MemoryKind::device));
    std::vector<T> y(xs.size());
    ops.download(d_y.data(), y.data(), y.size());
    for (T v : y) out.y[std::size_t(comm.rank())].push_back(float(v));
    out.counts[std::size_t(comm.rank())] = layer.tokens_per_expert();
  });
  return out;
}

template <class T>
void layer_against_host(std::vector<std::unique_ptr<gpu::CudaContext>>& contexts, int top_k, bool shared, int n,
                        MoELayout layout) {
  const int ranks = int(contexts.size());
  const Problem p(6, top_k, 32, 24, shared ? 20 : 0, top_k == 2, 900 + std::uint64_t(top_k * 10 + shared));
  ref::Rng rng(77 + std::uint64_t(n));
  const std::vector<float> x = rng.uniform_vector(std::size_t(n * p.H));
  const std::string what = std::string(test::type_name<T>()) + " " + moe_layout_name(layout) + " at " +
                           std::to_string(ranks) + " ranks, top " + std::to_string(top_k) +
                           (shared ? " with a shared expert" : "") + ", " + std::to_string(n) + " tokens";
  const Reference<T> want = reference<T>(p, x, n, ranks);
  if (!(want.min_gap > 1e-4)) {
    expect(false, "the inputs route decisively (pick another seed): " + what);
    return;
  }
  const LayerRun host = run_host<T>(p, x, n, ranks, layout);
  const LayerRun dev = run_gpu<T>(contexts, p, x, n, ranks, layout);
  double worst_ref = 0, worst_host = 0;
  for (int r = 0; r < ranks; ++r) {
    const std::vector<float>& got = dev.y[std::size_t(r)];
    for (std::size_t i = 0; i < want.y.size(); ++i) {
      const double e_ref = std::fabs(double(got[i]) - want.y[i]) / want.bound[i];
      const double e_host = std::fabs(double(got[i]) - double(host.y[std::size_t(r)][i])) / (2 * want.bound[i]);
      worst_ref = e_ref == e_ref ? std::max(worst_ref, e_ref) : 1e300;  // NaN (unwritten) fails
      worst_host = e_host == e_host ? std::max(worst_host, e_host) : 1e300;
    }
    expect(std::memcmp(got.data(), dev.y[0].data(), got.size() * sizeof(float)) == 0,
           "the ranks' replicated outputs agree bitwise, " + what);
    std::vector<std::int64_t> doubled = want.counts;
    for (auto& c : doubled) c *= 2;  // two forward calls
    expect(dev.counts[std::size_t(r)] == doubled && dev.counts[std::size_t(r)] == host.counts[std::size_t(r)],
           "expert statistics equal the host layer's and the reference's, " + what);
  }
  expect(worst_ref <= 1.0,
         "within the bound B of the float64 reference (worst " + std::to_string(worst_ref) + " of B), " + what);
  expect(worst_host <= 1.0,
         "within 2B of MoELayer<T, HostOps> (worst " + std::to_string(worst_host) + " of 2B), " + what);
}

constexpr MoELayout kLayouts[] = {MoELayout::tensor_parallel, MoELayout::expert_parallel, MoELayout::expert_dispatch};

// Group size 1: the tp layout (and, in a full run, the expert layouts, which must give the same
// answer alone); group size 2: every layout. n = 1 leaves ep-dispatch's second rank no tokens.
template <class T>
void layers(std::vector<std::unique_ptr<gpu::CudaContext>>& one, std::vector<std::unique_ptr<gpu::CudaContext>>& two,
            bool quick_run) {
  for (int top_k : {2, 3})
    for (bool shared : {false, true})
      for (int n : {1, 9, 40}) {
        if (quick_run && (n != 9 || top_k != 2)) continue;
        for (MoELayout layout : kLayouts) {
          if (layout == MoELayout::tensor_parallel || !quick_run) layer_against_host<T>(one, top_k, shared, n, layout);
          layer_against_host<T>(two, top_k, shared, n, layout);
        }
      }
}

}  // namespace

int main() {
  if (!have_gpu()) return 77;
  try {
    auto contexts = gpu::make_contexts(1);
    const CudaOps ops(*contexts[0]);
    std::uint64_t seed = 4100;
    const std::vector<std::int64_t> widths =
        quick() ? std::vector<std::int64_t>{1, 300} : std::vector<std::int64_t>{1, 32, 255, 256, 300, 4096};
    for (std::int64_t width : widths) {
      gather_and_scatter<float>(ops, width, ++seed);
      gather_and_scatter<bfloat16>(ops, width, ++seed);
      gather_and_scatter<tpkit::half>(ops, width, ++seed);
    }
    bad_arguments(ops);
    auto two = gpu::make_contexts(2);
    layers<float>(contexts, two, quick());
    layers<bfloat16>(contexts, two, quick());
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    ++failures;
  }
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) std::printf("FAILED: %s\n", cudaGetErrorString(e)), ++failures;
  std::printf("CUDA MoE: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
