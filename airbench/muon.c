// muon.c: the Muon optimizer's conv-weight step on the GPU (docs/recipe.md): Nesterov
// momentum, the update orthogonalized by Newton-Schulz in bf16 through cuBLAS, the weight
// renormalized and decayed as the step plan says. The elementwise parts are kernels
// (kernels/muon.cu); the CPU twin is ref_muon_step.
//
// The conv filters lie one after another in the conv segment (net.h's order), each a
// row-major (c_out, 9 c_in) matrix, and the update matrices lie the same way in ns_x. The
// filters of equal shape are neighbours (airbench94: 64x216, 64x576, 256x576, then three of
// 256x2304), so each run of equal shapes is one Muon group, and Newton-Schulz runs as
// strided-batched GEMMs over a group: three cuBLAS calls per iteration for the whole group.
// The per-filter kernels (norms, scaling, the weight update) are one launch each for all
// the filters (kernels.h's MuonMatrices), and each iteration copies all groups' operands
// in one copy each: only the GEMMs' launches grow with the number of groups. With
// --muon-streams on the groups instead run side by side, each on a stream of its own.
#include "trainer.h"

_Static_assert(3 * NET_MAX_DEPTH <= MUON_MAX_MATRICES, "every conv filter must fit one MuonMatrices");

// The runs of equal (c_out, cols) among the conv filters, the filters as the Muon kernels
// see them, and the buffers they need: every group's Gram matrices lie one after another.
void muon_alloc(Trainer *t) {
    const NetLayout *l = &t->layout;
    size_t n_conv = t->pb.end[SEG_CONV] - t->pb.begin[SEG_CONV];
    t->n_muon_groups = 0;
    t->muon_gram_size = 0;
    t->muon_matrices.n = 0;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        int cols = (int)(ti->size / ti->c_out), i = t->muon_matrices.n++;
        size_t side = (size_t)(cols < ti->c_out ? cols : ti->c_out);
        t->muon_matrices.offset[i] = ti->offset - t->pb.begin[SEG_CONV];
        t->muon_matrices.count[i] = ti->size;
        t->muon_matrices.c_out[i] = ti->c_out;
        MuonGroup *last = t->n_muon_groups ? &t->muon_groups[t->n_muon_groups - 1] : NULL;
        if (last && last->rows == ti->c_out && last->cols == cols) {
            last->count++;
        } else {
            t->muon_groups[t->n_muon_groups++] = (MuonGroup){.rows = ti->c_out, .cols = cols, .count = 1,
                                                             .offset = t->muon_matrices.offset[i],
                                                             .gram_offset = t->muon_gram_size};
        }
        t->muon_gram_size += side * side;
    }
    t->ns_x = gpu_alloc(n_conv * sizeof(__nv_bfloat16));
    t->ns_next = gpu_alloc(n_conv * sizeof(__nv_bfloat16));
    t->ns_gram = gpu_alloc(t->muon_gram_size * sizeof(__nv_bfloat16));
    t->ns_poly = gpu_alloc(t->muon_gram_size * sizeof(__nv_bfloat16));
    t->sum_sq = gpu_alloc(2 * MUON_MAX_MATRICES * sizeof(float));
}

void muon_use_streams(Trainer *t) {
    char why[512];
    if (recipe_refuses_muon_streams(&t->recipe, why, sizeof why)) die(2, "%s", why);
    if (t->n_muon_streams) return;
    CUDA_CHECK(cudaEventCreateWithFlags(&t->muon_fork, cudaEventDisableTiming));
    for (int k = 0; k < t->n_muon_groups; k++) {
        CUDA_CHECK(cudaStreamCreate(&t->muon_stream[k]));
        CUDA_CHECK(cudaEventCreateWithFlags(&t->muon_done[k], cudaEventDisableTiming));
        CUBLAS_CHECK(cublasCreate(&t->muon_cublas[k]));
        CUBLAS_CHECK(cublasSetStream(t->muon_cublas[k], t->muon_stream[k]));
        t->muon_workspace[k] = gpu_alloc(CUBLAS_WORKSPACE_BYTES);
        CUBLAS_CHECK(cublasSetWorkspace(t->muon_cublas[k], t->muon_workspace[k], CUBLAS_WORKSPACE_BYTES));
    }
    t->n_muon_streams = t->n_muon_groups;
}

