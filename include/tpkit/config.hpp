// tpkit/config.hpp: version, host/device qualifiers and language feature switches.
// Every public header includes this first; it is the only place that looks at the compiler.
#pragma once

// The one place the version is written: CMakeLists.txt reads these three lines.
#define TPKIT_VERSION_MAJOR 0
#define TPKIT_VERSION_MINOR 2
#define TPKIT_VERSION_PATCH 0

// Without nvcc these are plain inline functions, so every .hpp header compiles with g++.
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

// The host SIMD code (the vectorised linear, HostOps and the engines built on it) lives in an
// inline namespace named after the instruction set its translation unit is compiled for. Two
// translation units compiled with different -march flags then instantiate differently named
// functions, so the linker can never keep one body for both (and run AVX2 code where the
// other unit asked for SSE2). Users still write tpkit::HostOps.
#if defined(__AVX512F__)
#define TPKIT_SIMD_BASE avx512
#elif defined(__AVX2__)
#define TPKIT_SIMD_BASE avx2
#elif defined(__AVX__)
#define TPKIT_SIMD_BASE avx
#elif defined(__SSE4_2__)
#define TPKIT_SIMD_BASE sse4
#elif defined(__SSE2__)
#define TPKIT_SIMD_BASE sse2
#elif defined(__ARM_FEATURE_SVE)
#define TPKIT_SIMD_BASE sve
#elif defined(__ARM_NEON)
#define TPKIT_SIMD_BASE neon
#else
#define TPKIT_SIMD_BASE generic
#endif
#define TPKIT_SIMD_CONCAT_(a, b) a##b
#define TPKIT_SIMD_CONCAT(a, b) TPKIT_SIMD_CONCAT_(a, b)
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define TPKIT_SIMD_NAMESPACE TPKIT_SIMD_CONCAT(simd_, TPKIT_SIMD_CONCAT(TPKIT_SIMD_BASE, _fma))
#else
#define TPKIT_SIMD_NAMESPACE TPKIT_SIMD_CONCAT(simd_, TPKIT_SIMD_BASE)
#endif
#define TPKIT_SIMD_STRINGIFY_(x) #x
#define TPKIT_SIMD_STRINGIFY(x) TPKIT_SIMD_STRINGIFY_(x)
// Opens and closes `namespace tpkit { inline namespace simd_<isa> {`.
#define TPKIT_SIMD_BEGIN \
  namespace tpkit {      \
  inline namespace TPKIT_SIMD_NAMESPACE {
#define TPKIT_SIMD_END \
  }                    \
  }
