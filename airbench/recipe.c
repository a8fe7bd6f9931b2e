// recipe.c: the variants by name, the recipe's fields at run time (--set, --help, run
// files), and the step schedule shared by the trainer and the reference.
#include "recipe.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 3, 4)))
static void set_error(char *err, size_t err_size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(err, err_size, fmt, args);
    va_end(args);
}

// ---------------------------------------------------------------------------------------
// Variants.

static const Variant VARIANTS[] = {
    {"94", &RECIPE_94, 0.94},
    {"95", &RECIPE_95, 0.95},
    {"96", &RECIPE_96, 0.96},
    {"94-muon", &RECIPE_94_MUON, 0.94},
    {"94-record", &RECIPE_94_RECORD, 0.94},
    {"96-filter", &RECIPE_96_FILTER, 0.96},
};
enum { N_VARIANTS = sizeof VARIANTS / sizeof VARIANTS[0] };

const Variant *recipe_variant(const char *name) {
    if (!strncmp(name, "airbench", 8)) name += 8;
    for (int i = 0; i < N_VARIANTS; i++)
        if (!strcmp(name, VARIANTS[i].name)) return &VARIANTS[i];
    return NULL;
}

const char *recipe_variant_names(void) { return "94, 95, 96, 94-muon, 94-record or 96-filter"; }

// ---------------------------------------------------------------------------------------
// Fields.

#define RECIPE_TABLE_ENTRY(k, field, lo, hi, names, text) \
    {.name = #field, .kind = RECIPE_##k, .offset = offsetof(Recipe, field), .min = lo, .max = hi, \
     .choices = names, .help = text},

const RecipeField RECIPE_FIELD_TABLE[] = {RECIPE_FIELDS(RECIPE_TABLE_ENTRY)};
const int RECIPE_N_FIELDS = sizeof RECIPE_FIELD_TABLE / sizeof RECIPE_FIELD_TABLE[0];

static int *int_at(Recipe *r, const RecipeField *f) { return (int *)((char *)r + f->offset); }
static double *double_at(Recipe *r, const RecipeField *f) { return (double *)((char *)r + f->offset); }
static const int *const_int_at(const Recipe *r, const RecipeField *f) { return (const int *)((const char *)r + f->offset); }
static const double *const_double_at(const Recipe *r, const RecipeField *f) {
    return (const double *)((const char *)r + f->offset);
}

const RecipeField *recipe_field(const char *name) {
    for (int i = 0; i < RECIPE_N_FIELDS; i++)
        if (!strcmp(RECIPE_FIELD_TABLE[i].name, name)) return &RECIPE_FIELD_TABLE[i];
    return NULL;
}

// A whole-text integer in [min, max]; -1 otherwise (out of range or not a number).
static int parse_int(const char *text, double min, double max, int *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (end == text || *end || errno || value < min || value > max) return -1;
    *out = (int)value;
    return 0;
}

static int parse_double(const char *text, double min, double max, double *out) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(value) || value < min || value > max) return -1;
    *out = value;
    return 0;
}

// What a field's values look like, for messages.
static void describe_expected(const RecipeField *f, char *out, size_t out_size) {
    size_t used = 0;
    switch (f->kind) {
    case RECIPE_INT: snprintf(out, out_size, "an integer in %g..%g", f->min, f->max); break;
    case RECIPE_DOUBLE: snprintf(out, out_size, "a number in [%g, %g]", f->min, f->max); break;
    case RECIPE_WIDTHS: snprintf(out, out_size, "three comma-separated integers in %g..%g", f->min, f->max); break;
    case RECIPE_ENUM:
        used = (size_t)snprintf(out, out_size, "one of");
        for (int i = 0; f->choices[i] && used < out_size; i++)
            used += (size_t)snprintf(out + used, out_size - used, " %s", f->choices[i]);
        break;
    }
}

static int parse_widths(const char *text, double min, double max, int widths[3]) {
    char copy[64];
    if (strlen(text) >= sizeof copy) return -1;
    strcpy(copy, text);
    char *rest = copy;
    for (int i = 0; i < 3; i++) {
        char *comma = strchr(rest, ',');
        if ((i < 2) != (comma != NULL)) return -1;
        if (comma) *comma = '\0';
        if (parse_int(rest, min, max, &widths[i])) return -1;
        rest = comma + 1;
    }
    return 0;
}

