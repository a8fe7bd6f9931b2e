// test_reference.c: the CPU reference (airbench/reference.c, reference_layers.c) against
// PyTorch fixtures (tests/fixtures/*.bin, made by dev/make_fixtures.py in float64 from
// float32 inputs): two training steps, lookahead and TTA of tiny depth-2 and depth-3
// networks (depth 2 also with SiLU in the ConvGroups); one Muon step and Newton-Schulz; the
// whitening filters; the augmented training batches, without and with brightness and
// contrast jitter; BatchNorm over groups; the selective TTA; data filtering's proxy step and
// main step. Each tensor is compared by relative error ||got - want|| / ||want||; each group
// prints its worst tensor (all tensors with ABFX_VERBOSE=1).
//
// The finite-difference checks of every layer and of the whole network are in
// test_reference_fd.c. Fixtures are read from $FIXTURE_DIR, default tests/fixtures (run from
// the repository root).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "reference.h"
#include "test.h"
#include "test_helpers.h"

// Tolerances (relative errors unless said otherwise).
#define TOL_FORWARD 1e-4     // logits, TTA logits, running stats (fp32 vs float64)
#define TOL_GRAD 1e-4        // gradients, momentum buffers
#define TOL_LOSS 1e-5        // the summed loss (a double in the reference)
#define TOL_STATE 1e-5       // parameters after an update or lookahead, compared directly
#define TOL_DELTA 2e-3       // the update itself (after - before): fp32 parameters round it
#define TOL_NS 1e-4          // Newton-Schulz in fp32
#define TOL_WHITEN 1e-5      // whitening filters, per filter up to its sign
#define TOL_AUGMENT 1e-6     // augmented pixels, absolute (the same float ops: expect 0)

static int verbose;
static char fixture_dir[512] = "tests/fixtures";

// ---------------------------------------------------------------------------------------
// helpers

// A group of comparisons that prints one line: its worst relative error and where.
typedef struct {
    char what[128];
    double tol, worst;
    char worst_name[96];
    int n;
} Group;

static void group_start(Group *g, const char *what, double tol) {
    snprintf(g->what, sizeof g->what, "%s", what);
    g->tol = tol;
    g->worst = 0.0;
    g->worst_name[0] = '\0';
    g->n = 0;
}

static void group_compare(Group *g, const char *name, const float *got, const float *want, size_t n) {
    double e = rel_error(got, want, n);
    g->n++;
    if (!(e <= g->worst) || g->n == 1) {
        g->worst = e;
        snprintf(g->worst_name, sizeof g->worst_name, "%s", name);
    }
    if (verbose) printf("    %-28s %-36s rel err %.2e\n", g->what, name, e);
    CHECK(e <= g->tol, "%s %s: relative error %.3e > %.1e", g->what, name, e, g->tol);
}

static void group_end(const Group *g) {
    printf("  %-34s %3d tensors, worst rel err %.2e (%s), tol %.0e\n", g->what, g->n, g->worst,
           g->worst_name, g->tol);
}

// Deterministic test randoms from rng.h: uniform in [-bound, bound).
static uint32_t rand_counter;
static float frand(float bound) { return rng_uniform_pm(rng_u32(20240601, 99, 0, rand_counter++), bound); }
static void fill_random(float *x, size_t n, float bound) {
    for (size_t i = 0; i < n; i++) x[i] = frand(bound);
}

// The fixture name of tensor id ("whiten_w", "conv.1.0", "head", "bn.2.1").
static void tensor_name(const NetLayout *l, int id, char *buf, size_t size) {
    const TensorInfo *t = &l->tensors[id];
    switch (t->kind) {
    case TENSOR_WHITEN_W: snprintf(buf, size, "whiten_w"); break;
    case TENSOR_WHITEN_B: snprintf(buf, size, "whiten_b"); break;
    case TENSOR_CONV: snprintf(buf, size, "conv.%d.%d", t->group, t->conv); break;
    case TENSOR_HEAD: snprintf(buf, size, "head"); break;
    case TENSOR_BN_BIAS: snprintf(buf, size, "bn.%d.%d", t->group, t->conv); break;
    }
}

static int load_fixture(Fixture *f, const char *file) {
    char path[1024], err[1024];
    snprintf(path, sizeof path, "%s/%s", fixture_dir, file);
    int status = fixture_load(f, path, err, sizeof err);
    CHECK(status == 0, "%s", err);
    return status;
}

// Copies fixture tensors "<prefix><name>" into the flat buffer base (params, grads or
// momentum), for every tensor (skip_whiten_w: all but the whitening weight). Returns the
// number missing.
static int load_tensors(const Fixture *f, const RefNet *net, float *base, const char *prefix, int skip_whiten_w) {
    int missing = 0;
    for (int id = skip_whiten_w ? 1 : 0; id < net->layout.n_tensors; id++) {
        char name[64], key[128];
        tensor_name(&net->layout, id, name, sizeof name);
        snprintf(key, sizeof key, "%s%s", prefix, name);
        const float *v = fixture_get(f, key, net->layout.tensors[id].size);
        if (v) memcpy(ref_tensor(net, base, id), v, net->layout.tensors[id].size * sizeof(float));
        else missing++;
    }
    CHECK(missing == 0, "%s: %d tensors \"%s*\" missing", f->path, missing, prefix);
    return missing;
}

// Running stats "<prefix>running_mean.g.j" / "..._var.g.j" into running.
static int load_running(const Fixture *f, const RefNet *net, float *running, const char *prefix) {
    int missing = 0;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < net->layout.depth; j++) {
            char key[128];
            size_t c = (size_t)net->layout.widths[g];
            snprintf(key, sizeof key, "%srunning_mean.%d.%d", prefix, g, j);
            const float *m = fixture_get(f, key, c);
            snprintf(key, sizeof key, "%srunning_var.%d.%d", prefix, g, j);
            const float *v = fixture_get(f, key, c);
            if (m) memcpy(ref_running_mean(net, running, g, j), m, c * sizeof(float));
            if (v) memcpy(ref_running_var(net, running, g, j), v, c * sizeof(float));
            missing += !m + !v;
        }
    CHECK(missing == 0, "%s: %d running stats \"%s*\" missing", f->path, missing, prefix);
    return missing;
}

// Compares tensors of base with fixture "<prefix><name>". Tensors absent from the fixture
// are skipped when optional (e.g. frozen ones), reported otherwise.
static void compare_tensors(Group *g, const Fixture *f, const RefNet *net, const float *base,
                            const char *prefix, int skip_whiten_w, int skip_whiten_b) {
    for (int id = 0; id < net->layout.n_tensors; id++) {
        TensorKind kind = net->layout.tensors[id].kind;
        if ((kind == TENSOR_WHITEN_W && skip_whiten_w) || (kind == TENSOR_WHITEN_B && skip_whiten_b)) continue;
        char name[64], key[128];
        tensor_name(&net->layout, id, name, sizeof name);
        snprintf(key, sizeof key, "%s%s", prefix, name);
        const float *want = fixture_get(f, key, net->layout.tensors[id].size);
        CHECK(want != NULL, "%s: missing %s", f->path, key);
        if (want) group_compare(g, name, ref_tensor(net, (float *)base, id), want, net->layout.tensors[id].size);
    }
}

