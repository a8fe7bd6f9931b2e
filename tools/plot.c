// plot.c: benchstat --plot (see plot.h). The histograms are computed here and handed to
// gnuplot as data blocks, with the axes chosen here too: gnuplot's automatic tics crowd
// the time axis (1.2825, 1.2850, ... run together for airbench94-muon), so each axis gets
// about six tics (five to nine), at a step of 1, 2 or 5 times a power of ten, labelled with
// just the decimals that step needs. The bins follow the bulk of each file's runs
// (Freedman-Diaconis), shared by all files so that their bars line up side by side.
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// Distinct colours for the files (cycled beyond nine); red is kept for the target line.
static const char *const COLORS[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
                                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_COLORS (int)(sizeof COLORS / sizeof COLORS[0])
#define TARGET_COLOR "#d62728"
#define ACCURACY_QUANTUM 0.01  // percent: one image of the 10,000 in the test set
#define MAX_TICS 6

int plot_gnuplot_found(void) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char candidate[4096];
    for (const char *dir = path; *dir;) {
        size_t length = strcspn(dir, ":");
        snprintf(candidate, sizeof candidate, "%.*s/gnuplot", (int)length, length ? dir : ".");
        if (access(candidate, X_OK) == 0) return 1;
        dir += length + (dir[length] == ':');
    }
    return 0;
}

// The smallest step of 1, 2 or 5 times a power of ten that is at least raw (raw > 0).
static double nice_step_up(double raw) {
    double power = pow(10.0, floor(log10(raw)));
    const double multiples[] = {1.0, 2.0, 5.0, 10.0};
    for (int i = 0; i < 4; i++)
        if (multiples[i] * power >= raw * (1 - 1e-9)) return multiples[i] * power;
    return 10.0 * power;
}