int recipe_set_field(Recipe *r, const RecipeField *f, const char *text, char *err, size_t err_size) {
    int ok = 0, widths[3];
    switch (f->kind) {
    case RECIPE_INT: ok = parse_int(text, f->min, f->max, int_at(r, f)) == 0; break;
    case RECIPE_DOUBLE: ok = parse_double(text, f->min, f->max, double_at(r, f)) == 0; break;
    case RECIPE_WIDTHS:
        ok = parse_widths(text, f->min, f->max, widths) == 0;
        if (ok) memcpy(int_at(r, f), widths, sizeof widths);
        break;
    case RECIPE_ENUM:
        for (int i = 0; f->choices[i] && !ok; i++)
            if (!strcmp(text, f->choices[i])) *int_at(r, f) = i, ok = 1;
        break;
    }
    if (ok) return 0;
    char expected[160];
    describe_expected(f, expected, sizeof expected);
    set_error(err, err_size, "%s expects %s, not '%s'", f->name, expected, text);
    return -1;
}

int recipe_set(Recipe *r, const char *assignment, char *err, size_t err_size) {
    const char *eq = strchr(assignment, '=');
    char name[64];
    if (!eq || eq == assignment || (size_t)(eq - assignment) >= sizeof name) {
        set_error(err, err_size, "expected NAME=VALUE with NAME a recipe field (see --help), not '%s'", assignment);
        return -1;
    }
    snprintf(name, sizeof name, "%.*s", (int)(eq - assignment), assignment);
    const RecipeField *f = recipe_field(name);
    if (!f) {
        set_error(err, err_size, "'%s' is not a recipe field (--help lists them)", name);
        return -1;
    }
    return recipe_set_field(r, f, eq + 1, err, err_size);
}

// The shortest text that reads back as the same double.
static void format_double(double value, char *out, size_t out_size) {
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, out_size, "%.*g", digits, value);
        if (strtod(out, NULL) == value) return;
    }
}

void recipe_format_field(const Recipe *r, const RecipeField *f, char *out, size_t out_size) {
    const int *ints = const_int_at(r, f);
    switch (f->kind) {
    case RECIPE_INT: snprintf(out, out_size, "%d", ints[0]); break;
    case RECIPE_DOUBLE: format_double(*const_double_at(r, f), out, out_size); break;
    case RECIPE_WIDTHS: snprintf(out, out_size, "%d,%d,%d", ints[0], ints[1], ints[2]); break;
    case RECIPE_ENUM: snprintf(out, out_size, "%s", f->choices[ints[0]]); break;
    }
}

int recipe_fields_equal(const Recipe *a, const Recipe *b, const RecipeField *f) {
    if (f->kind == RECIPE_DOUBLE) return *const_double_at(a, f) == *const_double_at(b, f);
    int count = f->kind == RECIPE_WIDTHS ? 3 : 1;
    return !memcmp(const_int_at(a, f), const_int_at(b, f), count * sizeof(int));
}

void recipe_print_fields(FILE *out, const Recipe *r) {
    for (int i = 0; i < RECIPE_N_FIELDS; i++) {
        const RecipeField *f = &RECIPE_FIELD_TABLE[i];
        char value[64];
        recipe_format_field(r, f, value, sizeof value);
        fprintf(out, "  %-18s %-12s %s\n", f->name, value, f->help);
    }
}

// Data filtering (filter_keep > 0): the kept examples fit the batch and its BN groups;
// the proxy trains by SGD only.
static int validate_filter(const Recipe *r, char *err, size_t err_size) {
    if (!r->filter_keep) return 0;
    if (r->filter_keep > r->batch_size) {
        set_error(err, err_size, "filter_keep %d exceeds batch_size %d", r->filter_keep, r->batch_size);
        return -1;
    }
    if (r->bn_group && r->filter_keep % r->bn_group) {
        set_error(err, err_size, "bn_group %d does not divide the filter_keep %d kept examples into groups",
                  r->bn_group, r->filter_keep);
        return -1;
    }
    if (r->muon) {
        set_error(err, err_size, "data filtering (filter_keep %d) is for the SGD recipes, not Muon (muon 1)",
                  r->filter_keep);
        return -1;
    }
    return 0;
}

int recipe_validate(const Recipe *r, int n_train, char *err, size_t err_size) {
    if (r->batch_size > n_train) {
        set_error(err, err_size, "batch_size %d exceeds the %d training images", r->batch_size, n_train);
        return -1;
    }
    if (recipe_total_steps(r, n_train) < 1) {
        set_error(err, err_size, "%g epochs of %d steps (batch %d, %d images) is not even one training step",
                  r->epochs, recipe_steps_per_epoch(r, n_train), r->batch_size, n_train);
        return -1;
    }
    if (r->translate + r->cutout > 32 || r->translate >= 32) {
        set_error(err, err_size, "translate %d and cutout %d do not fit a 32x32 image", r->translate, r->cutout);
        return -1;
    }
    if (r->bn_group && (r->bn_group > r->batch_size || r->batch_size % r->bn_group)) {
        set_error(err, err_size, "bn_group %d does not divide batch_size %d into groups", r->bn_group,
                  r->batch_size);
        return -1;
    }
    if (r->muon && r->depth == 3) {
        set_error(err, err_size, "the Muon recipe supports depth 2 only");
        return -1;
    }
    return validate_filter(r, err, err_size);
}

