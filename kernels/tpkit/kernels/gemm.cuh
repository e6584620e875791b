// tpkit/kernels/gemm.cuh: the linear layers' matrix product through cuBLASLt.
//
// linear() computes y[b][n] = sum_k x[b][k] w[n][k] (+ bias[n]) for row-major x [batch, K],
// w [N, K] (PyTorch's weight layout) and y [batch, N], the contract of HostOps::linear.
// Row-major y is column-major y^T = w . x^T, so w is cuBLASLt's A (transposed) and x its B.
// Storage is float, half or bfloat16; products accumulate in float (CUBLAS_COMPUTE_32F: no
// TF32 for float, so the GPU rounds as the host does); a bias is added in the epilogue before
// the single rounding to Out. The heuristic's choice is cached per shape, strides and pointer
// alignment in a GemmPlanCache, so a repeated shape costs one cublasLtMatmul call.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <type_traits>

#include "tpkit/core/dtype.hpp"
#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

template <class T>
constexpr cudaDataType_t cuda_data_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, half>)
    return CUDA_R_16F;
  else {
    static_assert(std::is_same_v<T, bfloat16>, "cuBLASLt linear takes float, half or bfloat16");
    return CUDA_R_16BF;
  }
}

class GemmPlanCache {
 public:
  // Shape, strides, types, bias, and the alignment of each pointer (algorithms differ by it).
  using Key = std::tuple<int, int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                         bool, unsigned, unsigned, unsigned, unsigned>;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  static constexpr std::size_t kMaxPlans = 4096;  // distinct batch sizes make new plans; bound them

  GemmPlanCache() = default;
  GemmPlanCache(const GemmPlanCache&) = delete;
  GemmPlanCache& operator=(const GemmPlanCache&) = delete;
  ~GemmPlanCache() { clear(); }

  const Plan* find(const Key& k) const {
    const auto it = plans_.find(k);
    return it == plans_.end() ? nullptr : &it->second;
  }
  const Plan* insert(const Key& k, const Plan& p) {
    if (plans_.size() >= kMaxPlans) clear();
    return &plans_.emplace(k, p).first->second;
  }
  void clear() {
    for (auto& [key, p] : plans_) destroy(p);
    plans_.clear();
  }
  static void destroy(Plan& p) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    p = Plan{};
  }

 private:
  std::map<Key, Plan> plans_;
};

namespace detail {
inline unsigned pointer_alignment(const void* p) {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  unsigned a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}
}  // namespace detail

// The plan (cuBLASLt's chosen algorithm) for y = x W^T with this shape, these strides and types,
// a bias or not, and these pointer alignments (bytes; algorithms differ by them), from the
// cache or made now. Status::unsupported when the heuristic finds no algorithm within
// workspace_bytes. linear() calls it for every product; an engine calls it for every layer's
// shape at load (CudaOps::check_linear), so an impossible shape fails before the first step.
template <class T, class Out>
Status plan_linear(cublasLtHandle_t lt, GemmPlanCache& cache, std::int64_t batch, std::int64_t N, std::int64_t K,
                   std::int64_t ldx, std::int64_t ldw, std::int64_t ldy, bool bias, unsigned align_w, unsigned align_x,
                   unsigned align_y, unsigned align_bias, std::size_t workspace_bytes,
                   const GemmPlanCache::Plan** out) {
  static_assert(std::is_same_v<Out, T> || std::is_same_v<Out, float>, "linear writes T or float");
  if (batch <= 0 || N <= 0 || K <= 0 || ldx < K || ldw < K || ldy < N || !out) return Status::invalid_argument;
  if (bias && !std::is_same_v<Out, T>) return Status::invalid_argument;
  const GemmPlanCache::Key key{
      int(cuda_data_type<T>()), int(cuda_data_type<Out>()), N, K, batch, ldx, ldw, ldy, bias, align_w, align_x, align_y,
      bias ? align_bias : 256u};
  if ((*out = cache.find(key))) return Status::ok;
  GemmPlanCache::Plan p;
  const auto fail = [&](Status s) {
    GemmPlanCache::destroy(p);
    return s;
  };
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  if (cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
    return fail(Status::launch_failed);
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa);
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb);
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const std::int32_t bias_type = cuda_data_type<T>();
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type);
  }
  // Column-major: A = w^T stored as [K x N] (ld ldw), B = x^T as [K x batch] (ld ldx), D = [N x batch].
  if (cublasLtMatrixLayoutCreate(&p.a, cuda_data_type<T>(), std::uint64_t(K), std::uint64_t(N), ldw) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.b, cuda_data_type<T>(), std::uint64_t(K), std::uint64_t(batch), ldx) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.d, cuda_data_type<Out>(), std::uint64_t(N), std::uint64_t(batch), ldy) !=
          CUBLAS_STATUS_SUCCESS)
    return fail(Status::invalid_argument);
  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return fail(Status::launch_failed);
  const std::uint64_t max_workspace = workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                       sizeof max_workspace);
  const unsigned align[4] = {align_w, align_x, align_y, align_y};
  const cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t a = align[i];
    cublasLtMatmulPreferenceSetAttribute(pref, which[i], &a, sizeof a);
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (h != CUBLAS_STATUS_SUCCESS || found == 0) return fail(Status::unsupported);
  p.algo = result.algo;
  *out = cache.insert(key, p);
  return Status::ok;
}

template <class T, class Out>
Status linear(cublasLtHandle_t lt, GemmPlanCache& cache, const T* x, std::int64_t ldx, std::int64_t batch, const T* w,
              std::int64_t ldw, std::int64_t N, std::int64_t K, const T* bias, Out* y, std::int64_t ldy,
              void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  static_assert(std::is_same_v<Out, T> || std::is_same_v<Out, float>, "linear writes T or float");
  if (batch < 0 || N <= 0 || K <= 0 || ldx < K || ldw < K || ldy < N) return Status::invalid_argument;
  if (batch == 0) return Status::ok;
  if (!x || !w || !y || (bias && !std::is_same_v<Out, T>)) return Status::invalid_argument;
  const GemmPlanCache::Plan* plan = nullptr;
  const Status planned =
      plan_linear<T, Out>(lt, cache, batch, N, K, ldx, ldw, ldy, bias != nullptr, detail::pointer_alignment(w),
                          detail::pointer_alignment(x), detail::pointer_alignment(y),
                          bias ? detail::pointer_alignment(bias) : 256u, workspace_bytes, &plan);
  if (planned != Status::ok) return planned;
  if (bias) cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s = cublasLtMatmul(lt, plan->op, &alpha, w, plan->a, x, plan->b, &beta, y, plan->d, y, plan->d,
                                          &plan->algo, workspace, workspace_bytes, stream);
  return s == CUBLAS_STATUS_SUCCESS ? Status::ok : Status::launch_failed;
}

}  // namespace tpkit::gpu
