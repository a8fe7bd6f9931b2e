// recipe.h: the airbench hyperparameters, one block per variant (docs/recipe.md), and the
// step schedule that turns them into each step's learning rates.
//
// A recipe is a runtime value. RECIPE_FIELDS below is its one table of fields: it declares
// the struct, and (recipe.c) drives `--set NAME=VALUE` for every field, the help text, and
// the complete recipe in the run file's config. A variant is a block of numbers here, never
// a copied file; the trainer and the CPU reference both pick one by name (recipe_variant).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "net.h"

// X(KIND, name, min, max, choices, help): KIND is INT, DOUBLE, ENUM (an int chosen by name
// from the NULL-terminated choices) or WIDTHS (three ints); min and max bound each value.
#define RECIPE_FIELDS(X)                                                                                       \
    X(WIDTHS, widths, 1, 4096, NULL, "output channels of the three ConvGroups")                               \
    X(INT, depth, 2, 3, NULL, "convs per ConvGroup: 2, or 3 with the residual (96)")                          \
    X(ENUM, activation, 0, 1, RECIPE_ACTIVATIONS, "after each BN of the ConvGroups: gelu (exact) or silu "    \
                                                  "(x sigmoid(x)); the whitening conv's is always gelu")      \
    X(DOUBLE, epochs, 1e-3, 1000, NULL, "training length; fractional: steps = ceil(steps/epoch * epochs)")     \
    X(INT, batch_size, 2, 50000, NULL, "training images per step")                                            \
    X(DOUBLE, lr, 0, 1e4, NULL, "SGD learning rate per 1024 examples (decoupled; see recipe_sgd_lr)")         \
    X(DOUBLE, weight_decay, 0, 10, NULL, "SGD weight decay per 1024 examples (decoupled)")                    \
    X(DOUBLE, momentum, 0, 0.999, NULL, "Nesterov momentum of the SGD groups")                                \
    X(DOUBLE, bias_scaler, 0, 1e4, NULL, "BN biases train at bias_scaler * lr (SGD recipes)")                \
    X(DOUBLE, label_smoothing, 0, 0.999, NULL, "label smoothing of the summed cross-entropy")                 \
    X(DOUBLE, warmup_frac, 0, 1, NULL, "lr warm-up from warmup_start to 1 over this fraction of the steps...")\
    X(DOUBLE, warmup_epochs, -1, 1000, NULL, "...or over this many epochs (Goyal et al.'s unit); -1: use warmup_frac")\
    X(DOUBLE, warmup_start, 0, 1, NULL, "the lr multiplier of the warm-up's first step")                      \
    X(DOUBLE, lr_end, 0, 10, NULL, "...then linearly to this multiplier at the last step")                    \
    X(ENUM, lr_scaling, 0, 2, RECIPE_LR_SCALINGS, "how the step follows batch_size relative to lr_batch: "     \
                                                 "linear (lr per example), sqrt, none (lr per step)")         \
    X(INT, lr_batch, 1, 50000, NULL, "the batch size the lrs were tuned at (lr_scaling's reference)")          \
    X(INT, bn_group, 0, 50000, NULL, "BN statistics over groups of this many images (simulated workers); "    \
                                     "0: the whole batch")                                                    \
    X(INT, bn_wd, 0, 1, NULL, "1: the BN biases get weight decay (airbench); 0: none (Goyal et al.)")          \
    X(INT, translate, 0, 15, NULL, "max random shift in pixels (reflect padding)")                            \
    X(ENUM, translate_mode, 0, 1, RECIPE_TRANSLATE_MODES, "random: a fresh shift per image and epoch; "       \
                                                          "derandomized: each image walks all shifts")       \
    X(INT, cutout, 0, 32, NULL, "cutout square side in pixels, 0 = none")                                     \
    X(DOUBLE, jitter_brightness, 0, 0.999, NULL, "brightness jitter: x + b, b uniform in [-this, this) per "    \
                                                 "image and epoch (normalized space); 0 = none")              \
    X(DOUBLE, jitter_contrast, 0, 0.999, NULL, "contrast jitter: then times c, c uniform in [1 - this, 1 + "   \
                                               "this) per image and epoch; 0 = none")                         \
    X(DOUBLE, bn_keep, 0, 1, NULL, "BN running stats: running = bn_keep * running + (1 - bn_keep) * batch")   \
    X(DOUBLE, bn_eps, 1e-30, 1, NULL, "BN epsilon")                                                           \
    X(DOUBLE, whiten_eps, 0, 1, NULL, "whitening filters: eigenvector / sqrt(eigenvalue + whiten_eps)")       \
    X(INT, whiten_images, 1, 50000, NULL, "training images whose 2x2 patches give the whitening filters")     \
    X(DOUBLE, whiten_bias_epochs, 0, 1000, NULL, "the whitening bias trains ceil(this * steps per epoch) "   \
                                                 "steps, then freezes")                                       \
    X(INT, lookahead_every, 0, 1000, NULL, "lookahead every this many steps, 0 = none")                       \
    X(DOUBLE, lookahead_base, 0, 1, NULL, "lookahead decay = base^every * (step / total)^pow")                \
    X(DOUBLE, lookahead_pow, 0, 100, NULL, "(see lookahead_base)")                                            \
    X(DOUBLE, logit_scale, 0, 100, NULL, "logits multiplier; 0 means 1 / widths[2] (Muon)")                  \
    X(INT, tta_level, 0, 2, NULL, "test-time augmentation: 0 plain, 1 + mirror, 2 + one-pixel shifts")        \
    X(DOUBLE, tta_select_frac, 0, 1, NULL, "TTA only for this fraction of the test images: those whose plain "   \
                                           "view has the lowest top softmax probability; the rest keep it")    \
    X(ENUM, tta_weights, 0, 1, RECIPE_TTA_WEIGHTS, "how the TTA views are weighted: airbench (1/2 the plain "    \
                                                   "pair, 1/4 each shifted pair) or uniform")                   \
    X(INT, muon, 0, 1, NULL, "1: conv filters by Muon, the rest by Nesterov SGD with the sgd_* values")       \
    X(DOUBLE, muon_lr, 0, 100, NULL, "Muon learning rate (multiplier 1 - t/total)")                          \
    X(DOUBLE, muon_momentum, 0, 0.999, NULL, "Muon's Nesterov momentum")                                      \
    X(INT, muon_ns_steps, 0, 100, NULL, "Newton-Schulz iterations per Muon step")                             \
    X(DOUBLE, muon_wd, 0, 10, NULL, "Muon: after each update W *= 1 - lr_t * muon_wd (decoupled decay)")        \
    X(INT, muon_norm_base, 1, 1000, NULL, "Muon rescales W to norm sqrt(c_out) before the update at 1-based "  \
                                          "step s when s - (the last such step) >= base + floor(slope * s / total)")\
    X(DOUBLE, muon_norm_slope, 0, 1000, NULL, "(see muon_norm_base; base 1, slope 0: every step)")             \
    X(DOUBLE, ns_a, -100, 100, NULL, "Newton-Schulz quintic: X = a X + (b A + c A^2) X, A = X X^T")           \
    X(DOUBLE, ns_b, -100, 100, NULL, "(see ns_a)")                                                           \
    X(DOUBLE, ns_c, -100, 100, NULL, "(see ns_a)")                                                           \
    X(DOUBLE, ns_eps, 0, 1, NULL, "Newton-Schulz input: G / (||G|| + ns_eps)")                                \
    X(DOUBLE, sgd_bias_lr, 0, 100, NULL, "Muon recipe: lr of the whitening and BN biases")                    \
    X(DOUBLE, sgd_head_lr, 0, 100, NULL, "Muon recipe: lr of the head")                                       \
    X(DOUBLE, sgd_wd, 0, 10, NULL, "Muon recipe: absolute weight decay; decay coefficient = sgd_wd / lr_g")     \
    X(ENUM, batch_mode, 0, 1, RECIPE_BATCH_MODES, "epoch: each epoch a fresh order cut into batches, the "      \
                                                  "rest dropped; continuous: one endless stream of epochs")     \
    X(INT, filter_keep, 0, 50000, NULL, "data filtering: each step trains on this many of the batch's "         \
                                        "examples, those of highest proxy loss; 0 = none, no proxy")           \
    X(WIDTHS, proxy_widths, 1, 4096, NULL, "the proxy network's ConvGroup widths (filter_keep > 0)")            \
    X(INT, proxy_depth, 2, 3, NULL, "the proxy network's convs per ConvGroup")                                  \
    X(INT, proxy_step_every, 1, 1000, NULL, "the proxy scores every batch, and steps on every this-many-th")     \
    X(INT, proxy_whiten_bias, 0, 1, NULL, "1: the proxy's whitening bias trains as the main one's; 0: stays 0")

