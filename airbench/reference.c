// reference.c: the CPU reference of the airbench network and its training, in fp32.
//
// The oracle for the GPU trainer (llm.c style): plain loops over NCHW float arrays, OpenMP
// across images, every layer's forward and backward written out. Checked against PyTorch
// fixtures and finite differences in tests/test_reference.c.
//
// As a program (build/airbench-ref) it trains at any widths and depth on a slice of
// CIFAR-10 and reports per-epoch loss/accuracy and the final TTA accuracy.
#include "reference.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "airbench-ref: out of memory allocating %zu x %zu bytes\n", count, size);
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

static void transpose(float *out, const float *x, int rows, int cols) {
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
        float *cols = xcalloc((size_t)n_rows * n_pos, sizeof(float));
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
    float *partial = d_weight ? xcalloc((size_t)n_threads * w_size, sizeof(float)) : NULL;
    float *weight_t = d_in ? xcalloc(w_size, sizeof(float)) : NULL;
    if (weight_t) transpose(weight_t, weight, c_out, n_rows);
#pragma omp parallel num_threads(n_threads)
    {
        float *cols = partial ? xcalloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *cols_t = partial ? xcalloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *d_cols = d_in ? xcalloc((size_t)n_rows * n_pos, sizeof(float)) : NULL;
        float *my_dw = partial ? partial + (size_t)omp_get_thread_num() * w_size : NULL;
#pragma omp for schedule(static)
        for (int b = 0; b < n; b++) {
            const float *dout_b = d_out + (size_t)b * c_out * n_pos;
            if (my_dw) {
                im2col(cols, in + (size_t)b * c_in * h * w, c_in, h, w, kernel, pad, out_h, out_w);
                transpose(cols_t, cols, n_rows, n_pos);
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
    double *v = xcalloc((size_t)n * n, sizeof(double));
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
    int *order = xcalloc(n, sizeof(int));
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

// ----------------------------------------------------------------------------
// The network.

struct RefActs {
    int batch;
    float *whiten_pre, *whiten_out;                 // B x 24 x 31 x 31
    float *conv_out[3][NET_MAX_DEPTH];              // conv outputs (before the pool for j = 0)
    float *pooled[3];                               // j = 0: after the pool, the BN input
    int *pool_argmax[3];
    float *bn_mean[3][NET_MAX_DEPTH], *bn_var[3][NET_MAX_DEPTH];
    float *pre_act[3][NET_MAX_DEPTH];               // activation inputs (BN output, + residual)
    float *act[3][NET_MAX_DEPTH];                   // activation outputs
    float *features;                                // B x w3, after the final 3x3 max pool
    int *feature_argmax;
    float *logits, *d_logits;
    // Backward scratch, each the size of the largest activation: the gradients of the
    // current activation, of an activation input, of a BN input, of a conv output, and of the
    // residual branch (96).
    float *d_act, *d_pre, *d_bn_in, *d_conv, *d_residual;
};


static void acts_free(RefActs *a, int depth) {
    if (!a) return;
    free(a->whiten_pre);
    free(a->whiten_out);
    for (int g = 0; g < 3; g++) {
        free(a->pooled[g]);
        free(a->pool_argmax[g]);
        for (int j = 0; j < depth; j++) {
            free(a->conv_out[g][j]);
            free(a->bn_mean[g][j]);
            free(a->bn_var[g][j]);
            free(a->pre_act[g][j]);
            free(a->act[g][j]);
        }
    }
    free(a->features);
    free(a->feature_argmax);
    free(a->logits);
    free(a->d_logits);
    free(a->d_act);
    free(a->d_pre);
    free(a->d_bn_in);
    free(a->d_conv);
    free(a->d_residual);
    free(a);
}

static RefActs *acts_create(const NetLayout *l, int batch) {
    RefActs *a = xcalloc(1, sizeof(RefActs));
    a->batch = batch;
    size_t b = (size_t)batch, whiten_size = b * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE, largest = whiten_size;
    a->whiten_pre = xcalloc(whiten_size, sizeof(float));
    a->whiten_out = xcalloc(whiten_size, sizeof(float));
    for (int g = 0; g < 3; g++) {
        int c = l->widths[g], in_side = net_group_in_side(g), out_side = net_group_out_side(g);
        size_t pre_pool = b * c * in_side * in_side, post_pool = b * c * out_side * out_side;
        if (pre_pool > largest) largest = pre_pool;
        a->pooled[g] = xcalloc(post_pool, sizeof(float));
        a->pool_argmax[g] = xcalloc(post_pool, sizeof(int));
        for (int j = 0; j < l->depth; j++) {
            a->conv_out[g][j] = xcalloc(j == 0 ? pre_pool : post_pool, sizeof(float));
            a->bn_mean[g][j] = xcalloc(b * c, sizeof(float));  // per BN group: at most one per image
            a->bn_var[g][j] = xcalloc(b * c, sizeof(float));
            a->pre_act[g][j] = xcalloc(post_pool, sizeof(float));
            a->act[g][j] = xcalloc(post_pool, sizeof(float));
        }
    }
    a->features = xcalloc(b * l->widths[2], sizeof(float));
    a->feature_argmax = xcalloc(b * l->widths[2], sizeof(int));
    a->logits = xcalloc(b * NET_CLASSES, sizeof(float));
    a->d_logits = xcalloc(b * NET_CLASSES, sizeof(float));
    a->d_act = xcalloc(largest, sizeof(float));
    a->d_pre = xcalloc(largest, sizeof(float));
    a->d_bn_in = xcalloc(largest, sizeof(float));
    a->d_conv = xcalloc(largest, sizeof(float));
    a->d_residual = xcalloc(largest, sizeof(float));
    return a;
}

static void ensure_acts(RefNet *net, int batch) {
    if (net->acts && net->acts->batch >= batch) return;
    acts_free(net->acts, net->layout.depth);
    net->acts = acts_create(&net->layout, batch);
}

// Offset of BN (g, j)'s running stats: each BN holds mean[c] then var[c].
static size_t running_offset(const RefNet *net, int g, int j) {
    size_t offset = 0;
    for (int gg = 0; gg < 3; gg++)
        for (int jj = 0; jj < net->layout.depth; jj++) {
            if (gg == g && jj == j) return offset;
            offset += 2 * (size_t)net->layout.widths[gg];
        }
    return offset;
}

float *ref_running_mean(const RefNet *net, float *running, int g, int j) {
    return running + running_offset(net, g, j);
}

float *ref_running_var(const RefNet *net, float *running, int g, int j) {
    return running + running_offset(net, g, j) + net->layout.widths[g];
}

RefNet *ref_net_create(const Recipe *recipe) {
    RefNet *net = xcalloc(1, sizeof(RefNet));
    net_layout_init(&net->layout, recipe->widths, recipe->depth);
    net->bn_eps = (float)recipe->bn_eps;
    net->bn_keep = (float)recipe->bn_keep;
    net->bn_group = recipe->bn_group;
    net->activation = (Activation)recipe->activation;
    net->logit_scale = (float)recipe_logit_scale(recipe);
    size_t n = net->layout.n_params;
    net->params = xcalloc(n, sizeof(float));
    net->grads = xcalloc(n, sizeof(float));
    net->momentum = xcalloc(n, sizeof(float));
    net->ema_params = xcalloc(n, sizeof(float));
    net->n_running = running_offset(net, 3, 0);
    net->running = xcalloc(net->n_running, sizeof(float));
    net->ema_running = xcalloc(net->n_running, sizeof(float));
    return net;
}

void ref_net_free(RefNet *net) {
    if (!net) return;
    acts_free(net->acts, net->layout.depth);
    free(net->params);
    free(net->grads);
    free(net->momentum);
    free(net->ema_params);
    free(net->running);
    free(net->ema_running);
    free(net);
}

void ref_net_init(RefNet *net, const Recipe *recipe, uint64_t seed,
                  const float *whiten_images, int n_whiten) {
    const NetLayout *l = &net->layout;
    memset(net->params, 0, l->n_params * sizeof(float));
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *t = &l->tensors[id];
        float *p = net->params + t->offset;
        if (t->kind == TENSOR_CONV)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_conv(seed, id, t->c_out, t->c_in, i);
        else if (t->kind == TENSOR_HEAD)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_uniform(seed, id, t->c_in, i);
        else if (t->kind == TENSOR_WHITEN_B && recipe->muon)
            for (size_t i = 0; i < t->size; i++) p[i] = net_init_uniform(seed, id, 3 * WHITEN_KERNEL * WHITEN_KERNEL, i);
    }
    if (recipe->muon) net_scale_to_unit_std(ref_tensor(net, net->params, l->head), l->tensors[l->head].size);
    ref_whitening_weights(ref_tensor(net, net->params, 0), whiten_images, n_whiten, recipe->whiten_eps);
    memset(net->momentum, 0, l->n_params * sizeof(float));
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++) {
            memset(ref_running_mean(net, net->running, g, j), 0, l->widths[g] * sizeof(float));
            float *var = ref_running_var(net, net->running, g, j);
            for (int c = 0; c < l->widths[g]; c++) var[c] = 1.0f;
        }
    memcpy(net->ema_params, net->params, l->n_params * sizeof(float));
    memcpy(net->ema_running, net->running, net->n_running * sizeof(float));
}

// Images per BN group of a training batch of n.
static int bn_group_size(const RefNet *net, int n) {
    if (!net->bn_group) return n;
    if (n % net->bn_group) {
        fprintf(stderr, "airbench-ref: internal error: BN groups of %d do not divide a batch of %d\n", net->bn_group, n);
        exit(1);
    }
    return net->bn_group;
}

// BN (+ residual) + the activation (GELU or SiLU) of conv (g, j) whose BN input is bn_in.
static void forward_bn_gelu(RefNet *net, int g, int j, const float *bn_in, int n, int train) {
    RefActs *a = net->acts;
    int c = net->layout.widths[g], hw = net_group_out_side(g) * net_group_out_side(g);
    const float *bias = ref_tensor(net, net->params, net_bn_id(&net->layout, g, j));
    float *run_mean = ref_running_mean(net, net->running, g, j);
    float *run_var = ref_running_var(net, net->running, g, j);
    if (train) {  // each group of images normalized with its own statistics (NCHW: groups are contiguous)
        int group = bn_group_size(net, n);
        size_t group_values = (size_t)group * c * hw;
        for (int k = 0; k < n / group; k++)
            ref_batchnorm_forward_train(a->pre_act[g][j] + k * group_values, a->bn_mean[g][j] + k * c,
                                        a->bn_var[g][j] + k * c, bn_in + k * group_values, bias, group, c, hw,
                                        net->bn_eps);
        ref_batchnorm_update_running(run_mean, run_var, a->bn_mean[g][j], a->bn_var[g][j], group * hw, c, net->bn_keep);
    } else {
        ref_batchnorm_forward_eval(a->pre_act[g][j], bn_in, bias, run_mean, run_var, n, c, hw, net->bn_eps);
    }
    size_t count = (size_t)n * c * hw;
    if (net_residual_joins(net->layout.depth, j))
        for (size_t i = 0; i < count; i++) a->pre_act[g][j][i] += a->act[g][0][i];
    ref_activation_forward(net->activation, a->act[g][j], a->pre_act[g][j], count);
}

void ref_forward(RefNet *net, const float *images, int n, int train, float *logits) {
    ensure_acts(net, n);
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    ref_conv_forward(a->whiten_pre, images, ref_tensor(net, net->params, 0), ref_tensor(net, net->params, 1),
                     n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    ref_gelu_forward(a->whiten_out, a->whiten_pre, (size_t)n * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE);
    const float *x = a->whiten_out;
    int c_in = WHITEN_WIDTH;
    for (int g = 0; g < 3; g++) {
        int c = l->widths[g], in_side = net_group_in_side(g), side = net_group_out_side(g);
        ref_conv_forward(a->conv_out[g][0], x, ref_tensor(net, net->params, net_conv_id(l, g, 0)), NULL,
                         n, c_in, in_side, in_side, c, 3, 1);
        ref_maxpool_forward(a->pooled[g], a->pool_argmax[g], a->conv_out[g][0], n, c, in_side, in_side, 2);
        forward_bn_gelu(net, g, 0, a->pooled[g], n, train);
        for (int j = 1; j < l->depth; j++) {
            ref_conv_forward(a->conv_out[g][j], a->act[g][j - 1], ref_tensor(net, net->params, net_conv_id(l, g, j)),
                             NULL, n, c, side, side, c, 3, 1);
            forward_bn_gelu(net, g, j, a->conv_out[g][j], n, train);
        }
        x = a->act[g][l->depth - 1];
        c_in = c;
    }
    int w3 = l->widths[2], side = net_group_out_side(2);
    ref_maxpool_forward(a->features, a->feature_argmax, x, n, w3, side, side, side);
    ref_linear_forward(a->logits, a->features, ref_tensor(net, net->params, l->head), n, w3, NET_CLASSES,
                       net->logit_scale);
    if (logits != a->logits) memcpy(logits, a->logits, (size_t)n * NET_CLASSES * sizeof(float));
}

// Backward through the activation, BN (and the pool for j = 0) of conv (g, j): from a->d_act
// to a->d_conv. Where the residual joins, the activation-input gradient is also the residual
// branch's gradient.
static void backward_bn_gelu(RefNet *net, int g, int j, int n) {
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    int c = l->widths[g], side = net_group_out_side(g), hw = side * side, in_side = net_group_in_side(g);
    size_t count = (size_t)n * c * hw;
    ref_activation_backward(net->activation, a->d_pre, a->d_act, a->pre_act[g][j], count);
    if (net_residual_joins(l->depth, j)) memcpy(a->d_residual, a->d_pre, count * sizeof(float));
    const float *bn_in = j == 0 ? a->pooled[g] : a->conv_out[g][j];
    float *d_bias = ref_tensor(net, net->grads, net_bn_id(l, g, j));
    float *d_bn_in = j == 0 ? a->d_bn_in : a->d_conv;
    int group = bn_group_size(net, n);
    size_t group_values = (size_t)group * c * hw;
    float group_d_bias[c];
    memset(d_bias, 0, c * sizeof(float));
    for (int k = 0; k < n / group; k++) {  // each group through its own statistics; d_bias sums them
        ref_batchnorm_backward(d_bn_in + k * group_values, group_d_bias, a->d_pre + k * group_values,
                               bn_in + k * group_values, a->bn_mean[g][j] + k * c, a->bn_var[g][j] + k * c, group, c,
                               hw, net->bn_eps);
        for (int ch = 0; ch < c; ch++) d_bias[ch] += group_d_bias[ch];
    }
    if (j == 0) ref_maxpool_backward(a->d_conv, d_bn_in, a->pool_argmax[g], n, c, in_side, in_side, 2);
}

double ref_backward(RefNet *net, const float *images, const uint8_t *labels, const float *weights, int n,
                    float smoothing, int whiten_bias_grad, int *n_correct) {
    const NetLayout *l = &net->layout;
    RefActs *a = net->acts;
    double loss = ref_loss_forward_backward(a->d_logits, n_correct, a->logits, labels, weights, n, NET_CLASSES,
                                            smoothing);
    memset(net->grads, 0, l->n_params * sizeof(float));

    int w3 = l->widths[2], side = net_group_out_side(2);
    float *d_features = a->d_pre;
    ref_linear_backward(d_features, ref_tensor(net, net->grads, l->head), a->d_logits, a->features,
                        ref_tensor(net, net->params, l->head), n, w3, NET_CLASSES, net->logit_scale);
    ref_maxpool_backward(a->d_act, d_features, a->feature_argmax, n, w3, side, side, side);
    for (int g = 2; g >= 0; g--) {
        int c = l->widths[g], out_side = net_group_out_side(g);
        for (int j = l->depth - 1; j >= 0; j--) {
            backward_bn_gelu(net, g, j, n);
            int conv_side = j == 0 ? net_group_in_side(g) : out_side;
            int conv_c_in = net_conv_in(l->widths, g, j);
            const float *conv_in = j > 0 ? a->act[g][j - 1] : g > 0 ? a->act[g - 1][l->depth - 1] : a->whiten_out;
            int need_d_in = g > 0 || j > 0 || whiten_bias_grad;
            int id = net_conv_id(l, g, j);
            ref_conv_backward(need_d_in ? a->d_act : NULL, ref_tensor(net, net->grads, id), NULL, a->d_conv,
                              conv_in, ref_tensor(net, net->params, id), n, conv_c_in, conv_side, conv_side, c, 3, 1);
            if (net_residual_splits(l->depth, j)) {  // x0's gradient: this conv's path + the residual's
                size_t count = (size_t)n * c * out_side * out_side;
                for (size_t i = 0; i < count; i++) a->d_act[i] += a->d_residual[i];
            }
        }
    }
    if (whiten_bias_grad) {
        ref_gelu_backward(a->d_pre, a->d_act, a->whiten_pre, (size_t)n * WHITEN_WIDTH * WHITEN_SIDE * WHITEN_SIDE);
        ref_conv_backward(NULL, NULL, ref_tensor(net, net->grads, 1), a->d_pre, images,
                          ref_tensor(net, net->params, 0), n, 3, 32, 32, WHITEN_WIDTH, WHITEN_KERNEL, 0);
    }
    return loss;
}

double ref_forward_backward(RefNet *net, const float *images, const uint8_t *labels, int n,
                            float smoothing, int whiten_bias_grad, float *logits, int *n_correct) {
    ensure_acts(net, n);
    ref_forward(net, images, n, 1, net->acts->logits);
    if (logits) memcpy(logits, net->acts->logits, (size_t)n * NET_CLASSES * sizeof(float));
    return ref_backward(net, images, labels, NULL, n, smoothing, whiten_bias_grad, n_correct);
}

// ----------------------------------------------------------------------------
// Optimizers.

// One Nesterov SGD update (PyTorch semantics) of count values with learning rate lr and
// decay coefficient c: g = grad + c*w; buf = m*buf + g; g += m*buf; w -= lr*g.
static void sgd_update(float *w, float *buf, const float *grad, size_t count, double lr, double c, double m) {
    for (size_t i = 0; i < count; i++) {
        double g = grad[i] + c * w[i];
        buf[i] = (float)(m * buf[i] + g);
        g += m * buf[i];
        w[i] = (float)(w[i] - lr * g);
    }
}

static void sgd_update_tensor(RefNet *net, int id, double lr, double c, double m) {
    const TensorInfo *t = &net->layout.tensors[id];
    sgd_update(net->params + t->offset, net->momentum + t->offset, net->grads + t->offset, t->size, lr, c, m);
}

// The optimizer group of a tensor; -1 for the frozen whitening weight.
static int group_of(TensorKind kind) {
    switch (kind) {
    case TENSOR_WHITEN_B: return GROUP_WHITEN_BIAS;
    case TENSOR_CONV: return GROUP_CONV;
    case TENSOR_HEAD: return GROUP_HEAD;
    case TENSOR_BN_BIAS: return GROUP_BN_BIAS;
    case TENSOR_WHITEN_W: break;
    }
    return -1;
}

void ref_sgd_step(RefNet *net, const GroupStep groups[N_GROUPS], double momentum, int skip_convs) {
    for (int id = 0; id < net->layout.n_tensors; id++) {
        int group = group_of(net->layout.tensors[id].kind);
        if (group < 0 || !groups[group].enabled || (skip_convs && group == GROUP_CONV)) continue;
        sgd_update_tensor(net, id, groups[group].lr, groups[group].decay, momentum);
    }
}

// out (m x n) = x (m x k) * y (k x n), row-major.
static void matmul(float *out, const float *x, const float *y, int m, int k, int n) {
    memset(out, 0, (size_t)m * n * sizeof(float));
    gemm_acc(out, x, y, m, k, n);
}

float ref_round_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // inf and NaN stay
    bits += 0x7fffu + ((bits >> 16) & 1u);
    bits &= 0xffff0000u;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static void round_all_bf16(float *x, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = ref_round_bf16(x[i]);
}

// Quintic Newton-Schulz iteration towards the orthogonal factor of g:
// X = G / (||G|| + eps), on the wide orientation; A = X X^T; B = b A + c A A; X = a X + B X.
void ref_newton_schulz(float *out, const float *g, int rows, int cols, const Recipe *recipe, int bf16) {
    const float a = (float)recipe->ns_a, b = (float)recipe->ns_b, c = (float)recipe->ns_c;
    int tall = rows > cols, m = tall ? cols : rows, k = tall ? rows : cols;
    size_t size = (size_t)rows * cols;
    float *x = xcalloc(size, sizeof(float)), *bx = xcalloc(size, sizeof(float));
    float *A = xcalloc((size_t)m * m, sizeof(float)), *AA = xcalloc((size_t)m * m, sizeof(float));
    float *xt = xcalloc(size, sizeof(float));
    double norm = 0.0;
    for (size_t i = 0; i < size; i++) norm += (double)g[i] * g[i];
    float inv = (float)(1.0 / (sqrt(norm) + recipe->ns_eps));
    if (tall) transpose(x, g, rows, cols);
    else memcpy(x, g, size * sizeof(float));
    for (size_t i = 0; i < size; i++) x[i] *= inv;
    if (bf16) round_all_bf16(x, size);
    for (int step = 0; step < recipe->muon_ns_steps; step++) {
        transpose(xt, x, m, k);
        matmul(A, x, xt, m, k, m);
        if (bf16) round_all_bf16(A, (size_t)m * m);
        matmul(AA, A, A, m, m, m);
        for (int i = 0; i < m * m; i++) A[i] = b * A[i] + c * AA[i];  // A now holds B
        if (bf16) round_all_bf16(A, (size_t)m * m);
        matmul(bx, A, x, m, m, k);
        for (size_t i = 0; i < size; i++) x[i] = a * x[i] + bx[i];
        if (bf16) round_all_bf16(x, size);
    }
    if (tall) transpose(out, x, m, k);
    else memcpy(out, x, size * sizeof(float));
    free(x);
    free(bx);
    free(A);
    free(AA);
    free(xt);
}

// Muon on one conv weight: Nesterov momentum, the weight rescaled to Frobenius norm
// sqrt(c_out) when the plan says, a step along the orthogonalized update, the decay.
static void muon_update_tensor(RefNet *net, int id, const Recipe *recipe, const StepPlan *plan) {
    const TensorInfo *t = &net->layout.tensors[id];
    float *w = net->params + t->offset, *buf = net->momentum + t->offset;
    const float *grad = net->grads + t->offset;
    double m = recipe->muon_momentum, norm = 0.0;
    float *update = xcalloc(t->size, sizeof(float)), *orth = xcalloc(t->size, sizeof(float));
    for (size_t i = 0; i < t->size; i++) {
        buf[i] = (float)(m * buf[i] + grad[i]);
        update[i] = (float)(grad[i] + m * buf[i]);
        if (net->muon_bf16) update[i] = ref_round_bf16(update[i]);
        norm += (double)w[i] * w[i];
    }
    ref_newton_schulz(orth, update, t->c_out, (int)(t->size / t->c_out), recipe, net->muon_bf16);
    float scale = plan->muon_normalize ? (float)(sqrt((double)t->c_out) / sqrt(norm)) : 1.0f;
    double lr = plan->group[GROUP_CONV].lr;
    for (size_t i = 0; i < t->size; i++) w[i] = (float)((w[i] * scale - lr * orth[i]) * plan->muon_decay);
    free(update);
    free(orth);
}

void ref_muon_step(RefNet *net, const Recipe *recipe, const StepPlan *plan) {
    ref_sgd_step(net, plan->group, recipe->momentum, 1);
    for (int id = net->layout.first_conv; id < net->layout.first_conv + net->layout.n_convs; id++)
        muon_update_tensor(net, id, recipe, plan);
}

static void lerp_and_copy(float *ema, float *w, size_t count, double decay) {
    for (size_t i = 0; i < count; i++) {
        ema[i] = (float)(decay * ema[i] + (1.0 - decay) * w[i]);
        w[i] = ema[i];
    }
}

void ref_lookahead_update(RefNet *net, double decay) {
    lerp_and_copy(net->ema_params, net->params, net->layout.n_params, decay);
    lerp_and_copy(net->ema_running, net->running, net->n_running, decay);
}

void ref_optimizer_step(RefNet *net, const Recipe *recipe, const StepPlan *plan) {
    if (recipe->muon) ref_muon_step(net, recipe, plan);
    else ref_sgd_step(net, plan->group, recipe->momentum, 0);
    if (plan->lookahead_decay >= 0) ref_lookahead_update(net, plan->lookahead_decay);
}

double ref_train_step(RefNet *net, const Recipe *recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, int *n_correct) {
    double loss = ref_forward_backward(net, images, labels, n, (float)recipe->label_smoothing,
                                       plan->group[GROUP_WHITEN_BIAS].enabled, NULL, n_correct);
    ref_optimizer_step(net, recipe, plan);
    return loss;
}

// ----------------------------------------------------------------------------
// Data filtering: the proxy network scores every batch, keeps its highest-loss examples,
// and steps on the kept examples' loss.

void ref_proxy_score(RefNet *proxy, const float *images, const uint8_t *labels, int n, float smoothing,
                     float *losses) {
    ensure_acts(proxy, n);
    ref_forward(proxy, images, n, 1, proxy->acts->logits);
    ref_example_losses(losses, proxy->acts->logits, labels, n, NET_CLASSES, smoothing);
}

double ref_proxy_step(RefNet *proxy, const Recipe *proxy_recipe, const StepPlan *plan, const float *images,
                      const uint8_t *labels, int n, const int *kept, int keep) {
    float *weights = xcalloc(n, sizeof(float));
    for (int i = 0; i < keep; i++) weights[kept[i]] = 1.0f;
    double loss = ref_backward(proxy, images, labels, weights, n, (float)proxy_recipe->label_smoothing,
                               plan->group[GROUP_WHITEN_BIAS].enabled, NULL);
    ref_optimizer_step(proxy, proxy_recipe, plan);
    free(weights);
    return loss;
}

// ----------------------------------------------------------------------------
// Data: training batches and test-time augmentation views.

void ref_normalize_images(float *out, const uint8_t *images, int n) {
    for (size_t i = 0; i < (size_t)n * CIFAR10_IMAGE_BYTES; i++)
        out[i] = aug_normalize(images[i], (int)(i / 1024 % 3));
}

void ref_train_batch(float *out, uint8_t *labels_out, const Cifar10Split *train, int n_train,
                     const Recipe *recipe, uint64_t seed, int64_t first, const int *rows, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t epoch, image = aug_stream_image(seed, first + (rows ? rows[i] : i), n_train, &epoch);
        const uint8_t *src = train->images + (size_t)image * CIFAR10_IMAGE_BYTES;
        int flip = aug_flip(seed, epoch, image), dy = 0, dx = 0, cut_y = 0, cut_x = 0;
        if (recipe->translate)
            aug_translate(seed, (TranslateMode)recipe->translate_mode, recipe->translate, epoch, image, &dy, &dx);
        if (recipe->cutout) aug_cutout(seed, recipe->cutout, epoch, image, &cut_y, &cut_x);
        float brightness, contrast;
        aug_jitter(seed, (float)recipe->jitter_brightness, (float)recipe->jitter_contrast, epoch, image, &brightness,
                   &contrast);
        float *dst = out + (size_t)i * CIFAR10_IMAGE_BYTES;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) {
                    int sy, sx;
                    aug_source_pixel(y, x, dy, dx, flip, &sy, &sx);
                    int in_cutout = recipe->cutout && y >= cut_y && y < cut_y + recipe->cutout &&
                                    x >= cut_x && x < cut_x + recipe->cutout;
                    float value = aug_normalize(src[(c * 32 + sy) * 32 + sx], c);
                    dst[(c * 32 + y) * 32 + x] = in_cutout ? 0.0f : aug_jitter_apply(value, brightness, contrast);
                }
        labels_out[i] = train->labels[image];
    }
}

// A test view: mirrored and/or shifted by (shift, shift) with reflect padding.
static void tta_view(float *out, const float *images, int n, int flip, int shift) {
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++) {
                    int sy, sx;
                    aug_source_pixel(y, x, shift, shift, flip, &sy, &sx);
                    out[(((size_t)b * 3 + c) * 32 + y) * 32 + x] = images[(((size_t)b * 3 + c) * 32 + sy) * 32 + sx];
                }
}

