// gpu.c: fatal errors and checked calls for the trainer's GPU-side files (gpu.h).
#include "gpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *program_name = "airbench";
static void (*fatal_hook)(const char *message);

void gpu_set_program_name(const char *name) { program_name = name; }
void gpu_set_fatal_hook(void (*hook)(const char *message)) { fatal_hook = hook; }

void die(int code, const char *fmt, ...) {
    char message[2048];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    fprintf(stderr, "%s: %s\n", program_name, message);
    void (*hook)(const char *) = fatal_hook;
    fatal_hook = NULL;  // a failure inside the hook must not recurse
    if (hook) hook(message);
    exit(code);
}

void cuda_check(cudaError_t err, const char *what, const char *file, int line) {
    if (err == cudaSuccess) return;
    if (err == cudaErrorMemoryAllocation) {
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        die(1, "out of GPU memory at %s:%d (%s): %.0f MiB free of %.0f MiB; try a smaller --batch",
            file, line, what, free_bytes / 1048576.0, total_bytes / 1048576.0);
    }
    die(1, "CUDA error at %s:%d (%s): %s", file, line, what, cudaGetErrorString(err));
}

void cudnn_check(cudnnStatus_t status, const char *what, const char *file, int line) {
    if (status == CUDNN_STATUS_SUCCESS) return;
    die(1, "cuDNN error at %s:%d (%s): %s", file, line, what, cudnnGetErrorString(status));
}

void cublas_check(cublasStatus_t status, const char *what, const char *file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    die(1, "cuBLAS error at %s:%d (%s): %s", file, line, what, cublasGetStatusString(status));
}

void *gpu_alloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    return p;
}

void *host_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) die(1, "out of host memory allocating %zu bytes", bytes);
    return p;
}

void describe_gpu(char *name, size_t name_size, int *major, int *minor) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
        die(2, "no CUDA GPU found (%s). airbench.c trains on an NVIDIA GPU of compute "
               "capability 8.0 or newer; `make test` runs the CPU checks without one",
            err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    snprintf(name, name_size, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    if (prop.major < 8)
        die(2, "GPU 0 (%s) has compute capability %d.%d; airbench.c needs 8.0 or newer "
               "(fp16 tensor cores as on A100/H100)", prop.name, prop.major, prop.minor);
}