// The shorthand flags and the fields they set.
static const struct {
    const char *flag, *field;
} SHORTHANDS[] = {
    {"--widths", "widths"}, {"--depth", "depth"}, {"--epochs", "epochs"}, {"--batch", "batch_size"},
    {"--tta", "tta_level"}, {"--translate-mode", "translate_mode"}, {"--warmup-epochs", "warmup_epochs"},
    {"--lr-scaling", "lr_scaling"}, {"--bn-group", "bn_group"}, {"--bn-wd", "bn_wd"},
};

int recipe_apply_flag(Recipe *r, const char *flag, const char *value, char *err, size_t err_size) {
    char why[512];
    if (!strcmp(flag, "--variant")) return 1;  // applied first, by recipe_variant_from_args
    if (!strcmp(flag, "--set")) {
        if (value && recipe_set(r, value, why, sizeof why) == 0) return 1;
        set_error(err, err_size, "bad value '%s' for --set: %s", value ? value : "(missing)",
                  value ? why : "expected NAME=VALUE");
        return -1;
    }
    for (size_t i = 0; i < sizeof SHORTHANDS / sizeof SHORTHANDS[0]; i++) {
        if (strcmp(flag, SHORTHANDS[i].flag)) continue;
        const RecipeField *f = recipe_field(SHORTHANDS[i].field);
        if (value && recipe_set_field(r, f, value, why, sizeof why) == 0) return 1;
        char expected[160];
        describe_expected(f, expected, sizeof expected);
        set_error(err, err_size, "bad value '%s' for %s: expected %s", value ? value : "(missing)", flag, expected);
        return -1;
    }
    return 0;
}

