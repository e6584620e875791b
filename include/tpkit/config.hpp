// tpkit/config.hpp: version, host/device qualifiers and language feature switches.
// Every public header includes this first; it is the only place that looks at the compiler.
#pragma once

#define TPKIT_VERSION_MAJOR 0
#define TPKIT_VERSION_MINOR 1
#define TPKIT_VERSION_PATCH 0

// Without nvcc these are plain inline functions, so every header in include/ compiles with g++.
#if defined(__CUDACC__)
#define TPKIT_HOST_DEVICE __host__ __device__ __forceinline__
#define TPKIT_DEVICE __device__ __forceinline__
#else
#define TPKIT_HOST_DEVICE inline
#define TPKIT_DEVICE inline
#endif

// C++20 concepts are used to state backend requirements where the compiler has them;
// under C++17 the same requirements are documented and checked by static_asserts.
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L && defined(__cpp_lib_concepts)
#define TPKIT_HAS_CONCEPTS 1
#else
#define TPKIT_HAS_CONCEPTS 0
#endif

// GCC/Clang vector extensions give portable SIMD on the host path (SSE, AVX2, NEON alike).
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDA_ARCH__)
#define TPKIT_HAS_VECTOR_EXTENSIONS 1
#else
#define TPKIT_HAS_VECTOR_EXTENSIONS 0
#endif
