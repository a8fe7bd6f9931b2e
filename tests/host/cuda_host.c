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
    host_synchronize();  // as on a GPU: nothing queued may still use it
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

static cudaError_t check_copy(const void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    int dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    int src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    cudaError_t err = check_device_side(dst, count, dst_device);
    return err == cudaSuccess ? check_device_side(src, count, src_device) : err;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    host_note("memcpy");
    cudaError_t err = check_copy(dst, src, count, kind);
    if (err != cudaSuccess) return err;
    host_synchronize();
    memmove(dst, src, count);
    return cudaSuccess;
}

// A queued copy: the bytes to copy (a host source is copied when the call is made, as CUDA
// stages pageable memory before the call returns) and where they go.
typedef struct {
    void *dst;
    const void *src;
    size_t count;
    char bytes[];  // the host source's copy
} QueuedCopy;

static void run_copy(void *arg) {
    QueuedCopy *c = arg;
    memmove(c->dst, c->src ? c->src : c->bytes, c->count);
    free(c);
}

// To a host destination the copy is synchronous (pageable memory), as on a GPU.
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
    if (kind == cudaMemcpyDeviceToHost) return cudaMemcpy(dst, src, count, kind);
    host_note("memcpy");
    cudaError_t err = check_copy(dst, src, count, kind);
    if (err != cudaSuccess) return err;
    int staged = kind == cudaMemcpyHostToDevice;
    QueuedCopy *c = malloc(sizeof *c + (staged ? count : 0));
    if (!c) return cudaErrorMemoryAllocation;
    *c = (QueuedCopy){dst, staged ? NULL : src, count};
    if (staged) memcpy(c->bytes, src, count);
    host_enqueue(stream, run_copy, c);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t count) {
    host_note("memset");
    cudaError_t err = check_device_side(p, count, 1);
    if (err != cudaSuccess) return err;
    host_synchronize();
    memset(p, value, count);
    return cudaSuccess;
}

typedef struct {
    void *p;
    int value;
    size_t count;
} QueuedSet;