// logits = sum over views of weight * f(view), the views being the images and (level >= 1)
// their mirrors, at shift 0 and (level 2) shifted by -1 and +1. airbench's weights: level
// 1 the mean over the mirror; level 2 0.5 of level 1 plus 0.25 each of level 1 on the
// shifted images. Uniform: the mean over the views.
void ref_tta_logits(RefNet *net, const float *images, int n, int level, TtaWeights weights, float *logits) {
    static const int shifts[3] = {0, -1, 1};
    static const double shift_weight[3][3] = {{1, 0, 0}, {1, 0, 0}, {0.5, 0.25, 0.25}};
    int n_flips = level == 0 ? 1 : 2, n_shifts = level == 2 ? 3 : 1;
    float *view = xcalloc((size_t)n * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *view_logits = xcalloc((size_t)n * NET_CLASSES, sizeof(float));
    double *sum = xcalloc((size_t)n * NET_CLASSES, sizeof(double));
    for (int s = 0; s < n_shifts; s++)
        for (int flip = 0; flip < n_flips; flip++) {
            tta_view(view, images, n, flip, shifts[s]);
            ref_forward(net, view, n, 0, view_logits);
            double weight = weights == TTA_WEIGHTS_UNIFORM ? 1.0 / (n_shifts * n_flips) : shift_weight[level][s] / n_flips;
            for (size_t i = 0; i < (size_t)n * NET_CLASSES; i++) sum[i] += weight * view_logits[i];
        }
    for (size_t i = 0; i < (size_t)n * NET_CLASSES; i++) logits[i] = (float)sum[i];
    free(view);
    free(view_logits);
    free(sum);
}

// The top softmax probability of a row of logits: 1 / sum_k exp(z_k - max z).
void ref_top_probabilities(float *p, const float *logits, int n) {
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        double max_z = z[0], sum = 0.0;
        for (int k = 1; k < NET_CLASSES; k++) max_z = z[k] > max_z ? z[k] : max_z;
        for (int k = 0; k < NET_CLASSES; k++) sum += exp(z[k] - max_z);
        p[b] = (float)(1.0 / sum);
    }
}

