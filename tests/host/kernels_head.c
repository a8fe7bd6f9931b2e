// kernels_head.c: kernels.h's head, selection and optimizer launchers on the CPU (host.h):
// head.cu's global max pool, linear head, loss and hit count, tta.cu's top probability,
// selection and row scatter, optim.cu's SGD, lookahead, fp16 conv copy and seeded init.
// Each computes what its kernel does, with the kernel's rounding points and summation
// orders (the head's warp butterfly, the loss's 512-thread tree), after checking every
// buffer it touches against the allocations as memcheck would.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host.h"
#include "kernels.h"
#include "net.h"
#include "test_helpers.h"

#define LOSS_THREADS 512    // head.cu's loss block
#define HEAD_BWD_SLICES 16  // head.cu's head_backward row slices

// Whether [p, p + bytes) may be touched: nothing to check when bytes is 0.
static int inside(const void *p, size_t bytes) { return bytes == 0 || host_inside_allocation(p, bytes); }

static size_t count_of(int n) { return n > 0 ? (size_t)n : 0; }

// ---- head ----------------------------------------------------------------------------

// features[img][ch] = max over the side^2 positions (first max), argmax its position.
cudaError_t launch_maxpool_global(float *features, uint8_t *argmax, const __half *in, int n, int side, int c,
                                  cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    int groups = c / 8, positions = side * side;
    size_t cells = (size_t)n * c;
    if (!inside(features, cells * sizeof(float)) || !inside(argmax, cells) ||
        !inside(in, cells * positions * sizeof(__half)))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int img = 0; img < n; img++)
        for (int ch = 0; ch < groups * 8; ch++) {
            const __half *src = in + (size_t)img * positions * c + ch;
            float best = half_to_float(src[0].x);
            uint8_t best_q = 0;
            for (int q = 1; q < positions; q++) {
                float v = half_to_float(src[(size_t)q * c].x);
                if (v > best) {
                    best = v;
                    best_q = (uint8_t)q;
                }
            }
            features[(size_t)img * c + ch] = best;
            argmax[(size_t)img * c + ch] = best_q;
        }
    return cudaSuccess;
}

// d_in = d_features at each channel's argmax position, 0 elsewhere (fp16).
cudaError_t launch_maxpool_global_backward(__half *d_in, const float *d_features, const uint8_t *argmax, int n,
                                           int side, int c, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    int groups = c / 8, positions = side * side;
    size_t cells = (size_t)n * c;
    if (!inside(d_in, cells * positions * sizeof(__half)) || !inside(d_features, cells * sizeof(float)) ||
        !inside(argmax, cells))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int img = 0; img < n; img++)
        for (int ch = 0; ch < groups * 8; ch++) {
            float grad = d_features[(size_t)img * c + ch];
            uint8_t q_max = argmax[(size_t)img * c + ch];
            for (int q = 0; q < positions; q++)
                d_in[((size_t)img * positions + q) * c + ch].x = float_to_half(q_max == q ? grad : 0.0f);
        }
    return cudaSuccess;
}

// Class k's dot product of one image as head.cu's warp computes it: lane l adds channels
// l, l + 32, ... with fmas, then the butterfly adds the lanes pairwise (16, 8, 4, 2, 1 apart).
static float head_dot(const float *f, const float *weight_k, int c) {
    float lanes[32];
    for (int l = 0; l < 32; l++) {
        lanes[l] = 0.0f;
        for (int ch = l; ch < c; ch += 32) lanes[l] = fmaf(f[ch], weight_k[ch], lanes[l]);
    }
    for (int width = 16; width > 0; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] += lanes[l + width];
    return lanes[0];
}

// logits = beta * logits + alpha * scale * features . weight^T (old logits unread if beta 0).
cudaError_t launch_head_forward(float *logits, const float *features, const float *weight, int n, int c, float scale,
                                float alpha, float beta, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!inside(logits, (size_t)n * NET_CLASSES * sizeof(float)) ||
        !inside(features, (size_t)n * count_of(c) * sizeof(float)) ||
        !inside(weight, (size_t)NET_CLASSES * count_of(c) * sizeof(float)))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int img = 0; img < n; img++)
        for (int k = 0; k < NET_CLASSES; k++) {
            float mine = head_dot(features + (size_t)img * c, weight + (size_t)k * c, c);
            float *dst = logits + (size_t)img * NET_CLASSES + k;
            float old = beta == 0.0f ? 0.0f : beta * *dst;
            *dst = old + alpha * scale * mine;
        }
    return cudaSuccess;
}