int recipe_variant_from_args(int argc, char **argv, const Variant **variant, char *err, size_t err_size) {
    *variant = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--variant")) continue;
        const char *name = i + 1 < argc ? argv[i + 1] : "(missing)";
        if (!(*variant = recipe_variant(name))) {
            set_error(err, err_size, "bad value '%s' for --variant: expected %s", name, recipe_variant_names());
            return -1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------------------
// Derived values and the schedule.

int recipe_steps_per_epoch(const Recipe *r, int n_train) { return n_train / r->batch_size; }

int64_t recipe_batch_first(const Recipe *r, int step, int n_train) {
    if (r->batch_mode == BATCH_MODE_CONTINUOUS) return (int64_t)step * r->batch_size;
    int spe = recipe_steps_per_epoch(r, n_train);
    return (int64_t)(step / spe) * n_train + (int64_t)(step % spe) * r->batch_size;
}

int recipe_refuses_fused_bn(const Recipe *r, char *why, size_t why_size) {
    if (recipe_fits_fused_bn(r)) return 0;
    snprintf(why, why_size, "--fused-bn on: for the depth-2 networks with BatchNorm over the whole batch and no "
             "data filtering (airbench94, 94-muon, 94-record); %s as set has depth %d, bn_group %d of a batch of %d, "
             "filter_keep %d", r->name, r->depth, r->bn_group, r->batch_size, r->filter_keep);
    return 1;
}

int recipe_refuses_muon_streams(const Recipe *r, char *why, size_t why_size) {
    if (r->muon) return 0;
    snprintf(why, why_size, "--muon-streams on: for the Muon recipes (94-muon, 94-record); %s has no Muon step",
             r->name);
    return 1;
}

Recipe recipe_proxy(const Recipe *r) {
    Recipe proxy = *r;
    memcpy(proxy.widths, r->proxy_widths, sizeof proxy.widths);
    proxy.depth = r->proxy_depth;
    proxy.lookahead_every = 0;
    proxy.filter_keep = 0;
    if (!r->proxy_whiten_bias) proxy.whiten_bias_epochs = 0;
    return proxy;
}

int recipe_tta_images(const Recipe *r, int n) {
    return r->tta_level > 0 && r->tta_select_frac < 1 ? (int)floor(n * r->tta_select_frac) : n;
}

int recipe_total_steps(const Recipe *r, int n_train) {
    return (int)ceil(recipe_steps_per_epoch(r, n_train) * r->epochs - 1e-9);
}

double recipe_logit_scale(const Recipe *r) { return r->logit_scale > 0 ? r->logit_scale : 1.0 / r->widths[2]; }

double recipe_lr_multiplier(const Recipe *r, int t, int total, int steps_per_epoch) {
    int warmup = r->warmup_epochs >= 0 ? (int)lround(r->warmup_epochs * steps_per_epoch)
                                       : (int)floor(r->warmup_frac * total);
    if (t < warmup) return r->warmup_start + (1.0 - r->warmup_start) * t / warmup;
    if (warmup >= total) return 1.0;
    return 1.0 + (r->lr_end - 1.0) * (double)(t - warmup) / (double)(total - warmup);
}

double recipe_lr_scale(const Recipe *r) {
    double ratio = (double)r->lr_batch / r->batch_size;
    return r->lr_scaling == LR_SCALING_SQRT ? sqrt(ratio) : r->lr_scaling == LR_SCALING_NONE ? ratio : 1.0;
}

void recipe_sgd_groups(const Recipe *r, double s, int whiten_bias_on, GroupStep groups[N_GROUPS]) {
    double lr = recipe_sgd_lr(r), bn_lr = recipe_bn_bias_lr(r), wd = recipe_sgd_wd(r), f = recipe_lr_scale(r);
    groups[GROUP_WHITEN_BIAS] = (GroupStep){lr * f * s, wd / lr, whiten_bias_on};
    groups[GROUP_CONV] = (GroupStep){lr * f * s, wd / lr, 1};
    groups[GROUP_HEAD] = (GroupStep){lr * f * s, wd / lr, 1};
    groups[GROUP_BN_BIAS] = (GroupStep){bn_lr * f * s, r->bn_wd ? wd / bn_lr : 0.0, 1};
}

// The Muon recipe: every lr decays as 1 - t/total, the whitening bias's over its own steps.
static void muon_groups(const Recipe *r, int t, int total, int whiten_bias_steps, GroupStep groups[N_GROUPS]) {
    double decay = 1.0 - (double)t / total, f = recipe_lr_scale(r);
    double c_bias = r->sgd_wd / r->sgd_bias_lr, c_head = r->sgd_wd / r->sgd_head_lr;
    int whiten_bias_on = t < whiten_bias_steps;
    double whiten_bias_lr = whiten_bias_on ? r->sgd_bias_lr * (1.0 - (double)t / whiten_bias_steps) : 0.0;
    groups[GROUP_WHITEN_BIAS] = (GroupStep){whiten_bias_lr * f, c_bias, whiten_bias_on};
    groups[GROUP_CONV] = (GroupStep){r->muon_lr * decay * f, 0.0, 1};
    groups[GROUP_HEAD] = (GroupStep){r->sgd_head_lr * decay * f, c_head, 1};
    groups[GROUP_BN_BIAS] = (GroupStep){r->sgd_bias_lr * decay * f, r->bn_wd ? c_bias : 0.0, 1};
}

// Lookahead after step count n = t + 1: every lookahead_every steps with decay
// base^every * (n / total)^pow, and after the last step with decay 1 (w = ema). When both
// fall on the last step, the first already leaves w = ema, so one update does both.
static double lookahead_decay(const Recipe *r, int t, int total) {
    int n = t + 1;
    if (!r->lookahead_every) return -1.0;
    if (n % r->lookahead_every == 0)
        return pow(r->lookahead_base, r->lookahead_every) * pow((double)n / total, r->lookahead_pow);
    return n == total ? 1.0 : -1.0;
}

// Whether Muon rescales the weights in 1-based step s: the steps s with s - last >= base +
// floor(slope * s / total), where last is the previous such step (0 at first). Replayed
// from s = 1, so the schedule needs no state (at most a few thousand steps).
static int muon_normalizes(const Recipe *r, int s, int total) {
    int last = 0, fires = 0;
    for (int k = 1; k <= s; k++) {
        fires = k - last >= r->muon_norm_base + (int)floor(r->muon_norm_slope * k / total);
        if (fires) last = k;
    }
    return fires;
}

StepPlan recipe_step_plan(const Recipe *r, int t, int total, int steps_per_epoch) {
    StepPlan plan = {.lookahead_decay = lookahead_decay(r, t, total), .muon_decay = 1.0};
    int whiten_bias_steps = (int)ceil(r->whiten_bias_epochs * steps_per_epoch - 1e-9);
    if (r->muon) {
        muon_groups(r, t, total, whiten_bias_steps, plan.group);
        plan.muon_normalize = muon_normalizes(r, t + 1, total);
        plan.muon_decay = 1.0 - plan.group[GROUP_CONV].lr * r->muon_wd;
    } else {
        recipe_sgd_groups(r, recipe_lr_multiplier(r, t, total, steps_per_epoch), t < whiten_bias_steps, plan.group);
    }
    return plan;
}
