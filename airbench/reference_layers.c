// reference_layers.c: the CPU reference's layers, in fp32: convolution, max pooling,
// BatchNorm, the activations, the linear head, the label-smoothed loss, and the whitening
// filters from the patch covariance.
//
// Each layer's forward and backward written out as plain loops over NCHW float arrays
// (OpenMP across images); reference.c builds the network and its training step from them.
// Checked against PyTorch fixtures in tests/test_reference.c and finite differences in
// tests/test_reference_fd.c.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

void *ref_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "reference: out of memory allocating %zu x %zu bytes\n", count, size);
        exit(1);
    }
    return p;
}

// ----------------------------------------------------------------------------
// Convolution (stride 1) by im2col: cols[r][p], r = (ci, ky, kx), p = output position,
// and matrix products.

// c (m x n) += a (m x k) * b (k x n), row-major. Four rows of c at a time, so each row of
// b is read once per four output rows; the inner loop vectorizes.
static void gemm_acc(float *restrict c, const float *restrict a, const float *restrict b, int m, int k, int n) {
    int i = 0;
    for (; i + 4 <= m; i += 4) {
        float *restrict c0 = c + (size_t)i * n, *restrict c1 = c0 + n, *restrict c2 = c1 + n, *restrict c3 = c2 + n;
        for (int r = 0; r < k; r++) {
            float a0 = a[(size_t)i * k + r], a1 = a[(size_t)(i + 1) * k + r];
            float a2 = a[(size_t)(i + 2) * k + r], a3 = a[(size_t)(i + 3) * k + r];
            const float *restrict br = b + (size_t)r * n;
            for (int j = 0; j < n; j++) {
                c0[j] += a0 * br[j];
                c1[j] += a1 * br[j];
                c2[j] += a2 * br[j];
                c3[j] += a3 * br[j];
            }
        }
    }
    for (; i < m; i++) {
        float *restrict ci = c + (size_t)i * n;
        for (int r = 0; r < k; r++) {
            float ar = a[(size_t)i * k + r];
            const float *restrict br = b + (size_t)r * n;
            for (int j = 0; j < n; j++) ci[j] += ar * br[j];
        }
    }
}

void ref_matmul(float *out, const float *x, const float *y, int m, int k, int n) {
    memset(out, 0, (size_t)m * n * sizeof(float));
    gemm_acc(out, x, y, m, k, n);
}

void ref_transpose(float *out, const float *x, int rows, int cols) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) out[(size_t)j * rows + i] = x[(size_t)i * cols + j];
}

static void im2col(float *cols, const float *in, int c_in, int h, int w, int kernel, int pad,
                   int out_h, int out_w) {
    for (int ci = 0; ci < c_in; ci++)
        for (int ky = 0; ky < kernel; ky++)
            for (int kx = 0; kx < kernel; kx++) {
                float *row = cols + (size_t)((ci * kernel + ky) * kernel + kx) * out_h * out_w;
                for (int oy = 0; oy < out_h; oy++) {
                    int iy = oy + ky - pad;
                    for (int ox = 0; ox < out_w; ox++) {
                        int ix = ox + kx - pad;
                        int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                        row[oy * out_w + ox] = inside ? in[((size_t)ci * h + iy) * w + ix] : 0.0f;
                    }
                }
            }
}

// Adds the columns back onto the image they came from.
static void col2im_add(float *in, const float *cols, int c_in, int h, int w, int kernel, int pad,
                       int out_h, int out_w) {
    for (int ci = 0; ci < c_in; ci++)
        for (int ky = 0; ky < kernel; ky++)
            for (int kx = 0; kx < kernel; kx++) {
                const float *row = cols + (size_t)((ci * kernel + ky) * kernel + kx) * out_h * out_w;
                for (int oy = 0; oy < out_h; oy++) {
                    int iy = oy + ky - pad;
                    if (iy < 0 || iy >= h) continue;
                    for (int ox = 0; ox < out_w; ox++) {
                        int ix = ox + kx - pad;
                        if (ix >= 0 && ix < w) in[((size_t)ci * h + iy) * w + ix] += row[oy * out_w + ox];
                    }
                }
            }
}