// The update (after - before) of every tensor against the fixture's (after - before).
static void compare_deltas(Group *g, const Fixture *f, const RefNet *net, const float *before_c,
                           const char *before_prefix, const char *after_prefix) {
    for (int id = 1; id < net->layout.n_tensors; id++) {
        char name[64], key_b[128], key_a[128];
        size_t size = net->layout.tensors[id].size;
        tensor_name(&net->layout, id, name, sizeof name);
        snprintf(key_b, sizeof key_b, "%s%s", before_prefix, name);
        snprintf(key_a, sizeof key_a, "%s%s", after_prefix, name);
        const float *before = fixture_get(f, key_b, size), *after = fixture_get(f, key_a, size);
        if (!before || !after) {
            CHECK(0, "%s: missing %s or %s", f->path, key_b, key_a);
            continue;
        }
        float *want = calloc_floats(size), *got = calloc_floats(size);
        const float *now = ref_tensor(net, net->params, id);
        const float *was = before_c + net->layout.tensors[id].offset;
        double norm = 0.0;
        for (size_t i = 0; i < size; i++) {
            want[i] = (float)((double)after[i] - before[i]);
            got[i] = (float)((double)now[i] - was[i]);
            norm += (double)want[i] * want[i];
        }
        if (norm > 0.0) group_compare(g, name, got, want, size);
        else {  // a frozen tensor: the reference must leave it exactly alone
            int same = memcmp(now, was, size * sizeof(float)) == 0;
            CHECK(same, "%s %s: frozen tensor changed", g->what, name);
        }
        free(want);
        free(got);
    }
}

static void compare_running(Group *g, const Fixture *f, const RefNet *net, const char *prefix) {
    for (int gg = 0; gg < 3; gg++)
        for (int j = 0; j < net->layout.depth; j++) {
            char key[128];
            size_t c = (size_t)net->layout.widths[gg];
            for (int which = 0; which < 2; which++) {
                snprintf(key, sizeof key, "%srunning_%s.%d.%d", prefix, which ? "var" : "mean", gg, j);
                const float *want = fixture_get(f, key, c);
                const float *got = which ? ref_running_var(net, net->running, gg, j)
                                         : ref_running_mean(net, net->running, gg, j);
                CHECK(want != NULL, "%s: missing %s", f->path, key);
                if (want) group_compare(g, key + strlen(prefix), got, want, c);
            }
        }
}

static void compare_one(const char *what, const float *got, const float *want, size_t n, double tol) {
    Group g;
    group_start(&g, what, tol);
    group_compare(&g, what, got, want, n);
    group_end(&g);
}

static uint8_t *labels_from(const float *v, int n) {
    uint8_t *labels = malloc(n ? n : 1);
    if (!labels) abort();
    for (int i = 0; i < n; i++) labels[i] = (uint8_t)v[i];
    return labels;
}

// ---------------------------------------------------------------------------------------
// 1. the training steps, lookahead and TTA of a tiny network (net_d2.bin, net_d3.bin,
// silu_d2.bin)

static int check_config(const Fixture *f, const char *name, double want, double rel_tol) {
    double got = fixture_scalar(f, name, NAN);
    int ok = fabs(got - want) <= rel_tol * fabs(want);
    CHECK(ok, "%s: %s = %.9g, recipe.h says %.9g", f->path, name, got, want);
    return ok;
}