// d_weight[k][ch] as head.cu's weight blocks: slice s adds rows s, s + 16, ... with fmas,
// then the slices are added in order, times scale.
static float head_weight_grad(const float *d_logits, const float *features, int n, int c, int k, int ch,
                              float scale) {
    float sum = 0.0f;
    for (int s = 0; s < HEAD_BWD_SLICES; s++) {
        float acc = 0.0f;
        for (int b = s; b < n; b += HEAD_BWD_SLICES)
            acc = fmaf(d_logits[(size_t)b * NET_CLASSES + k], features[(size_t)b * c + ch], acc);
        sum += acc;
    }
    return scale * sum;
}

// d_weight = scale * d_logits^T features; d_features = scale * d_logits weight.
cudaError_t launch_head_backward(float *d_weight, float *d_features, const float *d_logits, const float *features,
                                 const float *weight, int n, int c, float scale, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    long long weight_blocks = ((long long)c + 31) / 32;
    long long feature_blocks = ((long long)n * c + 32 * HEAD_BWD_SLICES - 1) / (32 * HEAD_BWD_SLICES);
    if (weight_blocks + feature_blocks <= 0) return cudaErrorInvalidConfiguration;  // an empty grid
    size_t rows = count_of(n), width = count_of(c), n_features = rows * width;
    if (!inside(d_weight, NET_CLASSES * width * sizeof(float)) || !inside(d_features, n_features * sizeof(float)) ||
        !inside(d_logits, rows * NET_CLASSES * sizeof(float)) || !inside(features, n_features * sizeof(float)) ||
        !inside(weight, n_features ? NET_CLASSES * width * sizeof(float) : 0))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int ch = 0; ch < c; ch++)
        for (int k = 0; k < NET_CLASSES; k++)
            d_weight[(size_t)k * c + ch] = head_weight_grad(d_logits, features, n, c, k, ch, scale);
#pragma omp parallel for
    for (size_t i = 0; i < n_features; i++) {
        size_t b = i / width, ch = i % width;
        float sum = 0.0f;
        for (int k = 0; k < NET_CLASSES; k++) sum = fmaf(d_logits[b * NET_CLASSES + k], weight[k * width + ch], sum);
        d_features[i] = scale * sum;
    }
    return cudaSuccess;
}

// Row b's label-smoothed cross-entropy in double as head.cu's example_loss: its argmax
// (first max) into *best, its log-sum-exp into *log_sum.
static double example_loss(const float *logits, int b, int label, float smoothing, int *best, double *log_sum) {
    const float *z = logits + (size_t)b * NET_CLASSES;
    float best_z = z[0], label_z = 0.0f;
    *best = 0;
    for (int k = 0; k < NET_CLASSES; k++) {
        if (z[k] > best_z) {
            best_z = z[k];
            *best = k;
        }
        if (k == label) label_z = z[k];
    }
    double sum_exp = 0.0, sum_z = 0.0;
    for (int k = 0; k < NET_CLASSES; k++) {
        sum_exp += exp((double)z[k] - best_z);
        sum_z += z[k];
    }
    *log_sum = best_z + log(sum_exp);
    return (1.0 - smoothing) * (*log_sum - label_z) + smoothing * (*log_sum - sum_z / NET_CLASSES);
}

// Loss thread t's rows t, t + LOSS_THREADS, ...: writes their d_logits, returns their
// weighted loss sum and their hits into *hits.
static double loss_thread(float *d_logits, int *hits, const float *logits, const uint8_t *labels,
                          const float *weights, int n, float smoothing, int t) {
    double loss = 0.0;
    *hits = 0;
    for (int b = t; b < n; b += LOSS_THREADS) {
        int label = labels[b], best;
        double log_sum, weight = weights ? weights[b] : 1.0;
        loss += weight * example_loss(logits, b, label, smoothing, &best, &log_sum);
        *hits += best == label;
        double uniform = smoothing / (float)NET_CLASSES;
        for (int k = 0; k < NET_CLASSES; k++)
            d_logits[(size_t)b * NET_CLASSES + k] = (float)(weight * (exp(logits[(size_t)b * NET_CLASSES + k] - log_sum) -
                                                                      (1.0 - smoothing) * (k == label) - uniform));
    }
    return loss;
}