// out[b] (c_out x P) = weight (c_out x R) * cols[b] (R x P) + bias.
void ref_conv_forward(float *out, const float *in, const float *weight, const float *bias,
                      int n, int c_in, int h, int w, int c_out, int kernel, int pad) {
    int out_h = h + 2 * pad - kernel + 1, out_w = w + 2 * pad - kernel + 1;
    int n_pos = out_h * out_w, n_rows = c_in * kernel * kernel;
#pragma omp parallel
    {
        float *cols = ref_calloc((size_t)n_rows * n_pos, sizeof(float));
#pragma omp for schedule(static)
        for (int b = 0; b < n; b++) {
            im2col(cols, in + (size_t)b * c_in * h * w, c_in, h, w, kernel, pad, out_h, out_w);
            float *o = out + (size_t)b * c_out * n_pos;
            for (int co = 0; co < c_out; co++)
                for (int p = 0; p < n_pos; p++) o[(size_t)co * n_pos + p] = bias ? bias[co] : 0.0f;
            gemm_acc(o, weight, cols, c_out, n_rows, n_pos);
        }
        free(cols);
    }
}

// d_weight (c_out x R) = sum_b d_out[b] (c_out x P) * cols[b]^T (P x R);
// d_cols (R x P) = weight^T (R x c_out) * d_out[b], folded back by col2im.
void ref_conv_backward(float *d_in, float *d_weight, float *d_bias, const float *d_out,
                       const float *in, const float *weight,
                       int n, int c_in, int h, int w, int c_out, int kernel, int pad) {
    int out_h = h + 2 * pad - kernel + 1, out_w = w + 2 * pad - kernel + 1;
    int n_pos = out_h * out_w, n_rows = c_in * kernel * kernel;
    size_t w_size = (size_t)c_out * n_rows;
    int n_threads = omp_get_max_threads();
    // Per-thread weight-gradient partial sums, added in thread order: deterministic.
    float *partial = d_weight ? ref_calloc((size_t)n_threads * w_size, sizeof(float)) : NULL;
    float *weight_t = d_in ? ref_calloc(w_size, sizeof(float)) : NULL;
    if (weight_t) ref_transpose(weight_t, weight, c_out, n_rows);
#pragma omp parallel num_threads(n_threads)
    {
        float *cols = partial ? ref_calloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *cols_t = partial ? ref_calloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *d_cols = d_in ? ref_calloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *my_dw = partial ? partial + (size_t)omp_get_thread_num() * w_size : NULL;
#pragma omp for schedule(static)
        for (int b = 0; b < n; b++) {
            const float *dout_b = d_out + (size_t)b * c_out * n_pos;
            if (my_dw) {
                im2col(cols, in + (size_t)b * c_in * h * w, c_in, h, w, kernel, pad, out_h, out_w);
                ref_transpose(cols_t, cols, n_rows, n_pos);
                gemm_acc(my_dw, dout_b, cols_t, c_out, n_pos, n_rows);
            }
            if (d_cols) {
                memset(d_cols, 0, (size_t)n_rows * n_pos * sizeof(float));
                gemm_acc(d_cols, weight_t, dout_b, n_rows, c_out, n_pos);
                float *din_b = d_in + (size_t)b * c_in * h * w;
                memset(din_b, 0, (size_t)c_in * h * w * sizeof(float));
                col2im_add(din_b, d_cols, c_in, h, w, kernel, pad, out_h, out_w);
            }
        }
        free(cols);
        free(cols_t);
        free(d_cols);
    }
    free(weight_t);
    if (d_weight) {
        memset(d_weight, 0, w_size * sizeof(float));
        for (int t = 0; t < n_threads; t++)
            for (size_t i = 0; i < w_size; i++) d_weight[i] += partial[(size_t)t * w_size + i];
        free(partial);
    }
    if (d_bias) {
        for (int co = 0; co < c_out; co++) {
            double acc = 0.0;
            for (int b = 0; b < n; b++) {
                const float *g = d_out + ((size_t)b * c_out + co) * n_pos;
                for (int p = 0; p < n_pos; p++) acc += g[p];
            }
            d_bias[co] = (float)acc;
        }
    }
}

// ----------------------------------------------------------------------------
// Max pooling, BatchNorm, GELU and SiLU, linear, loss.