typedef struct {
    float value;
    int index;
} Ranked;

static int by_value_then_index(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->value != y->value) return x->value < y->value ? -1 : 1;
    return x->index - y->index;
}

static int ascending(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

// The k first of values ranked by sign * value, then by index, in increasing index order.
static void select_ranked(int *indices, const float *values, int n, int k, float sign) {
    Ranked *r = xcalloc(n, sizeof(Ranked));
    for (int i = 0; i < n; i++) r[i] = (Ranked){sign * values[i], i};
    qsort(r, n, sizeof(Ranked), by_value_then_index);
    for (int i = 0; i < k; i++) indices[i] = r[i].index;
    qsort(indices, k, sizeof(int), ascending);
    free(r);
}

void ref_select_lowest(int *indices, const float *values, int n, int k) { select_ranked(indices, values, n, k, 1.0f); }

// Negation is exact and reverses the order of every pair of values, ties kept.
void ref_select_highest(int *indices, const float *values, int n, int k) {
    select_ranked(indices, values, n, k, -1.0f);
}

// TTA logits of n images at a time, CHUNK at most.
static void chunked_tta(RefNet *net, const float *images, int n, int level, TtaWeights weights, float *logits) {
    enum { CHUNK = 500 };
    for (int start = 0; start < n; start += CHUNK) {
        int count = n - start < CHUNK ? n - start : CHUNK;
        ref_tta_logits(net, images + (size_t)start * CIFAR10_IMAGE_BYTES, count, level, weights,
                       logits + (size_t)start * NET_CLASSES);
    }
}

void ref_evaluate_logits(RefNet *net, const float *images, int n, const Recipe *recipe, float *logits) {
    int k = recipe_tta_images(recipe, n);
    TtaWeights weights = (TtaWeights)recipe->tta_weights;
    if (k == n) {
        chunked_tta(net, images, n, recipe->tta_level, weights, logits);
        return;
    }
    chunked_tta(net, images, n, 0, weights, logits);  // the plain view of every image
    int *chosen = xcalloc(k ? k : 1, sizeof(int));
    float *sure = xcalloc(n, sizeof(float));
    ref_top_probabilities(sure, logits, n);
    ref_select_lowest(chosen, sure, n, k);
    free(sure);
    float *selected = xcalloc((size_t)(k ? k : 1) * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *selected_logits = xcalloc((size_t)(k ? k : 1) * NET_CLASSES, sizeof(float));
    for (int i = 0; i < k; i++)
        memcpy(selected + (size_t)i * CIFAR10_IMAGE_BYTES, images + (size_t)chosen[i] * CIFAR10_IMAGE_BYTES,
               CIFAR10_IMAGE_BYTES * sizeof(float));
    chunked_tta(net, selected, k, recipe->tta_level, weights, selected_logits);
    for (int i = 0; i < k; i++)
        memcpy(logits + (size_t)chosen[i] * NET_CLASSES, selected_logits + (size_t)i * NET_CLASSES,
               NET_CLASSES * sizeof(float));
    free(chosen);
    free(selected);
    free(selected_logits);
}

// ----------------------------------------------------------------------------
// Training (the program airbench-ref).
#ifndef REFERENCE_NO_MAIN
#include "runfile.h"

typedef struct {
    const char *data_dir, *json_path;
    const Variant *variant;
    Recipe recipe;
    int n_train, n_test;
    uint64_t seed;
    char command[4096];
} RefOptions;

static double wall_seconds(void) { return omp_get_wtime(); }

// Accuracy of logits (n x 10) against labels.
static double accuracy(const float *logits, const uint8_t *labels, int n) {
    int correct = 0;
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * NET_CLASSES;
        int best = 0;
        for (int k = 1; k < NET_CLASSES; k++)
            if (z[k] > z[best]) best = k;
        correct += best == labels[b];
    }
    return (double)correct / n;
}

// Test accuracy: the recipe's evaluation, or the plain view (level 0) for the per-epoch rows.
static double evaluate(RefNet *net, const float *test_images, const uint8_t *labels, int n, const Recipe *recipe,
                       int plain) {
    Recipe view = *recipe;
    if (plain) view.tta_level = 0;
    float *logits = xcalloc((size_t)n * NET_CLASSES, sizeof(float));
    ref_evaluate_logits(net, test_images, n, &view, logits);
    double acc = accuracy(logits, labels, n);
    free(logits);
    return acc;
}

// ----------------------------------------------------------------------------
// The run file: written through runfile.h when the run ends, or ended as incomplete when
// a signal stops it.

static RunFileWriter *begin_run_file(const RefOptions *o) {
    const Recipe *r = &o->recipe;
    cJSON *header = cJSON_CreateObject();
    cJSON_AddStringToObject(header, "variant", "airbench-ref");
    cJSON_AddNumberToObject(header, "target_accuracy", o->variant->target_accuracy);
    cJSON_AddStringToObject(header, "command", o->command);
    cJSON *config = cJSON_AddObjectToObject(header, "config");
    cJSON_AddStringToObject(config, "recipe", r->name);
    runfile_add_recipe(config, r, o->variant->recipe);
    cJSON_AddNumberToObject(config, "n_train", o->n_train);
    cJSON_AddNumberToObject(config, "n_test", o->n_test);
    cJSON_AddNumberToObject(config, "seed", (double)o->seed);
    char err[1024];
    RunFileWriter *w = runfile_begin(o->json_path, header, err, sizeof err);
    if (!w) fprintf(stderr, "airbench-ref: %s\n", err);
    return w;
}

typedef struct {
    double train_loss, train_acc, test_acc, seconds;
} EpochRow;

static cJSON *run_json(const RefOptions *o, double tta_acc, double seconds, const EpochRow *rows, int n_epochs,
                       const char *divergence) {
    cJSON *run = cJSON_CreateObject();
    cJSON_AddNumberToObject(run, "seed", (double)o->seed);
    cJSON_AddNumberToObject(run, "accuracy", tta_acc);
    cJSON_AddNumberToObject(run, "wall_s", seconds);
    if (divergence) {
        cJSON_AddTrueToObject(run, "diverged");
        cJSON_AddStringToObject(run, "divergence", divergence);
    }
    cJSON *epochs = cJSON_AddArrayToObject(run, "epochs");
    for (int e = 0; e < n_epochs; e++) {
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "epoch", e + 1);
        cJSON_AddNumberToObject(row, "train_loss", rows[e].train_loss);
        cJSON_AddNumberToObject(row, "train_acc", rows[e].train_acc);
        cJSON_AddNumberToObject(row, "test_acc", rows[e].test_acc);
        cJSON_AddNumberToObject(row, "time_s", rows[e].seconds);
        cJSON_AddItemToArray(epochs, row);
    }
    return run;
}

