// whiten_v2.cu: v2 of the whitening layer's forward and bias backward for kernel_bench:
// kernels/whiten_layer.h's kernels with each filter's 12 weights and the 8 biases read from
// shared memory as 16-byte vectors instead of single floats. Why: v1 issues 116 shared
// loads per work item (96 weights, 8 biases, 12 pixels; counted in its PTX), at least one
// shared-memory wavefront each, which at airbench94's batch (2.95M items of 8 channels, 132
// SMs at 1.755 GHz) is some 46 us of the 54 us whiten_forward took on an H100 at 790450e
// (ncu), where the DRAM traffic (53 MB) would take 16: the forward looks bound by shared
// loads. v2 issues 38 per item; the prediction is the forward at ~30-35 us (then bound by
// GELU's arithmetic) and the bias backward somewhat faster. The arithmetic is v1's, in the
// same order.
#include "whiten_layer.h"

extern "C" {

cudaError_t launch_whiten_forward_v2(__half *out, const __half *x, const float *weight, const float *bias, int n,
                                     cudaStream_t stream) {
    if (n > 0) whiten_forward_kernel<WEIGHTS_VECTOR><<<n, BLOCK, 0, stream>>>(out, x, weight, bias);
    return cudaGetLastError();
}

cudaError_t launch_whiten_bias_backward_v2(float *partials, const __half *x, const __half *d_out,
                                           const float *weight, const float *bias, int n, cudaStream_t stream) {
    int rows = n * POSITIONS;
    whiten_bias_backward_kernel<WEIGHTS_VECTOR><<<stats_blocks(rows, CHANNELS), BLOCK, 0, stream>>>(
        partials, x, d_out, weight, bias, rows);
    return cudaGetLastError();
}

}  // extern "C"