void ref_maxpool_forward(float *out, int *argmax, const float *in, int n, int c, int h, int w, int k) {
    int out_h = h / k, out_w = w / k;
#pragma omp parallel for schedule(static)
    for (int plane = 0; plane < n * c; plane++) {
        const float *src = in + (size_t)plane * h * w;
        for (int oy = 0; oy < out_h; oy++)
            for (int ox = 0; ox < out_w; ox++) {
                int best = (oy * k) * w + ox * k;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) {
                        int idx = (oy * k + dy) * w + ox * k + dx;
                        if (src[idx] > src[best]) best = idx;
                    }
                size_t o = (size_t)plane * out_h * out_w + oy * out_w + ox;
                out[o] = src[best];
                argmax[o] = best;
            }
    }
}

void ref_maxpool_backward(float *d_in, const float *d_out, const int *argmax,
                          int n, int c, int h, int w, int k) {
    int n_out = (h / k) * (w / k);
    memset(d_in, 0, (size_t)n * c * h * w * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int plane = 0; plane < n * c; plane++)
        for (int o = 0; o < n_out; o++)
            d_in[(size_t)plane * h * w + argmax[(size_t)plane * n_out + o]] += d_out[(size_t)plane * n_out + o];
}

void ref_batchnorm_forward_train(float *out, float *mean, float *var, const float *in,
                                 const float *bias, int n, int c, int hw, float eps) {
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        double sum = 0.0, sum_sq = 0.0;
        for (int b = 0; b < n; b++) {
            const float *x = in + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) sum += x[i];
        }
        double mu = sum / ((double)n * hw);
        for (int b = 0; b < n; b++) {
            const float *x = in + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) sum_sq += (x[i] - mu) * (x[i] - mu);
        }
        double v = sum_sq / ((double)n * hw);
        double rstd = 1.0 / sqrt(v + eps);
        for (int b = 0; b < n; b++) {
            const float *x = in + ((size_t)b * c + ch) * hw;
            float *y = out + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) y[i] = (float)((x[i] - mu) * rstd + bias[ch]);
        }
        mean[ch] = (float)mu;
        var[ch] = (float)v;
    }
}

void ref_batchnorm_forward_eval(float *out, const float *in, const float *bias,
                                const float *running_mean, const float *running_var,
                                int n, int c, int hw, float eps) {
#pragma omp parallel for schedule(static)
    for (int plane = 0; plane < n * c; plane++) {
        int ch = plane % c;
        double rstd = 1.0 / sqrt((double)running_var[ch] + eps);
        const float *x = in + (size_t)plane * hw;
        float *y = out + (size_t)plane * hw;
        for (int i = 0; i < hw; i++) y[i] = (float)((x[i] - running_mean[ch]) * rstd + bias[ch]);
    }
}

void ref_batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                                  const float *var, int count, int c, float keep) {
    double unbias = (double)count / (count - 1);
    for (int ch = 0; ch < c; ch++) {
        running_mean[ch] = (float)(keep * running_mean[ch] + (1.0 - keep) * mean[ch]);
        running_var[ch] = (float)(keep * running_var[ch] + (1.0 - keep) * var[ch] * unbias);
    }
}

// With xhat = (x - mean) * rstd and y = xhat + bias (weight fixed at 1):
// d_bias = sum dy;  dx = rstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
void ref_batchnorm_backward(float *d_in, float *d_bias, const float *d_out, const float *in,
                            const float *mean, const float *var, int n, int c, int hw, float eps) {
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        double rstd = 1.0 / sqrt((double)var[ch] + eps), count = (double)n * hw;
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int b = 0; b < n; b++) {
            const float *x = in + ((size_t)b * c + ch) * hw, *dy = d_out + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) {
                sum_dy += dy[i];
                sum_dy_xhat += dy[i] * (x[i] - mean[ch]) * rstd;
            }
        }
        d_bias[ch] = (float)sum_dy;
        double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
        for (int b = 0; b < n; b++) {
            const float *x = in + ((size_t)b * c + ch) * hw, *dy = d_out + ((size_t)b * c + ch) * hw;
            float *dx = d_in + ((size_t)b * c + ch) * hw;
            for (int i = 0; i < hw; i++) {
                double xhat = (x[i] - mean[ch]) * rstd;
                dx[i] = (float)(rstd * (dy[i] - mean_dy - xhat * mean_dy_xhat));
            }
        }
    }
}

