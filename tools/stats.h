// stats.h: the statistics benchstat reports, with no I/O (tools/stats.c). Student's t
// distribution, a file's summary, the one-sample test against a target, Welch's test of two
// means, and the ratio of two mean times with its interval. tests/test_benchstat.c checks
// them against values computed with scipy.
#pragma once

typedef struct {
    int n;
    double mean, std;  // std: the sample standard deviation (divides by n - 1)
    double median, min, max;
} Summary;

typedef struct {
    double t, df;
    double p_below;           // one-sided p for H1: mean < target
    double ci_low, ci_high;   // 95% confidence interval of the mean
} TargetTest;

typedef struct {
    double diff, t, df, p_two_sided;
    double ci_low, ci_high;   // 95% confidence interval of the difference
} WelchTest;

typedef struct {
    double ratio, df;
    double ci_low, ci_high;   // 95% confidence interval of the ratio
} RatioInterval;

// Regularized incomplete beta I_x(a, b).
double incomplete_beta(double a, double b, double x);
// P(T <= t) for Student's t with df degrees of freedom (df may be fractional).
double t_cdf(double t, double df);
// The t with P(T <= t) = p; NaN unless 0 < p < 1.
double t_quantile(double p, double df);
// Summary of x[0..n-1], n >= 2.
Summary summarize(const double *x, int n);
// The 95% confidence interval of the mean (Student t with n - 1 degrees of freedom).
void mean_interval(Summary s, double *low, double *high);
// One-sample t-test of "mean >= target" and the 95% interval of the mean.
TargetTest test_against_target(Summary s, double target);
// Welch-Satterthwaite degrees of freedom for the sum of two variance terms v_a, v_b
// estimated from n_a and n_b observations.
double welch_df(double v_a, int n_a, double v_b, int n_b);
// Welch's unequal-variance t-test of mean(a) - mean(b), two-sided.
WelchTest welch_test(Summary a, Summary b);
// mean(a) / mean(b) (both positive) with a 95% interval from the delta method on
// log(mean_a / mean_b): var(log mean) ~= s^2 / (n mean^2) for each, the two variances add,
// and the t quantile has Welch-Satterthwaite's degrees of freedom over those two terms; the
// interval is exp(log ratio +- q se), so it is not symmetric.
RatioInterval ratio_of_means(Summary a, Summary b);
