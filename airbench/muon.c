// muon.c: the Muon optimizer's conv-weight step on the GPU (docs/recipe.md): Nesterov
// momentum, the update orthogonalized by Newton-Schulz in bf16 through cuBLAS, the weight
// renormalized and decayed as the step plan says. The elementwise parts are kernels
// (kernels/muon.cu); the CPU twin is ref_muon_step.
#include "trainer.h"

void muon_alloc(Trainer *t) {
    const NetLayout *l = &t->layout;
    size_t largest_conv = 0, largest_gram = 0;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        size_t cols = ti->size / ti->c_out, side = cols < (size_t)ti->c_out ? cols : (size_t)ti->c_out;
        if (ti->size > largest_conv) largest_conv = ti->size;
        if (side * side > largest_gram) largest_gram = side * side;
    }
    t->ns_x = gpu_alloc(largest_conv * sizeof(__nv_bfloat16));
    t->ns_next = gpu_alloc(largest_conv * sizeof(__nv_bfloat16));
    t->ns_gram = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
    t->ns_poly = gpu_alloc(largest_gram * sizeof(__nv_bfloat16));
    t->sum_sq = gpu_alloc(2 * sizeof(float));
}

// bf16 GEMM through cuBLAS with fp32 accumulation (column-major, as cuBLAS sees it).
static void gemm_bf16(Trainer *t, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k, float alpha,
                      const __nv_bfloat16 *a, int lda, const __nv_bfloat16 *b, int ldb, float beta,
                      __nv_bfloat16 *c, int ldc) {
    CUBLAS_CHECK(cublasGemmEx(t->cublas, op_a, op_b, m, n, k, &alpha, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, &beta,
                              c, CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Newton-Schulz on the row-major rows x cols matrix at t->ns_x (already divided by its
// norm), on its wide orientation: A = X X^T; B = b A + c A A; X = a X + B X. cuBLAS sees
// the row-major X as the column-major M = X^T (cols x rows). Wide X: A = M^T M and
// M <- M B + a M. Tall X (work on X^T = M): A = M M^T and M <- B M + a M.
static void newton_schulz(Trainer *t, int rows, int cols) {
    const Recipe *r = &t->recipe;
    const float a = (float)r->ns_a, b = (float)r->ns_b, c = (float)r->ns_c;
    int wide = rows <= cols, p = wide ? rows : cols;
    size_t bytes = (size_t)rows * cols * sizeof(__nv_bfloat16), gram_bytes = (size_t)p * p * sizeof(__nv_bfloat16);
    for (int step = 0; step < r->muon_ns_steps; step++) {
        __nv_bfloat16 *m = t->ns_x, *next = t->ns_next;
        if (wide) gemm_bf16(t, CUBLAS_OP_T, CUBLAS_OP_N, p, p, cols, 1.0f, m, cols, m, cols, 0.0f, t->ns_gram, p);
        else gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_T, p, p, rows, 1.0f, m, cols, m, cols, 0.0f, t->ns_gram, p);
        CUDA_CHECK(cudaMemcpyAsync(t->ns_poly, t->ns_gram, gram_bytes, cudaMemcpyDeviceToDevice, t->stream));
        gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, p, p, p, c, t->ns_gram, p, t->ns_gram, p, b, t->ns_poly, p);
        CUDA_CHECK(cudaMemcpyAsync(next, m, bytes, cudaMemcpyDeviceToDevice, t->stream));
        if (wide) gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, rows, 1.0f, m, cols, t->ns_poly, p, a, next, cols);
        else gemm_bf16(t, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, cols, 1.0f, t->ns_poly, p, m, cols, a, next, cols);
        t->ns_x = next;
        t->ns_next = m;
    }
}

// Muon for each conv filter: Nesterov momentum, the update orthogonalized by
// Newton-Schulz, the weight rescaled to Frobenius norm sqrt(c_out) before the step when
// the schedule says so, and the decoupled decay after it.
void muon_step(Trainer *t, const StepPlan *plan) {
    const Recipe *r = &t->recipe;
    const NetLayout *l = &t->layout;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        size_t conv_index = ti->offset - t->pb.begin[SEG_CONV];
        int cols = (int)(ti->size / ti->c_out);
        CUDA_CHECK(launch_muon_momentum(t->ns_x, t->momentum + ti->offset, t->conv_grads + conv_index, ti->size,
                                        (float)r->muon_momentum, t->stream));
        CUDA_CHECK(launch_sum_squares_bf16(t->sum_sq, t->ns_x, ti->size, t->stream));
        CUDA_CHECK(launch_scale_by_inverse_norm(t->ns_x, ti->size, t->sum_sq, (float)r->ns_eps, t->stream));
        newton_schulz(t, ti->c_out, cols);
        if (plan->muon_normalize)
            CUDA_CHECK(launch_sum_squares(t->sum_sq + 1, t->params + ti->offset, ti->size, t->stream));
        CUDA_CHECK(launch_muon_apply(t->params + ti->offset, t->conv_half + conv_index, t->ns_x, ti->size, ti->c_out,
                                     plan->muon_normalize ? t->sum_sq + 1 : NULL, (float)plan->group[GROUP_CONV].lr,
                                     (float)plan->muon_decay, t->stream));
    }
}

