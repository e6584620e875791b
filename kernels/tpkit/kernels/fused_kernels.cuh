// tpkit/kernels/fused_kernels.cuh: the small kernels of a decoder step, for float, half and
// bfloat16 storage with float arithmetic. Each launcher checks its arguments, launches on the
// given stream and returns a Status; none allocates or synchronises, so all can be captured
// in a CUDA graph. Every kernel computes exactly what the host kernel of the same name in
// tpkit/ops/host_kernels.hpp computes (the tests compare them with a float64 reference);
// gather_rows_at and scatter_add_rows what HostOps's members of those names compute
// (tpkit/ops/host_ops.hpp; tests/cuda/test_cuda_moe.cu compares them).
//
//   fused_add_rms_norm  residual += x; out = RMSNorm(residual) * weight       (one block per row)
//   rms_norm            out = RMSNorm(x) * weight                             (one block per row)
//   silu_and_mul        out = silu(gate) * up, rows of [gate | up]
//   rope                rotate pairs (i, i + d/2) or (2i, 2i + 1) by per-row angles
//   embedding_lookup    rows of this rank's vocabulary shard; ids outside it give zeros
//   gather_rows_at      out[i] = x[rows[i]]: the tokens routed to a MoE expert  (one block per row)
//   scatter_add_rows    y[rows[i]] += w[i] * src[i]: their weighted outputs     (one block per row)
//   row_argmax          per row: the largest value and its lowest index
//   add, add_bias       x += y elementwise; y[b] += bias per row
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "tpkit/core/dtype.hpp"
#include "tpkit/kernels/reduce.cuh"
#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

namespace detail {
constexpr int kBlock = 256;  // threads per block of the row kernels (a multiple of 32)

template <class T, bool AddResidual>
__global__ void rms_norm_kernel(T* residual, std::int64_t ld_residual, const T* x, std::int64_t ldx, std::int64_t cols,
                                const float* weight, float eps, T* out, std::int64_t ldo) {
  __shared__ float shared[kBlock / 32];
  const std::int64_t row = blockIdx.x;
  T* res = residual + row * ld_residual;
  const T* in = x + row * ldx;
  float sum = 0;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float v = to_float(in[c]);
    if constexpr (AddResidual) {
      // The sum is stored in T and normalised as stored, as the host does (hidden += delta;
      // normed = rms_norm(hidden)).
      const T stored = from_float<T>(to_float(res[c]) + v);
      res[c] = stored;
      v = to_float(stored);
    }
    sum += v * v;
  }
  const float scale = rsqrtf(block_sum(sum, shared) / float(cols) + eps);
  const T* src = AddResidual ? res : in;
  for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    out[row * ldo + c] = from_float<T>(to_float(src[c]) * scale * weight[c]);
}

template <class T>
__global__ void silu_and_mul_kernel(const T* gate_up, std::int64_t rows, std::int64_t n, T* out) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * n) return;
  const std::int64_t r = i / n, c = i % n;
  const float g = to_float(gate_up[r * 2 * n + c]), u = to_float(gate_up[r * 2 * n + n + c]);
  out[i] = from_float<T>(g / (1.0f + expf(-g)) * u);
}

template <class T>
__global__ void rope_kernel(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim,
                            const float* cos, const float* sin, bool interleaved) {
  const std::int64_t half = head_dim / 2;
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * heads * half) return;
  const std::int64_t r = i / (heads * half), h = (i / half) % heads, k = i % half;
  T* v = x + r * ld + h * head_dim;
  const std::int64_t a = interleaved ? 2 * k : k, b = interleaved ? 2 * k + 1 : k + half;
  const float c = cos[r * half + k], s = sin[r * half + k];
  const float x0 = to_float(v[a]), x1 = to_float(v[b]);
  v[a] = from_float<T>(x0 * c - x1 * s);
  v[b] = from_float<T>(x1 * c + x0 * s);
}

template <class T>
__global__ void embedding_kernel(const std::int32_t* ids, std::int64_t count, const T* table, std::int64_t first_id,
                                 std::int64_t local_rows, std::int64_t hidden, T* out, std::int64_t ldo) {
  const std::int64_t row = blockIdx.x;
  const std::int64_t local = std::int64_t(ids[row]) - first_id;
  const bool mine = local >= 0 && local < local_rows;
  for (std::int64_t c = threadIdx.x; c < hidden; c += blockDim.x)
    out[row * ldo + c] = mine ? table[local * hidden + c] : from_float<T>(0.0f);
}

template <class T>
__global__ void gather_rows_at_kernel(const T* x, std::int64_t ldx, std::int64_t width, const std::int32_t* rows,
                                      T* out, std::int64_t ldo) {
  const std::int64_t i = blockIdx.x;
  const T* in = x + std::int64_t(rows[i]) * ldx;
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x) out[i * ldo + c] = in[c];
}

