// kernel_bench.c: llm.c's kernel loop for airbench.c: each kernel of kernels.h that matters
// for speed, at shapes given by flags, checked against the CPU reference and timed.
//
//   build/kernel_bench                                   every kernel at airbench94's shapes
//   build/kernel_bench --kernel bn_gelu                  the kernels whose name contains bn_gelu
//   build/kernel_bench --kernel 'bn_gelu_forward/*' --group 0 --batch 2048 --reps 200
//   build/kernel_bench --kernel bn_gelu --activation silu    the BN kernels with SiLU
//   build/kernel_bench --list
//
// Flags: --list (the selected kernels); --kernel PATTERN (may repeat: a substring of
// "name/version", or, with a * ? or [, a glob matched against the name or "name/version");
// --batch N (1024);
// --widths A,B,C (64,256,256); --depth D (2; 3: airbench96's nets, for the optimizers);
// --activation gelu|silu (gelu: the activation the bn_gelu kernels apply, and their
// reference's);
// --group G (the layer group 0-2 whose shape the per-layer kernels take; default all
// three; the other kernels have one shape); --reps N (50); --warmup N (5); --cold (evict
// the L2 cache before each timed launch: inputs come from DRAM; default: back-to-back
// launches, inputs hot in the L2 when they fit, as many are in a training step);
// --stats-blocks N (the cap on the blocks of every per-channel reduction, stats_blocks:
// default 256, STATS_DEFAULT_BLOCKS; more blocks put more threads on each SM at the cost of
// more partials to add: which is faster is measured here, e.g. --kernel stats --kernel
// reduce --kernel whiten_bias --kernel maxpool2 at 256 and at 1024);
// --no-check (time only, skip the reference).
//
// Each entry at each shape: one launch on fresh random inputs, checked against the
// reference (the output with the largest error / bound is printed; bound 0 means exact,
// the error then counts mismatches); then warm-up launches and the timed ones, each between
// its own pair of CUDA events, all enqueued behind a spinning kernel so that they run back
// to back; the median and min in microseconds, and the bandwidth of the bytes the kernel
// must move (inputs read once, outputs written once) over the median. The timed launches
// start from the state the check left: kernels that update in place (the optimizers, the
// loss's accumulators) keep updating, which does not change their speed.
//
// Exit status: 0; 1 if a check failed; 2 for a bad flag, a pattern that matches no kernel,
// or no GPU.
//
// Adding a v2 of a kernel, llm.c's way (versions side by side, each checked):
//  1. Write it with the signature of its kernels.h launch function, e.g.
//     launch_bn_gelu_forward_v2 in dev/bn_gelu_v2.cu, extern "C" (kernels/kernel_common.h
//     has the shared device helpers). The Makefile links every dev/*.cu into kernel_bench.
//  2. Declare it below and add its line to KERNELS, after v1's:
//       KERNEL("bn_gelu_forward", "v2", BN_GELU_FORWARD, launch_bn_gelu_forward,
//              launch_bn_gelu_forward_v2),
//     v1's harness builds the inputs, checks against the reference and counts the bytes;
//     the compiler warns if v2's signature differs from v1's.
//  3. build/kernel_bench --kernel bn_gelu_forward/ prints v1 and v2 at each shape together.
//  When v2 is better it replaces v1 in kernels/, and its entry goes.
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_bench.h"
#include "recipe.h"

// bench_spin.cu: keeps the stream busy for `nanoseconds`.
cudaError_t launch_spin(uint64_t nanoseconds, cudaStream_t stream);

// whiten_v2.cu: the filter weights read as 16-byte vectors.
cudaError_t launch_whiten_forward_v2(__half *out, const __half *x, const float *weight, const float *bias, int n,
                                     cudaStream_t stream);
cudaError_t launch_whiten_bias_backward_v2(float *partials, const __half *x, const __half *d_out,
                                           const float *weight, const float *bias, int n, cudaStream_t stream);
// bn_gelu_v2.cu: several rows' loads in flight per thread.
cudaError_t launch_bn_gelu_forward_v2(__half *out, const __half *in, const __half *residual, const float *mean,
                                      const float *rstd, const float *bias, int rows, int c, int activation,
                                      cudaStream_t stream);
cudaError_t launch_bn_gelu_backward_reduce_v2(float *partials, const __half *d_out, const __half *in,
                                              const __half *residual, const float *mean, const float *rstd,
                                              const float *bias, int rows, int c, int activation,
                                              cudaStream_t stream);

