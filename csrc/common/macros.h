// Portability macros shared by the C++ CPU kernels and the CUDA kernels. No torch headers.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LIVEACT_HD __host__ __device__ __forceinline__
#define LIVEACT_DEVICE __device__ __forceinline__
#else
#define LIVEACT_HD inline
#define LIVEACT_DEVICE inline
#endif

#if defined(__CUDA_ARCH__)
#define LIVEACT_ON_DEVICE 1
#else
#define LIVEACT_ON_DEVICE 0
#endif