// ----------------------------------------------------------------------------
// Training.

typedef struct {
    double tta_acc;
    EpochRow *rows;
    int n_epochs;
    char divergence[160];  // "" unless the divergence guard (runfile.h) fired
    int signal;            // the signal that stopped training early, or 0
} TrainResult;

// Closes the epoch's row: mean loss and accuracy over its steps, unaugmented test accuracy.
static void end_epoch(EpochRow *row, double loss_sum, int correct_sum, int n_seen, RefNet *net, const Recipe *recipe,
                      const float *test_images, const Cifar10 *data, int n_test, double seconds) {
    row->train_loss = loss_sum / n_seen;
    row->train_acc = (double)correct_sum / n_seen;
    row->test_acc = evaluate(net, test_images, data->test.labels, n_test, recipe, 1);
    row->seconds = seconds;
}

// Data filtering (filter_keep > 0): the proxy network (recipe_proxy) trains first on the
// run's batches, scoring every batch and stepping on every proxy_step_every-th on the loss
// of the examples it keeps, its filter_keep highest-loss ones. Returns their rows, total x
// filter_keep; a signal stops it early (into *signal).
static int *train_proxy(const RefOptions *o, const Cifar10 *data, const float *whiten_images, int n_whiten,
                        int *signal) {
    const Recipe *r = &o->recipe;
    Recipe proxy_recipe = recipe_proxy(r);
    int spe = recipe_steps_per_epoch(r, o->n_train), total = recipe_total_steps(r, o->n_train);
    int n = r->batch_size, keep = r->filter_keep;
    RefNet *proxy = ref_net_create(&proxy_recipe);
    ref_net_init(proxy, &proxy_recipe, recipe_proxy_seed(o->seed), whiten_images, n_whiten);
    int *kept = xcalloc((size_t)total * keep, sizeof(int));
    float *batch = xcalloc((size_t)n * CIFAR10_IMAGE_BYTES, sizeof(float)), *losses = xcalloc(n, sizeof(float));
    uint8_t *labels = xcalloc(n, 1);
    double start = wall_seconds();
    for (int step = 0; step < total && !*signal; step++) {
        int *step_kept = kept + (size_t)step * keep;
        ref_train_batch(batch, labels, &data->train, o->n_train, r, o->seed, recipe_batch_first(r, step, o->n_train),
                        NULL, n);
        ref_proxy_score(proxy, batch, labels, n, (float)r->label_smoothing, losses);
        ref_select_highest(step_kept, losses, n, keep);
        if (step % r->proxy_step_every == 0) {
            StepPlan plan = recipe_step_plan(&proxy_recipe, step, total, spe);
            ref_proxy_step(proxy, &proxy_recipe, &plan, batch, labels, n, step_kept, keep);
        }
        *signal = runfile_pending_signal();
    }
    printf("proxy: widths %d,%d,%d depth %d scored %d batches, kept %d of %d each (%.1f s)\n", proxy_recipe.widths[0],
           proxy_recipe.widths[1], proxy_recipe.widths[2], proxy_recipe.depth, total, keep, n, wall_seconds() - start);
    ref_net_free(proxy);
    free(batch);
    free(losses);
    free(labels);
    return kept;
}