static void test_net_fixture(const char *file) {
    Fixture f;
    if (load_fixture(&f, file)) return;
    printf("%s\n", f.path);
    const float *widths_f = fixture_get(&f, "config.widths", 3);
    if (!widths_f) {
        fixture_free(&f);
        return;
    }
    int widths[3] = {(int)widths_f[0], (int)widths_f[1], (int)widths_f[2]};
    int depth = (int)fixture_scalar(&f, "config.depth", 2), batch = (int)fixture_scalar(&f, "config.batch", 0);
    Recipe recipe = depth == 3 ? RECIPE_96 : RECIPE_94;
    CHECK((int)fixture_scalar(&f, "config.recipe96", -1) == (depth == 3), "%s: recipe choice", f.path);
    memcpy(recipe.widths, widths, sizeof widths);
    recipe.batch_size = batch;
    const FixtureTensor *activation = fixture_find(&f, "config.activation");  // absent: gelu
    recipe.activation = activation ? (int)activation->data[0] : ACTIVATION_GELU;
    char tag[16];  // the output lines' prefix: "d2", "d2 silu"
    snprintf(tag, sizeof tag, "d%d%s", depth, recipe.activation == ACTIVATION_SILU ? " silu" : "");
    // the fixture's numbers are recipe.h's formulas at this batch size
    check_config(&f, "config.lr", recipe_sgd_lr(&recipe), 1e-6);
    check_config(&f, "config.wd", recipe_sgd_wd(&recipe), 1e-6);
    check_config(&f, "config.lr_bn", recipe_bn_bias_lr(&recipe), 1e-6);
    check_config(&f, "config.keep", recipe.bn_keep, 1e-7);
    check_config(&f, "config.scale", recipe_logit_scale(&recipe), 1e-7);
    check_config(&f, "config.smoothing", recipe.label_smoothing, 1e-7);
    check_config(&f, "config.bn_eps", recipe.bn_eps, 1e-6);
    check_config(&f, "config.momentum", recipe.momentum, 1e-7);

    RefNet *net = ref_net_create(&recipe);
    const NetLayout *l = &net->layout;
    size_t n_params = l->n_params, n_out = (size_t)batch * NET_CLASSES;
    CHECK(fabsf(net->bn_keep - (float)recipe.bn_keep) == 0 && net->bn_eps == (float)recipe.bn_eps,
          "ref_net_create: BN keep %g eps %g", net->bn_keep, net->bn_eps);
    CHECK((int)net->activation == recipe.activation, "ref_net_create: activation %d", (int)net->activation);
    load_tensors(&f, net, net->params, "param.", 0);
    load_running(&f, net, net->running, "");
    memset(net->momentum, 0, n_params * sizeof(float));
    memcpy(net->ema_params, net->params, n_params * sizeof(float));
    memcpy(net->ema_running, net->running, net->n_running * sizeof(float));
    float *logits = calloc_floats(n_out), *before = calloc_floats(n_params);
    char label[96], prefix[32], prefix2[96];
    Group g;

    for (int step = 1; step <= 2; step++) {
        snprintf(prefix, sizeof prefix, "step%d.", step);
        char key[160];
        snprintf(key, sizeof key, "%sx", prefix);
        const float *x = fixture_get(&f, key, (size_t)batch * 3 * 32 * 32);
        snprintf(key, sizeof key, "%slabels", prefix);
        const float *labels_f = fixture_get(&f, key, batch);
        if (!x || !labels_f) break;
        uint8_t *labels = labels_from(labels_f, batch);
        snprintf(key, sizeof key, "%smultiplier", prefix);
        double multiplier = fixture_scalar(&f, key, 1.0);
        snprintf(key, sizeof key, "%swhiten_bias_trainable", prefix);
        int whiten_bias = (int)fixture_scalar(&f, key, 1);

        int n_correct = -1;
        double loss = ref_forward_backward(net, x, labels, batch, (float)recipe.label_smoothing, whiten_bias,
                                           logits, &n_correct);
        snprintf(label, sizeof label, "%s step%d logits", tag, step);
        snprintf(key, sizeof key, "%slogits", prefix);
        const float *want_logits = fixture_get(&f, key, n_out);
        if (want_logits) compare_one(label, logits, want_logits, n_out, TOL_FORWARD);
        snprintf(key, sizeof key, "%sloss", prefix);
        double want_loss = fixture_scalar(&f, key, NAN);
        snprintf(label, sizeof label, "%s step%d loss", tag, step);
        printf("  %-34s%.7f vs %.7f, rel err %.2e, tol %.0e\n", label, loss, want_loss,
               fabs(loss - want_loss) / fabs(want_loss), TOL_LOSS);
        CHECK(fabs(loss - want_loss) <= TOL_LOSS * fabs(want_loss), "%s step%d loss %.9g, want %.9g", tag, step,
              loss, want_loss);
        snprintf(key, sizeof key, "%sn_correct", prefix);
        CHECK(n_correct == (int)fixture_scalar(&f, key, -1), "%s step%d n_correct %d", tag, step, n_correct);

        snprintf(label, sizeof label, "%s step%d grads", tag, step);
        snprintf(prefix2, sizeof prefix2, "%sgrad.", prefix);
        group_start(&g, label, TOL_GRAD);
        compare_tensors(&g, &f, net, net->grads, prefix2, 1, !whiten_bias);
        group_end(&g);

        snprintf(label, sizeof label, "%s step%d running stats", tag, step);
        group_start(&g, label, TOL_FORWARD);
        compare_running(&g, &f, net, prefix);
        group_end(&g);

        memcpy(before, net->params, n_params * sizeof(float));
        GroupStep groups[N_GROUPS];
        recipe_sgd_groups(&recipe, multiplier, whiten_bias, groups);
        ref_sgd_step(net, groups, recipe.momentum, 0);
        snprintf(label, sizeof label, "%s step%d params after", tag, step);
        snprintf(prefix2, sizeof prefix2, "%safter.param.", prefix);
        group_start(&g, label, TOL_STATE);
        compare_tensors(&g, &f, net, net->params, prefix2, 0, 0);
        group_end(&g);

        snprintf(label, sizeof label, "%s step%d update (after-before)", tag, step);
        group_start(&g, label, TOL_DELTA);
        compare_deltas(&g, &f, net, before, step == 1 ? "param." : "step1.after.param.", prefix2);
        group_end(&g);

        snprintf(label, sizeof label, "%s step%d momentum after", tag, step);
        snprintf(prefix2, sizeof prefix2, "%safter.momentum.", prefix);
        group_start(&g, label, TOL_GRAD);
        compare_tensors(&g, &f, net, net->momentum, prefix2, 1, 0);
        group_end(&g);
        free(labels);
    }

    double decay = fixture_scalar(&f, "config.lookahead_decay", 0.3);
    ref_lookahead_update(net, decay);
    snprintf(label, sizeof label, "%s lookahead params", tag);
    group_start(&g, label, TOL_STATE);
    compare_tensors(&g, &f, net, net->params, "lookahead.param.", 0, 0);
    group_end(&g);
    snprintf(label, sizeof label, "%s lookahead running stats", tag);
    group_start(&g, label, TOL_STATE);
    compare_running(&g, &f, net, "lookahead.");
    group_end(&g);

    const FixtureTensor *tx = fixture_find(&f, "tta.x");
    CHECK(tx != NULL, "%s: no tta.x", f.path);
    if (tx) {
        int n = tx->dims[0];
        float *tta = calloc_floats((size_t)n * NET_CLASSES);
        for (int level = 0; level <= 2; level++) {
            char key[64];
            snprintf(key, sizeof key, "tta.logits.%d", level);
            const float *want = fixture_get(&f, key, (size_t)n * NET_CLASSES);
            ref_tta_logits(net, tx->data, n, level, TTA_WEIGHTS_AIRBENCH, tta);
            snprintf(label, sizeof label, "%s TTA level %d logits", tag, level);
            if (want) compare_one(label, tta, want, (size_t)n * NET_CLASSES, TOL_FORWARD);
        }
        free(tta);
    }
    free(logits);
    free(before);
    ref_net_free(net);
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------
// 2. Muon (muon_d2.bin)

static void test_muon_fixture(void) {
    Fixture f;
    if (load_fixture(&f, "muon_d2.bin")) return;
    printf("%s\n", f.path);
    Recipe recipe = RECIPE_94_MUON;
    const float *widths_f = fixture_get(&f, "config.widths", 3);
    if (!widths_f) {
        fixture_free(&f);
        return;
    }
    int widths[3] = {(int)widths_f[0], (int)widths_f[1], (int)widths_f[2]};
    memcpy(recipe.widths, widths, sizeof widths);
    check_config(&f, "config.muon_lr", recipe.muon_lr, 1e-7);
    check_config(&f, "config.muon_momentum", recipe.muon_momentum, 1e-7);
    check_config(&f, "config.sgd_momentum", recipe.momentum, 1e-7);
    check_config(&f, "config.bias_lr", recipe.sgd_bias_lr, 1e-7);
    check_config(&f, "config.head_lr", recipe.sgd_head_lr, 1e-7);
    check_config(&f, "config.wd", recipe.sgd_wd, 1e-7);
    int total = (int)fixture_scalar(&f, "config.total_steps", 200);
    int bias_steps = (int)fixture_scalar(&f, "config.whiten_bias_steps", 75);

    // Newton-Schulz alone, in fp32 (and the bf16 fixture, meant for the GPU, is sane)
    const char *cases[2] = {"a", "b"};
    for (int c = 0; c < 2; c++) {
        char key[64], label[96];
        snprintf(key, sizeof key, "ns.%s.input", cases[c]);
        const FixtureTensor *in = fixture_find(&f, key);
        CHECK(in != NULL && in->ndim == 2, "%s: no 2-d %s", f.path, key);
        if (!in || in->ndim != 2) continue;
        int rows = in->dims[0], cols = in->dims[1];
        float *out = calloc_floats(in->count);
        ref_newton_schulz(out, in->data, rows, cols, &recipe, 0);
        snprintf(key, sizeof key, "ns.%s.fp32", cases[c]);
        const float *want = fixture_get(&f, key, in->count);
        snprintf(label, sizeof label, "NS fp32 %dx%d", rows, cols);
        if (want) compare_one(label, out, want, in->count, TOL_NS);
        snprintf(key, sizeof key, "ns.%s.bf16", cases[c]);
        const float *bf16 = fixture_get(&f, key, in->count);
        snprintf(label, sizeof label, "NS bf16 fixture vs fp32 %dx%d", rows, cols);
        if (bf16) compare_one(label, bf16, out, in->count, 0.1);
        // the reference's emulation of the GPU's bf16 rounding points
        float *out16 = calloc_floats(in->count);
        ref_newton_schulz(out16, in->data, rows, cols, &recipe, 1);
        printf("  NS bf16 emulation %dx%d: vs fp32 %.2e, vs PyTorch bf16 %.2e\n", rows, cols,
               rel_error(out16, out, in->count), bf16 ? rel_error(out16, bf16, in->count) : NAN);
        free(out16);
        free(out);
    }

    const int steps[2] = {0, 30};
    for (int s = 0; s < 2; s++) {
        RefNet *net = ref_net_create(&recipe);
        load_tensors(&f, net, net->params, "param.", 0);
        load_tensors(&f, net, net->momentum, "momentum.", 0);
        load_tensors(&f, net, net->grads, "grad.", 0);
        float *before = calloc_floats(net->layout.n_params);
        memcpy(before, net->params, net->layout.n_params * sizeof(float));
        // the fixture's step through the schedule: 75 whitening-bias steps = 3 epochs of 25
        StepPlan plan = recipe_step_plan(&recipe, steps[s], total, (int)(bias_steps / recipe.whiten_bias_epochs));
        ref_muon_step(net, &recipe, &plan);
        char label[96], prefix[64];
        Group g;
        snprintf(prefix, sizeof prefix, "step%d.param.", steps[s]);
        snprintf(label, sizeof label, "Muon step %d params after", steps[s]);
        group_start(&g, label, TOL_STATE);
        compare_tensors(&g, &f, net, net->params, prefix, 0, 0);
        group_end(&g);
        snprintf(label, sizeof label, "Muon step %d update", steps[s]);
        group_start(&g, label, TOL_DELTA);
        compare_deltas(&g, &f, net, before, "param.", prefix);
        group_end(&g);
        snprintf(prefix, sizeof prefix, "step%d.momentum.", steps[s]);
        snprintf(label, sizeof label, "Muon step %d momentum", steps[s]);
        group_start(&g, label, TOL_GRAD);
        compare_tensors(&g, &f, net, net->momentum, prefix, 1, 0);
        group_end(&g);
        free(before);
        ref_net_free(net);
    }
    fixture_free(&f);
}

// Newton-Schulz with the GPU's bf16 rounding points, but every product accumulated in
// double: it differs from ref_newton_schulz(.., bf16 = 1) only through the fp32
// accumulation order and precision, as cuBLAS's does. Wide matrices only (rows <= cols).
static void newton_schulz_bf16_double(float *x, const float *g, int rows, int cols, const Recipe *r) {
    size_t size = (size_t)rows * cols;
    double norm = 0.0;
    for (size_t i = 0; i < size; i++) norm += (double)g[i] * g[i];
    float inv = (float)(1.0 / (sqrt(norm) + r->ns_eps));
    for (size_t i = 0; i < size; i++) x[i] = ref_round_bf16(g[i] * inv);
    float *A = calloc_floats((size_t)rows * rows), *B = calloc_floats((size_t)rows * rows), *next = calloc_floats(size);
    for (int step = 0; step < r->muon_ns_steps; step++) {
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < rows; j++) {
                double acc = 0.0;
                for (int k = 0; k < cols; k++) acc += (double)x[(size_t)i * cols + k] * x[(size_t)j * cols + k];
                A[i * rows + j] = ref_round_bf16((float)acc);
            }
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < rows; j++) {
                double acc = 0.0;
                for (int k = 0; k < rows; k++) acc += (double)A[i * rows + k] * A[k * rows + j];
                B[i * rows + j] = ref_round_bf16((float)(r->ns_b * A[i * rows + j] + r->ns_c * acc));
            }
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                double acc = 0.0;
                for (int k = 0; k < rows; k++) acc += (double)B[i * rows + k] * x[(size_t)k * cols + j];
                next[(size_t)i * cols + j] = ref_round_bf16((float)(r->ns_a * x[(size_t)i * cols + j] + acc));
            }
        memcpy(x, next, size * sizeof(float));
    }
    free(A);
    free(B);
    free(next);
}