// The step of 1, 2 or 5 times a power of ten nearest raw (raw > 0), on a log scale.
static double nice_step_near(double raw) {
    double power = pow(10.0, floor(log10(raw))), best = power;
    const double multiples[] = {2.0, 5.0, 10.0};
    for (int i = 0; i < 3; i++)
        if (fabs(log(multiples[i] * power / raw)) < fabs(log(best / raw))) best = multiples[i] * power;
    return best;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The Freedman-Diaconis bin width of scale * values: 2 IQR / n^(1/3), which follows the
// bulk of the runs rather than an outlier; 0 when the IQR is 0.
static double freedman_diaconis_width(const double *values, int n, double scale) {
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) abort();
    memcpy(sorted, values, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    double iqr = scale * (sorted[(3 * (n - 1)) / 4] - sorted[(n - 1) / 4]);
    free(sorted);
    return 2.0 * iqr / cbrt(n);
}

// Decimals that label a nice step exactly: 0.05 -> 2, 0.2 -> 1, 5 -> 0.
static int step_decimals(double step) {
    int decimals = (int)ceil(-log10(step) - 1e-9);
    return decimals > 0 ? decimals : 0;
}

// One panel's layout: the scale of its values, the bins, the x axis, the tallest bin.
typedef struct {
    double scale;               // file value -> plotted value (100 for accuracy in percent)
    double bin_width, bin_origin;  // bin k covers [origin + k width, origin + (k+1) width)
    double x_low, x_high, tic_step;
    int max_count;              // tallest bin over all files
} Panel;

static const double *panel_values(const RunFile *f, int accuracy) {
    return accuracy ? f->accuracy : f->time_s;
}

static long bin_index(const Panel *p, double value) {
    return (long)floor((value - p->bin_origin) / p->bin_width);
}

// The counts of one file's values in the bins first .. first + n_bins - 1 (from a panel
// whose bins are set). There are at most a few dozen: a bin is about a fortieth of the
// values' spread or wider.
typedef struct {
    long first, n_bins;
    int *counts;
} Histogram;

static Histogram histogram(const Panel *p, const double *values, int n) {
    long first = bin_index(p, p->scale * values[0]), last = first;
    for (int k = 1; k < n; k++) {
        long bin = bin_index(p, p->scale * values[k]);
        first = bin < first ? bin : first;
        last = bin > last ? bin : last;
    }
    Histogram h = {.first = first, .n_bins = last - first + 1};
    h.counts = calloc((size_t)h.n_bins, sizeof *h.counts);
    if (!h.counts) abort();
    for (int k = 0; k < n; k++) h.counts[bin_index(p, p->scale * values[k]) - first]++;
    return h;
}

// Bins and axis for the accuracy (accuracy = 1) or time panel. The accuracy bins are whole
// multiples of one image's 0.01% with edges halfway between the values that can occur, so
// no value falls on an edge; the accuracy axis includes the targets.
static Panel make_panel(const RunFile *files, const double *targets, int n_files, int accuracy) {
    Panel p = {.scale = accuracy ? 100.0 : 1.0};
    double low = INFINITY, high = -INFINITY;
    for (int i = 0; i < n_files; i++) {
        const double *values = panel_values(&files[i], accuracy);
        for (int k = 0; k < files[i].n; k++) {
            low = fmin(low, p.scale * values[k]);
            high = fmax(high, p.scale * values[k]);
        }
    }
    double spread = high - low;
    if (!(spread > 0)) spread = accuracy ? 10 * ACCURACY_QUANTUM : 0.01 * high;  // one value
    // The narrowest file's bins, but 8 to 40 bins over the whole range.
    double width = INFINITY;
    for (int i = 0; i < n_files; i++) {
        double file_width = freedman_diaconis_width(panel_values(&files[i], accuracy), files[i].n, p.scale);
        if (file_width > 0) width = fmin(width, file_width);
    }
    width = isinf(width) ? spread / 15 : fmin(fmax(width, spread / 40), spread / 8);
    p.bin_width = nice_step_near(width);
    if (accuracy) {
        p.bin_width = fmax(ACCURACY_QUANTUM, round(p.bin_width / ACCURACY_QUANTUM) * ACCURACY_QUANTUM);
        p.bin_origin = -ACCURACY_QUANTUM / 2;
        for (int i = 0; i < n_files; i++) {
            if (isnan(targets[i])) continue;
            low = fmin(low, 100.0 * targets[i]);
            high = fmax(high, 100.0 * targets[i]);
        }
    }
    p.x_low = low - 1.5 * p.bin_width;
    p.x_high = high + 1.5 * p.bin_width;
    p.tic_step = nice_step_near((p.x_high - p.x_low) / MAX_TICS);
    for (int i = 0; i < n_files; i++) {
        Histogram h = histogram(&p, panel_values(&files[i], accuracy), files[i].n);
        for (long b = 0; b < h.n_bins; b++)
            if (h.counts[b] > p.max_count) p.max_count = h.counts[b];
        free(h.counts);
    }
    return p;
}

// Writes text as a gnuplot single-quoted string: quotes doubled, control characters as '?'.
static void put_quoted(FILE *out, const char *text) {
    fputc('\'', out);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '\'') fputs("''", out);
        else fputc(*c < 0x20 ? '?' : *c, out);
    }
    fputc('\'', out);
}

__attribute__((format(printf, 2, 3)))
static void put_quoted_format(FILE *out, const char *fmt, ...) {
    char text[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    put_quoted(out, text);
}

static double mean_of(const double *values, int n) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += values[i];
    return sum / n;
}

// The sample standard deviation (0 for a single value).
static double std_of(const double *values, int n) {
    double mean = mean_of(values, n), squares = 0.0;
    for (int i = 0; i < n; i++) squares += (values[i] - mean) * (values[i] - mean);
    return n > 1 ? sqrt(squares / (n - 1)) : 0.0;
}

// The data block $NAME<i>: one "x, count" row per non-empty bin of file i of n_files. The
// files' bars stand side by side within each bin, file 0 leftmost.
static void put_histogram(FILE *out, const char *name, int i, int n_files, const Panel *p,
                          const double *values, int n) {
    Histogram h = histogram(p, values, n);
    double shift = (i - (n_files - 1) / 2.0) * p->bin_width / n_files;
    fprintf(out, "$%s%d << EOD\n", name, i);
    for (long b = 0; b < h.n_bins; b++)
        if (h.counts[b])
            fprintf(out, "%.10g %d\n", p->bin_origin + (h.first + b + 0.5) * p->bin_width + shift,
                    h.counts[b]);
    fprintf(out, "EOD\n");
    free(h.counts);
}