// Trains one network with the schedule's step plans (after the proxy, with data
// filtering), then measures its TTA accuracy.
static TrainResult train(const RefOptions *o, const Cifar10 *data) {
    const Recipe *r = &o->recipe;
    int spe = recipe_steps_per_epoch(r, o->n_train), total = recipe_total_steps(r, o->n_train);
    int n_whiten = o->n_train < r->whiten_images ? o->n_train : r->whiten_images;
    float *test_images = xcalloc((size_t)o->n_test * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *whiten_images = xcalloc((size_t)n_whiten * CIFAR10_IMAGE_BYTES, sizeof(float));
    float *batch = xcalloc((size_t)r->batch_size * CIFAR10_IMAGE_BYTES, sizeof(float));
    uint8_t *labels = xcalloc(r->batch_size, 1);
    ref_normalize_images(test_images, data->test.images, o->n_test);
    ref_normalize_images(whiten_images, data->train.images, n_whiten);

    RefNet *net = ref_net_create(r);
    ref_net_init(net, r, o->seed, whiten_images, n_whiten);
    TrainResult result = {.rows = xcalloc((size_t)total / spe + 2, sizeof(EpochRow))};
    double start = wall_seconds(), loss_sum = 0.0;
    int *kept = r->filter_keep ? train_proxy(o, data, whiten_images, n_whiten, &result.signal) : NULL;
    int correct_sum = 0, steps_in_epoch = 0, n = recipe_train_batch(r);
    int stop = 0;
    printf("| epoch | train_loss | train_acc | test_acc | seconds |\n");
    for (int step = 0; step < total && !stop && !result.signal; step++) {
        ref_train_batch(batch, labels, &data->train, o->n_train, r, o->seed, recipe_batch_first(r, step, o->n_train),
                        kept ? kept + (size_t)step * n : NULL, n);
        StepPlan plan = recipe_step_plan(r, step, total, spe);
        int correct = 0;
        loss_sum += ref_train_step(net, r, &plan, batch, labels, n, &correct);
        correct_sum += correct;
        steps_in_epoch++;
        stop = !isfinite(loss_sum);  // nothing more to learn from this run
        result.signal = runfile_pending_signal();
        if ((step + 1) % spe && step + 1 < total && !stop) continue;
        EpochRow *row = &result.rows[result.n_epochs++];
        end_epoch(row, loss_sum, correct_sum, steps_in_epoch * n, net, r, test_images, data, o->n_test,
                  wall_seconds() - start);
        printf("| %5d | %10.4f | %9.4f | %8.4f | %7.1f |\n", result.n_epochs, row->train_loss, row->train_acc,
               row->test_acc, row->seconds);
        fflush(stdout);
        loss_sum = 0.0;
        correct_sum = steps_in_epoch = 0;
    }
    double losses[result.n_epochs + 1];
    for (int e = 0; e < result.n_epochs; e++) losses[e] = result.rows[e].train_loss;
    runfile_loss_diverged(losses, result.n_epochs, result.divergence, sizeof result.divergence);
    if (!result.signal) {
        result.tta_acc = evaluate(net, test_images, data->test.labels, o->n_test, r, 0);
        printf("final TTA (level %d) test accuracy: %.4f  (%.1f s)\n", r->tta_level, result.tta_acc,
               wall_seconds() - start);
    }
    ref_net_free(net);
    free(kept);
    free(test_images);
    free(whiten_images);
    free(batch);
    free(labels);
    return result;
}

// ----------------------------------------------------------------------------
// Command line.

static void usage(FILE *f, const Recipe *r) {
    fprintf(f,
            "usage: airbench-ref [--variant 94|95|96|94-muon|94-record|96-filter] [--set NAME=VALUE]...\n"
            "                    [--data DIR] [--train-subset N] [--test-subset N] [--seed S] [--json FILE]\n"
            "                    [--widths A,B,C] [--depth 2|3] [--epochs E] [--batch B] [--tta 0|1|2]\n"
            "                    [--translate-mode random|derandomized] [--warmup-epochs E]\n"
            "                    [--lr-scaling linear|sqrt|none] [--bn-group N] [--bn-wd 0|1]\n"
            "Trains the airbench network with the CPU reference (fp32, OpenMP) and prints a per-epoch\n"
            "table and the final test-time-augmented accuracy. Defaults: the 94 recipe, seed 0, all\n"
            "50,000 training and 10,000 test images in data/cifar10: that takes hours on a CPU; for a\n"
            "quick check use e.g. --widths 16,32,32 --train-subset 5000 --test-subset 1000 --epochs 3\n"
            "--batch 250 (about a minute on 2 cores). Recipe flags as in the GPU trainer (--set, and\n"
            "the shorthands for widths, depth, epochs, batch_size, tta_level, translate_mode,\n"
            "warmup_epochs, lr_scaling, bn_group, bn_wd).\n"
            "--json writes the run file (schema in docs/run-file.md).\n"
            "Exit status: 0 fine; 1 unreadable data, a run file that cannot be written, or a diverged\n"
            "run; 2 a bad flag; 128+N killed by signal N (the run file says incomplete).\n"
            "Recipe fields of %s (NAME, value, meaning):\n", r->name);
    recipe_print_fields(f, r);
}

static int fail(const char *message) {
    fprintf(stderr, "airbench-ref: %s (see --help)\n", message);
    return -1;
}

static int fail_flag(const char *flag, const char *value, const char *why) {
    char message[512];
    snprintf(message, sizeof message, "bad value '%s' for %s: %s", value ? value : "(missing)", flag, why);
    return fail(message);
}

static int parse_int_flag(const char *flag, const char *value, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = value ? strtol(value, &end, 10) : 0;
    if (!value || errno || end == value || *end || v < lo || v > hi) {
        char why[96];
        snprintf(why, sizeof why, "expected an integer in %ld..%ld", lo, hi);
        return fail_flag(flag, value, why);
    }
    *out = (int)v;
    return 0;
}

// One of the program's own flags; 0 if applied, -1 after an error message.
static int parse_flag(RefOptions *o, const char *flag, const char *value) {
    int seed;
    if (!strcmp(flag, "--data")) return value ? (o->data_dir = value, 0) : fail_flag(flag, value, "expected a directory");
    if (!strcmp(flag, "--json")) return value ? (o->json_path = value, 0) : fail_flag(flag, value, "expected a file name");
    if (!strcmp(flag, "--train-subset")) return parse_int_flag(flag, value, 1, 50000, &o->n_train);
    if (!strcmp(flag, "--test-subset")) return parse_int_flag(flag, value, 1, 10000, &o->n_test);
    if (!strcmp(flag, "--seed")) {
        if (parse_int_flag(flag, value, 0, 2000000000, &seed)) return -1;
        o->seed = (uint64_t)seed;
        return 0;
    }
    char message[256];
    snprintf(message, sizeof message, "unknown flag '%s'", flag);
    return fail(message);
}

// Parses argv into o. Returns 0, 1 for --help, or -1 on a bad flag (message printed).
static int parse_args(int argc, char **argv, RefOptions *o) {
    *o = (RefOptions){.data_dir = "data/cifar10", .n_train = 50000, .n_test = 10000};
    size_t used = 0;
    for (int i = 0; i < argc && used < sizeof o->command; i++)
        used += snprintf(o->command + used, sizeof o->command - used, i ? " %s" : "%s", argv[i]);
    char err[1024];
    if (recipe_variant_from_args(argc, argv, &o->variant, err, sizeof err)) return fail(err);
    if (!o->variant) o->variant = recipe_variant("94");
    o->recipe = *o->variant->recipe;
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout, &o->recipe);
            return 1;
        }
        int applied = recipe_apply_flag(&o->recipe, flag, value, err, sizeof err);
        if (applied < 0) return fail(err);
        if (!applied && parse_flag(o, flag, value)) return -1;
        i++;  // every flag takes one value
    }
    if (recipe_validate(&o->recipe, o->n_train, err, sizeof err)) return fail(err);
    return 0;
}

