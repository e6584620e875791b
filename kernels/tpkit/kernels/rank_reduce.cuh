// tpkit/kernels/rank_reduce.cuh: the reduction kernel of the one-GPU mock backend
// (tpkit/gpu/device_mock.cuh). It combines the ranks' inputs element by element in rank order
// 0, 1, ..., n-1, accumulating 16-bit types in float and rounding once, and other types in their
// own type: exactly what the host mock computes (mock_detail::reduce in tpkit/comm/mock.hpp), so
// a reduction gives bitwise the same result on every rank, on the GPU and on the host.
// Needs: CUDA (nvcc; link tpkit::cuda).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "tpkit/core/dtype.hpp"
#include "tpkit/core/reduce_op.hpp"
#include "tpkit/kernels/status.cuh"

namespace tpkit::gpu {

// The most inputs one reduction takes: the inputs travel in the kernel's parameters.
constexpr int kMaxReduceInputs = 64;

struct ReduceInputs {
  const void* data[kMaxReduceInputs];
  int count;
};

namespace detail {

template <class T>
__global__ void rank_order_reduce_kernel(ReduceInputs inputs, std::size_t offset, std::size_t n, bool sum, T* out) {
  using Acc = std::conditional_t<std::is_same_v<T, half> || std::is_same_v<T, bfloat16>, float, T>;
  const auto load = [&](int r, std::size_t i) {
    const T v = static_cast<const T*>(inputs.data[r])[offset + i];
    if constexpr (std::is_same_v<Acc, T>)
      return v;
    else
      return to_float(v);
  };
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    Acc acc = load(0, i);
    for (int r = 1; r < inputs.count; ++r) {
      const Acc v = load(r, i);
      acc = sum ? Acc(acc + v) : (v > acc ? v : acc);  // the host mock's expressions, term for term
    }
    if constexpr (std::is_same_v<Acc, T>)
      out[i] = acc;
    else
      out[i] = from_float<T>(acc);
  }
}

template <class T>
Status launch_rank_order_reduce(const ReduceInputs& inputs, std::size_t offset, std::size_t n, ReduceOp op, void* out,
                                cudaStream_t stream) {
  constexpr int threads = 256;
  const std::size_t blocks = (n + threads - 1) / threads;
  const int grid = int(blocks < 4096 ? blocks : 4096);  // a grid-stride loop covers the rest
  rank_order_reduce_kernel<T>
      <<<grid, threads, 0, stream>>>(inputs, offset, n, op == ReduceOp::sum, static_cast<T*>(out));
  return launch_status();
}

}  // namespace detail

// out[i] = op over r in 0..inputs.count-1 of inputs.data[r][offset + i], for i < n. `out` may be
// one of the inputs only when offset is 0 (each element is read before it is written).
inline Status rank_order_reduce(DType t, const ReduceInputs& inputs, std::size_t offset, std::size_t n, ReduceOp op,
                                void* out, cudaStream_t stream) {
  if (inputs.count < 1 || inputs.count > kMaxReduceInputs) return Status::invalid_argument;
  if (n == 0) return Status::ok;
  switch (t) {
    case DType::f32:
      return detail::launch_rank_order_reduce<float>(inputs, offset, n, op, out, stream);
    case DType::f64:
      return detail::launch_rank_order_reduce<double>(inputs, offset, n, op, out, stream);
    case DType::f16:
      return detail::launch_rank_order_reduce<half>(inputs, offset, n, op, out, stream);
    case DType::bf16:
      return detail::launch_rank_order_reduce<bfloat16>(inputs, offset, n, op, out, stream);
    case DType::i32:
      return detail::launch_rank_order_reduce<std::int32_t>(inputs, offset, n, op, out, stream);
    case DType::i64:
      return detail::launch_rank_order_reduce<std::int64_t>(inputs, offset, n, op, out, stream);
    case DType::u8:
      return detail::launch_rank_order_reduce<std::uint8_t>(inputs, offset, n, op, out, stream);
  }
  return Status::unsupported;
}

}  // namespace tpkit::gpu