// One line of the table: a harness and the launch function it drives.
typedef struct {
    const char *name, *version;
    const Harness *harness;
    KernelFn launch;
} Entry;

// fn must have v1's type (the harness's kernels.h function): the conditional expression
// makes the compiler compare the two, and warn if they differ.
#define KERNEL(name, version, harness, v1, fn) {name, version, &harness, (KernelFn)(1 ? (fn) : (v1))}
#define V1(name, harness, fn) KERNEL(name, "v1", harness, fn, fn)

static const Entry KERNELS[] = {
    V1("train_loader", TRAIN_LOADER, launch_train_loader),
    V1("eval_loader", EVAL_LOADER, launch_eval_loader),
    V1("whiten_forward", WHITEN_FORWARD, launch_whiten_forward),
    KERNEL("whiten_forward", "v2", WHITEN_FORWARD, launch_whiten_forward, launch_whiten_forward_v2),
    V1("whiten_bias_backward", WHITEN_BIAS_BACKWARD, launch_whiten_bias_backward),
    KERNEL("whiten_bias_backward", "v2", WHITEN_BIAS_BACKWARD, launch_whiten_bias_backward,
           launch_whiten_bias_backward_v2),
    V1("maxpool2_stats", MAXPOOL2_STATS, launch_maxpool2_stats),
    V1("channel_stats", CHANNEL_STATS, launch_channel_stats),
    V1("bn_finalize", BN_FINALIZE, launch_bn_finalize),
    V1("bn_gelu_forward", BN_GELU_FORWARD, launch_bn_gelu_forward),
    KERNEL("bn_gelu_forward", "v2", BN_GELU_FORWARD, launch_bn_gelu_forward, launch_bn_gelu_forward_v2),
    V1("bn_gelu_forward_residual", BN_GELU_FORWARD_RESIDUAL, launch_bn_gelu_forward),
    KERNEL("bn_gelu_forward_residual", "v2", BN_GELU_FORWARD_RESIDUAL, launch_bn_gelu_forward,
           launch_bn_gelu_forward_v2),
    V1("bn_gelu_backward_reduce", BN_GELU_BACKWARD_REDUCE, launch_bn_gelu_backward_reduce),
    KERNEL("bn_gelu_backward_reduce", "v2", BN_GELU_BACKWARD_REDUCE, launch_bn_gelu_backward_reduce,
           launch_bn_gelu_backward_reduce_v2),
    V1("bn_gelu_backward_reduce_residual", BN_GELU_BACKWARD_REDUCE_RESIDUAL, launch_bn_gelu_backward_reduce),
    KERNEL("bn_gelu_backward_reduce_residual", "v2", BN_GELU_BACKWARD_REDUCE_RESIDUAL,
           launch_bn_gelu_backward_reduce, launch_bn_gelu_backward_reduce_v2),
    V1("bn_backward_finalize", BN_BACKWARD_FINALIZE, launch_bn_backward_finalize),
    V1("bn_gelu_backward_apply", BN_GELU_BACKWARD_APPLY, launch_bn_gelu_backward_apply),
    V1("bn_gelu_backward_apply_residual", BN_GELU_BACKWARD_APPLY_RESIDUAL, launch_bn_gelu_backward_apply),
    V1("bn_gelu_backward_apply_pool", BN_GELU_BACKWARD_APPLY_POOL, launch_bn_gelu_backward_apply_pool),
    V1("maxpool_global", MAXPOOL_GLOBAL, launch_maxpool_global),
    V1("maxpool_global_backward", MAXPOOL_GLOBAL_BACKWARD, launch_maxpool_global_backward),
    V1("head_forward", HEAD_FORWARD, launch_head_forward),
    V1("head_backward", HEAD_BACKWARD, launch_head_backward),
    V1("loss", LOSS, launch_loss),
    V1("loss_masked", LOSS_MASKED, launch_loss),
    V1("example_losses", EXAMPLE_LOSSES, launch_example_losses),
    V1("select_highest", SELECT_HIGHEST, launch_select_highest),
    V1("sgd_step", SGD_STEP, launch_sgd_step),
    V1("lookahead", LOOKAHEAD, launch_lookahead),
    V1("muon_momentum", MUON_MOMENTUM, launch_muon_momentum),
    V1("sum_squares", SUM_SQUARES, launch_sum_squares),
    V1("sum_squares_bf16", SUM_SQUARES_BF16, launch_sum_squares_bf16),
    V1("scale_by_inverse_norm", SCALE_BY_INVERSE_NORM, launch_scale_by_inverse_norm),
    V1("muon_apply", MUON_APPLY, launch_muon_apply),
};
enum { N_KERNELS = sizeof KERNELS / sizeof KERNELS[0] };