// The axis ranges and tics of a panel, its title and labels; label_rows rows of marker
// labels (put_marker) must fit above the tallest bar.
static void put_axes(FILE *out, const Panel *p, const char *title, const char *x_label,
                     int n_files, int label_rows) {
    int y_top = (int)ceil(p->max_count / (0.93 - 0.05 * label_rows)) + 1;
    double y_step = nice_step_up(y_top / (double)MAX_TICS);
    fprintf(out, "set title ");
    put_quoted(out, title);
    fprintf(out, "\nset xlabel ");
    put_quoted(out, x_label);
    fprintf(out, "\nset ylabel 'runs per bin'\n");
    fprintf(out, "set xrange [%.10g:%.10g]\n", p->x_low, p->x_high);
    fprintf(out, "set xtics %.10g, %.10g format '%%.%df'\n",
            ceil(p->x_low / p->tic_step) * p->tic_step, p->tic_step, step_decimals(p->tic_step));
    fprintf(out, "set yrange [0:%d]\nset ytics 0, %g format '%%g'\n", y_top, fmax(1.0, y_step));
    fprintf(out, "set boxwidth %.10g absolute\n", 0.85 * p->bin_width / n_files);
}

// A vertical line at x across panel p with a label at its top: a mean's (solid) to the
// right of the line, a target's (dashed) to the left, so that they part, unless the line
// is too close to that edge of the panel. Row stacks the labels of several lines.
static void put_marker(FILE *out, const Panel *p, double x, const char *color, int dashed,
                       int row, const char *label) {
    double position = (x - p->x_low) / (p->x_high - p->x_low);  // 0 left edge, 1 right edge
    int room_on_right = dashed ? position < 0.35 : position < 0.65;
    fprintf(out, "set arrow from %.10g, graph 0 to %.10g, graph 1 nohead front lw 2 lc rgb '%s'%s\n",
            x, x, color, dashed ? " dt 2" : "");
    fprintf(out, "set label ");
    put_quoted(out, label);
    fprintf(out, " at %.10g, graph %.3f %s front tc rgb '%s'\n", x, 0.96 - 0.05 * row,
            room_on_right ? "left offset 0.5, 0" : "right offset -0.5, 0", color);
}

// The legend's entry: "name: variant (overrides: ...), 50 runs[, INCOMPLETE][, 1 diverged
// not shown]; accuracy 94.010% (std 0.127 pts), time 1.2922 s" (means over the runs shown).
static void put_legend_title(FILE *out, const RunFile *f) {
    const char *slash = strrchr(f->name, '/');
    char overrides[400] = "", state[64] = "";
    if (f->overrides[0]) snprintf(overrides, sizeof overrides, " (overrides: %s)", f->overrides);
    if (!f->complete) snprintf(state, sizeof state, ", INCOMPLETE");
    if (f->n_diverged) snprintf(state + strlen(state), sizeof state - strlen(state),
                                ", %d diverged not shown", f->n_diverged);
    put_quoted_format(out, "%s: %s%s, %d runs%s; accuracy %.3f%% (std %.3f pts), time %.4f s",
                      slash ? slash + 1 : f->name, f->variant, overrides, f->n, state,
                      100 * mean_of(f->accuracy, f->n), 100 * std_of(f->accuracy, f->n),
                      mean_of(f->time_s, f->n));
}

// Whether targets[i] is a target to draw: known, and not already drawn for an earlier file.
static int is_new_target(const double *targets, int i) {
    for (int j = 0; j < i; j++)
        if (targets[j] == targets[i]) return 0;
    return !isnan(targets[i]);
}

// One panel: histograms, a mean line per file, and for the accuracy the target lines.
static void put_panel(FILE *out, const RunFile *files, const double *targets, int n_files,
                      int accuracy) {
    Panel p = make_panel(files, targets, n_files, accuracy);
    const char *name = accuracy ? "acc" : "time";
    int n_targets = 0;
    for (int i = 0; accuracy && i < n_files; i++) n_targets += is_new_target(targets, i);
    for (int i = 0; i < n_files; i++)
        put_histogram(out, name, i, n_files, &p, panel_values(&files[i], accuracy), files[i].n);
    put_axes(out, &p, accuracy ? "accuracy (TTA, test set)" : "GPU time per run",
             accuracy ? "accuracy (%)" : "time (s)", n_files, n_files + n_targets);
    char label[64];
    int row = 0;
    for (int i = 0; i < n_files; i++) {
        double mean = p.scale * mean_of(panel_values(&files[i], accuracy), files[i].n);
        snprintf(label, sizeof label, accuracy ? "mean %.3f%%" : "mean %.4f s", mean);
        put_marker(out, &p, mean, COLORS[i % N_COLORS], 0, row++, label);
    }
    for (int i = 0; accuracy && i < n_files; i++) {
        if (!is_new_target(targets, i)) continue;
        snprintf(label, sizeof label, "target %.4g%%", 100 * targets[i]);
        put_marker(out, &p, 100 * targets[i], TARGET_COLOR, 1, row++, label);
    }
    fprintf(out, "plot ");
    for (int i = 0; i < n_files; i++) {
        fprintf(out, "%s$%s%d using 1:2 with boxes lc rgb '%s' ", i ? ", " : "", name, i,
                COLORS[i % N_COLORS]);
        if (accuracy) fprintf(out, "title "), put_legend_title(out, &files[i]);
        else fprintf(out, "notitle");
    }
    fprintf(out, "\nunset arrow\nunset label\n");
}