// The rows of one launch are distinct, so no two threads write one element. The product and
// the sum are rounded separately (__fmul_rn, __fadd_rn: never contracted to an FMA), as the host
// computes `y + w * src` in float.
template <class T>
__global__ void scatter_add_rows_kernel(const T* src, std::int64_t lds, std::int64_t width, const std::int32_t* rows,
                                        const float* weights, T* y, std::int64_t ldy) {
  const std::int64_t i = blockIdx.x;
  const float w = weights ? weights[i] : 1.0f;
  const T* in = src + i * lds;
  T* out = y + std::int64_t(rows[i]) * ldy;
  for (std::int64_t c = threadIdx.x; c < width; c += blockDim.x)
    out[c] = from_float<T>(__fadd_rn(to_float(out[c]), __fmul_rn(w, to_float(in[c]))));
}

template <class V>
__global__ void row_argmax_kernel(const V* values, std::int64_t ld, std::int64_t n, float* best_value,
                                  std::int64_t* best_index) {
  __shared__ float shared_value[kBlock];
  __shared__ std::int64_t shared_index[kBlock];
  const std::int64_t row = blockIdx.x;
  float best = -FLT_MAX;
  std::int64_t index = -1;
  for (std::int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const float v = to_float(values[row * ld + c]);
    if (index < 0 || v > best) best = v, index = c;  // ascending c: ties keep the lowest index
  }
  shared_value[threadIdx.x] = best;
  shared_index[threadIdx.x] = index;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      const float ov = shared_value[threadIdx.x + stride];
      const std::int64_t oi = shared_index[threadIdx.x + stride];
      const std::int64_t mi = shared_index[threadIdx.x];
      if (oi >= 0 && (mi < 0 || ov > shared_value[threadIdx.x] || (ov == shared_value[threadIdx.x] && oi < mi))) {
        shared_value[threadIdx.x] = ov;
        shared_index[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) best_value[row] = shared_value[0], best_index[row] = shared_index[0];
}

template <class T>
__global__ void add_kernel(T* x, const T* y, std::int64_t n) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = from_float<T>(to_float(x[i]) + to_float(y[i]));
}

template <class T>
__global__ void add_bias_kernel(T* y, std::int64_t ldy, std::int64_t batch, const T* bias, std::int64_t n) {
  const std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * n) return;
  const std::int64_t b = i / n, c = i % n;
  y[b * ldy + c] = from_float<T>(to_float(y[b * ldy + c]) + to_float(bias[c]));
}

inline bool fits_grid(std::int64_t blocks) { return blocks >= 0 && blocks <= 0x7fffffff; }
}  // namespace detail

// x[i] += y[i] for i < n (rounded once to T, as the host's add).
template <class T>
Status add(T* x, const T* y, std::int64_t n, cudaStream_t stream) {
  const std::int64_t blocks = (n + detail::kBlock - 1) / detail::kBlock;
  if (n < 0 || !detail::fits_grid(blocks)) return Status::invalid_argument;
  if (n == 0) return Status::ok;
  detail::add_kernel<T><<<int(blocks), detail::kBlock, 0, stream>>>(x, y, n);
  return launch_status();
}

// y[b][c] += bias[c] for b < batch, c < n.
template <class T>
Status add_bias(T* y, std::int64_t ldy, std::int64_t batch, const T* bias, std::int64_t n, cudaStream_t stream) {
  const std::int64_t blocks = (batch * n + detail::kBlock - 1) / detail::kBlock;
  if (batch < 0 || n <= 0 || ldy < n || !detail::fits_grid(blocks)) return Status::invalid_argument;
  if (batch == 0) return Status::ok;
  detail::add_bias_kernel<T><<<int(blocks), detail::kBlock, 0, stream>>>(y, ldy, batch, bias, n);
  return launch_status();
}

// residual[r] += x[r]; out[r] = residual[r] / rms(residual[r]) * weight, for `rows` rows of `cols`.
template <class T>
Status fused_add_rms_norm(T* residual, std::int64_t ld_residual, const T* x, std::int64_t ldx, std::int64_t rows,
                          std::int64_t cols, const float* weight, float eps, T* out, std::int64_t ldo,
                          cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || ld_residual < cols || ldx < cols || ldo < cols || !(eps > 0) || !detail::fits_grid(rows))
    return Status::invalid_argument;
  if (rows == 0) return Status::ok;
  detail::rms_norm_kernel<T, true>
      <<<int(rows), detail::kBlock, 0, stream>>>(residual, ld_residual, x, ldx, cols, weight, eps, out, ldo);
  return launch_status();
}

