// host.h: the CPU stand-ins for the GPU's libraries (tests/host/), with which the trainer's C
// files and the GPU tests run on a machine without a GPU. They link instead of libcudart,
// cuBLAS, cuDNN and conv.c; the kernels are the project's own, run on the CPU by tests/emu/:
//   cuda_host.c     the CUDA runtime calls the project makes (memory is host memory, filled
//                   with 0xff bytes like tests/gpu_test.h's, so that a value read before
//                   anything wrote it is a NaN; streams run each call at once, or, with
//                   HOST_STREAMS=late or early, queue them and run them at the next
//                   synchronization in an adversarial order that keeps only stream order
//                   and events, so that a missing event shows; a kernel's fault is sticky; graph capture runs the calls at once and
//                   remembers which calls were made, so that updating an executable graph
//                   fails where the real one would: when the calls differ), cuBLAS's
//                   strided-batched bf16 GEMM, and the two cuDNN calls outside conv.c;
//   conv_host.c     conv.h's interface as plain 3x3 convolutions (NHWC fp16, fp32 sums).
// What the stand-ins check is the calling code: which buffers, shapes, offsets and steps it
// hands to the libraries. cuDNN's and cuBLAS's own kernels are checked on a GPU only.
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>

// Every GPU call (kernel launch, copy, set, GEMM, convolution) names itself here; during a graph capture the names make up the captured graph's identity.
void host_note(const char *call);
// A launch failed (tests/emu/): cudaGetLastError returns err once; sticky (a kernel's fault),
// every later cudaGetLastError and synchronize returns it, as on a GPU.
void host_launch_failed(cudaError_t err, int sticky);
// Whether [p, p + bytes) lies inside one live allocation of cudaMalloc.
int host_inside_allocation(const void *p, size_t bytes);
// Runs run(arg) on stream as CUDA would run a call made there (at once, or queued:
// cuda_host.c's HOST_STREAMS); run releases arg. The NULL stream runs it at once, after
// everything queued.
void host_enqueue(cudaStream_t stream, void (*run)(void *), void *arg);
// Runs every queued call (a synchronization).
void host_synchronize(void);
// conv_host.c's 3x3 convolutions (pad 1, cross-correlation, fp32 sums) on floats: NHWC
// activations (n x s x s x channels) and KRSC filters (co x 3 x 3 x ci). Forward: y from x;
// backward data: dx from dy; backward filter: dw from x and dy. cudnn_graph_host.c runs its
// graphs' convolutions with them.
void host_conv3x3_forward(float *y, const float *x, const float *w, int n, int s, int ci, int co);
void host_conv3x3_backward_data(float *dx, const float *dy, const float *w, int n, int s, int ci, int co);
void host_conv3x3_backward_filter(float *dw, const float *x, const float *dy, int n, int s, int ci, int co);
