// optim.cu: the flat parameter buffer. Nesterov SGD and lookahead, each one grid-stride
// launch over the whole buffer (an element finds its segment by comparing its index with
// the segment bounds), the fp16 conv copy, and the seeded initialization (net.h).
#include "kernel_common.h"
#include "net.h"

// SgdGroup[N_SEGMENTS] as a kernel argument.
struct SgdGroups {
    SgdGroup group[N_SEGMENTS];
};

// The segment holding flat index i, or -1 (a gap, or the frozen whitening weight).
__device__ __forceinline__ int segment_of(const ParamBuffers &pb, size_t i) {
    int segment = -1;
#pragma unroll
    for (int s = 0; s < N_SEGMENTS; s++)
        if (i >= pb.begin[s] && i < pb.end[s]) segment = s;
    return segment;
}

// The flat buffer's extent: the end of the last segment.
static size_t params_end(const ParamBuffers *pb) {
    size_t end = 0;
    for (int s = 0; s < N_SEGMENTS; s++)
        if (pb->end[s] > end) end = pb->end[s];
    return end;
}

// g = grad + decay * w; buf = m * buf + g; g += m * buf; w -= lr * g (fp32). The conv
// segment reads its fp16 gradient and refreshes its fp16 copy.
__global__ void sgd_step_kernel(ParamBuffers pb, SgdGroups groups, float m, size_t first, size_t last) {
    for (size_t i = first + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < last;
         i += (size_t)gridDim.x * blockDim.x) {
        int s = segment_of(pb, i);
        if (s < 0 || !groups.group[s].enabled) continue;
        float lr = groups.group[s].lr, decay = groups.group[s].decay;
        size_t conv_index = i - pb.begin[SEG_CONV];
        float w = pb.params[i];
        float grad = s == SEG_CONV ? __half2float(pb.conv_grads[conv_index]) : pb.grads[i];
        float g = __fmaf_rn(decay, w, grad);
        float buf = __fmaf_rn(m, pb.momentum[i], g);
        g = __fmaf_rn(m, buf, g);
        w = __fmaf_rn(-lr, g, w);
        pb.momentum[i] = buf;
        pb.params[i] = w;
        if (s == SEG_CONV) pb.conv_half[conv_index] = __float2half_rn(w);
    }
}

// ema = decay * ema + (1 - decay) * w, written ema + (1 - decay) * (w - ema) so that an
// unchanged value (the frozen whitening weight) stays exactly unchanged; then w = ema.
// Indices [0, n_params) are the parameters, [n_params, n_params + n_running) the running
// stats.
__global__ void lookahead_kernel(ParamBuffers pb, float *ema_params, float *running, float *ema_running,
                                 size_t n_params, size_t n_running, float decay) {
    float keep_new = 1.0f - decay;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_params + n_running;
         i += (size_t)gridDim.x * blockDim.x) {
        bool is_param = i < n_params;
        float *w = is_param ? pb.params + i : running + (i - n_params);
        float *ema = is_param ? ema_params + i : ema_running + (i - n_params);
        float e = *ema;
        e = __fmaf_rn(keep_new, *w - e, e);
        *ema = e;
        *w = e;
        if (is_param && i >= pb.begin[SEG_CONV] && i < pb.end[SEG_CONV])
            pb.conv_half[i - pb.begin[SEG_CONV]] = __float2half_rn(e);
    }
}

__global__ void refresh_conv_half_kernel(__half *conv_half, const float *conv_params, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        conv_half[i] = __float2half_rn(conv_params[i]);
}

// KRSC element i = ((o * 3 + ky) * 3 + kx) * c_in + ci takes the value of OIHW element
// ((o * c_in + ci) * 3 + ky) * 3 + kx.
__global__ void init_conv_kernel(float *weight, int tensor_id, int c_out, int c_in, uint64_t seed) {
    size_t count = (size_t)c_out * 9 * c_in;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        size_t ci = i % c_in, tap = i / c_in;  // tap = (o * 3 + ky) * 3 + kx
        size_t kx = tap % 3, ky = tap / 3 % 3, o = tap / 9;
        size_t oihw = ((o * c_in + ci) * 3 + ky) * 3 + kx;
        weight[i] = net_init_conv(seed, tensor_id, c_out, c_in, oihw);
    }
}

__global__ void init_uniform_kernel(float *values, size_t count, int tensor_id, int fan_in, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        values[i] = net_init_uniform(seed, tensor_id, fan_in, i);
}

static int flat_grid(size_t count) { return stride_grid((long long)ceil_div((long long)count, BLOCK)); }

extern "C" {

cudaError_t launch_sgd_step(const ParamBuffers *pb, const SgdGroup groups[N_SEGMENTS], float momentum,
                            cudaStream_t stream) {
    size_t first = params_end(pb), last = 0;
    SgdGroups g;
    for (int s = 0; s < N_SEGMENTS; s++) {
        g.group[s] = groups[s];
        if (groups[s].enabled && pb->begin[s] < pb->end[s]) {
            if (pb->begin[s] < first) first = pb->begin[s];
            if (pb->end[s] > last) last = pb->end[s];
        }
    }
    if (first < last) sgd_step_kernel<<<flat_grid(last - first), BLOCK, 0, stream>>>(*pb, g, momentum, first, last);
    return cudaGetLastError();
}

cudaError_t launch_lookahead(const ParamBuffers *pb, float *ema_params, float *running, float *ema_running,
                             size_t n_running, float decay, cudaStream_t stream) {
    size_t n_params = params_end(pb);
    if (n_params + n_running > 0)
        lookahead_kernel<<<flat_grid(n_params + n_running), BLOCK, 0, stream>>>(*pb, ema_params, running, ema_running,
                                                                                n_params, n_running, decay);
    return cudaGetLastError();
}

cudaError_t launch_refresh_conv_half(const ParamBuffers *pb, cudaStream_t stream) {
    size_t count = pb->end[SEG_CONV] - pb->begin[SEG_CONV];
    if (count > 0)
        refresh_conv_half_kernel<<<flat_grid(count), BLOCK, 0, stream>>>(pb->conv_half,
                                                                         pb->params + pb->begin[SEG_CONV], count);
    return cudaGetLastError();
}

cudaError_t launch_init_conv(float *weight, int tensor_id, int c_out, int c_in, uint64_t seed, cudaStream_t stream) {
    size_t count = (size_t)c_out * 9 * c_in;
    if (count > 0) init_conv_kernel<<<flat_grid(count), BLOCK, 0, stream>>>(weight, tensor_id, c_out, c_in, seed);
    return cudaGetLastError();
}

cudaError_t launch_init_uniform(float *values, size_t count, int tensor_id, int fan_in, uint64_t seed,
                                cudaStream_t stream) {
    if (count > 0) init_uniform_kernel<<<flat_grid(count), BLOCK, 0, stream>>>(values, count, tensor_id, fan_in, seed);
    return cudaGetLastError();
}

}  // extern "C"