void ref_gelu_forward(float *out, const float *in, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        double x = in[i];
        out[i] = (float)(0.5 * x * (1.0 + erf(x * M_SQRT1_2)));
    }
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x).
void ref_gelu_backward(float *d_in, const float *d_out, const float *in, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        double x = in[i];
        double cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
        double pdf = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        d_in[i] = (float)(d_out[i] * (cdf + x * pdf));
    }
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

void ref_silu_forward(float *out, const float *in, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) out[i] = (float)(in[i] * sigmoid(in[i]));
}

// d/dx [x s(x)] = s(x) + x s(x) (1 - s(x)) = s(x) (1 + x (1 - s(x))), s the sigmoid.
void ref_silu_backward(float *d_in, const float *d_out, const float *in, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        double x = in[i], s = sigmoid(x);
        d_in[i] = (float)(d_out[i] * (s * (1.0 + x * (1.0 - s))));
    }
}

void ref_activation_forward(Activation activation, float *out, const float *in, size_t count) {
    if (activation == ACTIVATION_SILU) ref_silu_forward(out, in, count);
    else if (activation == ACTIVATION_IDENTITY) memmove(out, in, count * sizeof(float));
    else ref_gelu_forward(out, in, count);
}

void ref_activation_backward(Activation activation, float *d_in, const float *d_out, const float *in, size_t count) {
    if (activation == ACTIVATION_SILU) ref_silu_backward(d_in, d_out, in, count);
    else if (activation == ACTIVATION_IDENTITY) memmove(d_in, d_out, count * sizeof(float));
    else ref_gelu_backward(d_in, d_out, in, count);
}

void ref_linear_forward(float *out, const float *in, const float *weight,
                        int n, int c_in, int c_out, float scale) {
    for (int b = 0; b < n; b++)
        for (int o = 0; o < c_out; o++) {
            double acc = 0.0;
            for (int i = 0; i < c_in; i++) acc += (double)in[(size_t)b * c_in + i] * weight[(size_t)o * c_in + i];
            out[(size_t)b * c_out + o] = (float)(acc * scale);
        }
}

void ref_linear_backward(float *d_in, float *d_weight, const float *d_out, const float *in,
                         const float *weight, int n, int c_in, int c_out, float scale) {
    for (int o = 0; o < c_out; o++)
        for (int i = 0; i < c_in; i++) {
            double acc = 0.0;
            for (int b = 0; b < n; b++) acc += (double)d_out[(size_t)b * c_out + o] * in[(size_t)b * c_in + i];
            d_weight[(size_t)o * c_in + i] = (float)(acc * scale);
        }
    if (!d_in) return;
    for (int b = 0; b < n; b++)
        for (int i = 0; i < c_in; i++) {
            double acc = 0.0;
            for (int o = 0; o < c_out; o++) acc += (double)d_out[(size_t)b * c_out + o] * weight[(size_t)o * c_in + i];
            d_in[(size_t)b * c_in + i] = (float)(acc * scale);
        }
}

// Row b's loss -(1-s) log p_y - (s/K) sum_k log p_k, in double; its argmax (the first
// maximum) into *best and its log-sum-exp into *log_sum.
static double example_loss(const float *z, int label, int n_classes, float smoothing, int *best, double *log_sum) {
    *best = 0;
    for (int k = 1; k < n_classes; k++)
        if (z[k] > z[*best]) *best = k;
    double max_z = z[*best], sum_exp = 0.0, sum_z = 0.0;
    for (int k = 0; k < n_classes; k++) {
        sum_exp += exp(z[k] - max_z);
        sum_z += z[k];
    }
    *log_sum = max_z + log(sum_exp);
    double nll_y = *log_sum - z[label], mean_nll = *log_sum - sum_z / n_classes;
    return (1.0 - smoothing) * nll_y + smoothing * mean_nll;
}

