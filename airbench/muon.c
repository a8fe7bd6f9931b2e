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
#include "trainer.h"

// The runs of equal (c_out, cols) among the conv filters, and the buffers they need.
void muon_alloc(Trainer *t) {
    const NetLayout *l = &t->layout;
    size_t largest_gram = 0, n_conv = t->pb.end[SEG_CONV] - t->pb.begin[SEG_CONV];
    t->n_muon_groups = 0;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        int cols = (int)(ti->size / ti->c_out);
        MuonGroup *last = t->n_muon_groups ? &t->muon_groups[t->n_muon_groups - 1] : NULL;
        if (last && last->rows == ti->c_out && last->cols == cols) {
            last->count++;
        } else {
            t->muon_groups[t->n_muon_groups++] =
                (MuonGroup){.rows = ti->c_out, .cols = cols, .count = 1, .offset = ti->offset - t->pb.begin[SEG_CONV]};
            last = &t->muon_groups[t->n_muon_groups - 1];
        }
        size_t side = (size_t)(cols < ti->c_out ? cols : ti->c_out);
        if (last->count * side * side > largest_gram) largest_gram = last->count * side * side;
    }
    t->ns_x = gpu_alloc(n_conv * sizeof(__nv_bfloat16));
    t->ns_next = gpu_alloc(n_conv * sizeof(__nv_bfloat16));
    t->ns_gram = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
    t->ns_poly = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
    t->sum_sq = gpu_alloc(2 * sizeof(float));
}

// count bf16 GEMMs through cuBLAS with fp32 accumulation (column-major, as cuBLAS sees
// it), matrix i of each operand `stride` elements after matrix i - 1.
static void gemm_bf16_batched(Trainer *t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                              float alpha, const __nv_bfloat16 *a, int lda, long long stride_a,
                              const __nv_bfloat16 *b, int ldb, long long stride_b, float beta, __nv_bfloat16 *c,
                              int ldc, long long stride_c, int count) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(t->cublas, op_a, op_b, m, n, k, &alpha, a, CUDA_R_16BF, lda, stride_a, b,
                                            CUDA_R_16BF, ldb, stride_b, &beta, c, CUDA_R_16BF, ldc, stride_c, count,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Newton-Schulz on a group's row-major rows x cols matrices (already divided by their
// norms), on their wide orientation: A = X X^T; B = b A + c A A; X = a X + B X. cuBLAS sees
// a row-major X as the column-major M = X^T (cols x rows). Wide X: A = M^T M and
// M <- M B + a M. Tall X (work on X^T = M): A = M M^T and M <- B M + a M. Iterate i reads
// buffer x and writes buffer `next`, then they swap: the result ends in ns_x after an even
// number of iterations and in ns_next after an odd one, for every group alike.
static void newton_schulz_group(Trainer *t, const MuonGroup *grp) {
    const Recipe *r = &t->recipe;
    const float a = (float)r->ns_a, b = (float)r->ns_b, c = (float)r->ns_c;
    int rows = grp->rows, cols = grp->cols, wide = rows <= cols, p = wide ? rows : cols, n = grp->count;
    long long size = (long long)rows * cols, gram = (long long)p * p;
    __nv_bfloat16 *x = t->ns_x + grp->offset, *next = t->ns_next + grp->offset;
    for (int step = 0; step < r->muon_ns_steps; step++) {
        if (wide)
            gemm_bf16_batched(t, CUBLAS_OP_T, CUBLAS_OP_N, p, p, cols, 1.0f, x, cols, size, x, cols, size, 0.0f,
                              t->ns_gram, p, gram, n);
        else
            gemm_bf16_batched(t, CUBLAS_OP_N, CUBLAS_OP_T, p, p, rows, 1.0f, x, cols, size, x, cols, size, 0.0f,
                              t->ns_gram, p, gram, n);
        CUDA_CHECK(cudaMemcpyAsync(t->ns_poly, t->ns_gram, gram * n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice,
                                   t->stream));
        gemm_bf16_batched(t, CUBLAS_OP_N, CUBLAS_OP_N, p, p, p, c, t->ns_gram, p, gram, t->ns_gram, p, gram, b,
                          t->ns_poly, p, gram, n);
        CUDA_CHECK(cudaMemcpyAsync(next, x, size * n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, t->stream));
        if (wide)
            gemm_bf16_batched(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, rows, 1.0f, x, cols, size, t->ns_poly, p, gram,
                              a, next, cols, size, n);
        else
            gemm_bf16_batched(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, cols, 1.0f, t->ns_poly, p, gram, x, cols, size,
                              a, next, cols, size, n);
        __nv_bfloat16 *done = next;
        next = x;
        x = done;
    }
}

// Muon for the conv filters: Nesterov momentum (one launch over all of them), each update
// divided by its norm, Newton-Schulz per group of equal shapes, then each weight rescaled
// to Frobenius norm sqrt(c_out) before its step when the plan says so, and the decoupled
// decay after it.
void muon_step(Trainer *t, const StepPlan *plan) {
    const Recipe *r = &t->recipe;
    const NetLayout *l = &t->layout;
    size_t begin = t->pb.begin[SEG_CONV];
    CUDA_CHECK(launch_muon_momentum(t->ns_x, t->momentum + begin, t->conv_grads, t->pb.end[SEG_CONV] - begin,
                                    (float)r->muon_momentum, t->stream));
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        __nv_bfloat16 *update = t->ns_x + (ti->offset - begin);
        CUDA_CHECK(launch_sum_squares_bf16(t->sum_sq, update, ti->size, t->stream));
        CUDA_CHECK(launch_scale_by_inverse_norm(update, ti->size, t->sum_sq, (float)r->ns_eps, t->stream));
    }
    for (int k = 0; k < t->n_muon_groups; k++) newton_schulz_group(t, &t->muon_groups[k]);
    const __nv_bfloat16 *orthogonal = r->muon_ns_steps % 2 ? t->ns_next : t->ns_x;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        size_t conv_index = ti->offset - begin;
        if (plan->muon_normalize)
            CUDA_CHECK(launch_sum_squares(t->sum_sq + 1, t->params + ti->offset, ti->size, t->stream));
        CUDA_CHECK(launch_muon_apply(t->params + ti->offset, t->conv_half + conv_index, orthogonal + conv_index,
                                     ti->size, ti->c_out, plan->muon_normalize ? t->sum_sq + 1 : NULL,
                                     (float)plan->group[GROUP_CONV].lr, (float)plan->muon_decay, t->stream));
    }
}