// "airbench94-muon, 50 runs on GPU", "airbench94 vs airbench94-muon on GPU" (up to three
// variants), or "airbench94, 4 run files on GPU"; "on different GPUs" when they differ.
static void put_title(FILE *out, const RunFile *files, int n_files) {
    char variants[512] = "";
    size_t used = 0;
    int n_variants = 0, same_gpu = 1;
    for (int i = 0; i < n_files; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(files[j].variant, files[i].variant);
        same_gpu = same_gpu && !strcmp(files[i].gpu_name, files[0].gpu_name);
        if (seen || ++n_variants > 3 || used >= sizeof variants) continue;
        used += (size_t)snprintf(variants + used, sizeof variants - used, "%s%s",
                                 n_variants > 1 ? " vs " : "", files[i].variant);
    }
    const char *gpu = !same_gpu ? "different GPUs"
                      : files[0].gpu_name[0] ? files[0].gpu_name : "an unrecorded GPU";
    if (n_files == 1)
        put_quoted_format(out, "%s, %d runs on %s", files[0].variant, files[0].n, gpu);
    else if (n_variants == 1 || n_variants > 3)
        put_quoted_format(out, "%s, %d run files on %s", n_variants == 1 ? variants
                          : "several variants", n_files, gpu);
    else
        put_quoted_format(out, "%s on %s", variants, gpu);
}

// The whole script: a 1x2 multiplot with the legend under both panels.
static void put_script(FILE *out, const char *png_path, const RunFile *files,
                       const double *targets, int n_files) {
    double legend_height = 0.045 * n_files + 0.03;
    fprintf(out, "set terminal pngcairo size 1500,%d noenhanced font 'sans,11'\n",
            560 + 24 * n_files);
    fprintf(out, "set output ");
    put_quoted(out, png_path);
    fprintf(out, "\nset style fill solid 0.55 border\n");
    fprintf(out, "set grid ytics lc rgb '#e0e0e0'\nset border 3\nset tics nomirror\n");
    fprintf(out, "set key at screen 0.05, screen %.3f left top Left reverse samplen 2\n",
            legend_height);
    fprintf(out, "set multiplot layout 1, 2 margins 0.06, 0.98, %.3f, 0.90 spacing 0.07 title ",
            legend_height + 0.09);
    put_title(out, files, n_files);
    fprintf(out, " font ',14'\n");
    put_panel(out, files, targets, n_files, 1);
    put_panel(out, files, targets, n_files, 0);
    fprintf(out, "unset multiplot\n");
}

int plot_run_files(const char *png_path, const RunFile *files, const double *targets,
                   int n_files, char *err, size_t err_size) {
    for (int i = 0; i < n_files; i++) {
        if (files[i].n == 0) {
            snprintf(err, err_size, "%s has no runs to plot (none, or all diverged)", files[i].name);
            return -1;
        }
    }
    // gnuplot ending early must show as its exit status, not kill benchstat with SIGPIPE.
    void (*previous)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *gnuplot = popen("gnuplot", "w");
    if (!gnuplot) {
        signal(SIGPIPE, previous);
        snprintf(err, err_size, "cannot start gnuplot: %s", strerror(errno));
        return -1;
    }
    put_script(gnuplot, png_path, files, targets, n_files);
    int status = pclose(gnuplot);
    signal(SIGPIPE, previous);
    struct stat info;
    if (status != 0 || stat(png_path, &info) != 0 || info.st_size == 0) {
        snprintf(err, err_size, "gnuplot failed (%s %d) to write the plot; its messages are "
                 "above", WIFSIGNALED(status) ? "signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        return -1;
    }
    return 0;
}
