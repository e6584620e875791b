// tpkit/kernels/reduce.cuh: warp and block reductions of floats, shared by the kernels. Block
// reductions must be reached by every thread of the block (blockDim.x a multiple of 32); they
// return the result to every thread and leave `shared` (blockDim.x / 32 floats) free again.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

namespace tpkit::gpu::detail {

struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
  static constexpr float identity = 0.0f;
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
  static constexpr float identity = -INFINITY;
};

template <class Op>
__device__ inline float warp_reduce(float v, Op op) {
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <class Op>
__device__ inline float block_reduce(float v, float* shared, Op op) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, op);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : Op::identity;
  if (warp == 0) v = warp_reduce(v, op);
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  const float result = shared[0];
  __syncthreads();  // shared may be reused at once
  return result;
}

__device__ inline float warp_sum(float v) { return warp_reduce(v, SumOp{}); }
__device__ inline float block_sum(float v, float* shared) { return block_reduce(v, shared, SumOp{}); }
__device__ inline float block_max(float v, float* shared) { return block_reduce(v, shared, MaxOp{}); }

}  // namespace tpkit::gpu::detail