// ---- flags ----------------------------------------------------------------------------------

enum { MAX_PATTERNS = 32, MAX_BATCH = 50000 };  // the train loader draws batches from 50,000 images

typedef struct {
    Shape shape;
    int group;  // -1: all three
    const char *patterns[MAX_PATTERNS];
    int n_patterns;
    int reps, warmup, check, cold, list;
} Options;

static void usage(FILE *f) {
    fprintf(f, "usage: kernel_bench [--list] [--kernel PATTERN]... [--batch N] [--widths A,B,C] [--depth 2|3]\n"
               "                    [--activation gelu|silu] [--group 0|1|2] [--reps N] [--warmup N] [--cold]\n"
               "                    [--stats-blocks N] [--no-check]\n"
               "Checks each kernel of kernels.h against the CPU reference and times it (see dev/kernel_bench.c).\n");
}

// An int in [lo, hi], the whole of s; 0 on success.
static int parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

// "A,B,C": three channel counts, multiples of 8 in [8, 2048] (kernels.h).
static int parse_widths(const char *s, int widths[3]) {
    char copy[64];
    snprintf(copy, sizeof copy, "%s", s);
    char *rest = copy, *item;
    for (int g = 0; g < 3; g++) {
        item = strsep(&rest, ",");
        if (!item || parse_int(item, 8, 2048, &widths[g]) || widths[g] % 8) return -1;
    }
    return rest ? -1 : 0;
}

// "gelu" or "silu" (recipe.h's names of net.h's Activation values); 0 on success.
static int parse_activation(const char *s, Activation *out) {
    for (int a = ACTIVATION_GELU; a <= ACTIVATION_SILU; a++)
        if (!strcmp(s, RECIPE_ACTIVATIONS[a])) {
            *out = (Activation)a;
            return 0;
        }
    return -1;
}

static int bad_value(const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "kernel_bench: %s %s: expected %s\n", flag, value, expected);
    return 2;
}

static const char *const VALUE_FLAGS[] = {"--kernel", "--batch", "--widths", "--depth", "--activation", "--group",
                                          "--reps", "--warmup", "--stats-blocks"};

static int takes_value(const char *flag) {
    for (size_t i = 0; i < sizeof VALUE_FLAGS / sizeof VALUE_FLAGS[0]; i++)
        if (!strcmp(flag, VALUE_FLAGS[i])) return 1;
    return 0;
}

// Applies one of VALUE_FLAGS; 0, or 2 after a message.
static int set_value(Options *o, const char *flag, const char *v) {
    if (!strcmp(flag, "--kernel")) {
        if (o->n_patterns == MAX_PATTERNS) return bad_value(flag, v, "at most 32 patterns");
        o->patterns[o->n_patterns++] = v;
    } else if (!strcmp(flag, "--batch")) {
        if (parse_int(v, 1, MAX_BATCH, &o->shape.batch)) return bad_value(flag, v, "1 to 50000");
    } else if (!strcmp(flag, "--widths")) {
        if (parse_widths(v, o->shape.widths)) return bad_value(flag, v, "A,B,C, multiples of 8 up to 2048");
    } else if (!strcmp(flag, "--depth")) {
        if (parse_int(v, 2, 3, &o->shape.depth)) return bad_value(flag, v, "2 or 3");
    } else if (!strcmp(flag, "--activation")) {
        if (parse_activation(v, &o->shape.activation)) return bad_value(flag, v, "gelu or silu");
    } else if (!strcmp(flag, "--group")) {
        if (parse_int(v, 0, 2, &o->group)) return bad_value(flag, v, "0, 1 or 2");
    } else if (!strcmp(flag, "--reps")) {
        if (parse_int(v, 1, 100000, &o->reps)) return bad_value(flag, v, "1 to 100000");
    } else if (!strcmp(flag, "--stats-blocks")) {
        int cap;
        char expected[32];
        snprintf(expected, sizeof expected, "1 to %d", STATS_MAX_BLOCKS);
        if (parse_int(v, 1, STATS_MAX_BLOCKS, &cap) || set_stats_block_cap(cap)) return bad_value(flag, v, expected);
    } else if (parse_int(v, 0, 100000, &o->warmup)) {  // --warmup
        return bad_value(flag, v, "0 to 100000");
    }
    return 0;
}