// Softmax p; dlogit_k = w (p_k - (1-s)[k=y] - s/K) for row weight w.
double ref_loss_forward_backward(float *d_logits, int *n_correct, const float *logits, const uint8_t *labels,
                                 const float *weights, int n, int n_classes, float smoothing) {
    double total = 0.0;
    int correct = 0;
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * n_classes;
        int best;
        double log_sum, weight = weights ? weights[b] : 1.0;
        total += weight * example_loss(z, labels[b], n_classes, smoothing, &best, &log_sum);
        correct += best == labels[b];
        if (d_logits)
            for (int k = 0; k < n_classes; k++) {
                double p = exp(z[k] - log_sum);
                d_logits[(size_t)b * n_classes + k] =
                    (float)(weight * (p - (1.0 - smoothing) * (k == labels[b]) - smoothing / n_classes));
            }
    }
    if (n_correct) *n_correct = correct;
    return total;
}

void ref_example_losses(float *losses, const float *logits, const uint8_t *labels, int n, int n_classes,
                        float smoothing) {
    for (int b = 0; b < n; b++) {
        int best;
        double log_sum;
        losses[b] = (float)example_loss(logits + (size_t)b * n_classes, labels[b], n_classes, smoothing, &best,
                                        &log_sum);
    }
}

// ----------------------------------------------------------------------------
// Whitening: the eigenvectors of the 2x2 patch covariance.

void ref_symmetric_eigen(double *a, int n, double *eigvals, double *eigvecs) {
    double *v = ref_calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n; i++) v[i * n + i] = 1.0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int i = 0; i < n; i++) {
            diag += a[i * n + i] * a[i * n + i];
            for (int j = i + 1; j < n; j++) off += a[i * n + j] * a[i * n + j];
        }
        if (off <= 1e-30 * diag) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (apq == 0.0) continue;
                // Rotation by angle t that zeroes a[p][q]: tan(2t) = 2 apq / (aqq - app).
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) {  // columns p, q
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {  // rows p, q
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {  // eigenvectors are the columns of v
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    // Sort descending (selection sort over n = 12 values).
    int *order = ref_calloc(n, sizeof(int));
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (a[order[j] * n + order[j]] > a[order[i] * n + order[i]]) {
                int tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
    for (int k = 0; k < n; k++) {
        eigvals[k] = a[order[k] * n + order[k]];
        for (int i = 0; i < n; i++) eigvecs[k * n + i] = v[i * n + order[k]];
    }
    free(order);
    free(v);
}

void ref_whitening_from_covariance(float *whiten_w, double *cov, double eps) {
    enum { DIM = 3 * WHITEN_KERNEL * WHITEN_KERNEL };
    double eigvals[DIM], eigvecs[DIM * DIM];
    ref_symmetric_eigen(cov, DIM, eigvals, eigvecs);
    for (int k = 0; k < DIM; k++) {
        double scale = 1.0 / sqrt(eigvals[k] + eps);
        for (int i = 0; i < DIM; i++) {
            whiten_w[k * DIM + i] = (float)(eigvecs[k * DIM + i] * scale);
            whiten_w[(k + DIM) * DIM + i] = (float)(-eigvecs[k * DIM + i] * scale);
        }
    }
}

void ref_whitening_weights(float *whiten_w, const float *images, int n, double eps) {
    enum { DIM = 3 * WHITEN_KERNEL * WHITEN_KERNEL, SIDE = 32 - WHITEN_KERNEL + 1 };
    double cov[DIM * DIM] = {0};
    for (int b = 0; b < n; b++)
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                double patch[DIM];
                for (int c = 0; c < 3; c++)
                    for (int dy = 0; dy < WHITEN_KERNEL; dy++)
                        for (int dx = 0; dx < WHITEN_KERNEL; dx++)
                            patch[(c * WHITEN_KERNEL + dy) * WHITEN_KERNEL + dx] =
                                images[(((size_t)b * 3 + c) * 32 + y + dy) * 32 + x + dx];
                for (int i = 0; i < DIM; i++)
                    for (int j = 0; j < DIM; j++) cov[i * DIM + j] += patch[i] * patch[j];
            }
    double n_patches = (double)n * SIDE * SIDE;
    for (int i = 0; i < DIM * DIM; i++) cov[i] /= n_patches;
    ref_whitening_from_covariance(whiten_w, cov, eps);
}
