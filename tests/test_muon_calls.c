// test_muon_calls.c: the GPU trainer's Muon step (airbench/muon.c) run on the CPU, against
// the reference's ref_muon_step. No GPU: this program defines, in plain C, the few CUDA,
// cuBLAS and kernel entry points muon.c calls (it links neither libcudart nor cuBLAS):
// cublasGemmStridedBatchedEx with cuBLAS's column-major semantics (bf16 operands, fp32
// sums, the result rounded to bf16 once), device-to-device copies, and the Muon kernels as
// kernels.h specifies them. Every GEMM operand's extent, over the whole batch, must lie
// inside one allocation. So what this checks is muon.c's own logic: the grouping of equal
// shapes, the transposes, leading dimensions and strides of each call, the wide and tall
// orientations, the buffer that holds the result after an even or odd number of iterations,
// and the renormalization and decay. A wrong operand gives an error of order 1; the bound
// below leaves room only for the order of the sums and the bf16 roundings it moves.
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test_helpers.h"
#include "trainer.h"

// ---- stand-ins for the GPU side -------------------------------------------------------------

enum { MAX_ALLOCATIONS = 64 };
typedef struct {
    const char *begin;
    size_t bytes;
} Allocation;
static Allocation allocations[MAX_ALLOCATIONS];
static int n_allocations;

void *gpu_alloc(size_t bytes) {
    if (n_allocations == MAX_ALLOCATIONS) die(1, "test_muon_calls: too many allocations");
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) die(1, "test_muon_calls: out of memory");
    allocations[n_allocations++] = (Allocation){p, bytes};
    return p;
}

// Whether [p, p + bytes) lies inside one allocation.
static int inside_allocation(const void *p, size_t bytes) {
    for (int i = 0; i < n_allocations; i++)
        if ((const char *)p >= allocations[i].begin && (const char *)p + bytes <= allocations[i].begin + allocations[i].bytes)
            return 1;
    return 0;
}

void die(int code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    printf("FATAL ");
    vprintf(fmt, args);
    printf("\n");
    va_end(args);
    exit(code);
}

void cuda_check(cudaError_t err, const char *what, const char *file, int line) {
    if (err != cudaSuccess) die(1, "%s:%d: %s returned error %d", file, line, what, (int)err);
}

void cublas_check(cublasStatus_t status, const char *what, const char *file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) die(1, "%s:%d: %s returned status %d", file, line, what, (int)status);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
    (void)stream;
    if (kind != cudaMemcpyDeviceToDevice || !inside_allocation(dst, count) || !inside_allocation(src, count))
        return cudaErrorInvalidValue;
    memmove(dst, src, count);
    return cudaSuccess;
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

// C_i = alpha op(A_i) op(B_i) + beta C_i, i < count, column-major (m x n, inner dimension k).
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b,
                                          int m, int n, int k, const void *alpha, const void *a, cudaDataType a_type,
                                          int lda, long long stride_a, const void *b, cudaDataType b_type, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType c_type, int ldc,
                                          long long stride_c, int count, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo) {
    (void)handle, (void)algo;
    if (a_type != CUDA_R_16BF || b_type != CUDA_R_16BF || c_type != CUDA_R_16BF || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    size_t span_a = op_a == CUBLAS_OP_N ? batch_span(m, k, lda, stride_a, count) : batch_span(k, m, lda, stride_a, count);
    size_t span_b = op_b == CUBLAS_OP_N ? batch_span(k, n, ldb, stride_b, count) : batch_span(n, k, ldb, stride_b, count);
    size_t span_c = batch_span(m, n, ldc, stride_c, count);
    if (!span_a || !span_b || !span_c) return CUBLAS_STATUS_INVALID_VALUE;
    if (!inside_allocation(a, 2 * span_a) || !inside_allocation(b, 2 * span_b) || !inside_allocation(c, 2 * span_c))
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

// The Muon kernels (kernels.h), element by element as kernels/muon.cu computes them.
cudaError_t launch_muon_momentum(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count, float m,
                                 cudaStream_t stream) {
    (void)stream;
    for (size_t i = 0; i < count; i++) {
        float g = half_to_float(grad[i].x), buf = m * momentum[i] + g;
        momentum[i] = buf;
        update[i].x = float_to_bf16(g + m * buf);
    }
    return cudaSuccess;
}

cudaError_t launch_sum_squares(float *sum_sq, const float *x, size_t count, cudaStream_t stream) {
    (void)stream;
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)x[i] * x[i];
    *sum_sq = (float)sum;
    return cudaSuccess;
}

cudaError_t launch_sum_squares_bf16(float *sum_sq, const __nv_bfloat16 *x, size_t count, cudaStream_t stream) {
    (void)stream;
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)bf16_to_float(x[i].x) * bf16_to_float(x[i].x);
    *sum_sq = (float)sum;
    return cudaSuccess;
}

cudaError_t launch_scale_by_inverse_norm(__nv_bfloat16 *x, size_t count, const float *sum_sq, float eps,
                                         cudaStream_t stream) {
    (void)stream;
    float scale = 1.0f / (sqrtf(*sum_sq) + eps);
    for (size_t i = 0; i < count; i++) x[i].x = float_to_bf16(bf16_to_float(x[i].x) * scale);
    return cudaSuccess;
}