// The names of augment.h's TranslateMode values, in order.
#define RECIPE_TRANSLATE_MODES ((const char *const[]){"random", "derandomized", NULL})
// The names of net.h's Activation values, in order.
#define RECIPE_ACTIVATIONS ((const char *const[]){"gelu", "silu", NULL})
typedef enum { LR_SCALING_LINEAR, LR_SCALING_SQRT, LR_SCALING_NONE } LrScaling;
typedef enum { BATCH_MODE_EPOCH, BATCH_MODE_CONTINUOUS } BatchMode;
#define RECIPE_BATCH_MODES ((const char *const[]){"epoch", "continuous", NULL})
typedef enum { TTA_WEIGHTS_AIRBENCH, TTA_WEIGHTS_UNIFORM } TtaWeights;
#define RECIPE_TTA_WEIGHTS ((const char *const[]){"airbench", "uniform", NULL})
#define RECIPE_LR_SCALINGS ((const char *const[]){"linear", "sqrt", "none", NULL})

#define RECIPE_DECLARE_INT(name) int name;
#define RECIPE_DECLARE_ENUM(name) int name;
#define RECIPE_DECLARE_DOUBLE(name) double name;
#define RECIPE_DECLARE_WIDTHS(name) int name[3];
#define RECIPE_DECLARE(kind, name, min, max, choices, help) RECIPE_DECLARE_##kind(name)

