// kernels_muon.c: the Muon kernels of kernels.h on the CPU (host.h), element by element as
// kernels/muon.cu computes them.
#include <math.h>

#include "host.h"
#include "kernels.h"
#include "test_helpers.h"

// Whether every operand lies inside an allocation, as memcheck would demand.
#define REQUIRE_INSIDE(p, bytes) \
    if (!host_inside_allocation((p), (bytes))) return cudaErrorIllegalAddress

cudaError_t launch_muon_momentum(__nv_bfloat16 *update, float *momentum, const __half *grad, size_t count, float m,
                                 cudaStream_t stream) {
    (void)stream;
    host_note(__func__);
    REQUIRE_INSIDE(update, count * sizeof *update);
    REQUIRE_INSIDE(momentum, count * sizeof *momentum);
    REQUIRE_INSIDE(grad, count * sizeof *grad);
    for (size_t i = 0; i < count; i++) {
        float g = half_to_float(grad[i].x), buf = m * momentum[i] + g;
        momentum[i] = buf;
        update[i].x = float_to_bf16(g + m * buf);
    }
    return cudaSuccess;
}

cudaError_t launch_sum_squares(float *sum_sq, const float *x, size_t count, cudaStream_t stream) {
    (void)stream;
    host_note(__func__);
    REQUIRE_INSIDE(sum_sq, sizeof *sum_sq);
    REQUIRE_INSIDE(x, count * sizeof *x);
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)x[i] * x[i];
    *sum_sq = (float)sum;
    return cudaSuccess;
}

cudaError_t launch_sum_squares_bf16(float *sum_sq, const __nv_bfloat16 *x, size_t count, cudaStream_t stream) {
    (void)stream;
    host_note(__func__);
    REQUIRE_INSIDE(sum_sq, sizeof *sum_sq);
    REQUIRE_INSIDE(x, count * sizeof *x);
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) sum += (double)bf16_to_float(x[i].x) * bf16_to_float(x[i].x);
    *sum_sq = (float)sum;
    return cudaSuccess;
}

cudaError_t launch_scale_by_inverse_norm(__nv_bfloat16 *x, size_t count, const float *sum_sq, float eps,
                                         cudaStream_t stream) {
    (void)stream;
    host_note(__func__);
    REQUIRE_INSIDE(sum_sq, sizeof *sum_sq);
    REQUIRE_INSIDE(x, count * sizeof *x);
    float scale = 1.0f / (sqrtf(*sum_sq) + eps);
    for (size_t i = 0; i < count; i++) x[i].x = float_to_bf16(bf16_to_float(x[i].x) * scale);
    return cudaSuccess;
}

cudaError_t launch_muon_apply(float *w, __half *w_half, const __nv_bfloat16 *update, size_t count, int c_out,
                              const float *w_sum_sq, float lr, float decay, cudaStream_t stream) {
    (void)stream;
    host_note(__func__);
    REQUIRE_INSIDE(w, count * sizeof *w);
    REQUIRE_INSIDE(w_half, count * sizeof *w_half);
    REQUIRE_INSIDE(update, count * sizeof *update);
    if (w_sum_sq) REQUIRE_INSIDE(w_sum_sq, sizeof *w_sum_sq);
    float scale = w_sum_sq ? sqrtf((float)c_out) / sqrtf(*w_sum_sq) : 1.0f;
    for (size_t i = 0; i < count; i++) {
        w[i] = (w[i] * scale - lr * bf16_to_float(update[i].x)) * decay;
        w_half[i].x = float_to_half(w[i]);
    }
    return cudaSuccess;
}