// How far two correct bf16 Newton-Schulz computations drift apart through accumulation
// order alone, on the conv shapes of gpu_test_trainer (widths 16,32,32) and some of
// airbench94's: the evidence behind gpu_test_trainer's bound for the GPU's Muon update
// against the reference's bf16 emulation. Measured (x86-64, gcc 12): 0 up to 32x144,
// 5.1e-5 at 32x288, 7.2e-5 at 64x216, 3.9e-5 at 64x576, 4.8e-4 at 256x576 (7.7e-4 at
// airbench94's largest, 256x2304, left out here for time).
static void test_ns_bf16_order_noise(void) {
    Recipe recipe = RECIPE_94_MUON;
    const int shapes[][2] = {{16, 216}, {16, 144}, {32, 144}, {32, 288}, {64, 216}, {64, 576}, {256, 576}};
    double worst = 0.0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int rows = shapes[k][0], cols = shapes[k][1];
        size_t size = (size_t)rows * cols;
        float *g = calloc_floats(size), *fast = calloc_floats(size), *slow = calloc_floats(size);
        fill_random(g, size, 1.0f);
        ref_newton_schulz(fast, g, rows, cols, &recipe, 1);
        newton_schulz_bf16_double(slow, g, rows, cols, &recipe);
        double err = rel_error(fast, slow, size);
        printf("  NS bf16 accumulation-order spread %4dx%-5d rel err %.2e\n", rows, cols, err);
        worst = err > worst ? err : worst;
        free(g);
        free(fast);
        free(slow);
    }
    CHECK(worst > 0 && worst < 1e-2, "bf16 Newton-Schulz order spread %.3e: the emulation lost its rounding, or "
          "rounds far more than bf16 should", worst);
}

// ---------------------------------------------------------------------------------------
// 3. BatchNorm per group of images (bn_group_d2.bin): the grouped forward, backward and
// SGD step equal PyTorch's separate workers with a summed loss.