cudaError_t launch_muon_apply(float *w, __half *w_half, const __nv_bfloat16 *update, size_t count, int c_out,
                              const float *w_sum_sq, float lr, float decay, cudaStream_t stream) {
    (void)stream;
    float scale = w_sum_sq ? sqrtf((float)c_out) / sqrtf(*w_sum_sq) : 1.0f;
    for (size_t i = 0; i < count; i++) {
        w[i] = (w[i] * scale - lr * bf16_to_float(update[i].x)) * decay;
        w_half[i].x = float_to_half(w[i]);
    }
    return cudaSuccess;
}

// ---- the test ---------------------------------------------------------------------------------

// Measured here: at most 3.5e-3 (where a bf16 rounding goes the other way in one iterate,
// the next ones carry it), most filters 1e-6 or less. Mistakes put into muon.c by hand (a
// swapped transpose, a wrong stride, the wrong result buffer, a stride of 0) either made an
// operand reach outside its buffer, which the stand-in refuses, or gave errors of 0.4 to 400.
#define CHANGE_BOUND 2e-2

// One Muon step of muon.c and of the reference from the same weights, momentum and fp16
// gradients; compares the change of every conv weight. Both treat a filter as the row-major
// (c_out, size / c_out) matrix of its flat values, so the layouts need no conversion here.
static void check_muon_step(const int widths[3], int ns_steps, int normalize) {
    Recipe recipe = RECIPE_94_MUON;
    memcpy(recipe.widths, widths, sizeof recipe.widths);
    recipe.muon_ns_steps = ns_steps;
    Trainer *t = calloc(1, sizeof *t);
    t->recipe = recipe;
    net_layout_init(&t->layout, recipe.widths, recipe.depth);
    const NetLayout *l = &t->layout;
    net_segments(l, t->pb.begin, t->pb.end);
    size_t n = l->n_params, conv_begin = t->pb.begin[SEG_CONV], n_conv = t->pb.end[SEG_CONV] - conv_begin;
    t->params = gpu_alloc(n * sizeof(float));
    t->momentum = gpu_alloc(n * sizeof(float));
    t->conv_half = gpu_alloc(n_conv * sizeof(__half));
    t->conv_grads = gpu_alloc(n_conv * sizeof(__half));
    muon_alloc(t);

    RefNet *ref = ref_net_create(&recipe);
    ref->muon_bf16 = 1;
    random_floats(t->params, n, 0.0, 0.05);
    random_floats(t->momentum, n, 0.0, 0.01);
    float *grads = malloc(n_conv * sizeof(float));
    random_floats(grads, n_conv, 0.0, 0.02);
    memcpy(ref->params, t->params, n * sizeof(float));
    memcpy(ref->momentum, t->momentum, n * sizeof(float));
    memset(ref->grads, 0, n * sizeof(float));
    for (size_t i = 0; i < n_conv; i++) {
        t->conv_grads[i].x = float_to_half(grads[i]);
        ref->grads[conv_begin + i] = half_to_float(t->conv_grads[i].x);
    }
    float *before = malloc(n * sizeof(float));
    memcpy(before, t->params, n * sizeof(float));

    StepPlan plan = {.muon_normalize = normalize, .muon_decay = 0.995};
    plan.group[GROUP_CONV] = (GroupStep){.lr = 0.08, .enabled = 1};
    muon_step(t, &plan);
    ref_muon_step(ref, &recipe, &plan);

    printf("widths %d,%d,%d: %d Muon groups, %d Newton-Schulz steps, %s\n", widths[0], widths[1], widths[2],
           t->n_muon_groups, ns_steps, normalize ? "renormalized" : "not renormalized");
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        float *got = malloc(ti->size * sizeof(float)), *want = malloc(ti->size * sizeof(float));
        for (size_t i = 0; i < ti->size; i++) {
            got[i] = t->params[ti->offset + i] - before[ti->offset + i];
            want[i] = ref->params[ti->offset + i] - before[ti->offset + i];
        }
        char what[96];
        snprintf(what, sizeof what, "conv %d.%d (%d x %d): its change against the reference's", ti->group, ti->conv,
                 ti->c_out, (int)(ti->size / ti->c_out));
        check_rel(what, got, want, ti->size, CHANGE_BOUND);
        int fp16_copy_ok = 1;
        for (size_t i = 0; i < ti->size; i++)
            fp16_copy_ok &= t->conv_half[ti->offset - conv_begin + i].x == float_to_half(t->params[ti->offset + i]);
        CHECK(fp16_copy_ok, "conv %d.%d: the fp16 copy is not the new weight rounded", ti->group, ti->conv);
        free(got);
        free(want);
    }
    ref_net_free(ref);
    free(before);
    free(grads);
    for (int i = 0; i < n_allocations; i++) free((void *)allocations[i].begin);
    n_allocations = 0;
    free(t);
}

int main(void) {
    // airbench94's shapes at a quarter of the width: 16x216, 16x144, 64x144, and three of
    // 64x576 (one group of three).
    const int quarter[3] = {16, 64, 64};
    // a tall first filter (224 x 216 has more rows than columns), then wide ones; only conv
    // 0.0 can be tall (c_out > 9 c_in), so a tall group always has one filter
    const int tall[3] = {224, 16, 16};
    check_muon_step(quarter, 5, 0);
    check_muon_step(quarter, 3, 1);  // an odd count: the result ends in the other buffer
    check_muon_step(tall, 5, 1);
    check_muon_step(tall, 3, 0);
    return test_finish("test_muon_calls");
}