// Fills o from the command line; 0, or 2 after a message.
static int parse_options(int argc, char **argv, Options *o) {
    *o = (Options){.shape = {1024, {64, 256, 256}, 2, ACTIVATION_GELU}, .group = -1, .reps = 50, .warmup = 5,
                   .check = 1};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--list")) {
            o->list = 1;
        } else if (!strcmp(flag, "--cold")) {
            o->cold = 1;
        } else if (!strcmp(flag, "--no-check")) {
            o->check = 0;
        } else if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!takes_value(flag)) {
            fprintf(stderr, "kernel_bench: unknown flag %s\n", flag);
            usage(stderr);
            return 2;
        } else if (i + 1 == argc) {
            fprintf(stderr, "kernel_bench: %s needs a value\n", flag);
            return 2;
        } else if (set_value(o, flag, argv[++i])) {
            return 2;
        }
    }
    return 0;
}

// No patterns; or one is a substring of "name/version"; or one with a glob character
// matches the name or "name/version".
static int selected(const Options *o, const Entry *e) {
    char full[96];
    snprintf(full, sizeof full, "%s/%s", e->name, e->version);
    for (int i = 0; i < o->n_patterns; i++) {
        const char *p = o->patterns[i];
        if (strpbrk(p, "*?[") ? !fnmatch(p, e->name, 0) || !fnmatch(p, full, 0) : strstr(full, p) != NULL) return 1;
    }
    return o->n_patterns == 0;
}

static int n_selected(const Options *o) {
    int n = 0;
    for (int k = 0; k < N_KERNELS; k++) n += selected(o, &KERNELS[k]);
    return n;
}

static void list_kernels(const Options *o) {
    for (int k = 0; k < N_KERNELS; k++)
        if (selected(o, &KERNELS[k]))
            printf("%-32s %s%s\n", KERNELS[k].name, KERNELS[k].version,
                   KERNELS[k].harness->per_group ? "  (per layer group)" : "");
}

// ---- timing ---------------------------------------------------------------------------------

// What timing needs for the whole run (this file's tracked allocations; the harnesses
// release theirs after each case).
typedef struct {
    cudaStream_t stream;
    cudaEvent_t *events;  // a start and a stop per timed launch
    float *ms;            // the timed launches' milliseconds
    void *flush_d;        // --cold: written before each timed launch
    size_t flush_bytes;
} Timer;

static Timer make_timer(const Options *o) {
    Timer t = {0};
    CUDA_CHECK(cudaStreamCreate(&t.stream));
    t.events = host_buffer(2 * (size_t)o->reps * sizeof(cudaEvent_t));
    t.ms = HOST_FLOATS(o->reps);
    for (int i = 0; i < 2 * o->reps; i++) CUDA_CHECK(cudaEventCreate(&t.events[i]));
    if (o->cold) {
        int device, l2_bytes;
        CUDA_CHECK(cudaGetDevice(&device));
        CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
        t.flush_bytes = 2 * (size_t)l2_bytes;
        t.flush_d = dev_alloc(t.flush_bytes);
    }
    return t;
}

static void free_timer(const Options *o, Timer *t) {
    for (int i = 0; i < 2 * o->reps; i++) CUDA_CHECK(cudaEventDestroy(t->events[i]));
    CUDA_CHECK(cudaStreamDestroy(t->stream));
    free_all();
}