// d_logits = weight * (softmax - (1-s) onehot - s/10); adds the weighted loss sum (the
// 512 threads' sums added by a fixed tree) to *loss_sum and every row's hits to *correct.
cudaError_t launch_loss(float *d_logits, double *loss_sum, int *correct, const float *logits, const uint8_t *labels,
                        const float *weights, int n, float smoothing, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    size_t rows = count_of(n);
    if (!inside(d_logits, rows * NET_CLASSES * sizeof(float)) || !inside(loss_sum, sizeof *loss_sum) ||
        !inside(correct, sizeof *correct) || !inside(logits, rows * NET_CLASSES * sizeof(float)) ||
        !inside(labels, rows) || !inside(weights, weights ? rows * sizeof(float) : 0))
        return cudaErrorIllegalAddress;
    double loss_parts[LOSS_THREADS];
    int hit_parts[LOSS_THREADS];
#pragma omp parallel for
    for (int t = 0; t < LOSS_THREADS; t++)
        loss_parts[t] = loss_thread(d_logits, &hit_parts[t], logits, labels, weights, n, smoothing, t);
    for (int width = LOSS_THREADS / 2; width > 0; width /= 2)
        for (int t = 0; t < width; t++) {
            loss_parts[t] += loss_parts[t + width];
            hit_parts[t] += hit_parts[t + width];
        }
    *loss_sum += loss_parts[0];
    *correct += hit_parts[0];
    return cudaSuccess;
}

// losses[b] = (float) row b's loss.
cudaError_t launch_example_losses(float *losses, const float *logits, const uint8_t *labels, int n, float smoothing,
                                  cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!inside(losses, (size_t)n * sizeof(float)) || !inside(logits, (size_t)n * NET_CLASSES * sizeof(float)) ||
        !inside(labels, (size_t)n))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int b = 0; b < n; b++) {
        int best;
        double log_sum;
        losses[b] = (float)example_loss(logits, b, labels[b], smoothing, &best, &log_sum);
    }
    return cudaSuccess;
}

// *correct += the rows whose first-max class is their label.
cudaError_t launch_count_correct(int *correct, const float *logits, const uint8_t *labels, int n,
                                 cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!inside(correct, sizeof *correct) || !inside(logits, (size_t)n * NET_CLASSES * sizeof(float)) ||
        !inside(labels, (size_t)n))
        return cudaErrorIllegalAddress;
    int hits = 0;
#pragma omp parallel for reduction(+ : hits)
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        int best = 0;
        for (int k = 1; k < NET_CLASSES; k++)
            if (z[k] > z[best]) best = k;
        hits += best == labels[b];
    }
    *correct += hits;
    return cudaSuccess;
}

// ---- selective TTA and selection -------------------------------------------------------

// probability[b] = 1 / sum_k exp(z_k - max z), in fp32.
cudaError_t launch_top_probability(float *probability, const float *logits, int n, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if (!inside(probability, (size_t)n * sizeof(float)) || !inside(logits, (size_t)n * NET_CLASSES * sizeof(float)))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        float max_z = z[0], sum = 0.0f;
        for (int k = 1; k < NET_CLASSES; k++) max_z = fmaxf(max_z, z[k]);
        for (int k = 0; k < NET_CLASSES; k++) sum += expf(z[k] - max_z);
        probability[b] = 1.0f / sum;
    }
    return cudaSuccess;
}

// tta.cu's select_key: a float's bits as an unsigned key of the same order (complemented
// for the largest values).
static uint32_t select_key(float x, int largest) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint32_t key = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
    return largest ? ~key : key;
}