static void run_set(void *arg) {
    QueuedSet *q = arg;
    memset(q->p, q->value, q->count);
    free(q);
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t count, cudaStream_t stream) {
    host_note("memset");
    cudaError_t err = check_device_side(p, count, 1);
    if (err != cudaSuccess) return err;
    QueuedSet *q = malloc(sizeof *q);
    if (!q) return cudaErrorMemoryAllocation;
    *q = (QueuedSet){p, value, count};
    host_enqueue(stream, run_set, q);
    return cudaSuccess;
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

cudaError_t cudaDeviceSynchronize(void) {
    host_synchronize();
    return sticky_error;
}

// As on a GPU: every allocation freed, every error gone.
cudaError_t cudaDeviceReset(void) {
    host_synchronize();
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

// ---- streams and events ----------------------------------------------------------------------
// HOST_STREAMS (environment) picks how streams run:
//   now (the default)  every call runs when it is made, in call order;
//   late, early        each stream's calls wait in its queue until a synchronization (a
//                      stream, event or device synchronize, a synchronous copy or set, a
//                      copy to the host, cudaFree, cudaDeviceReset), then run in an order that
//                      keeps only what CUDA promises: each stream's calls in order, a
//                      cudaStreamWaitEvent's after that event's record. "late" runs the
//                      first-made stream's calls as early as that allows, the other streams'
//                      as late; "early" the other way round.
// A missing event then lets a call read what another stream has not written yet, or has
// overwritten already, and the checks against the reference see it. Calls on the default
// (NULL) stream run at once, after everything queued.

static void fatal(const char *what) {
    fprintf(stderr, "tests/host: %s\n", what);
    exit(1);
}

enum { STREAMS_NOW, STREAMS_LATE, STREAMS_EARLY };

static int stream_mode(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *v = getenv("HOST_STREAMS");
        if (!v || !*v || !strcmp(v, "now")) mode = STREAMS_NOW;
        else if (!strcmp(v, "late")) mode = STREAMS_LATE;
        else if (!strcmp(v, "early")) mode = STREAMS_EARLY;
        else fatal("HOST_STREAMS must be now, late or early");
    }
    return mode;
}

typedef struct HostStream HostStream;

// Records are numbered; an event remembers its latest record's number and stream, and the
// latest number whose record has run.
typedef struct {
    double time;  // the wall-clock second its latest record ran
    long recorded, completed;
    HostStream *stream;
} HostEvent;

typedef enum { CALL_WORK, CALL_RECORD, CALL_WAIT } CallKind;
typedef struct QueuedCall {
    CallKind kind;
    void (*run)(void *);  // CALL_WORK: run(arg), which releases arg
    void *arg;
    HostEvent *event;  // CALL_RECORD: the event and this record's number; CALL_WAIT: the
    long number;       // event and the record waited for
    struct QueuedCall *next;
} QueuedCall;

struct HostStream {
    QueuedCall *head, *tail;
    int captured;        // part of the capture under way
    int unjoined;        // has calls in the capture after the capturing stream last waited on it
    long last_record;    // the number of its latest call if that was a record, else 0
};

enum { MAX_STREAMS = 64 };
static HostStream *streams[MAX_STREAMS];  // in the order made
static int n_streams;
static long records;

static int capturing;
static HostStream *capture_origin;

static int runnable(const QueuedCall *c) { return c->kind != CALL_WAIT || c->event->completed >= c->number; }

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void complete_record(HostEvent *e, long number) {
    if (number > e->completed) e->completed = number;
    e->time = wall_seconds();
}

static void execute(QueuedCall *c) {
    if (c->kind == CALL_WORK) c->run(c->arg);
    if (c->kind == CALL_RECORD) complete_record(c->event, c->number);
    free(c);
}

void host_synchronize(void) {
    for (;;) {
        HostStream *pick = NULL;
        int waiting = 0;
        for (int i = 0; i < n_streams; i++) {
            HostStream *s = streams[i];
            if (!s->head) continue;
            waiting = 1;
            if (!runnable(s->head)) continue;
            if (!pick || stream_mode() == STREAMS_EARLY) pick = s;
            if (stream_mode() == STREAMS_LATE) break;
        }
        if (!pick) {
            if (waiting) fatal("the queued calls wait for each other's events: none can run (a deadlock)");
            return;
        }
        QueuedCall *c = pick->head;
        pick->head = c->next;
        if (!pick->head) pick->tail = NULL;
        execute(c);
    }
}

static HostStream *host_stream(cudaStream_t stream) {
    for (int i = 0; i < n_streams; i++)
        if (streams[i] == (HostStream *)stream) return streams[i];
    if (stream) fatal("a call on a stream that cudaStreamCreate did not make (or already destroyed)");
    return NULL;
}

// Work on a stream during a capture must be part of it (the capturing stream, or one that
// waited on an event recorded in the capture); the capture has to wait on it again before
// it ends.
static void note_capture(HostStream *s) {
    if (!capturing) return;
    if (!s || !s->captured) fatal("a call during a stream capture on a stream outside the capture");
    if (s != capture_origin) s->unjoined = 1;
}

// Appends a copy of call to the stream's queue.
static void enqueue(HostStream *s, QueuedCall call) {
    QueuedCall *c = malloc(sizeof *c);
    if (!c) fatal("out of host memory");
    *c = call;
    c->next = NULL;
    if (s->tail) s->tail->next = c;
    else s->head = c;
    s->tail = c;
}

void host_enqueue(cudaStream_t stream, void (*run)(void *), void *arg) {
    HostStream *s = host_stream(stream);
    note_capture(s);
    if (s) s->last_record = 0;
    if (!s || stream_mode() == STREAMS_NOW) {
        host_synchronize();
        run(arg);
        return;
    }
    enqueue(s, (QueuedCall){.kind = CALL_WORK, .run = run, .arg = arg});
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    if (n_streams == MAX_STREAMS) return cudaErrorMemoryAllocation;
    HostStream *s = calloc(1, sizeof *s);
    if (!s) return cudaErrorMemoryAllocation;
    streams[n_streams++] = s;
    *stream = (cudaStream_t)s;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    host_synchronize();
    for (int i = 0; i < n_streams; i++)
        if (streams[i] == (HostStream *)stream) {
            free(streams[i]);
            memmove(streams + i, streams + i + 1, (n_streams - i - 1) * sizeof *streams);
            n_streams--;
            return cudaSuccess;
        }
    return cudaErrorInvalidResourceHandle;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)host_stream(stream);
    host_synchronize();
    return sticky_error;
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = calloc(1, sizeof(HostEvent));
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}