typedef struct {
    const char *name;  // "airbench94", ...: the run file's variant
    RECIPE_FIELDS(RECIPE_DECLARE)
} Recipe;

// ---- the variants --------------------------------------------------------------------
// The proxy network of airbench96_faster.py (widths 32/64/64, depth 2, a step on every 4th
// batch, its whitening bias frozen at 0): in every block, inert while filter_keep is 0.
#define RECIPE_PROXY .proxy_widths = {32, 64, 64}, .proxy_depth = 2, .proxy_step_every = 4, .proxy_whiten_bias = 0

// Shared by every variant: the whitening, BN epsilon, smoothing, TTA and Newton-Schulz
// numbers; batches by epoch, no data filtering.
#define RECIPE_SHARED                                                                                          \
    .momentum = 0.85, .label_smoothing = 0.2, .bn_eps = 1e-12, .whiten_eps = 5e-4, .whiten_images = 5000,      \
    .whiten_bias_epochs = 3, .tta_level = 2, .ns_a = 3.4445, .ns_b = -4.7750, .ns_c = 2.0315, .ns_eps = 1e-7,  \
    .warmup_epochs = -1, .warmup_start = 0.2, .lr_scaling = LR_SCALING_LINEAR, .bn_group = 0, .bn_wd = 1,        \
    .muon_norm_base = 1, .tta_select_frac = 1, .activation = ACTIVATION_GELU, .batch_mode = BATCH_MODE_EPOCH,    \
    .filter_keep = 0, RECIPE_PROXY

// Shared by the SGD variants (94, 95, 96).
#define RECIPE_SGD                                                                                             \
    RECIPE_SHARED, .batch_size = 1024, .lr_batch = 1024, .bias_scaler = 64.0, .lookahead_every = 5,             \
    .lookahead_base = 0.95, .lookahead_pow = 3.0, .logit_scale = 1.0 / 9.0

static const Recipe RECIPE_94 = {
    .name = "airbench94", .widths = {64, 256, 256}, .depth = 2, .epochs = 9.9,
    .lr = 11.5, .weight_decay = 0.0153, .warmup_frac = 0.23, .lr_end = 0.07,
    .translate = 2, .cutout = 0, .bn_keep = 0.6, RECIPE_SGD,
};

static const Recipe RECIPE_95 = {
    .name = "airbench95", .widths = {128, 384, 384}, .depth = 2, .epochs = 15,
    .lr = 10.0, .weight_decay = 0.0153, .warmup_frac = 0.23, .lr_end = 0.07,
    .translate = 2, .cutout = 0, .bn_keep = 0.6, RECIPE_SGD,
};