static void test_bn_group_fixture(void) {
    Fixture f;
    if (load_fixture(&f, "bn_group_d2.bin")) return;
    printf("%s\n", f.path);
    const float *widths_f = fixture_get(&f, "config.widths", 3);
    const float *x = fixture_get(&f, "x", 8 * 3 * 32 * 32), *labels_f = fixture_get(&f, "labels", 8);
    if (!widths_f || !x || !labels_f) {
        fixture_free(&f);
        return;
    }
    Recipe recipe = RECIPE_94;
    int batch = (int)fixture_scalar(&f, "config.batch", 8);
    for (int i = 0; i < 3; i++) recipe.widths[i] = (int)widths_f[i];
    recipe.batch_size = batch;
    recipe.bn_group = (int)fixture_scalar(&f, "config.bn_group", 4);
    check_config(&f, "config.lr", recipe_sgd_lr(&recipe), 1e-6);
    check_config(&f, "config.wd", recipe_sgd_wd(&recipe), 1e-6);
    RefNet *net = ref_net_create(&recipe);
    load_tensors(&f, net, net->params, "param.", 0);
    for (int gg = 0; gg < 3; gg++)  // the fixture's running stats start at mean 0, variance 1
        for (int j = 0; j < 2; j++)
            for (int c = 0; c < recipe.widths[gg]; c++) ref_running_var(net, net->running, gg, j)[c] = 1.0f;
    uint8_t *labels = labels_from(labels_f, batch);
    float *logits = calloc_floats((size_t)batch * NET_CLASSES);
    double loss = ref_forward_backward(net, x, labels, batch, (float)recipe.label_smoothing, 1, logits, NULL);
    const float *want_logits = fixture_get(&f, "logits", (size_t)batch * NET_CLASSES);
    if (want_logits) compare_one("bn_group logits", logits, want_logits, (size_t)batch * NET_CLASSES, TOL_FORWARD);
    double want_loss = fixture_scalar(&f, "loss", NAN);
    CHECK(fabs(loss - want_loss) <= TOL_LOSS * fabs(want_loss), "bn_group loss %.9g, want %.9g", loss, want_loss);
    Group g;
    group_start(&g, "bn_group grads", TOL_GRAD);
    compare_tensors(&g, &f, net, net->grads, "grad.", 1, 0);
    group_end(&g);
    group_start(&g, "bn_group running stats (first group)", TOL_FORWARD);
    compare_running(&g, &f, net, "");
    group_end(&g);
    GroupStep groups[N_GROUPS];
    recipe_sgd_groups(&recipe, 1.0, 1, groups);
    ref_sgd_step(net, groups, recipe.momentum, 0);
    group_start(&g, "bn_group params after a step", TOL_STATE);
    compare_tensors(&g, &f, net, net->params, "after.param.", 0, 0);
    group_end(&g);

    // the same batch normalized as one group gives other logits: the grouping is real
    recipe.bn_group = 0;
    RefNet *whole = ref_net_create(&recipe);
    load_tensors(&f, whole, whole->params, "param.", 0);
    float *whole_logits = calloc_floats((size_t)batch * NET_CLASSES);
    ref_forward(whole, x, batch, 1, whole_logits);
    if (want_logits)
        CHECK(rel_error(whole_logits, want_logits, (size_t)batch * NET_CLASSES) > 1e-2,
              "whole-batch BN matches the grouped fixture: the fixture does not test grouping");
    free(whole_logits);
    ref_net_free(whole);
    free(logits);
    free(labels);
    ref_net_free(net);
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------
// 4. selective test-time augmentation (selective_tta.bin): the plain view's least sure
// images chosen as PyTorch's topk chooses them, and their logits replaced by the TTA
// views' (uniform and airbench weights).

static void test_selective_tta_fixture(void) {
    Fixture f;
    if (load_fixture(&f, "selective_tta.bin")) return;
    printf("%s\n", f.path);
    const FixtureTensor *x = fixture_find(&f, "x");
    const float *widths_f = fixture_get(&f, "config.widths", 3);
    if (!x || !widths_f) {
        fixture_free(&f);
        return;
    }
    int n = x->dims[0];
    Recipe recipe = RECIPE_94;
    for (int i = 0; i < 3; i++) recipe.widths[i] = (int)widths_f[i];
    RefNet *net = ref_net_create(&recipe);
    load_tensors(&f, net, net->params, "param.", 0);
    load_running(&f, net, net->running, "");
    const char *names[2] = {"uniform", "airbench"};
    for (int c = 0; c < 2; c++) {
        char key[64], label[96];
        snprintf(key, sizeof key, "%s.frac", names[c]);
        recipe.tta_select_frac = fixture_scalar(&f, key, NAN);
        recipe.tta_weights = c == 0 ? TTA_WEIGHTS_UNIFORM : TTA_WEIGHTS_AIRBENCH;
        int k = recipe_tta_images(&recipe, n);
        snprintf(key, sizeof key, "%s.chosen", names[c]);
        const float *want_chosen = fixture_get(&f, key, k);
        float *plain = calloc_floats((size_t)n * NET_CLASSES), *sure = calloc_floats(n), *logits = calloc_floats((size_t)n * NET_CLASSES);
        int *chosen = malloc((size_t)(k ? k : 1) * sizeof(int));
        ref_forward(net, x->data, n, 0, plain);
        ref_top_probabilities(sure, plain, n);
        ref_select_lowest(chosen, sure, n, k);
        int same = want_chosen != NULL;
        for (int i = 0; same && i < k; i++) same &= chosen[i] == (int)want_chosen[i];
        CHECK(same, "%s: the %d images chosen for TTA differ from PyTorch's topk", names[c], k);
        ref_evaluate_logits(net, x->data, n, &recipe, logits);
        snprintf(key, sizeof key, "%s.logits", names[c]);
        const float *want = fixture_get(&f, key, (size_t)n * NET_CLASSES);
        snprintf(label, sizeof label, "selective TTA logits (%s, frac %g)", names[c], recipe.tta_select_frac);
        if (want) compare_one(label, logits, want, (size_t)n * NET_CLASSES, TOL_FORWARD);
        free(chosen);
        free(plain);
        free(sure);
        free(logits);
    }
    ref_net_free(net);
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------
// 5. data filtering (filter.bin): the proxy's per-example losses, the examples it keeps
// and its step on their summed loss (through BN statistics over the whole batch), the main
// network's step on the kept examples alone, and the loader's stream of epochs.

// The 96-filter recipe at the fixture's sizes, with its batch from the fixture.
static Recipe filter_recipe(const Fixture *f) {
    Recipe recipe = RECIPE_96_FILTER;
    const float *proxy_widths = fixture_get(f, "config.proxy_widths", 3), *widths = fixture_get(f, "config.main_widths", 3);
    for (int i = 0; i < 3 && proxy_widths && widths; i++) {
        recipe.proxy_widths[i] = (int)proxy_widths[i];
        recipe.widths[i] = (int)widths[i];
    }
    recipe.batch_size = (int)fixture_scalar(f, "config.batch", 0);
    recipe.filter_keep = (int)fixture_scalar(f, "config.keep", 0);
    return recipe;
}

// The step plan at the fixture's step of its schedule, whose multiplier the fixture holds.
static StepPlan filter_plan(const Fixture *f, const Recipe *recipe, const char *step_key, const char *mult_key) {
    int total = (int)fixture_scalar(f, "config.total", 2160), step = (int)fixture_scalar(f, step_key, 0);
    int spe = total / 45;  // 45 epochs of 48 steps, as in the 96-filter recipe
    StepPlan plan = recipe_step_plan(recipe, step, total, spe);
    double lr = recipe_sgd_lr(recipe) * fixture_scalar(f, mult_key, NAN);
    CHECK(fabs(plan.group[GROUP_CONV].lr - lr) <= 1e-7 * lr, "%s: the schedule's lr at step %d (the multiplier "
          "is stored as a float)", f->path, step);
    return plan;
}

// The proxy scores the batch, keeps its highest losses and steps; returns the kept indices.
static int *check_filter_proxy(const Fixture *f, const Recipe *recipe, const float *x, const uint8_t *labels) {
    Recipe proxy_recipe = recipe_proxy(recipe);
    int n = recipe->batch_size, keep = recipe->filter_keep;
    CHECK(proxy_recipe.depth == 2 && proxy_recipe.lookahead_every == 0 && proxy_recipe.filter_keep == 0 &&
              proxy_recipe.bn_keep == recipe->bn_keep, "recipe_proxy: depth %d, lookahead %d", proxy_recipe.depth,
          proxy_recipe.lookahead_every);
    RefNet *proxy = ref_net_create(&proxy_recipe);
    load_tensors(f, proxy, proxy->params, "proxy.param.", 0);
    load_running(f, proxy, proxy->running, "proxy.");
    float *losses = calloc_floats(n);
    ref_proxy_score(proxy, x, labels, n, (float)recipe->label_smoothing, losses);
    const float *want_losses = fixture_get(f, "proxy.losses", n), *want_kept = fixture_get(f, "proxy.kept", keep);
    if (want_losses) compare_one("filter proxy per-example losses", losses, want_losses, n, TOL_FORWARD);
    int *kept = malloc((size_t)keep * sizeof(int));
    if (!kept) abort();
    ref_select_highest(kept, losses, n, keep);
    int same = want_kept != NULL;
    for (int i = 0; same && i < keep; i++) same &= kept[i] == (int)want_kept[i];
    CHECK(same, "filter: the %d kept examples differ from PyTorch's argsort", keep);
    Group g;
    group_start(&g, "filter proxy running stats", TOL_FORWARD);
    compare_running(&g, f, proxy, "proxy.forward.");
    group_end(&g);

    StepPlan plan = filter_plan(f, &proxy_recipe, "config.proxy_step", "proxy.multiplier");
    CHECK(!plan.group[GROUP_WHITEN_BIAS].enabled && plan.lookahead_decay < 0, "the proxy's whitening bias is frozen");
    double loss = ref_proxy_step(proxy, &proxy_recipe, &plan, x, labels, n, kept, keep);
    double want_loss = fixture_scalar(f, "proxy.masked_loss", NAN);
    printf("  %-34s%.7f vs %.7f, rel err %.2e, tol %.0e\n", "filter proxy masked loss", loss, want_loss,
           fabs(loss - want_loss) / fabs(want_loss), TOL_LOSS);
    CHECK(fabs(loss - want_loss) <= TOL_LOSS * fabs(want_loss), "filter proxy masked loss %.9g, want %.9g", loss,
          want_loss);
    group_start(&g, "filter proxy grads (masked)", TOL_GRAD);
    compare_tensors(&g, f, proxy, proxy->grads, "proxy.grad.", 1, 1);
    group_end(&g);
    group_start(&g, "filter proxy params after", TOL_STATE);
    compare_tensors(&g, f, proxy, proxy->params, "proxy.after.param.", 0, 1);
    group_end(&g);
    group_start(&g, "filter proxy momentum after", TOL_GRAD);
    compare_tensors(&g, f, proxy, proxy->momentum, "proxy.after.momentum.", 1, 1);
    group_end(&g);
    const float *whiten_bias = ref_tensor(proxy, proxy->params, 1);
    int zero = 1;
    for (int i = 0; i < WHITEN_WIDTH; i++) zero &= whiten_bias[i] == 0.0f;
    CHECK(zero, "the proxy's whitening bias left 0");
    free(losses);
    ref_net_free(proxy);
    return kept;
}

// The main network's step on the kept examples alone.
static void check_filter_main(const Fixture *f, const Recipe *recipe, const float *x, const uint8_t *labels,
                              const int *kept) {
    int keep = recipe->filter_keep;
    RefNet *net = ref_net_create(recipe);
    load_tensors(f, net, net->params, "main.param.", 0);
    load_running(f, net, net->running, "main.");
    float *images = calloc_floats((size_t)keep * CIFAR10_IMAGE_BYTES), *logits = calloc_floats((size_t)keep * NET_CLASSES);
    uint8_t kept_labels[keep];
    for (int i = 0; i < keep; i++) {
        memcpy(images + (size_t)i * CIFAR10_IMAGE_BYTES, x + (size_t)kept[i] * CIFAR10_IMAGE_BYTES,
               CIFAR10_IMAGE_BYTES * sizeof(float));
        kept_labels[i] = labels[kept[i]];
    }
    StepPlan plan = filter_plan(f, recipe, "config.main_step", "main.multiplier");
    CHECK(plan.group[GROUP_WHITEN_BIAS].enabled, "the main whitening bias trains at step 1000 of 2160");
    double loss = ref_forward_backward(net, images, kept_labels, keep, (float)recipe->label_smoothing, 1, logits, NULL);
    const float *want_logits = fixture_get(f, "main.logits", (size_t)keep * NET_CLASSES);
    if (want_logits) compare_one("filter main logits", logits, want_logits, (size_t)keep * NET_CLASSES, TOL_FORWARD);
    double want_loss = fixture_scalar(f, "main.loss", NAN);
    CHECK(fabs(loss - want_loss) <= TOL_LOSS * fabs(want_loss), "filter main loss %.9g, want %.9g", loss, want_loss);
    Group g;
    group_start(&g, "filter main grads (kept examples)", TOL_GRAD);
    compare_tensors(&g, f, net, net->grads, "main.grad.", 1, 0);
    group_end(&g);
    group_start(&g, "filter main running stats", TOL_FORWARD);
    compare_running(&g, f, net, "main.forward.");
    group_end(&g);
    ref_optimizer_step(net, recipe, &plan);
    group_start(&g, "filter main params after", TOL_STATE);
    compare_tensors(&g, f, net, net->params, "main.after.param.", 0, 0);
    group_end(&g);
    free(images);
    free(logits);
    ref_net_free(net);
}

// Continuous batches: step 2 of batches of 8 from 20 images runs from the end of data epoch
// 0 into epoch 1; some of its rows, loaded as data filtering loads its kept examples.
static void check_filter_stream(const Fixture *f) {
    const FixtureTensor *images_f = fixture_find(f, "stream.images"), *rows_f = fixture_find(f, "stream.rows");
    const float *labels_f = images_f ? fixture_get(f, "stream.labels", images_f->dims[0]) : NULL;
    CHECK(images_f && rows_f && labels_f, "%s: no stream images, labels or rows", f->path);
    if (!images_f || !rows_f || !labels_f) return;
    int n_images = images_f->dims[0], n_rows = (int)rows_f->count;
    Cifar10Split split = {.n = n_images, .images = malloc(images_f->count), .labels = labels_from(labels_f, n_images)};
    if (!split.images) abort();
    for (size_t i = 0; i < images_f->count; i++) split.images[i] = (uint8_t)images_f->data[i];
    Recipe recipe = RECIPE_96_FILTER;
    recipe.batch_size = (int)fixture_scalar(f, "stream.batch_size", 8);
    int step = (int)fixture_scalar(f, "stream.step", 2), rows[n_rows];
    for (int i = 0; i < n_rows; i++) rows[i] = (int)rows_f->data[i];
    int64_t first = recipe_batch_first(&recipe, step, n_images);
    CHECK(first == (int64_t)step * recipe.batch_size, "continuous batches start at step * batch");
    float *out = calloc_floats((size_t)n_rows * CIFAR10_IMAGE_BYTES);
    uint8_t out_labels[n_rows];
    ref_train_batch(out, out_labels, &split, n_images, &recipe, (uint64_t)fixture_scalar(f, "stream.seed", 0), first,
                    rows, n_rows);
    const float *want = fixture_get(f, "stream.batch", (size_t)n_rows * CIFAR10_IMAGE_BYTES);
    const float *want_labels = fixture_get(f, "stream.batch_labels", n_rows);
    if (want && want_labels) {
        double worst = 0;
        int same_labels = 1;
        for (size_t i = 0; i < (size_t)n_rows * CIFAR10_IMAGE_BYTES; i++) worst = fmax(worst, fabs(out[i] - want[i]));
        for (int i = 0; i < n_rows; i++) same_labels &= out_labels[i] == (uint8_t)want_labels[i];
        printf("  ref_train_batch %-21s max abs err %.2e, tol %.0e\n", "stream rows", worst, TOL_AUGMENT);
        CHECK(worst <= TOL_AUGMENT && same_labels, "ref_train_batch across epochs: max abs error %.3e, labels %s",
              worst, same_labels ? "equal" : "differ");
    }
    recipe.batch_mode = BATCH_MODE_EPOCH;  // 2 batches per epoch of 20: step 2 starts epoch 1
    CHECK(recipe_batch_first(&recipe, step, n_images) == n_images, "epoch-mode batches start at epoch * n + b * B");
    free(out);
    free(split.images);
    free(split.labels);
}

// The selections' ties go to the lower index, for the highest as for the lowest values.
static void test_selection_ties(void) {
    const float values[7] = {1, 3, 3, 2, 3, 0, 2};
    int got[4];
    ref_select_highest(got, values, 7, 2);
    CHECK(got[0] == 1 && got[1] == 2, "the 2 highest of three tied: %d %d", got[0], got[1]);
    ref_select_highest(got, values, 7, 4);
    CHECK(got[0] == 1 && got[1] == 2 && got[2] == 3 && got[3] == 4, "the 4 highest: %d %d %d %d", got[0], got[1],
          got[2], got[3]);
    ref_select_lowest(got, values, 7, 3);
    CHECK(got[0] == 0 && got[1] == 3 && got[2] == 5, "the 3 lowest: %d %d %d", got[0], got[1], got[2]);
}

static void test_filter_fixture(void) {
    Fixture f;
    if (load_fixture(&f, "filter.bin")) return;
    printf("%s\n", f.path);
    Recipe recipe = filter_recipe(&f);
    int n = recipe.batch_size;
    const float *x = fixture_get(&f, "x", (size_t)n * CIFAR10_IMAGE_BYTES), *labels_f = fixture_get(&f, "labels", n);
    if (!x || !labels_f || !n || !recipe.filter_keep) {
        CHECK(0, "%s: incomplete", f.path);
        fixture_free(&f);
        return;
    }
    // lr and wd as recipe.h computes them, wd from the loader's batch (not the kept examples)
    check_config(&f, "config.lr", recipe_sgd_lr(&recipe), 1e-6);
    check_config(&f, "config.wd", recipe_sgd_wd(&recipe), 1e-6);
    check_config(&f, "config.lr_bn", recipe_bn_bias_lr(&recipe), 1e-6);
    check_config(&f, "config.keep_bn", recipe.bn_keep, 1e-7);
    check_config(&f, "config.smoothing", recipe.label_smoothing, 1e-7);
    uint8_t *labels = labels_from(labels_f, n);
    int *kept = check_filter_proxy(&f, &recipe, x, labels);
    check_filter_main(&f, &recipe, x, labels, kept);
    check_filter_stream(&f);
    free(kept);
    free(labels);
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------
// 6. whitening (whiten.bin), through ref_whitening_weights and ref_net_init

// Worst relative error of the 24 filters, each up to its sign; also that the last 12 are
// exactly the negations of the first 12.
static void compare_whitening(const char *what, const float *got, const float *want) {
    enum { FILTER = 12 };
    double worst = 0.0;
    int worst_k = 0, negated = 1;
    for (int k = 0; k < WHITEN_WIDTH; k++) {
        double plus = 0.0, minus = 0.0, norm = 0.0;
        for (int i = 0; i < FILTER; i++) {
            double a = got[k * FILTER + i], b = want[k * FILTER + i];
            plus += (a - b) * (a - b);
            minus += (a + b) * (a + b);
            norm += b * b;
        }
        double e = sqrt((plus < minus ? plus : minus) / norm);
        if (e > worst) worst = e, worst_k = k;
        if (k < FILTER)
            for (int i = 0; i < FILTER; i++) negated &= got[(k + FILTER) * FILTER + i] == -got[k * FILTER + i];
    }
    printf("  %-34s  24 filters, worst rel err %.2e (filter %d, up to sign), tol %.0e\n", what, worst, worst_k,
           TOL_WHITEN);
    CHECK(worst <= TOL_WHITEN, "%s: filter %d relative error %.3e", what, worst_k, worst);
    CHECK(negated, "%s: filters 12..23 are not the negations of 0..11", what);
}

static void test_whiten_fixture(void) {
    Fixture f;
    if (load_fixture(&f, "whiten.bin")) return;
    printf("%s\n", f.path);
    const FixtureTensor *images = fixture_find(&f, "images");
    const float *want = fixture_get(&f, "whiten_w", WHITEN_WIDTH * 12);
    CHECK(images != NULL && want != NULL, "%s: no images or whiten_w", f.path);
    if (!images || !want) {
        fixture_free(&f);
        return;
    }
    int n = images->dims[0];
    double eps = fixture_scalar(&f, "eps", 5e-4);
    float got[WHITEN_WIDTH * 12];
    ref_whitening_weights(got, images->data, n, eps);
    compare_whitening("ref_whitening_weights", got, want);

    // ref_net_init: the same whitening filters in tensor 0, net.h's init elsewhere
    const Recipe *recipes[2] = {&RECIPE_94, &RECIPE_94_MUON};
    for (int r = 0; r < 2; r++) {
        Recipe recipe = *recipes[r];
        int widths[3] = {8, 16, 16};
        memcpy(recipe.widths, widths, sizeof widths);
        RefNet *net = ref_net_create(&recipe);
        const NetLayout *l = &net->layout;
        memset(net->momentum, 0xff, l->n_params * sizeof(float));  // must be cleared
        ref_net_init(net, &recipe, 77, images->data, n);
        char what[64];
        snprintf(what, sizeof what, "ref_net_init whitening (%s)", recipe.name);
        compare_whitening(what, ref_tensor(net, net->params, 0), want);
        int conv_ok = 1, head_ok = 1, bias_ok = 1, zero_ok = 1, state_ok = 1;
        for (int id = 1; id < l->n_tensors; id++) {
            const TensorInfo *t = &l->tensors[id];
            const float *p = ref_tensor(net, net->params, id);
            for (size_t i = 0; i < t->size; i++) {
                if (t->kind == TENSOR_CONV) conv_ok &= p[i] == net_init_conv(77, id, t->c_out, t->c_in, i);
                else if (t->kind == TENSOR_HEAD && !recipe.muon) head_ok &= p[i] == net_init_uniform(77, id, t->c_in, i);
                else if (t->kind == TENSOR_WHITEN_B && recipe.muon)
                    bias_ok &= p[i] == net_init_uniform(77, id, 12, i);
                else if (t->kind == TENSOR_BN_BIAS || t->kind == TENSOR_WHITEN_B) zero_ok &= p[i] == 0.0f;
            }
        }
        if (recipe.muon) {  // head rescaled to unit (unbiased) standard deviation
            const TensorInfo *t = &l->tensors[l->head];
            const float *p = ref_tensor(net, net->params, l->head);
            double sum = 0, sum_sq = 0, mean;
            for (size_t i = 0; i < t->size; i++) sum += p[i];
            mean = sum / t->size;
            for (size_t i = 0; i < t->size; i++) sum_sq += (p[i] - mean) * (p[i] - mean);
            double sd = sqrt(sum_sq / (t->size - 1));
            CHECK(fabs(sd - 1.0) < 1e-5, "ref_net_init (muon): head std %.9g, want 1", sd);
            double ratio = p[0] / net_init_uniform(77, l->head, t->c_in, 0);
            for (size_t i = 0; i < t->size; i++)
                head_ok &= fabs(p[i] - ratio * net_init_uniform(77, l->head, t->c_in, i)) <= 1e-6 * fabs(ratio);
        }
        for (size_t i = 0; i < l->n_params; i++) state_ok &= net->momentum[i] == 0.0f && net->ema_params[i] == net->params[i];
        for (int g = 0; g < 3; g++)
            for (int c = 0; c < widths[g]; c++)
                state_ok &= ref_running_mean(net, net->running, g, 0)[c] == 0.0f &&
                            ref_running_var(net, net->running, g, 0)[c] == 1.0f;
        for (size_t i = 0; i < net->n_running; i++) state_ok &= net->ema_running[i] == net->running[i];
        CHECK(conv_ok, "ref_net_init (%s): conv weights differ from net_init_conv", recipe.name);
        CHECK(head_ok, "ref_net_init (%s): head differs from net_init_uniform", recipe.name);
        CHECK(bias_ok, "ref_net_init (%s): whitening bias differs from net_init_uniform", recipe.name);
        CHECK(zero_ok, "ref_net_init (%s): BN biases / whitening bias not zero", recipe.name);
        CHECK(state_ok, "ref_net_init (%s): momentum, running stats or lookahead state", recipe.name);
        ref_net_free(net);
    }
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------
// 7. the augmented training batches (augment.bin, augment_jitter.bin)

// The uint8 images and labels of an augmentation fixture; n = 0 if they are missing.
static Cifar10Split fixture_split(const Fixture *f) {
    const FixtureTensor *images_f = fixture_find(f, "images");
    const FixtureTensor *labels_f = fixture_find(f, "labels");
    CHECK(images_f && labels_f, "%s: no images or labels", f->path);
    if (!images_f || !labels_f) return (Cifar10Split){0};
    int n = images_f->dims[0];
    Cifar10Split split = {.n = n, .images = malloc(images_f->count), .labels = labels_from(labels_f->data, n)};
    if (!split.images) abort();
    for (size_t i = 0; i < images_f->count; i++) split.images[i] = (uint8_t)images_f->data[i];
    return split;
}

// Case `key` of an augmentation fixture (with_jitter: it has jitter amplitudes, and its
// decisions add b and c): the Python port's decisions (image, flip, dy, dx, cutout y0, x0
// [, b, c]) equal augment.h's, and ref_train_batch gives the batch and labels.
static void check_augment_case(const Fixture *f, const Cifar10Split *split, const char *key, int with_jitter) {
    uint64_t seed = (uint64_t)fixture_scalar(f, "config.seed", 7);
    int epoch = (int)fixture_scalar(f, "config.epoch", 3);
    int batch_size = (int)fixture_scalar(f, "config.batch_size", 8);
    int batch_index = (int)fixture_scalar(f, "config.batch_index", 1);
    char name[96];
    snprintf(name, sizeof name, "%s.translate", key);
    int translate = (int)fixture_scalar(f, name, 0);
    snprintf(name, sizeof name, "%s.cutout", key);
    int cutout = (int)fixture_scalar(f, name, 0);
    snprintf(name, sizeof name, "%s.derandomized", key);
    TranslateMode mode = fixture_scalar(f, name, 0) != 0 ? TRANSLATE_DERANDOMIZED : TRANSLATE_RANDOM;
    Recipe recipe = translate == 4 ? RECIPE_96 : RECIPE_94;
    CHECK(recipe.translate == translate && recipe.cutout == cutout, "%s: recipe T %d cutout %d", key, translate, cutout);
    recipe.batch_size = batch_size;
    recipe.translate_mode = mode;
    if (with_jitter) {
        snprintf(name, sizeof name, "%s.jitter_brightness", key);
        recipe.jitter_brightness = fixture_scalar(f, name, 0);
        snprintf(name, sizeof name, "%s.jitter_contrast", key);
        recipe.jitter_contrast = fixture_scalar(f, name, 0);
    }

    // the Python port of rng.h / augment.h agrees with the headers
    int n_decisions = with_jitter ? 8 : 6;
    snprintf(name, sizeof name, "%s.decisions", key);
    const float *dec = fixture_get(f, name, (size_t)batch_size * n_decisions);
    int port_ok = dec != NULL;
    for (int i = 0; dec && i < batch_size; i++) {
        const float *d = dec + n_decisions * i;
        uint32_t slot = (uint32_t)(batch_index * batch_size + i);
        uint32_t image = aug_shuffle(seed, epoch, slot, split->n);
        int dy, dx, y0 = -1, x0 = -1;
        aug_translate(seed, mode, translate, epoch, image, &dy, &dx);
        if (cutout) aug_cutout(seed, cutout, epoch, image, &y0, &x0);
        port_ok &= d[0] == image && d[1] == aug_flip(seed, epoch, image) && d[2] == dy && d[3] == dx &&
                   d[4] == y0 && d[5] == x0;
        if (with_jitter) {
            float b, c;
            aug_jitter(seed, (float)recipe.jitter_brightness, (float)recipe.jitter_contrast, epoch, image, &b, &c);
            port_ok &= d[6] == b && d[7] == c;
        }
    }
    CHECK(port_ok, "%s: the Python port's decisions differ from augment.h", key);

    float *out = calloc_floats((size_t)batch_size * CIFAR10_IMAGE_BYTES);
    uint8_t *labels = malloc(batch_size);
    if (!labels) abort();
    memset(labels, 0xff, batch_size);
    int64_t first = (int64_t)epoch * split->n + (int64_t)batch_index * batch_size;  // recipe_batch_first's epoch mode
    ref_train_batch(out, labels, split, split->n, &recipe, seed, first, NULL, batch_size);
    snprintf(name, sizeof name, "%s.batch", key);
    const float *want = fixture_get(f, name, (size_t)batch_size * CIFAR10_IMAGE_BYTES);
    snprintf(name, sizeof name, "%s.labels", key);
    const float *want_labels = fixture_get(f, name, batch_size);
    if (want) {
        double worst = 0;
        for (size_t i = 0; i < (size_t)batch_size * CIFAR10_IMAGE_BYTES; i++) worst = fmax(worst, fabs(out[i] - want[i]));
        printf("  ref_train_batch %-21s max abs err %.2e, tol %.0e\n", key, worst, TOL_AUGMENT);
        CHECK(worst <= TOL_AUGMENT, "ref_train_batch %s: max abs error %.3e", key, worst);
    }
    if (want_labels) {
        int same = 1;
        for (int i = 0; i < batch_size; i++) same &= labels[i] == (uint8_t)want_labels[i];
        CHECK(same, "ref_train_batch %s: labels differ", key);
    }
    free(out);
    free(labels);
}

// An augmentation fixture file: its first two images normalized, and its cases.
static void test_augment_fixture(const char *file, const char *const *cases, int n_cases, int with_jitter) {
    Fixture f;
    if (load_fixture(&f, file)) return;
    printf("%s\n", f.path);
    Cifar10Split split = fixture_split(&f);
    if (split.n) {
        float *normalized = calloc_floats(2 * CIFAR10_IMAGE_BYTES);
        ref_normalize_images(normalized, split.images, 2);
        const float *want_norm = fixture_get(&f, "normalized.0_1", 2 * CIFAR10_IMAGE_BYTES);
        if (want_norm) {
            double worst = 0;
            for (int i = 0; i < 2 * CIFAR10_IMAGE_BYTES; i++) worst = fmax(worst, fabs(normalized[i] - want_norm[i]));
            printf("  %-37s max abs err %.2e, tol %.0e\n", "ref_normalize_images", worst, TOL_AUGMENT);
            CHECK(worst <= TOL_AUGMENT, "ref_normalize_images: max abs error %.3e", worst);
        }
        free(normalized);
    }
    for (int c = 0; split.n && c < n_cases; c++) check_augment_case(&f, &split, cases[c], with_jitter);
    free(split.images);
    free(split.labels);
    fixture_free(&f);
}

int main(void) {
    const char *dir = getenv("FIXTURE_DIR");
    if (dir && *dir) snprintf(fixture_dir, sizeof fixture_dir, "%s", dir);
    const char *v = getenv("ABFX_VERBOSE");
    verbose = v && *v ? atoi(v) : 0;

    printf("PyTorch fixtures:\n");
    test_net_fixture("net_d2.bin");
    test_net_fixture("net_d3.bin");
    test_net_fixture("silu_d2.bin");
    test_muon_fixture();
    test_ns_bf16_order_noise();
    test_whiten_fixture();
    static const char *const augment_cases[] = {"aug96.random", "aug96.derandomized", "aug94.random"};
    test_augment_fixture("augment.bin", augment_cases, 3, 0);
    static const char *const jitter_cases[] = {"jitter94.random", "jitter96.derandomized", "jitter96.wide"};
    test_augment_fixture("augment_jitter.bin", jitter_cases, 3, 1);
    test_bn_group_fixture();
    test_selective_tta_fixture();
    test_filter_fixture();
    test_selection_ties();
    return test_finish("test_reference");
}
