// stats.c: the statistics of benchstat (stats.h), no I/O.
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


// Continued fraction of the regularized incomplete beta function,
//     I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))),
//     d_{2m}   =  m (b - m) x / ((a + 2m - 1)(a + 2m)),
//     d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)),
// evaluated with the modified Lentz method (running products c, d kept away from zero).
// Returns the fraction 1 / (1 + d1 / ...); it converges fast for x < (a + 1) / (a + b + 2).
static double beta_continued_fraction(double a, double b, double x) {
    const double tiny = 1e-300, eps = 1e-16;
    double c = 1.0, d = 1.0 - (a + b) * x / (a + 1.0);  // 1 + d1
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double fraction = d;
    for (int m = 1; m <= 10000; m++) {
        double coefs[2] = {m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                           -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))};
        double change = 1.0;
        for (int k = 0; k < 2; k++) {
            d = 1.0 + coefs[k] * d;
            if (fabs(d) < tiny) d = tiny;
            c = 1.0 + coefs[k] / c;
            if (fabs(c) < tiny) c = tiny;
            d = 1.0 / d;
            change = c * d;
            fraction *= change;
        }
        if (fabs(change - 1.0) < eps) break;
    }
    return fraction;
}

// Regularized incomplete beta I_x(a, b), using I_x(a, b) = 1 - I_{1-x}(b, a) to stay on
// the side where the continued fraction converges.
double incomplete_beta(double a, double b, double x) {
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double log_front = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    if (x < (a + 1.0) / (a + b + 2.0)) return exp(log_front) * beta_continued_fraction(a, b, x) / a;
    return 1.0 - exp(log_front) * beta_continued_fraction(b, a, 1.0 - x) / b;
}

// P(T <= t) for Student's t with df degrees of freedom (df may be fractional):
// P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2).
double t_cdf(double t, double df) {
    if (isnan(t) || isnan(df)) return NAN;
    if (isinf(t)) return t > 0 ? 1.0 : 0.0;
    double tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));  // P(T >= |t|)
    return t > 0 ? 1.0 - tail : tail;
}

// The t with P(T <= t) = p, by bisection on t_cdf (monotone), to full double precision.
double t_quantile(double p, double df) {
    if (!(p > 0.0 && p < 1.0) || isnan(df)) return NAN;
    if (p < 0.5) return -t_quantile(1.0 - p, df);
    double lo = 0.0, hi = 1.0;
    while (t_cdf(hi, df) < p) hi *= 2.0;
    for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (t_cdf(mid, df) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Summary of x[0..n-1], n >= 2. The mean is taken first and the deviations from it summed
// (two passes), which keeps the variance exact for data with a large common offset.
Summary summarize(const double *x, int n) {
    Summary s = {.n = n};
    double sum = 0.0, squares = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    s.mean = sum / n;
    for (int i = 0; i < n; i++) squares += (x[i] - s.mean) * (x[i] - s.mean);
    s.std = sqrt(squares / (n - 1));
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) abort();
    memcpy(sorted, x, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    s.min = sorted[0];
    s.max = sorted[n - 1];
    s.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
    return s;
}

// The 95% confidence interval of the mean (Student t with n - 1 degrees of freedom).
void mean_interval(Summary s, double *low, double *high) {
    double half_width = t_quantile(0.975, s.n - 1) * s.std / sqrt(s.n);
    *low = s.mean - half_width;
    *high = s.mean + half_width;
}

// One-sample t-test of "mean >= target". With zero spread there is no t: p is 0 when the
// mean is below the target and 1 otherwise.
TargetTest test_against_target(Summary s, double target) {
    TargetTest r = {.df = s.n - 1};
    double se = s.std / sqrt(s.n);
    mean_interval(s, &r.ci_low, &r.ci_high);
    if (se == 0.0) {
        r.t = s.mean < target ? -INFINITY : s.mean > target ? INFINITY : 0.0;
        r.p_below = s.mean < target ? 0.0 : 1.0;
        return r;
    }
    r.t = (s.mean - target) / se;
    r.p_below = t_cdf(r.t, r.df);
    return r;
}

// Welch-Satterthwaite degrees of freedom for the sum of two variance terms v_a, v_b
// estimated from n_a and n_b observations.
double welch_df(double v_a, int n_a, double v_b, int n_b) {
    double denominator = v_a * v_a / (n_a - 1) + v_b * v_b / (n_b - 1);
    if (denominator == 0.0) return n_a + n_b - 2;  // no spread: df is moot, keep it finite
    return (v_a + v_b) * (v_a + v_b) / denominator;
}

// Welch's unequal-variance t-test of mean(a) - mean(b).
WelchTest welch_test(Summary a, Summary b) {
    double v_a = a.std * a.std / a.n, v_b = b.std * b.std / b.n, se = sqrt(v_a + v_b);
    WelchTest r = {.diff = a.mean - b.mean, .df = welch_df(v_a, a.n, v_b, b.n)};
    double q = t_quantile(0.975, r.df);
    r.ci_low = r.diff - q * se;
    r.ci_high = r.diff + q * se;
    if (se == 0.0) {
        r.t = r.diff == 0.0 ? 0.0 : copysign(INFINITY, r.diff);
        r.p_two_sided = r.diff == 0.0 ? 1.0 : 0.0;
        return r;
    }
    r.t = r.diff / se;
    r.p_two_sided = 2.0 * t_cdf(-fabs(r.t), r.df);
    return r;
}

// mean(a) / mean(b) (both positive) with the delta-method interval on the log scale
// (stats.h).
RatioInterval ratio_of_means(Summary a, Summary b) {
    double v_a = a.std * a.std / (a.n * a.mean * a.mean);
    double v_b = b.std * b.std / (b.n * b.mean * b.mean);
    RatioInterval r = {.ratio = a.mean / b.mean, .df = welch_df(v_a, a.n, v_b, b.n)};
    double half_width = t_quantile(0.975, r.df) * sqrt(v_a + v_b);
    r.ci_low = r.ratio * exp(-half_width);
    r.ci_high = r.ratio * exp(half_width);
    return r;
}