static const Recipe RECIPE_96 = {
    .name = "airbench96", .widths = {128, 384, 512}, .depth = 3, .epochs = 37,
    .lr = 9.0, .weight_decay = 0.012, .warmup_frac = 0.10, .lr_end = 0.0,
    .translate = 4, .cutout = 12, .bn_keep = 0.9, RECIPE_SGD,
};

// Batch 2000, 8 epochs, no warm-up and no lookahead, logits / w3; Muon for the convs.
static const Recipe RECIPE_94_MUON = {
    .name = "airbench94-muon", .widths = {64, 256, 256}, .depth = 2, .epochs = 8,
    .batch_size = 2000, .lr_batch = 2000, .warmup_frac = 0.0, .lr_end = 0.0, .translate = 2, .cutout = 0, .bn_keep = 0.6,
    .lookahead_every = 0, .logit_scale = 0.0, RECIPE_SHARED,
    .muon = 1, .muon_lr = 0.24, .muon_momentum = 0.6, .muon_ns_steps = 3,
    .sgd_bias_lr = 0.053, .sgd_head_lr = 0.67, .sgd_wd = 2e-6 * 2000,
};

// The 2025 record (hiverge/cifar10-speedrun, docs/recipe.md): airbench94-muon with batch
// 1536 for 7.59 epochs, SiLU in the ConvGroups, brightness/contrast jitter, its own
// optimizer numbers, Muon's weights renormalized at 37 of the 243 steps with decoupled
// decay, and TTA for the 25% least sure test images only.
static const Recipe RECIPE_94_RECORD = {
    .name = "airbench94-record", .widths = {64, 256, 256}, .depth = 2, .activation = ACTIVATION_SILU,
    .epochs = 7.59, .batch_size = 1536, .lr_batch = 1536, .warmup_epochs = -1, .warmup_start = 0.2,
    .translate = 2, .jitter_brightness = 0.1399, .jitter_contrast = 0.1308, .bn_keep = 0.5566, .bn_eps = 1e-12,
    .bn_wd = 1, .whiten_eps = 5e-4, .whiten_images = 960, .whiten_bias_epochs = 0.19, .logit_scale = 0.0,
    .label_smoothing = 0.09, .momentum = 0.825, .sgd_bias_lr = 0.0573, .sgd_head_lr = 0.5415,
    .sgd_wd = 1.0418e-6 * 1536, .muon = 1, .muon_lr = 0.205, .muon_momentum = 0.655, .muon_ns_steps = 3,
    .ns_a = 3.4576, .ns_b = -4.7391, .ns_c = 2.0843, .ns_eps = 1e-5, .muon_wd = 1.0418e-6 * 1536,
    .muon_norm_base = 2, .muon_norm_slope = 15, .tta_level = 2, .tta_select_frac = 0.25,
    .tta_weights = TTA_WEIGHTS_UNIFORM, .batch_mode = BATCH_MODE_EPOCH, .filter_keep = 0, RECIPE_PROXY,
};

// airbench96_faster.py (docs/recipe.md): airbench96 for 45 epochs of 48 steps over one
// endless stream of batches of 1024, each cut down to the 512 examples of highest loss under
// a small proxy network that trains first on the same batches (RECIPE_PROXY). The whitening
// bias trains throughout, as in the published script, whose freeze test never fires.
// Written out, not RECIPE_SGD, because whiten_bias_epochs differs from RECIPE_SHARED's.
static const Recipe RECIPE_96_FILTER = {
    .name = "airbench96-filter", .widths = {128, 384, 512}, .depth = 3, .activation = ACTIVATION_GELU,
    .epochs = 45, .batch_size = 1024, .lr_batch = 1024, .lr = 9.0, .weight_decay = 0.012, .momentum = 0.85,
    .bias_scaler = 64.0, .label_smoothing = 0.2, .warmup_frac = 0.10, .warmup_epochs = -1, .warmup_start = 0.2,
    .lr_end = 0.0, .lr_scaling = LR_SCALING_LINEAR, .bn_group = 0, .bn_wd = 1, .translate = 4, .cutout = 12,
    .bn_keep = 0.9, .bn_eps = 1e-12, .whiten_eps = 5e-4, .whiten_images = 5000, .whiten_bias_epochs = 45,
    .lookahead_every = 5, .lookahead_base = 0.95, .lookahead_pow = 3.0, .logit_scale = 1.0 / 9.0, .tta_level = 2,
    .tta_select_frac = 1, .ns_a = 3.4445, .ns_b = -4.7750, .ns_c = 2.0315, .ns_eps = 1e-7, .muon_norm_base = 1,
    .batch_mode = BATCH_MODE_CONTINUOUS, .filter_keep = 512, RECIPE_PROXY,
};

