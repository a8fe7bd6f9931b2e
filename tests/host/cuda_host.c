// cuda_host.c: the CUDA runtime, cuBLAS and cuDNN calls of the project, on the CPU (host.h).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"
#include "test_helpers.h"

// ---- memory --------------------------------------------------------------------------------

typedef struct {
    char *begin;
    size_t bytes;
} Allocation;
static Allocation *allocations;
static size_t n_allocations, allocations_room;

cudaError_t cudaMalloc(void **p, size_t bytes) {
    if (n_allocations == allocations_room) {
        allocations_room = allocations_room ? 2 * allocations_room : 256;
        allocations = realloc(allocations, allocations_room * sizeof *allocations);
        if (!allocations) return cudaErrorMemoryAllocation;
    }
    *p = malloc(bytes ? bytes : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    memset(*p, 0xff, bytes);
    allocations[n_allocations++] = (Allocation){*p, bytes};
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    for (size_t i = 0; i < n_allocations; i++)
        if (allocations[i].begin == p) {
            free(p);
            allocations[i] = allocations[--n_allocations];
            return cudaSuccess;
        }
    return cudaErrorInvalidDevicePointer;
}

int host_inside_allocation(const void *p, size_t bytes) {
    const char *c = p;
    for (size_t i = 0; i < n_allocations; i++)
        if (c >= allocations[i].begin && c + bytes <= allocations[i].begin + allocations[i].bytes) return 1;
    return 0;
}

// A copy or set must stay inside an allocation on its device side(s).
static cudaError_t check_device_side(const void *p, size_t bytes, int device) {
    return !device || !bytes || host_inside_allocation(p, bytes) ? cudaSuccess : cudaErrorInvalidValue;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    host_note("memcpy");
    int dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    cudaError_t err = check_device_side(dst, count, dst_device);
    if (err == cudaSuccess) err = check_device_side(src, count, src_device);
    if (err == cudaSuccess) memmove(dst, src, count);
    return err;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
    (void)stream;
    return cudaMemcpy(dst, src, count, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t count) {
    host_note("memset");
    cudaError_t err = check_device_side(p, count, 1);
    if (err == cudaSuccess) memset(p, value, count);
    return err;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t count, cudaStream_t stream) {
    (void)stream;
    return cudaMemset(p, value, count);
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return cudaSuccess;
}

// ---- the device, errors, streams and events ------------------------------------------------

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}

#define HOST_SM_COUNT 132  // an H100's, for the kernels that size their grids by it

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    (void)device;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "CPU stand-in (tests/host)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = HOST_SM_COUNT;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attribute, int device) {
    (void)device;
    if (attribute != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    *value = HOST_SM_COUNT;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version) {
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    *version = 13000;
    return cudaSuccess;
}

// A launch's error until cudaGetLastError reads it; a kernel's fault stays, as on a GPU.
static cudaError_t launch_error, sticky_error;

void host_launch_failed(cudaError_t err, int sticky) {
    launch_error = err;
    if (sticky) sticky_error = err;
}

cudaError_t cudaGetLastError(void) {
    cudaError_t err = launch_error;
    launch_error = sticky_error;
    return err;
}

cudaError_t cudaDeviceSynchronize(void) { return sticky_error; }

// As on a GPU: every allocation freed, every error gone.
cudaError_t cudaDeviceReset(void) {
    for (size_t i = 0; i < n_allocations; i++) free(allocations[i].begin);
    n_allocations = 0;
    launch_error = sticky_error = cudaSuccess;
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t err) {
    static char text[64];
    snprintf(text, sizeof text, "CUDA error %d (CPU stand-in)", (int)err);
    return text;
}

static int the_stream;  // every stream is this one: the calls run in order, at once

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    *stream = (cudaStream_t)&the_stream;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    (void)stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)stream;
    return sticky_error;
}

// An event is the wall-clock second at which it was recorded.
cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = calloc(1, sizeof(double));
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    (void)stream;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)event = ts.tv_sec + 1e-9 * ts.tv_nsec;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    (void)event;
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    *ms = (float)(1e3 * (*(double *)end - *(double *)start));
    return cudaSuccess;
}

// ---- graphs: capture runs each call at once and hashes the calls' names ---------------------

static int capturing;
static uint64_t capture_hash;

void host_note(const char *call) {
    if (!capturing) return;
    for (const char *c = call; *c; c++) capture_hash = (capture_hash ^ (uint8_t)*c) * 0x100000001b3ULL;
    capture_hash = (capture_hash ^ 0xff) * 0x100000001b3ULL;  // separates the names
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    (void)stream, (void)mode;
    if (capturing) return cudaErrorIllegalState;
    capturing = 1;
    capture_hash = 0xcbf29ce484222325ULL;
    return cudaSuccess;
}