// Timing or not, an event here is the same.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    (void)flags;
    return cudaEventCreate(event);
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    HostEvent *e = (HostEvent *)event;
    HostStream *s = host_stream(stream);
    note_capture(s);
    e->recorded = ++records;
    e->stream = s;
    if (!s || stream_mode() == STREAMS_NOW) {
        host_synchronize();
        complete_record(e, e->recorded);
    } else {
        enqueue(s, (QueuedCall){.kind = CALL_RECORD, .event = e, .number = e->recorded});
    }
    if (s) s->last_record = e->recorded;
    return cudaSuccess;
}

// A wait on an event recorded in the capture pulls the waiting stream into it; the
// capturing stream's wait on another stream's latest record joins that stream back.
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    HostEvent *e = (HostEvent *)event;
    HostStream *s = host_stream(stream);
    if (flags) return cudaErrorInvalidValue;
    if (capturing && e->stream && e->stream->captured && s) s->captured = 1;
    note_capture(s);
    if (capturing && s == capture_origin && e->stream && e->stream != s && e->stream->last_record == e->recorded)
        e->stream->unjoined = 0;
    if (s) s->last_record = 0;
    if (!e->recorded) return cudaSuccess;  // never recorded: nothing to wait for, as in CUDA
    if (!s || stream_mode() == STREAMS_NOW) {
        host_synchronize();
        return cudaSuccess;
    }
    enqueue(s, (QueuedCall){.kind = CALL_WAIT, .event = e, .number = e->recorded});
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    (void)event;
    host_synchronize();
    return sticky_error;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    host_synchronize();
    const HostEvent *a = (const HostEvent *)start, *b = (const HostEvent *)end;
    if (!a->completed || !b->completed) return cudaErrorInvalidResourceHandle;
    *ms = (float)(1e3 * (b->time - a->time));
    return cudaSuccess;
}

// ---- graphs: a capture runs (or queues) each call as it is made and hashes the calls' names --

static uint64_t capture_hash;

void host_note(const char *call) {
    if (!capturing) return;
    for (const char *c = call; *c; c++) capture_hash = (capture_hash ^ (uint8_t)*c) * 0x100000001b3ULL;
    capture_hash = (capture_hash ^ 0xff) * 0x100000001b3ULL;  // separates the names
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    (void)mode;
    if (capturing) return cudaErrorIllegalState;
    capture_origin = host_stream(stream);
    if (!capture_origin) return cudaErrorStreamCaptureUnsupported;  // the legacy default stream
    capture_origin->captured = 1;
    capturing = 1;
    capture_hash = 0xcbf29ce484222325ULL;
    return cudaSuccess;
}

// A graph and an executable graph hold the hash of the calls captured.
// Every other stream in the capture must have been joined back (cudaStreamWaitEvent on its
// latest record) after its last call, or CUDA refuses to end the capture.
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    if (!capturing || host_stream(stream) != capture_origin) return cudaErrorIllegalState;
    capturing = 0;
    int unjoined = 0;
    for (int i = 0; i < n_streams; i++) {
        unjoined |= streams[i]->unjoined;
        streams[i]->captured = streams[i]->unjoined = 0;
    }
    if (unjoined) return cudaErrorStreamCaptureUnjoined;
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
    (void)exec, (void)stream;  // its calls ran, or were queued, when they were captured
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

// A handle: its stream and its workspace. Two live handles may not share workspace bytes:
// on a GPU their streams would race in them.
typedef struct {
    cudaStream_t stream;
    const char *workspace;
    size_t workspace_bytes;
} HostCublas;

enum { MAX_CUBLAS = 64 };
static HostCublas *cublas_handles[MAX_CUBLAS];  // the live ones

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    for (int i = 0; i < MAX_CUBLAS; i++)
        if (!cublas_handles[i]) {
            if (!(cublas_handles[i] = calloc(1, sizeof(HostCublas)))) return CUBLAS_STATUS_ALLOC_FAILED;
            *handle = (cublasHandle_t)cublas_handles[i];
            return CUBLAS_STATUS_SUCCESS;
        }
    return CUBLAS_STATUS_ALLOC_FAILED;
}