typedef struct {
    const char *name;        // as given to --variant: "94", "95", "96", "94-muon", "94-record", "96-filter"
    const Recipe *recipe;
    double target_accuracy;  // the mean TTA accuracy the recipe is meant to reach
} Variant;

// The variant called name ("94" or "airbench94", ...); NULL if there is none.
const Variant *recipe_variant(const char *name);
// The variants' names, comma-separated ("94, 95, 96, ..."): for messages.
const char *recipe_variant_names(void);

// ---- fields at run time -----------------------------------------------------------------
typedef enum { RECIPE_INT, RECIPE_DOUBLE, RECIPE_ENUM, RECIPE_WIDTHS } RecipeKind;

typedef struct {
    const char *name;
    RecipeKind kind;
    size_t offset;              // in Recipe
    double min, max;
    const char *const *choices; // RECIPE_ENUM: the names of 0, 1, ...
    const char *help;
} RecipeField;

extern const RecipeField RECIPE_FIELD_TABLE[];
extern const int RECIPE_N_FIELDS;

const RecipeField *recipe_field(const char *name);
// Sets one field from text ("11.0", "64,256,256", "derandomized"). 0, or -1 with err.
int recipe_set_field(Recipe *r, const RecipeField *f, const char *text, char *err, size_t err_size);
// Parses "NAME=VALUE" (the value of --set). 0, or -1 with err naming the field or choices.
int recipe_set(Recipe *r, const char *assignment, char *err, size_t err_size);
// The value of field f as text ("11.5", "64,256,256", "random").
void recipe_format_field(const Recipe *r, const RecipeField *f, char *out, size_t out_size);
int recipe_fields_equal(const Recipe *a, const Recipe *b, const RecipeField *f);
// One line per field: name, value in r, and help: for --help.
void recipe_print_fields(FILE *out, const Recipe *r);
// Checks what the table's bounds cannot: the run trains at least one step on n_train
// images, and the shifts and cutout fit the image. 0, or -1 with err.
int recipe_validate(const Recipe *r, int n_train, char *err, size_t err_size);

// The flags the trainer and the reference share: --variant V, --set NAME=VALUE and the
// shorthands --widths, --depth, --epochs, --batch, --tta, --translate-mode for their
// fields. Returns 1 if flag is one of them and value was applied, 0 if flag is not one of
// them, -1 with err for a bad value. --variant replaces the whole recipe, so the caller
// applies it before the others (recipe_variant_from_args).
int recipe_apply_flag(Recipe *r, const char *flag, const char *value, char *err, size_t err_size);
// The --variant argument in argv (NULL if none), checked: -1 with err if it names none.
int recipe_variant_from_args(int argc, char **argv, const Variant **variant, char *err, size_t err_size);

// ---- derived values -----------------------------------------------------------------------
// Decoupled -> PyTorch SGD values. With a summed loss, lr is per example, so the step per
// batch grows linearly with the batch size (the linear scaling rule) with no extra factor.
static inline double recipe_kilostep(const Recipe *r) { return 1024.0 * (1.0 + 1.0 / (1.0 - r->momentum)); }
static inline double recipe_sgd_lr(const Recipe *r) { return r->lr / recipe_kilostep(r); }
static inline double recipe_sgd_wd(const Recipe *r) { return r->weight_decay * r->batch_size / recipe_kilostep(r); }
static inline double recipe_bn_bias_lr(const Recipe *r) { return recipe_sgd_lr(r) * r->bias_scaler; }

