// recipe.h: the airbench hyperparameters, one block per variant (../shared/spec/recipe.md).
//
// Shared by the CPU reference (which picks a recipe at run time) and the GPU trainer (which
// picks one at compile time with -DAIRBENCH_VARIANT=94|95|96|940 for 94-muon). A variant is
// a block of numbers here, never a copied file.
#pragma once
#include <math.h>

typedef struct {
    const char *name;          // "airbench94", ...
    int widths[3];             // output channels of the three ConvGroups
    int depth;                 // convs per group: 2, or 3 with the residual (96)
    double epochs;             // may be fractional: total steps = ceil(steps/epoch * epochs)
    int batch_size;
    double lr;                 // per 1024 examples (decoupled, see recipe_lr)
    double weight_decay;       // per 1024 examples
    double momentum;           // Nesterov
    double bias_scaler;        // BN biases train at bias_scaler * lr, same decay
    double label_smoothing;
    double warmup_frac;        // schedule: 0.2 -> 1 over this fraction of steps...
    double lr_end;             // ...then linearly to this multiplier at the last step
    int translate;             // max shift T in pixels
    int cutout;                // square size, 0 = none
    double bn_keep;            // running = bn_keep * running + (1 - bn_keep) * batch
    double bn_eps;
    int whiten_bias_epochs;    // whitening bias trains this many epochs, then freezes
    int lookahead_every;       // 0 = no lookahead
    double lookahead_base;     // decay = base^every * (step / total)^pow
    double lookahead_pow;
    double logit_scale;        // logits multiplier; 0 means 1 / widths[2] (Muon)
    int tta_level;             // 0 plain, 1 + flip, 2 + flip + one-pixel shifts
    // Muon variant only (muon = 1): conv filters by Muon, the rest by Nesterov SGD.
    int muon;
    double muon_lr, muon_momentum;
    int muon_ns_steps;
    double sgd_bias_lr, sgd_head_lr, sgd_wd; // wd is absolute, c_g = sgd_wd / lr_g;
                               // the whitening bias lr decays to 0 over its epochs
} Recipe;

#define RECIPE_COMMON \
    .batch_size = 1024, .momentum = 0.85, .bias_scaler = 64.0, .label_smoothing = 0.2, \
    .bn_eps = 1e-12, .whiten_bias_epochs = 3, .lookahead_every = 5, \
    .lookahead_base = 0.95, .lookahead_pow = 3.0, .logit_scale = 1.0 / 9.0, .tta_level = 2

static const Recipe RECIPE_94 = {
    .name = "airbench94", .widths = {64, 256, 256}, .depth = 2, .epochs = 9.9,
    .lr = 11.5, .weight_decay = 0.0153, .warmup_frac = 0.23, .lr_end = 0.07,
    .translate = 2, .cutout = 0, .bn_keep = 0.6, RECIPE_COMMON,
};

static const Recipe RECIPE_95 = {
    .name = "airbench95", .widths = {128, 384, 384}, .depth = 2, .epochs = 15,
    .lr = 10.0, .weight_decay = 0.0153, .warmup_frac = 0.23, .lr_end = 0.07,
    .translate = 2, .cutout = 0, .bn_keep = 0.6, RECIPE_COMMON,
};

static const Recipe RECIPE_96 = {
    .name = "airbench96", .widths = {128, 384, 512}, .depth = 3, .epochs = 37,
    .lr = 9.0, .weight_decay = 0.012, .warmup_frac = 0.10, .lr_end = 0.0,
    .translate = 4, .cutout = 12, .bn_keep = 0.9, RECIPE_COMMON,
};

static const Recipe RECIPE_94_MUON = {
    .name = "airbench94-muon", .widths = {64, 256, 256}, .depth = 2, .epochs = 8,
    .batch_size = 2000, .momentum = 0.85, .label_smoothing = 0.2, .warmup_frac = 0.0,
    .lr_end = 0.0, .translate = 2, .cutout = 0, .bn_keep = 0.6, .bn_eps = 1e-12,
    .lookahead_every = 0, .logit_scale = 0.0, .tta_level = 2,
    .muon = 1, .muon_lr = 0.24, .muon_momentum = 0.6, .muon_ns_steps = 3,
    .sgd_bias_lr = 0.053, .sgd_head_lr = 0.67, .sgd_wd = 2e-6 * 2000, .whiten_bias_epochs = 3,
};

// Decoupled -> PyTorch SGD values. With a summed loss, lr is per example, so the step per
// batch grows linearly with the batch size (the linear scaling rule) with no extra factor.
static inline double recipe_kilostep(const Recipe *r) { return 1024.0 * (1.0 + 1.0 / (1.0 - r->momentum)); }
static inline double recipe_sgd_lr(const Recipe *r) { return r->lr / recipe_kilostep(r); }
static inline double recipe_sgd_wd(const Recipe *r) { return r->weight_decay * r->batch_size / recipe_kilostep(r); }
static inline double recipe_bn_bias_lr(const Recipe *r) { return recipe_sgd_lr(r) * r->bias_scaler; }

static inline int recipe_steps_per_epoch(const Recipe *r, int n_train) { return n_train / r->batch_size; }
static inline int recipe_total_steps(const Recipe *r, int n_train) {
    return (int)ceil(recipe_steps_per_epoch(r, n_train) * r->epochs - 1e-9);
}

// Learning-rate multiplier of step t (0-based): warm-up from 0.2 to 1 over
// W = floor(warmup_frac * total) steps, then linear to lr_end at t = total.
// The Muon recipe has no warm-up: 1 - t / total.
static inline double recipe_lr_multiplier(const Recipe *r, int t, int total) {
    int warmup = (int)floor(r->warmup_frac * total);
    if (t < warmup) return 0.2 + 0.8 * t / warmup;
    return 1.0 + (r->lr_end - 1.0) * (double)(t - warmup) / (double)(total - warmup);
}

// Lookahead decay after step count n (1-based; applied when n % every == 0).
static inline double recipe_lookahead_decay(const Recipe *r, int n, int total) {
    return pow(r->lookahead_base, r->lookahead_every) * pow((double)n / total, r->lookahead_pow);
}

static inline double recipe_logit_scale(const Recipe *r) {
    return r->logit_scale > 0 ? r->logit_scale : 1.0 / r->widths[2];
}
