// gpu.h: what every GPU-side file of the trainer shares: fatal errors with file and line,
// checked CUDA / cuDNN / cuBLAS calls, and allocations that fail with a clear message.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stddef.h>

// Prints "<program>: <message>" to stderr, runs the fatal hook, and exits with code.
__attribute__((format(printf, 2, 3), noreturn))
void die(int code, const char *fmt, ...);
// The program name in messages (default "airbench").
void gpu_set_program_name(const char *name);
// Called once by die() with the message before exiting (e.g. to end the run file as
// incomplete with that reason); NULL for none.
void gpu_set_fatal_hook(void (*hook)(const char *message));

void cuda_check(cudaError_t err, const char *what, const char *file, int line);
void cudnn_check(cudnnStatus_t status, const char *what, const char *file, int line);
void cublas_check(cublasStatus_t status, const char *what, const char *file, int line);

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUDNN_CHECK(call) cudnn_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)

void *gpu_alloc(size_t bytes);   // cudaMalloc, or die(1) naming what is free
void *host_alloc(size_t bytes);  // zeroed calloc, or die(1)

// GPU 0's name and compute capability; dies with exit code 2 (and what to do) when there is
// no CUDA GPU or it is older than compute capability 8.0.
void describe_gpu(char *name, size_t name_size, int *major, int *minor);