void muon_free_streams(Trainer *t) {
    for (int k = 0; k < t->n_muon_streams; k++) {
        cublasDestroy(t->muon_cublas[k]);
        cudaFree(t->muon_workspace[k]);
        cudaEventDestroy(t->muon_done[k]);
        cudaStreamDestroy(t->muon_stream[k]);
    }
    if (t->n_muon_streams) cudaEventDestroy(t->muon_fork);
    t->n_muon_streams = 0;
}

// count bf16 GEMMs through cuBLAS with fp32 accumulation (column-major, as cuBLAS sees
// it), matrix i of each operand `stride` elements after matrix i - 1.
static void gemm_bf16_batched(cublasHandle_t cublas, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n,
                              int k, float alpha, const __nv_bfloat16 *a, int lda, long long stride_a,
                              const __nv_bfloat16 *b, int ldb, long long stride_b, float beta, __nv_bfloat16 *c,
                              int ldc, long long stride_c, int count) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(cublas, op_a, op_b, m, n, k, &alpha, a, CUDA_R_16BF, lda, stride_a, b,
                                            CUDA_R_16BF, ldb, stride_b, &beta, c, CUDA_R_16BF, ldc, stride_c, count,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Newton-Schulz on each group's row-major rows x cols matrices (already divided by their
// norms), on their wide orientation: A = X X^T; B = b A + c A A; X = a X + B X. cuBLAS sees
// a row-major X as the column-major M = X^T (cols x rows). Wide X: A = M^T M and
// M <- M B + a M. Tall X (work on X^T = M): A = M M^T and M <- B M + a M. cuBLAS writes
// each product over its C operand, so B's starts as a copy of A and the new X's as a copy
// of X: one copy of all groups' Gram matrices and one of all filters per iteration. An
// iteration reads buffer x and writes buffer `next`, then they swap: the result ends in
// ns_x after an even number of iterations and in ns_next after an odd one.
static void gram_gemm(Trainer *t, cublasHandle_t cublas, const MuonGroup *grp, const __nv_bfloat16 *x) {
    int rows = grp->rows, cols = grp->cols, p = rows <= cols ? rows : cols;
    long long size = (long long)rows * cols, gram = (long long)p * p;
    __nv_bfloat16 *a = t->ns_gram + grp->gram_offset;
    if (rows <= cols)
        gemm_bf16_batched(cublas, CUBLAS_OP_T, CUBLAS_OP_N, p, p, cols, 1.0f, x, cols, size, x, cols, size, 0.0f,
                          a, p, gram, grp->count);
    else
        gemm_bf16_batched(cublas, CUBLAS_OP_N, CUBLAS_OP_T, p, p, rows, 1.0f, x, cols, size, x, cols, size, 0.0f,
                          a, p, gram, grp->count);
}

// B = c A A + b B, with B a copy of A.
static void polynomial_gemm(Trainer *t, cublasHandle_t cublas, const MuonGroup *grp) {
    const Recipe *r = &t->recipe;
    int p = grp->rows <= grp->cols ? grp->rows : grp->cols;
    long long gram = (long long)p * p;
    const __nv_bfloat16 *a = t->ns_gram + grp->gram_offset;
    gemm_bf16_batched(cublas, CUBLAS_OP_N, CUBLAS_OP_N, p, p, p, (float)r->ns_c, a, p, gram, a, p, gram,
                      (float)r->ns_b, t->ns_poly + grp->gram_offset, p, gram, grp->count);
}

// next = B X + a next, with next a copy of X (M B or B M as cuBLAS sees it).
static void update_gemm(Trainer *t, cublasHandle_t cublas, const MuonGroup *grp, const __nv_bfloat16 *x,
                        __nv_bfloat16 *next) {
    int rows = grp->rows, cols = grp->cols, p = rows <= cols ? rows : cols;
    long long size = (long long)rows * cols, gram = (long long)p * p;
    const float a = (float)t->recipe.ns_a;
    const __nv_bfloat16 *b = t->ns_poly + grp->gram_offset;
    if (rows <= cols)
        gemm_bf16_batched(cublas, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, rows, 1.0f, x, cols, size, b, p, gram, a,
                          next, cols, size, grp->count);
    else
        gemm_bf16_batched(cublas, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, cols, 1.0f, b, p, gram, x, cols, size, a,
                          next, cols, size, grp->count);
}

static void newton_schulz(Trainer *t) {
    size_t n_conv = t->pb.end[SEG_CONV] - t->pb.begin[SEG_CONV];
    __nv_bfloat16 *x = t->ns_x, *next = t->ns_next;
    for (int step = 0; step < t->recipe.muon_ns_steps; step++) {
        for (int k = 0; k < t->n_muon_groups; k++)
            gram_gemm(t, t->cublas, &t->muon_groups[k], x + t->muon_groups[k].offset);
        CUDA_CHECK(cudaMemcpyAsync(t->ns_poly, t->ns_gram, t->muon_gram_size * sizeof(__nv_bfloat16),
                                   cudaMemcpyDeviceToDevice, t->stream));
        for (int k = 0; k < t->n_muon_groups; k++) polynomial_gemm(t, t->cublas, &t->muon_groups[k]);
        CUDA_CHECK(cudaMemcpyAsync(next, x, n_conv * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, t->stream));
        for (int k = 0; k < t->n_muon_groups; k++) {
            const MuonGroup *grp = &t->muon_groups[k];
            update_gemm(t, t->cublas, grp, x + grp->offset, next + grp->offset);
        }
        __nv_bfloat16 *done = next;
        next = x;
        x = done;
    }
}

// --muon-streams on: the same GEMMs, each group's on a stream and cuBLAS handle of its own,
// so that the groups' small products run side by side. A group's whole Newton-Schulz runs
// on its stream between one fork from the main stream and one join back; it copies only its
// own Gram matrices and filters, so the groups share no buffer region.
static void newton_schulz_by_group(Trainer *t) {
    CUDA_CHECK(cudaEventRecord(t->muon_fork, t->stream));
    for (int k = 0; k < t->n_muon_groups; k++) {
        const MuonGroup *grp = &t->muon_groups[k];
        cudaStream_t s = t->muon_stream[k];
        cublasHandle_t cublas = t->muon_cublas[k];
        int side = grp->rows <= grp->cols ? grp->rows : grp->cols;
        size_t grams = (size_t)grp->count * side * side, filters = (size_t)grp->count * grp->rows * grp->cols;
        __nv_bfloat16 *x = t->ns_x + grp->offset, *next = t->ns_next + grp->offset;
        CUDA_CHECK(cudaStreamWaitEvent(s, t->muon_fork, 0));
        for (int step = 0; step < t->recipe.muon_ns_steps; step++) {
            gram_gemm(t, cublas, grp, x);
            CUDA_CHECK(cudaMemcpyAsync(t->ns_poly + grp->gram_offset, t->ns_gram + grp->gram_offset,
                                       grams * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, s));
            polynomial_gemm(t, cublas, grp);
            CUDA_CHECK(cudaMemcpyAsync(next, x, filters * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, s));
            update_gemm(t, cublas, grp, x, next);
            __nv_bfloat16 *done = next;
            next = x;
            x = done;
        }
        CUDA_CHECK(cudaEventRecord(t->muon_done[k], s));
        CUDA_CHECK(cudaStreamWaitEvent(t->stream, t->muon_done[k], 0));
    }
}

// Muon for the conv filters: Nesterov momentum, each update divided by its norm,
// Newton-Schulz per group of equal shapes, then each weight rescaled to Frobenius norm
// sqrt(c_out) before its step when the plan says so, and the decoupled decay after it.
// Each of these is one launch (or two) for all the filters. sum_sq holds the updates'
// sums of squares, then from MUON_MAX_MATRICES on the weights'.
void muon_step(Trainer *t, const StepPlan *plan) {
    const Recipe *r = &t->recipe;
    const MuonMatrices *filters = &t->muon_matrices;
    size_t begin = t->pb.begin[SEG_CONV];
    float *update_sums = t->sum_sq, *weight_sums = t->sum_sq + MUON_MAX_MATRICES;
    CUDA_CHECK(launch_muon_momentum(t->ns_x, t->momentum + begin, t->conv_grads, t->pb.end[SEG_CONV] - begin,
                                    (float)r->muon_momentum, t->stream));
    CUDA_CHECK(launch_sum_squares_bf16(update_sums, t->ns_x, filters, t->stream));
    CUDA_CHECK(launch_scale_by_inverse_norm(t->ns_x, filters, update_sums, (float)r->ns_eps, t->stream));
    if (t->n_muon_streams) newton_schulz_by_group(t);
    else newton_schulz(t);
    const __nv_bfloat16 *orthogonal = r->muon_ns_steps % 2 ? t->ns_next : t->ns_x;
    if (plan->muon_normalize) CUDA_CHECK(launch_sum_squares(weight_sums, t->params + begin, filters, t->stream));
    CUDA_CHECK(launch_muon_apply(t->params + begin, t->conv_half, orthogonal, filters,
                                 plan->muon_normalize ? weight_sums : NULL, (float)plan->group[GROUP_CONV].lr,
                                 (float)plan->muon_decay, t->stream));
}
