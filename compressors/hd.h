/* TERSE_HD marks the small inline functions that the CPU codecs and the CUDA codecs
 * (compressors/cuda/) share, so that both compute the same bits from one definition:
 * __host__ __device__ under nvcc, nothing in C. */
#ifndef TERSE_HD_H
#define TERSE_HD_H

#if defined(__CUDACC__)
#define TERSE_HD __host__ __device__
#else
#define TERSE_HD
#endif

#endif
