// A consumer of tpkit::cuda: a kernel launcher, the CUDA context and CudaOps compile with nvcc
// and link with that target alone.
#include <cstdio>

#include <tpkit/gpu/cuda_ops.cuh>
#include <tpkit/kernels/fused_kernels.cuh>

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: built only\n");
    return 0;
  }
  tpkit::gpu::CudaContext context;
  tpkit::CudaOps ops(context);
  tpkit::gpu::DeviceBuffer<float> x(4);
  ops.fill_zero(x.data(), 4);
  tpkit::gpu::check_status(tpkit::gpu::add(x.data(), x.data(), 4, ops.stream()), "add");
  context.synchronize();
  std::printf("CudaOps on device %d\n", context.device());
}