int recipe_steps_per_epoch(const Recipe *r, int n_train);
// The examples one step trains on: filter_keep of each batch, or the whole batch.
static inline int recipe_train_batch(const Recipe *r) { return r->filter_keep ? r->filter_keep : r->batch_size; }
// Whether --fused-bn fits: a depth-2 network, BatchNorm over the whole training batch (one
// group), no data filtering (whose proxy is a second network).
static inline int recipe_fits_fused_bn(const Recipe *r) {
    return r->depth == 2 && (!r->bn_group || recipe_train_batch(r) / r->bn_group == 1) && !r->filter_keep;
}
// Whether the recipe refuses --fused-bn on (recipe_fits_fused_bn fails) or --muon-streams on
// (no Muon step): 1 with the reason, a sentence naming the recipe's values, in why; else 0.
// The command line refuses with it before the GPU's start-up, the trainer again for callers
// of its own functions.
int recipe_refuses_fused_bn(const Recipe *r, char *why, size_t why_size);
int recipe_refuses_muon_streams(const Recipe *r, char *why, size_t why_size);
// Where step `step`'s batch starts in the stream of training examples, in which data epoch
// e holds positions [e n_train, (e + 1) n_train) (augment.h's aug_stream_image). epoch
// mode: batch step % spe of epoch step / spe (spe = steps per epoch; the rest of each
// epoch is dropped); continuous: step * batch_size, so batches run on across epochs.
int64_t recipe_batch_first(const Recipe *r, int step, int n_train);
// The proxy network's recipe (filter_keep > 0): the main recipe's numbers at proxy_widths
// and proxy_depth, without lookahead or filtering of its own, its whitening bias frozen
// (whiten_bias_epochs 0) unless proxy_whiten_bias.
Recipe recipe_proxy(const Recipe *r);
// The proxy network's initialization seed: a key of its own, so that its weights are
// independent of the main network's (which the run's seed initializes); the data, and so
// the batches, come from the run's seed on both.
static inline uint64_t recipe_proxy_seed(uint64_t seed) { return rng_mix64(seed ^ 0x70726f7879ULL); }
// The test images that get test-time augmentation: all of n, or floor(n * tta_select_frac)
// (those the plain view is least sure of) when tta_select_frac < 1 and tta_level > 0.
int recipe_tta_images(const Recipe *r, int n);
int recipe_total_steps(const Recipe *r, int n_train);
double recipe_logit_scale(const Recipe *r);

// ---- the step schedule ------------------------------------------------------------------
// What one training step does, from the recipe and the step index: the one schedule the
// trainer and the reference both follow.
typedef enum { GROUP_WHITEN_BIAS, GROUP_CONV, GROUP_HEAD, GROUP_BN_BIAS, N_GROUPS } ParamGroup;

typedef struct {
    double lr;     // this step's learning rate
    double decay;  // weight decay inside the gradient: g += decay * w (wd / the group's base lr)
    int enabled;   // 0: the group is frozen in this step
} GroupStep;

typedef struct {
    // Nesterov SGD per group; with recipe->muon, GROUP_CONV's lr is Muon's (decay unused).
    GroupStep group[N_GROUPS];
    // After the step, when >= 0: lookahead with this decay (ema = d ema + (1 - d) w; w = ema).
    double lookahead_decay;
    // Muon recipes: whether this step rescales each conv weight to norm sqrt(c_out) before
    // its update, and the factor 1 - lr * muon_wd applied after it.
    int muon_normalize;
    double muon_decay;
} StepPlan;

// Step `step` (0-based) of total_steps, with steps_per_epoch steps per epoch. The
// whitening bias gradient is needed exactly when group[GROUP_WHITEN_BIAS].enabled.
// The whitening bias trains ceil(whiten_bias_epochs * steps_per_epoch) steps.
StepPlan recipe_step_plan(const Recipe *r, int step, int total_steps, int steps_per_epoch);
// The SGD recipes' groups at schedule multiplier s (the lr warm-up and decay of a step).
void recipe_sgd_groups(const Recipe *r, double s, int whiten_bias_on, GroupStep groups[N_GROUPS]);
// The SGD recipes' schedule multiplier of step t: warm-up from warmup_start to 1 over W
// steps (warmup_epochs * steps_per_epoch rounded, or floor(warmup_frac * total)), then
// linear to lr_end at t = total.
double recipe_lr_multiplier(const Recipe *r, int step, int total_steps, int steps_per_epoch);
// The factor lr_scaling applies to every learning rate at this batch size: 1 (linear:
// the summed loss already makes the step grow with the batch), sqrt(lr_batch / B), or
// lr_batch / B (none). Weight decay stays inside the gradient: the decay coefficients are
// computed from the unscaled rates, so the decay per step scales with the lr.
double recipe_lr_scale(const Recipe *r);