// A graph and an executable graph hold the hash of the calls captured.
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    (void)stream;
    if (!capturing) return cudaErrorIllegalState;
    capturing = 0;
    uint64_t *hash = malloc(sizeof *hash);
    if (!hash) return cudaErrorMemoryAllocation;
    *hash = capture_hash;
    *graph = (cudaGraph_t)hash;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    (void)flags;
    uint64_t *hash = malloc(sizeof *hash);
    if (!hash) return cudaErrorMemoryAllocation;
    *hash = *(uint64_t *)graph;
    *exec = (cudaGraphExec_t)hash;
    return cudaSuccess;
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph, cudaGraphExecUpdateResultInfo *info) {
    memset(info, 0, sizeof *info);
    return *(uint64_t *)exec == *(uint64_t *)graph ? cudaSuccess : cudaErrorGraphExecUpdateFailure;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    (void)exec, (void)stream;  // its calls ran when they were captured
    return capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    free(graph);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    free(exec);
    return cudaSuccess;
}

// ---- cuBLAS ----------------------------------------------------------------------------------

static int the_cublas;

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    *handle = (cublasHandle_t)&the_cublas;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    (void)handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    (void)handle, (void)stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    (void)handle;
    return host_inside_allocation(workspace, bytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

const char *cublasGetStatusString(cublasStatus_t status) {
    static char text[64];
    snprintf(text, sizeof text, "cuBLAS status %d (CPU stand-in)", (int)status);
    return text;
}

static float bf16_at(const void *base, size_t i) { return bf16_to_float(((const uint16_t *)base)[i]); }

// Element (i, j) of op(X) for a column-major X with leading dimension ld.
static size_t op_index(cublasOperation_t op, int i, int j, int ld) {
    return op == CUBLAS_OP_N ? (size_t)i + (size_t)j * ld : (size_t)j + (size_t)i * ld;
}

// The span in elements of `count` matrices of rows x cols (as stored) with leading
// dimension ld, `stride` apart; 0 when ld is too small for rows (cuBLAS refuses those).
static size_t batch_span(int rows, int cols, int ld, long long stride, int count) {
    if (ld < rows || rows < 1 || cols < 1 || count < 1) return 0;
    return (size_t)(count - 1) * (size_t)stride + (size_t)(cols - 1) * ld + rows;
}

// C_i = alpha op(A_i) op(B_i) + beta C_i, i < count, column-major (m x n, inner dimension
// k), bf16 operands, fp32 sums, the result rounded to bf16 once; every operand's extent
// over the batch must lie inside one allocation.
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b,
                                          int m, int n, int k, const void *alpha, const void *a, cudaDataType a_type,
                                          int lda, long long stride_a, const void *b, cudaDataType b_type, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType c_type, int ldc,
                                          long long stride_c, int count, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo) {
    (void)handle, (void)algo;
    host_note("cublasGemmStridedBatchedEx");
    if (a_type != CUDA_R_16BF || b_type != CUDA_R_16BF || c_type != CUDA_R_16BF || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    size_t span_a = op_a == CUBLAS_OP_N ? batch_span(m, k, lda, stride_a, count) : batch_span(k, m, lda, stride_a, count);
    size_t span_b = op_b == CUBLAS_OP_N ? batch_span(k, n, ldb, stride_b, count) : batch_span(n, k, ldb, stride_b, count);
    size_t span_c = batch_span(m, n, ldc, stride_c, count);
    if (!span_a || !span_b || !span_c) return CUBLAS_STATUS_INVALID_VALUE;
    if (!host_inside_allocation(a, 2 * span_a) || !host_inside_allocation(b, 2 * span_b) ||
        !host_inside_allocation(c, 2 * span_c))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int batch = 0; batch < count; batch++) {
        const char *ab = (const char *)a + 2 * (size_t)batch * stride_a, *bb = (const char *)b + 2 * (size_t)batch * stride_b;
        uint16_t *cb = (uint16_t *)c + (size_t)batch * stride_c;
#pragma omp parallel for schedule(static)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float sum = 0.0f;
                for (int l = 0; l < k; l++) sum += bf16_at(ab, op_index(op_a, i, l, lda)) * bf16_at(bb, op_index(op_b, l, j, ldb));
                size_t ci = (size_t)i + (size_t)j * ldc;
                cb[ci] = float_to_bf16(al * sum + (be != 0.0f ? be * bf16_to_float(cb[ci]) : 0.0f));
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}

// ---- the cuDNN calls outside conv.c ------------------------------------------------------------

size_t cudnnGetVersion(void) { return 91900; }

const char *cudnnGetErrorString(cudnnStatus_t status) {
    static char text[64];
    snprintf(text, sizeof text, "cuDNN status %d (CPU stand-in)", (int)status);
    return text;
}

// ---- dev/bench_spin.cu ----------------------------------------------------------------------

// kernel_bench's spin keeps a GPU's stream busy so that its timed launches run back to back;
// the CPU runs each launch at once: nothing to wait for.
cudaError_t launch_spin(uint64_t nanoseconds, cudaStream_t stream) {
    (void)nanoseconds;
    (void)stream;
    host_note("spin");
    return cudaSuccess;
}
