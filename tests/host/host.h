// host.h: the CPU stand-ins for the GPU side (tests/host/), with which the trainer's C files
// and the GPU tests run on a machine without a GPU. They link instead of libcudart, cuBLAS,
// cuDNN, conv.c and the kernels' objects:
//   cuda_host.c     the CUDA runtime calls the project makes (memory is host memory, filled
//                   with 0xff bytes like tests/gpu_test.h's, so that a value read before
//                   anything wrote it is a NaN; streams and events run in order at once;
//                   graph capture runs the calls at once and remembers which calls were
//                   made, so that updating an executable graph fails where the real one
//                   would: when the calls differ), cuBLAS's strided-batched bf16 GEMM, and
//                   the two cuDNN calls outside conv.c;
//   conv_host.c     conv.h's interface as plain 3x3 convolutions (NHWC fp16, fp32 sums);
//   kernels_*.c     kernels.h's launchers, each computing what kernels.h specifies.
// What this checks is the calling code: which buffers, shapes, offsets and steps it hands to
// the GPU side. The kernels themselves are checked on a GPU (tests/gpu_test_kernels.c).
#pragma once
#include <stddef.h>

// Every stand-in of a GPU call (kernel launch, copy, set, GEMM, convolution) names itself
// here; during a graph capture the names make up the captured graph's identity.
void host_note(const char *call);
// Whether [p, p + bytes) lies inside one live allocation of cudaMalloc.
int host_inside_allocation(const void *p, size_t bytes);