// tta.cu's selection: the k-th smallest key by bisection on its bits, then in index order
// every smaller key and the lowest-index equal ones k needs (all n indices when k > n).
static cudaError_t select_k(int *indices, const float *values, int n, int k, int largest) {
    if (n <= 0 || k <= 0) return cudaSuccess;
    if (!inside(values, (size_t)n * sizeof(float)) || !inside(indices, (size_t)(k < n ? k : n) * sizeof(int)))
        return cudaErrorIllegalAddress;
    uint32_t lo = 0, hi = 0xffffffffu;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int below = 0;
#pragma omp parallel for reduction(+ : below)
        for (int i = 0; i < n; i++) below += select_key(values[i], largest) <= mid;
        if (below >= k) hi = mid;
        else lo = mid + 1;
    }
    int n_less = 0;
    for (int i = 0; i < n; i++) n_less += select_key(values[i], largest) < lo;
    int equal_taken = k - n_less, out = 0;
    for (int i = 0; i < n; i++) {
        uint32_t key = select_key(values[i], largest);
        if (key < lo || (key == lo && equal_taken-- > 0)) indices[out++] = i;
    }
    return cudaSuccess;
}

// indices = the k smallest values' indices, in index order (ties: lower indices).
cudaError_t launch_select_lowest(int *indices, const float *values, int n, int k, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    return select_k(indices, values, n, k, 0);
}

// indices = the k largest values' indices, in index order (ties: lower indices).
cudaError_t launch_select_highest(int *indices, const float *values, int n, int k, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    return select_k(indices, values, n, k, 1);
}

// dst row indices[i] = src row i (width floats).
cudaError_t launch_scatter_rows(float *dst, const float *src, const int *indices, int n, int width,
                                cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (n <= 0) return cudaSuccess;
    if ((long long)n * width <= 0) return cudaErrorInvalidConfiguration;  // an empty grid
    size_t row_bytes = (size_t)width * sizeof(float);
    if (!inside(src, (size_t)n * row_bytes) || !inside(indices, (size_t)n * sizeof(int)))
        return cudaErrorIllegalAddress;
    for (int i = 0; i < n; i++)
        if (!inside(dst + (ptrdiff_t)indices[i] * width, row_bytes)) return cudaErrorIllegalAddress;
    for (int i = 0; i < n; i++) memcpy(dst + (ptrdiff_t)indices[i] * width, src + (size_t)i * width, row_bytes);
    return cudaSuccess;
}

// ---- parameters and optimizer ------------------------------------------------------------

// The segment holding flat index i (the last one that does, as optim.cu), or -1.
static int segment_of(const ParamBuffers *pb, size_t i) {
    int segment = -1;
    for (int s = 0; s < N_SEGMENTS; s++)
        if (i >= pb->begin[s] && i < pb->end[s]) segment = s;
    return segment;
}

// The flat buffer's extent: the end of the last segment.
static size_t params_end(const ParamBuffers *pb) {
    size_t end = 0;
    for (int s = 0; s < N_SEGMENTS; s++)
        if (pb->end[s] > end) end = pb->end[s];
    return end;
}

// Whether segment s's params, momentum and gradients (the conv segment: its fp16 gradient
// and fp16 copy) lie inside allocations.
static int sgd_segment_inside(const ParamBuffers *pb, int s) {
    size_t count = pb->end[s] - pb->begin[s];
    if (!inside(pb->params + pb->begin[s], count * sizeof(float)) ||
        !inside(pb->momentum + pb->begin[s], count * sizeof(float)))
        return 0;
    if (s != SEG_CONV) return inside(pb->grads + pb->begin[s], count * sizeof(float));
    return inside(pb->conv_grads, count * sizeof(__half)) && inside(pb->conv_half, count * sizeof(__half));
}

// One element of optim.cu's step: g = grad + decay w; buf = m buf + g; g += m buf;
// w -= lr g, each an fma in fp32; the conv segment refreshes its fp16 copy.
static void sgd_element(const ParamBuffers *pb, const SgdGroup *group, int s, float m, size_t i) {
    size_t conv_index = i - pb->begin[SEG_CONV];
    float w = pb->params[i];
    float grad = s == SEG_CONV ? half_to_float(pb->conv_grads[conv_index].x) : pb->grads[i];
    float g = fmaf(group->decay, w, grad);
    float buf = fmaf(m, pb->momentum[i], g);
    g = fmaf(m, buf, g);
    w = fmaf(-group->lr, g, w);
    pb->momentum[i] = buf;
    pb->params[i] = w;
    if (s == SEG_CONV) pb->conv_half[conv_index].x = float_to_half(w);
}