// Records the run (or the reason it stopped) and ends the run file; the exit status.
static int finish(const RefOptions *o, RunFileWriter *w, const TrainResult *result, double seconds) {
    char err[1024], reason[160];
    int status = result->divergence[0] ? 1 : 0;
    if (result->divergence[0]) fprintf(stderr, "airbench-ref: training diverged: %s\n", result->divergence);
    if (result->signal) {
        snprintf(reason, sizeof reason, "interrupted by signal %d (%s) during training", result->signal,
                 strsignal(result->signal));
        fprintf(stderr, "airbench-ref: %s\n", reason);
    }
    if (w && !result->signal &&
        runfile_add_run(w, run_json(o, result->tta_acc, seconds, result->rows, result->n_epochs,
                                    result->divergence[0] ? result->divergence : NULL), err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        status = 1;
    }
    if (w && runfile_end(w, result->signal ? reason : NULL, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        status = 1;
    }
    if (result->signal) runfile_exit_for_signal(result->signal);
    return status;
}

int main(int argc, char **argv) {
    RefOptions o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    char err[1024];
    if (o.json_path && runfile_check_writable(o.json_path, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        return 1;
    }
    Cifar10 data;
    if (cifar10_load(&data, o.data_dir, err, sizeof err)) {
        fprintf(stderr, "airbench-ref: %s\n", err);
        return 1;
    }
    const Recipe *r = &o.recipe;
    printf("airbench-ref: %s recipe, widths %d,%d,%d depth %d, batch %d, %.2f epochs (%d steps), "
           "%d train / %d test images, seed %llu, %d threads\n",
           r->name, r->widths[0], r->widths[1], r->widths[2], r->depth, r->batch_size, r->epochs,
           recipe_total_steps(r, o.n_train), o.n_train, o.n_test, (unsigned long long)o.seed, omp_get_max_threads());
    if (o.n_train > 10000)
        printf("airbench-ref: note: %d training images on the CPU take a long time (hours for the full recipe); "
               "see --help for a quick check\n", o.n_train);
    RunFileWriter *w = o.json_path ? begin_run_file(&o) : NULL;
    if (o.json_path && !w) return 1;
    runfile_watch_signals();
    double start = wall_seconds();
    TrainResult result = train(&o, &data);
    int status = finish(&o, w, &result, wall_seconds() - start);
    free(result.rows);
    cifar10_free(&data);
    return status;
}
#endif