template <class T>
Status rms_norm(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols, const float* weight, float eps,
                T* out, std::int64_t ldo, cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || ldx < cols || ldo < cols || !(eps > 0) || !detail::fits_grid(rows))
    return Status::invalid_argument;
  if (rows == 0) return Status::ok;
  detail::rms_norm_kernel<T, false>
      <<<int(rows), detail::kBlock, 0, stream>>>(nullptr, 0, x, ldx, cols, weight, eps, out, ldo);
  return launch_status();
}

template <class T>
Status silu_and_mul(const T* gate_up, std::int64_t rows, std::int64_t n, T* out, cudaStream_t stream) {
  const std::int64_t blocks = (rows * n + detail::kBlock - 1) / detail::kBlock;
  if (rows < 0 || n <= 0 || !detail::fits_grid(blocks)) return Status::invalid_argument;
  if (rows == 0) return Status::ok;
  detail::silu_and_mul_kernel<T><<<int(blocks), detail::kBlock, 0, stream>>>(gate_up, rows, n, out);
  return launch_status();
}

// cos, sin: [rows, head_dim / 2] angles per row (tpkit::rope_angles computes them, Llama-3
// scaling included, on the host or copied to the device).
template <class T>
Status rope(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim, const float* cos,
            const float* sin, bool interleaved, cudaStream_t stream) {
  const std::int64_t blocks = (rows * heads * (head_dim / 2) + detail::kBlock - 1) / detail::kBlock;
  if (rows < 0 || heads <= 0 || head_dim <= 0 || head_dim % 2 != 0 || ld < heads * head_dim ||
      !detail::fits_grid(blocks))
    return Status::invalid_argument;
  if (rows == 0) return Status::ok;
  detail::rope_kernel<T>
      <<<int(blocks), detail::kBlock, 0, stream>>>(x, ld, rows, heads, head_dim, cos, sin, interleaved);
  return launch_status();
}

// out[t] = table[ids[t] - first_id] for ids in [first_id, first_id + local_rows), zeros otherwise
// (the other ranks' rows: an all-reduce of the shards gives the full lookup).
template <class T>
Status embedding_lookup(const std::int32_t* ids, std::int64_t count, const T* table, std::int64_t first_id,
                        std::int64_t local_rows, std::int64_t hidden, T* out, std::int64_t ldo, cudaStream_t stream) {
  if (count < 0 || local_rows < 0 || hidden <= 0 || ldo < hidden || !detail::fits_grid(count))
    return Status::invalid_argument;
  if (count == 0) return Status::ok;
  detail::embedding_kernel<T>
      <<<int(count), detail::kBlock, 0, stream>>>(ids, count, table, first_id, local_rows, hidden, out, ldo);
  return launch_status();
}

// out[i] = x[rows[i]] (width elements) for i < count. rows is device memory; each must be a row
// of x (not checked: the rows live on the device).
template <class T>
Status gather_rows_at(const T* x, std::int64_t ldx, std::int64_t width, const std::int32_t* rows, std::int64_t count,
                      T* out, std::int64_t ldo, cudaStream_t stream) {
  if (count < 0 || width < 0 || ldx < width || ldo < width || !detail::fits_grid(count))
    return Status::invalid_argument;
  if (count == 0 || width == 0) return Status::ok;
  if (!x || !rows || !out) return Status::invalid_argument;
  detail::gather_rows_at_kernel<T><<<int(count), detail::kBlock, 0, stream>>>(x, ldx, width, rows, out, ldo);
  return launch_status();
}

// y[rows[i]] += weights[i] * src[i] (weight 1 when weights is null) for i < count, in float and
// rounded to T once per element. rows and weights are device memory; the rows of one launch
// must be distinct (a repeated row would race). Launches on one stream apply in order, so a row
// may repeat across launches.
template <class T>
Status scatter_add_rows(const T* src, std::int64_t lds, std::int64_t width, const std::int32_t* rows,
                        const float* weights, std::int64_t count, T* y, std::int64_t ldy, cudaStream_t stream) {
  if (count < 0 || width < 0 || lds < width || ldy < width || !detail::fits_grid(count))
    return Status::invalid_argument;
  if (count == 0 || width == 0) return Status::ok;
  if (!src || !rows || !y) return Status::invalid_argument;
  detail::scatter_add_rows_kernel<T><<<int(count), detail::kBlock, 0, stream>>>(src, lds, width, rows, weights, y, ldy);
  return launch_status();
}

// Per row of `batch` rows of n values: the largest value and its lowest index.
template <class V>
Status row_argmax(const V* values, std::int64_t ld, std::int64_t batch, std::int64_t n, float* best_value,
                  std::int64_t* best_index, cudaStream_t stream) {
  if (batch < 0 || n <= 0 || ld < n || !detail::fits_grid(batch)) return Status::invalid_argument;
  if (batch == 0) return Status::ok;
  detail::row_argmax_kernel<V><<<int(batch), detail::kBlock, 0, stream>>>(values, ld, n, best_value, best_index);
  return launch_status();
}

}  // namespace tpkit::gpu