// The live handle's slot, or -1.
static int cublas_slot(cublasHandle_t handle) {
    for (int i = 0; i < MAX_CUBLAS; i++)
        if (handle && cublas_handles[i] == (HostCublas *)handle) return i;
    return -1;
}

static HostCublas *host_cublas(cublasHandle_t handle) {
    int i = cublas_slot(handle);
    return i < 0 ? NULL : cublas_handles[i];
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    int i = cublas_slot(handle);
    if (i < 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(cublas_handles[i]);
    cublas_handles[i] = NULL;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    HostCublas *h = host_cublas(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    HostCublas *h = host_cublas(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!host_inside_allocation(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    const char *begin = workspace;
    for (int i = 0; i < MAX_CUBLAS; i++) {
        const HostCublas *other = cublas_handles[i];
        if (other && other != h && other->workspace && begin < other->workspace + other->workspace_bytes &&
            other->workspace < begin + bytes)
            return CUBLAS_STATUS_INVALID_VALUE;
    }
    h->workspace = begin;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
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

// One strided-batched GEMM's operands, as queued.
typedef struct {
    cublasOperation_t op_a, op_b;
    int m, n, k, lda, ldb, ldc, count;
    long long stride_a, stride_b, stride_c;
    const void *a, *b;
    void *c;
    float alpha, beta;
} Gemm;

static void run_gemm(void *arg) {
    const Gemm *g = arg;
    for (int batch = 0; batch < g->count; batch++) {
        const char *ab = (const char *)g->a + 2 * (size_t)batch * g->stride_a;
        const char *bb = (const char *)g->b + 2 * (size_t)batch * g->stride_b;
        uint16_t *cb = (uint16_t *)g->c + (size_t)batch * g->stride_c;
#pragma omp parallel for schedule(static)
        for (int j = 0; j < g->n; j++)
            for (int i = 0; i < g->m; i++) {
                float sum = 0.0f;
                for (int l = 0; l < g->k; l++)
                    sum += bf16_at(ab, op_index(g->op_a, i, l, g->lda)) * bf16_at(bb, op_index(g->op_b, l, j, g->ldb));
                size_t ci = (size_t)i + (size_t)j * g->ldc;
                cb[ci] = float_to_bf16(g->alpha * sum + (g->beta != 0.0f ? g->beta * bf16_to_float(cb[ci]) : 0.0f));
            }
    }
    free(arg);
}

// C_i = alpha op(A_i) op(B_i) + beta C_i, i < count, column-major (m x n, inner dimension
// k), bf16 operands, fp32 sums, the result rounded to bf16 once; every operand's extent
// over the batch must lie inside one allocation; the handle must be live. Checked when
// called, run on the handle's stream (alpha and beta are read when called, as host-pointer
// scalars are).
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b,
                                          int m, int n, int k, const void *alpha, const void *a, cudaDataType a_type,
                                          int lda, long long stride_a, const void *b, cudaDataType b_type, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType c_type, int ldc,
                                          long long stride_c, int count, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo) {
    (void)algo;
    host_note("cublasGemmStridedBatchedEx");
    HostCublas *h = host_cublas(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (a_type != CUDA_R_16BF || b_type != CUDA_R_16BF || c_type != CUDA_R_16BF || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    size_t span_a = op_a == CUBLAS_OP_N ? batch_span(m, k, lda, stride_a, count) : batch_span(k, m, lda, stride_a, count);
    size_t span_b = op_b == CUBLAS_OP_N ? batch_span(k, n, ldb, stride_b, count) : batch_span(n, k, ldb, stride_b, count);
    size_t span_c = batch_span(m, n, ldc, stride_c, count);
    if (!span_a || !span_b || !span_c) return CUBLAS_STATUS_INVALID_VALUE;
    if (!host_inside_allocation(a, 2 * span_a) || !host_inside_allocation(b, 2 * span_b) ||
        !host_inside_allocation(c, 2 * span_c))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    Gemm *g = malloc(sizeof *g);
    if (!g) return CUBLAS_STATUS_ALLOC_FAILED;
    *g = (Gemm){op_a, op_b, m, n, k, lda, ldb, ldc, count, stride_a, stride_b, stride_c, a, b, c,
                *(const float *)alpha, *(const float *)beta};
    host_enqueue(h->stream, run_gemm, g);
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