static int compare_floats(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Median and min of the timed launches, in microseconds.
typedef struct {
    double median_us, min_us;
} Timing;

// A host enqueues a launch with its two events in a few microseconds: the spin covers that
// for every launch (and the L2 flush with --cold).
static const uint64_t SPIN_NS_PER_LAUNCH = 50000;

static Timing time_launches(const Entry *e, const Case *c, const Options *o, const Timer *t) {
    CUDA_CHECK(launch_spin(SPIN_NS_PER_LAUNCH * (uint64_t)(o->warmup + o->reps), t->stream));
    for (int i = 0; i < o->warmup; i++) CUDA_CHECK(e->harness->run(c, e->launch, t->stream));
    for (int i = 0; i < o->reps; i++) {
        if (o->cold) CUDA_CHECK(cudaMemsetAsync(t->flush_d, i & 0xff, t->flush_bytes, t->stream));
        CUDA_CHECK(cudaEventRecord(t->events[2 * i], t->stream));
        CUDA_CHECK(e->harness->run(c, e->launch, t->stream));
        CUDA_CHECK(cudaEventRecord(t->events[2 * i + 1], t->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    float *ms = t->ms;
    for (int i = 0; i < o->reps; i++) CUDA_CHECK(cudaEventElapsedTime(&ms[i], t->events[2 * i], t->events[2 * i + 1]));
    qsort(ms, o->reps, sizeof(float), compare_floats);
    double median = o->reps % 2 ? ms[o->reps / 2] : 0.5 * (ms[o->reps / 2 - 1] + ms[o->reps / 2]);
    return (Timing){1e3 * median, 1e3 * ms[0]};
}

// ---- one entry at one shape -----------------------------------------------------------------

static void print_header(const Options *o) {
    const Shape *s = &o->shape;
    printf("batch %d, widths %d,%d,%d, depth %d, %s; median and min of %d launches after %d warm-up, inputs %s\n",
           s->batch, s->widths[0], s->widths[1], s->widths[2], s->depth, RECIPE_ACTIVATIONS[s->activation], o->reps,
           o->warmup,
           o->cold ? "evicted from the L2" : "hot in the L2 when they fit");
    printf("%-32s %-3s %-28s %9s %9s %7s  %s\n", "kernel", "ver", "shape", "median us", "min us", "GB/s",
           "worst error (bound, output)");
}

// Checks (unless --no-check) and times entry e at layer group `group`, prints its line;
// returns 1 if the check failed.
static int bench(const Entry *e, int group, const Options *o, const Timer *t) {
    Case c = {0};
    Check check = {0};
    e->harness->prepare(&c, &o->shape, group);
    if (o->check) {
        CUDA_CHECK(e->harness->run(&c, e->launch, t->stream));
        CUDA_CHECK(cudaStreamSynchronize(t->stream));
        e->harness->check(&c, &check);
    }
    Timing time = time_launches(e, &c, o, t);
    char gbs[16] = "-", verdict[96] = "not checked";
    if (c.bytes > 0) snprintf(gbs, sizeof gbs, "%.0f", c.bytes / (time.median_us * 1e-6) / 1e9);
    if (o->check)
        snprintf(verdict, sizeof verdict, "%.1e (%.0e, %s) %s", check.error, check.bound, check.what,
                 check.failed ? "FAIL" : "PASS");
    printf("%-32s %-3s %-28s %9.1f %9.1f %7s  %s\n", e->name, e->version, c.shape, time.median_us, time.min_us, gbs,
           verdict);
    fflush(stdout);
    e->harness->release();
    return check.failed;
}

// Whether KERNELS[k] is the first entry with its name (its versions run together).
static int first_of_name(int k) {
    for (int j = 0; j < k; j++)
        if (!strcmp(KERNELS[j].name, KERNELS[k].name)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    Options o;
    if (parse_options(argc, argv, &o)) return 2;
    if (!n_selected(&o)) {
        fprintf(stderr, "kernel_bench: no kernel matches; --list shows them all\n");
        return 2;
    }
    if (o.list) {
        list_kernels(&o);
        return 0;
    }
    if (find_gpu("kernel_bench")) return 2;
    Timer t = make_timer(&o);
    print_header(&o);
    int failed = 0;
    // Name by name in table order; per layer group; the name's selected versions together.
    for (int k = 0; k < N_KERNELS; k++) {
        if (!first_of_name(k)) continue;
        int per_group = KERNELS[k].harness->per_group;
        int first_group = per_group && o.group > 0 ? o.group : 0;
        int last_group = per_group ? (o.group < 0 ? 2 : o.group) : 0;
        for (int g = first_group; g <= last_group; g++)
            for (int v = k; v < N_KERNELS; v++)
                if (!strcmp(KERNELS[v].name, KERNELS[k].name) && selected(&o, &KERNELS[v]))
                    failed |= bench(&KERNELS[v], g, &o, &t);
    }
    free_timer(&o, &t);
    return failed ? 1 : 0;
}