// Nesterov SGD over the enabled segments (none enabled and non-empty: nothing launched).
cudaError_t launch_sgd_step(const ParamBuffers *pb, const SgdGroup groups[N_SEGMENTS], float momentum,
                            cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    size_t first = params_end(pb), last = 0;
    for (int s = 0; s < N_SEGMENTS; s++)
        if (groups[s].enabled && pb->begin[s] < pb->end[s]) {
            if (pb->begin[s] < first) first = pb->begin[s];
            if (pb->end[s] > last) last = pb->end[s];
            if (!sgd_segment_inside(pb, s)) return cudaErrorIllegalAddress;
        }
#pragma omp parallel for
    for (size_t i = first; i < last; i++) {
        int s = segment_of(pb, i);
        if (s >= 0 && groups[s].enabled) sgd_element(pb, &groups[s], s, momentum, i);
    }
    return cudaSuccess;
}

// Lookahead: ema += (1 - decay) (w - ema); w = ema, over params then running stats;
// refreshes the fp16 conv copy.
cudaError_t launch_lookahead(const ParamBuffers *pb, float *ema_params, float *running, float *ema_running,
                             size_t n_running, float decay, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    size_t n_params = params_end(pb), conv0 = pb->begin[SEG_CONV];
    size_t n_conv = pb->end[SEG_CONV] > conv0 ? pb->end[SEG_CONV] - conv0 : 0;
    if (!inside(pb->params, n_params * sizeof(float)) || !inside(ema_params, n_params * sizeof(float)) ||
        !inside(running, n_running * sizeof(float)) || !inside(ema_running, n_running * sizeof(float)) ||
        !inside(pb->conv_half, n_conv * sizeof(__half)))
        return cudaErrorIllegalAddress;
    float keep_new = 1.0f - decay;
#pragma omp parallel for
    for (size_t i = 0; i < n_params + n_running; i++) {
        int is_param = i < n_params;
        float *w = is_param ? pb->params + i : running + (i - n_params);
        float *ema = is_param ? ema_params + i : ema_running + (i - n_params);
        float e = fmaf(keep_new, *w - *ema, *ema);
        *ema = e;
        *w = e;
        if (is_param && i >= conv0 && i < pb->end[SEG_CONV]) pb->conv_half[i - conv0].x = float_to_half(e);
    }
    return cudaSuccess;
}

// conv_half = (half) params over the conv segment.
cudaError_t launch_refresh_conv_half(const ParamBuffers *pb, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    size_t count = pb->end[SEG_CONV] - pb->begin[SEG_CONV];
    const float *conv = pb->params + pb->begin[SEG_CONV];
    if (count == 0) return cudaSuccess;
    if (!inside(pb->conv_half, count * sizeof(__half)) || !inside(conv, count * sizeof(float)))
        return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (size_t i = 0; i < count; i++) pb->conv_half[i].x = float_to_half(conv[i]);
    return cudaSuccess;
}

// weight (KRSC) element ((o * 3 + ky) * 3 + kx) * c_in + ci = net_init_conv of OIHW element
// ((o * c_in + ci) * 3 + ky) * 3 + kx.
cudaError_t launch_init_conv(float *weight, int tensor_id, int c_out, int c_in, uint64_t seed, cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    size_t count = (size_t)c_out * 9 * c_in;
    if (count == 0) return cudaSuccess;
    if (!inside(weight, count * sizeof(float))) return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (size_t i = 0; i < count; i++) {
        size_t ci = i % c_in, tap = i / c_in;  // tap = (o * 3 + ky) * 3 + kx
        size_t kx = tap % 3, ky = tap / 3 % 3, o = tap / 9;
        weight[i] = net_init_conv(seed, tensor_id, c_out, c_in, ((o * c_in + ci) * 3 + ky) * 3 + kx);
    }
    return cudaSuccess;
}

// values[i] = net_init_uniform(seed, tensor_id, fan_in, i), i < count.
cudaError_t launch_init_uniform(float *values, size_t count, int tensor_id, int fan_in, uint64_t seed,
                                cudaStream_t stream) {
    host_note(__func__);
    (void)stream;
    if (!inside(values, count * sizeof(float))) return cudaErrorIllegalAddress;
#pragma omp parallel for
    for (size_t i = 0; i < count; i++) values[i] = net_init_uniform(seed, tensor_id, fan_in, i);
    return cudaSuccess;
}
