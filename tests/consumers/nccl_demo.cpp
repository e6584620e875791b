// A consumer of tpkit::nccl: the NCCL backend compiles and links with that target alone.
#include <cstdio>

#include <tpkit/comm/nccl.hpp>

int main() {
  // Creating a world needs a GPU; naming the entry points is enough to link against NCCL.
  auto create = static_cast<tpkit::NcclBackend (*)(tpkit::Bootstrap&, cudaStream_t, tpkit::NcclOptions)>(
      &tpkit::NcclBackend::create);
  std::printf("NcclBackend::create at %p\n", reinterpret_cast<void*>(create));
}
