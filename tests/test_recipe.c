// test_recipe.c: the recipe at run time (recipe.h). The variants by name; every field of the
// table set by --set and read back; bad values refused with a message naming the field;
// and the step schedule, the one function the trainer and the reference both follow,
// against the numbers of docs/recipe.md worked out by hand.
#include <string.h>

#include "recipe.h"
#include "test.h"

#define ERR_SIZE 512

// Same name and every field equal (each file holds its own copy of recipe.h's blocks).
static int same_recipe(const Recipe *a, const Recipe *b) {
    int same = !strcmp(a->name, b->name);
    for (int i = 0; i < RECIPE_N_FIELDS; i++) same &= recipe_fields_equal(a, b, &RECIPE_FIELD_TABLE[i]);
    return same;
}

static void test_variants(void) {
    const char *names[6] = {"94", "95", "96", "94-muon", "94-record", "96-filter"};
    const Recipe *recipes[6] = {&RECIPE_94, &RECIPE_95, &RECIPE_96, &RECIPE_94_MUON, &RECIPE_94_RECORD,
                                &RECIPE_96_FILTER};
    const double targets[6] = {0.94, 0.95, 0.96, 0.94, 0.94, 0.96};
    for (int i = 0; i < 6; i++) {
        const Variant *v = recipe_variant(names[i]);
        CHECK(v && same_recipe(v->recipe, recipes[i]) && v->target_accuracy == targets[i], "variant %s", names[i]);
        char program[32];
        snprintf(program, sizeof program, "airbench%s", names[i]);
        CHECK(recipe_variant(program) == v, "variant by program name %s", program);
    }
    CHECK(recipe_variant("97") == NULL && recipe_variant("airbench") == NULL && recipe_variant("") == NULL,
          "unknown variants are NULL");
    char *argv[] = {"airbench", "--runs", "3", "--variant", "96", NULL};
    const Variant *v = NULL;
    char err[ERR_SIZE] = "";
    CHECK(recipe_variant_from_args(5, argv, &v, err, sizeof err) == 0 && v && same_recipe(v->recipe, &RECIPE_96),
          "--variant 96");
    argv[4] = "97";
    CHECK(recipe_variant_from_args(5, argv, &v, err, sizeof err) == -1 && strstr(err, "'97' for --variant"),
          "--variant 97: %s", err);
    char *no_value[] = {"airbench", "--variant", NULL};
    CHECK(recipe_variant_from_args(2, no_value, &v, err, sizeof err) == -1, "--variant without a value");
}

// Every field: format its value, change it through --set, read it back.
static void test_every_field_round_trips(void) {
    for (int i = 0; i < RECIPE_N_FIELDS; i++) {
        const RecipeField *f = &RECIPE_FIELD_TABLE[i];
        CHECK(recipe_field(f->name) == f, "recipe_field(%s)", f->name);
        Recipe r = RECIPE_96;
        char value[64], assignment[128], err[ERR_SIZE] = "";
        // a legal value other than the current one where the bounds allow
        switch (f->kind) {
        case RECIPE_INT: snprintf(value, sizeof value, "%d", (int)f->max); break;
        case RECIPE_DOUBLE: snprintf(value, sizeof value, "%.17g", f->min + 0.25 * (f->max - f->min)); break;
        case RECIPE_WIDTHS: snprintf(value, sizeof value, "%d,%d,%d", (int)f->min, 40, (int)f->max); break;
        case RECIPE_ENUM: snprintf(value, sizeof value, "%s", f->choices[1]); break;
        }
        snprintf(assignment, sizeof assignment, "%s=%s", f->name, value);
        CHECK(recipe_set(&r, assignment, err, sizeof err) == 0, "--set %s: %s", assignment, err);
        char back[64];
        recipe_format_field(&r, f, back, sizeof back);
        Recipe again = RECIPE_94;
        CHECK(recipe_set_field(&again, f, back, err, sizeof err) == 0 && recipe_fields_equal(&r, &again, f),
              "%s: '%s' formats as '%s', which does not read back", f->name, value, back);
        CHECK(!recipe_fields_equal(&r, &RECIPE_96, f) || f->kind == RECIPE_INT, "%s: --set changed nothing",
              f->name);
    }
}

static void expect_refused(const char *assignment, const char *want_in_message) {
    Recipe r = RECIPE_94, before = RECIPE_94;
    char err[ERR_SIZE] = "";
    int status = recipe_set(&r, assignment, err, sizeof err);
    CHECK(status == -1, "--set %s should be refused", assignment);
    CHECK(strstr(err, want_in_message) != NULL, "--set %s: message '%s' lacks '%s'", assignment, err, want_in_message);
    CHECK(!memcmp(&r, &before, sizeof r), "--set %s changed the recipe although refused", assignment);
}

static void test_bad_values(void) {
    expect_refused("lr", "NAME=VALUE");
    expect_refused("=3", "NAME=VALUE");
    expect_refused("learning_rate=3", "'learning_rate' is not a recipe field");
    expect_refused("lr=abc", "lr expects a number");
    expect_refused("lr=3x", "lr expects a number");
    expect_refused("lr=", "lr expects a number");
    expect_refused("lr=nan", "lr expects a number");
    expect_refused("lr=inf", "lr expects a number");
    expect_refused("lr=-1", "lr expects a number in [0, 10000]");
    expect_refused("epochs=1e-300", "epochs expects");  // would train 0 steps
    expect_refused("epochs=0", "epochs expects");
    expect_refused("depth=4", "depth expects an integer in 2..3");
    expect_refused("depth=2.5", "depth expects an integer");
    expect_refused("batch_size=99999999999999999999", "batch_size expects an integer");
    expect_refused("widths=4294967304,64,64", "widths expects three");  // used to wrap to 8
    expect_refused("widths=64,64", "widths expects three");
    expect_refused("widths=64,64,64,64", "widths expects three");
    expect_refused("widths=64,,64", "widths expects three");
    expect_refused("translate_mode=sideways", "translate_mode expects one of random derandomized");
    expect_refused("tta_level=3", "tta_level expects an integer in 0..2");
}

static void test_shorthand_flags(void) {
    Recipe r = RECIPE_94;
    char err[ERR_SIZE] = "";
    CHECK(recipe_apply_flag(&r, "--batch", "512", err, sizeof err) == 1 && r.batch_size == 512, "--batch 512");
    CHECK(recipe_apply_flag(&r, "--widths", "16,32,32", err, sizeof err) == 1 && r.widths[2] == 32, "--widths");
    CHECK(recipe_apply_flag(&r, "--translate-mode", "derandomized", err, sizeof err) == 1 && r.translate_mode == 1,
          "--translate-mode derandomized");
    CHECK(recipe_apply_flag(&r, "--set", "label_smoothing=0.15", err, sizeof err) == 1 && r.label_smoothing == 0.15,
          "--set label_smoothing=0.15");
    CHECK(recipe_apply_flag(&r, "--runs", "3", err, sizeof err) == 0, "--runs is not a recipe flag");
    CHECK(recipe_apply_flag(&r, "--epochs", "0", err, sizeof err) == -1 && strstr(err, "for --epochs"),
          "--epochs 0: %s", err);
    CHECK(recipe_apply_flag(&r, "--tta", NULL, err, sizeof err) == -1 && strstr(err, "(missing)"), "--tta alone");
    CHECK(recipe_apply_flag(&r, "--set", NULL, err, sizeof err) == -1 && strstr(err, "--set"), "--set alone");
}

static void test_validate(void) {
    char err[ERR_SIZE] = "";
    Recipe r = RECIPE_94;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == 0, "the 94 recipe is valid: %s", err);
    CHECK(recipe_validate(&r, 1000, err, sizeof err) == -1 && strstr(err, "exceeds the 1000 training images"),
          "batch > images: %s", err);
    r.translate = 15;
    r.cutout = 20;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "do not fit"), "shift + cutout: %s", err);
    r = RECIPE_94_MUON;
    r.depth = 3;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "Muon"), "muon at depth 3: %s", err);
    r = RECIPE_94;
    r.epochs = 1e-3;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == 0 && recipe_total_steps(&r, 50000) == 1,
          "the shortest run trains one step");
}

// recipe_fits_fused_bn: the depth-2 recipes without data filtering, with BatchNorm over the
// whole training batch (no --bn-group, or one group as large as the batch).
static void test_fits_fused_bn(void) {
    const Recipe *fit[4] = {&RECIPE_94, &RECIPE_95, &RECIPE_94_MUON, &RECIPE_94_RECORD};
    for (int i = 0; i < 4; i++) CHECK(recipe_fits_fused_bn(fit[i]), "--fused-bn fits %s", fit[i]->name);
    CHECK(!recipe_fits_fused_bn(&RECIPE_96), "--fused-bn does not fit airbench96 (depth 3)");
    Recipe r = RECIPE_96_FILTER;
    r.depth = 2;
    CHECK(!recipe_fits_fused_bn(&r), "--fused-bn does not fit data filtering, even at depth 2");
    r = RECIPE_94;
    r.bn_group = r.batch_size / 4;
    CHECK(!recipe_fits_fused_bn(&r), "--fused-bn does not fit BatchNorm over groups of a quarter batch");
    char why[512] = "";
    CHECK(recipe_refuses_fused_bn(&r, why, sizeof why) && strstr(why, "airbench94 as set has depth 2, bn_group 256 "
          "of a batch of 1024"), "the refusal of --fused-bn names the recipe's values: %s", why);
    r.bn_group = r.batch_size;
    CHECK(recipe_fits_fused_bn(&r), "--fused-bn fits one BatchNorm group as large as the batch");
    CHECK(!recipe_refuses_fused_bn(&r, why, sizeof why), "--fused-bn refused where it fits");
}

// recipe_refuses_muon_streams: only the recipes with a Muon step take --muon-streams on.
static void test_refuses_muon_streams(void) {
    char why[512] = "";
    CHECK(!recipe_refuses_muon_streams(&RECIPE_94_MUON, why, sizeof why) &&
              !recipe_refuses_muon_streams(&RECIPE_94_RECORD, why, sizeof why),
          "--muon-streams on refused for a Muon recipe");
    CHECK(recipe_refuses_muon_streams(&RECIPE_96, why, sizeof why) && strstr(why, "airbench96 has no Muon step"),
          "the refusal of --muon-streams names the recipe: %s", why);
}

#define CHECK_GROUP(plan, g, want_lr, want_decay, want_enabled, what)                                           \
    do {                                                                                                        \
        CHECK_NEAR((plan).group[g].lr, (want_lr), 1e-12 * fabs(want_lr) + 1e-300, what " lr");                  \
        CHECK_NEAR((plan).group[g].decay, (want_decay), 1e-12 * fabs(want_decay) + 1e-300, what " decay");      \
        CHECK((plan).group[g].enabled == (want_enabled), what " enabled = %d", (plan).group[g].enabled);        \
    } while (0)

// airbench94 (docs/recipe.md): k = 1024 (1 + 1/0.15); lr = 11.5 / k; wd = 0.0153 * 1024 / k;
// BN biases at 64 lr. 48 steps per epoch, 476 steps, warm-up W = floor(0.23 * 476) = 109
// steps from 0.2, then linear to 0.07 at t = 476. Whitening bias for 3 epochs (144 steps).
// Lookahead after steps 5, 10, ... with decay 0.95^5 (n / 476)^3, and w = ema at the end.
static void test_sgd_schedule(void) {
    const Recipe *r = &RECIPE_94;
    int spe = recipe_steps_per_epoch(r, 50000), total = recipe_total_steps(r, 50000);
    CHECK(spe == 48 && total == 476, "94: %d steps per epoch, %d steps", spe, total);
    double k = 1024.0 * (1.0 + 1.0 / 0.15), lr = 11.5 / k, wd = 0.0153 * 1024 / k, bn_lr = 64 * lr;
    StepPlan p = recipe_step_plan(r, 0, total, spe);
    CHECK_GROUP(p, GROUP_CONV, 0.2 * lr, wd / lr, 1, "94 step 0 conv");
    CHECK_GROUP(p, GROUP_HEAD, 0.2 * lr, wd / lr, 1, "94 step 0 head");
    CHECK_GROUP(p, GROUP_WHITEN_BIAS, 0.2 * lr, wd / lr, 1, "94 step 0 whitening bias");
    CHECK_GROUP(p, GROUP_BN_BIAS, 0.2 * bn_lr, wd / bn_lr, 1, "94 step 0 BN biases");
    CHECK(p.lookahead_decay < 0, "no lookahead after step 1");
    p = recipe_step_plan(r, 54, total, spe);
    CHECK_GROUP(p, GROUP_CONV, (0.2 + 0.8 * 54 / 109.0) * lr, wd / lr, 1, "94 step 54 (warm-up)");
    p = recipe_step_plan(r, 109, total, spe);
    CHECK_GROUP(p, GROUP_CONV, lr, wd / lr, 1, "94 step 109 (peak)");
    p = recipe_step_plan(r, 143, total, spe);
    CHECK(p.group[GROUP_WHITEN_BIAS].enabled, "the whitening bias trains in step 143");
    p = recipe_step_plan(r, 144, total, spe);
    CHECK(!p.group[GROUP_WHITEN_BIAS].enabled, "the whitening bias is frozen from step 144");
    p = recipe_step_plan(r, 475, total, spe);
    CHECK_GROUP(p, GROUP_BN_BIAS, (1.0 - 0.93 * 366 / 367.0) * bn_lr, wd / bn_lr, 1, "94 last step");
    CHECK_NEAR(p.lookahead_decay, 1.0, 0, "w = ema after the last step (476 is not a multiple of 5)");
    p = recipe_step_plan(r, 4, total, spe);
    CHECK_NEAR(p.lookahead_decay, pow(0.95, 5) * pow(5.0 / 476, 3), 1e-15, "lookahead after step 5");
    p = recipe_step_plan(r, 469, total, spe);
    CHECK_NEAR(p.lookahead_decay, pow(0.95, 5) * pow(470.0 / 476, 3), 1e-15, "lookahead after step 470");

    // 96: no lr_end, warm-up 10%; a --set reaches the schedule.
    Recipe r96 = RECIPE_96;
    char err[ERR_SIZE];
    recipe_set(&r96, "lr=4.5", err, sizeof err);
    total = recipe_total_steps(&r96, 50000);
    CHECK(total == 1776, "96: %d steps", total);
    p = recipe_step_plan(&r96, total - 1, total, spe);
    double lr96 = 4.5 / k;
    CHECK_GROUP(p, GROUP_CONV, 1.0 / (total - 177) * lr96, 0.012 * 1024 / k / lr96, 1, "96 last step");
}

// The 2025 record's block (hiverge/cifar10-speedrun): weights renormalized at 1-based
// step s when s - last >= 2 + floor(15 s / 243), which its script does at exactly these 37
// steps; decoupled decay 1 - lr_t * wd after each update; the whitening bias for
// ceil(0.19 * 32) = 7 steps.
static void test_record_muon_schedule(void) {
    CHECK(recipe_validate(&RECIPE_94_RECORD, 50000, NULL, 0) == 0, "the record recipe is valid");
    const int want[37] = {2,  4,  6,  8,  10, 12, 14, 16,  19,  22,  25,  28,  31,  35,  39,  43,  47,  52, 57,
                          62, 68, 74, 80, 87, 94, 102, 110, 119, 128, 138, 149, 160, 172, 185, 199, 214, 230};
    Recipe r = RECIPE_94_RECORD;
    int spe = recipe_steps_per_epoch(&r, 50000), total = recipe_total_steps(&r, 50000), k = 0, same = 1;
    CHECK(spe == 32 && total == 243, "record: %d steps per epoch, %d steps", spe, total);
    for (int t = 0; t < total; t++) {
        StepPlan p = recipe_step_plan(&r, t, total, spe);
        int expected = k < 37 && want[k] == t + 1;
        same &= p.muon_normalize == expected;
        k += expected;
    }
    CHECK(same && k == 37, "the renormalizing steps differ from the record's 37");
    StepPlan p = recipe_step_plan(&r, 100, total, spe);
    CHECK_NEAR(p.muon_decay, 1.0 - 0.205 * (1 - 100.0 / 243) * 0.0016002048, 1e-15, "decoupled Muon decay");
    CHECK(recipe_step_plan(&r, 6, total, spe).group[GROUP_WHITEN_BIAS].enabled &&
          !recipe_step_plan(&r, 7, total, spe).group[GROUP_WHITEN_BIAS].enabled, "whitening bias for 7 steps");
    CHECK_NEAR(recipe_step_plan(&r, 3, total, spe).group[GROUP_WHITEN_BIAS].lr, 0.0573 * (1 - 3 / 7.0), 1e-15,
               "the whitening bias lr decays over its 7 steps");
    // the airbench94-muon defaults: every step, no decay
    int every = 1;
    for (int t = 0; t < 200; t++) {
        StepPlan q = recipe_step_plan(&RECIPE_94_MUON, t, 200, 25);
        every &= q.muon_normalize && q.muon_decay == 1.0;
    }
    CHECK(every, "airbench94-muon renormalizes at every step and has no decoupled decay");
}

// Goyal et al.'s pieces (issue 11): warm-up in epochs from a chosen start, lr scaling
// relative to lr_batch with the decay coefficients unscaled, no decay on BN biases.
static void test_large_batch_fields(void) {
    Recipe r = RECIPE_94;
    char err[ERR_SIZE];
    CHECK(recipe_apply_flag(&r, "--batch", "4096", err, sizeof err) == 1, "--batch 4096");
    CHECK(recipe_apply_flag(&r, "--warmup-epochs", "5", err, sizeof err) == 1, "--warmup-epochs 5");
    CHECK(recipe_set(&r, "warmup_start=0.25", err, sizeof err) == 0, "warmup_start");
    int spe = recipe_steps_per_epoch(&r, 50000), total = recipe_total_steps(&r, 50000);
    CHECK(spe == 12 && total == 119, "batch 4096: %d steps per epoch, %d steps", spe, total);
    // W = 5 epochs * 12 = 60 steps from 0.25 to 1, then linear to lr_end = 0.07 at t = 119
    CHECK_NEAR(recipe_lr_multiplier(&r, 0, total, spe), 0.25, 1e-15, "warm-up start");
    CHECK_NEAR(recipe_lr_multiplier(&r, 30, total, spe), 0.25 + 0.75 * 30 / 60.0, 1e-15, "half-way through warm-up");
    CHECK_NEAR(recipe_lr_multiplier(&r, 60, total, spe), 1.0, 1e-15, "warm-up end");
    CHECK_NEAR(recipe_lr_multiplier(&r, 118, total, spe), 1.0 - 0.93 * 58 / 59.0, 1e-15, "last step");

    double k = 1024.0 * (1.0 + 1.0 / 0.15), lr = 11.5 / k, wd = 0.0153 * 4096 / k;
    StepPlan linear = recipe_step_plan(&r, 60, total, spe);
    CHECK_GROUP(linear, GROUP_CONV, lr, wd / lr, 1, "linear scaling: lr per example");
    recipe_set(&r, "lr_scaling=sqrt", err, sizeof err);
    StepPlan sq = recipe_step_plan(&r, 60, total, spe);
    CHECK_GROUP(sq, GROUP_CONV, lr * 0.5, wd / lr, 1, "sqrt scaling at 4x lr_batch: half the lr, same decay coefficient");
    CHECK(recipe_apply_flag(&r, "--lr-scaling", "none", err, sizeof err) == 1, "--lr-scaling none");
    StepPlan none = recipe_step_plan(&r, 60, total, spe);
    CHECK_GROUP(none, GROUP_BN_BIAS, 64 * lr * 0.25, wd / (64 * lr), 1, "no scaling: lr per step");
    CHECK(recipe_apply_flag(&r, "--bn-wd", "0", err, sizeof err) == 1, "--bn-wd 0");
    none = recipe_step_plan(&r, 60, total, spe);
    CHECK(none.group[GROUP_BN_BIAS].decay == 0 && fabs(none.group[GROUP_CONV].decay / (wd / lr) - 1) < 1e-12,
          "--bn-wd 0 removes the BN biases' decay only");

    CHECK(recipe_apply_flag(&r, "--bn-group", "1024", err, sizeof err) == 1 && r.bn_group == 1024, "--bn-group");
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == 0, "4 groups of 1024: %s", err);
    recipe_set(&r, "bn_group=1000", err, sizeof err);
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "does not divide"), "bn_group 1000: %s", err);
    recipe_set(&r, "bn_group=8192", err, sizeof err);
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1, "a group larger than the batch");
    CHECK(recipe_apply_flag(&r, "--lr-scaling", "cubic", err, sizeof err) == -1 && strstr(err, "linear sqrt none"),
          "--lr-scaling cubic: %s", err);
}

// airbench94-muon: 25 steps per epoch, 200 steps, all lrs decay as 1 - t/200; the
// whitening bias for 75 steps with its own 1 - t/75; decay coefficients sgd_wd / lr.
static void test_muon_schedule(void) {
    const Recipe *r = &RECIPE_94_MUON;
    int spe = recipe_steps_per_epoch(r, 50000), total = recipe_total_steps(r, 50000);
    CHECK(spe == 25 && total == 200, "94-muon: %d steps per epoch, %d steps", spe, total);
    double wd = 2e-6 * 2000;
    StepPlan p = recipe_step_plan(r, 50, total, spe);
    CHECK_GROUP(p, GROUP_CONV, 0.24 * 0.75, 0.0, 1, "muon step 50 convs (Muon)");
    CHECK_GROUP(p, GROUP_HEAD, 0.67 * 0.75, wd / 0.67, 1, "muon step 50 head");
    CHECK_GROUP(p, GROUP_BN_BIAS, 0.053 * 0.75, wd / 0.053, 1, "muon step 50 BN biases");
    CHECK_GROUP(p, GROUP_WHITEN_BIAS, 0.053 * (1 - 50 / 75.0), wd / 0.053, 1, "muon step 50 whitening bias");
    CHECK(p.lookahead_decay < 0, "no lookahead in the Muon recipe");
    p = recipe_step_plan(r, 75, total, spe);
    CHECK(!p.group[GROUP_WHITEN_BIAS].enabled, "the whitening bias is frozen from step 75");
    p = recipe_step_plan(r, 199, total, spe);
    CHECK(p.lookahead_decay < 0, "no final lookahead in the Muon recipe");
}

// airbench96_faster.py (docs/recipe.md): the 96 recipe but for 45 epochs, continuous
// batches, data filtering keeping 512 of 1024 by a 32/64/64 depth-2 proxy that steps on
// every 4th batch, and a whitening bias that trains all 2160 steps. The block is written
// out, so every other field is checked against 96's.
static void test_filter_recipe(void) {
    const Recipe *r = &RECIPE_96_FILTER;
    const char *differ[] = {"epochs", "whiten_bias_epochs", "batch_mode", "filter_keep"};
    for (int i = 0; i < RECIPE_N_FIELDS; i++) {
        const RecipeField *f = &RECIPE_FIELD_TABLE[i];
        int listed = 0;
        for (size_t k = 0; k < sizeof differ / sizeof differ[0]; k++) listed |= !strcmp(f->name, differ[k]);
        CHECK(listed != recipe_fields_equal(r, &RECIPE_96, f), "96-filter's %s %s 96's", f->name,
              listed ? "equals" : "differs from");
    }
    CHECK(r->epochs == 45 && r->whiten_bias_epochs >= 45 && r->batch_mode == BATCH_MODE_CONTINUOUS &&
              r->filter_keep == 512 && r->proxy_widths[0] == 32 && r->proxy_widths[1] == 64 &&
              r->proxy_widths[2] == 64 && r->proxy_depth == 2 && r->proxy_step_every == 4 && !r->proxy_whiten_bias,
          "96-filter's own numbers");
    CHECK(recipe_validate(r, 50000, NULL, 0) == 0, "96-filter is valid");
    int spe = recipe_steps_per_epoch(r, 50000), total = recipe_total_steps(r, 50000);
    CHECK(spe == 48 && total == 2160 && recipe_train_batch(r) == 512 && recipe_train_batch(&RECIPE_96) == 1024,
          "96-filter: %d steps per epoch, %d steps of %d examples", spe, total, recipe_train_batch(r));
    // lr and wd from the loader's batch of 1024, W = 216; the whitening bias trains to the end
    double k = 1024.0 * (1.0 + 1.0 / 0.15), lr = 9.0 / k, wd = 0.012 * 1024 / k;
    StepPlan p = recipe_step_plan(r, 100, total, spe);
    CHECK_GROUP(p, GROUP_CONV, (0.2 + 0.8 * 100 / 216.0) * lr, wd / lr, 1, "96-filter step 100");
    p = recipe_step_plan(r, total - 1, total, spe);
    CHECK_GROUP(p, GROUP_WHITEN_BIAS, lr / 1944.0, wd / lr, 1, "96-filter last step: the whitening bias trains");
    CHECK_NEAR(p.lookahead_decay, pow(0.95, 5), 1e-15, "lookahead after step 2160 with (2160/2160)^3, then w = ema");

    // the proxy: the main numbers at its widths, no lookahead, its whitening bias frozen
    Recipe proxy = recipe_proxy(r);
    CHECK(proxy.widths[0] == 32 && proxy.widths[2] == 64 && proxy.depth == 2 && proxy.filter_keep == 0 &&
              proxy.lookahead_every == 0 && proxy.lr == r->lr && proxy.batch_size == 1024 &&
              proxy.batch_mode == BATCH_MODE_CONTINUOUS, "recipe_proxy");
    StepPlan q = recipe_step_plan(&proxy, 100, total, spe);
    CHECK_GROUP(q, GROUP_BN_BIAS, (0.2 + 0.8 * 100 / 216.0) * 64 * lr, wd / (64 * lr), 1, "proxy step 100 BN biases");
    CHECK(!q.group[GROUP_WHITEN_BIAS].enabled && !recipe_step_plan(&proxy, 0, total, spe).group[GROUP_WHITEN_BIAS]
              .enabled && q.lookahead_decay < 0 && recipe_step_plan(&proxy, total - 1, total, spe).lookahead_decay < 0,
          "the proxy's whitening bias never trains, and it has no lookahead");
    Recipe trained = *r;
    trained.proxy_whiten_bias = 1;
    Recipe trained_proxy = recipe_proxy(&trained);
    CHECK(recipe_step_plan(&trained_proxy, total - 1, total, spe).group[GROUP_WHITEN_BIAS].enabled,
          "proxy_whiten_bias 1: it trains as the main one's");
    CHECK(recipe_proxy_seed(7) != 7 && recipe_proxy_seed(7) != recipe_proxy_seed(8), "the proxy's own init seeds");
}

// Where each step's batch starts in the stream of epochs: epoch mode drops the rest of each
// epoch (50000 - 48 * 1024 = 848 examples), continuous runs on.
static void test_batch_first(void) {
    Recipe r = RECIPE_96_FILTER;
    CHECK(recipe_batch_first(&r, 0, 50000) == 0 && recipe_batch_first(&r, 48, 50000) == 49152 &&
              recipe_batch_first(&r, 2159, 50000) == 2159LL * 1024, "continuous batches start at step * 1024");
    r.batch_mode = BATCH_MODE_EPOCH;
    CHECK(recipe_batch_first(&r, 47, 50000) == 47 * 1024 && recipe_batch_first(&r, 48, 50000) == 50000 &&
              recipe_batch_first(&r, 97, 50000) == 100000 + 1024, "epoch-mode batches start at e * 50000 + b * 1024");
    CHECK(recipe_batch_first(&RECIPE_94, 476, 50000) == 9LL * 50000 + 44 * 1024, "94's last batch + 1");
}

static void test_validate_filter(void) {
    char err[ERR_SIZE] = "";
    Recipe r = RECIPE_96_FILTER;
    r.filter_keep = 1025;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "filter_keep 1025 exceeds batch_size"),
          "filter_keep > batch: %s", err);
    r.filter_keep = 512;
    r.bn_group = 256;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == 0, "groups of 256 divide 1024 and 512: %s", err);
    r.filter_keep = 384;
    r.bn_group = 256;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "filter_keep 384"), "groups of 256 in "
          "384 kept: %s", err);
    r = RECIPE_94_MUON;
    r.filter_keep = 1000;
    CHECK(recipe_validate(&r, 50000, err, sizeof err) == -1 && strstr(err, "not Muon"), "Muon with filtering: %s", err);
}

int main(void) {
    test_variants();
    test_filter_recipe();
    test_batch_first();
    test_validate_filter();
    test_every_field_round_trips();
    test_bad_values();
    test_shorthand_flags();
    test_validate();
    test_fits_fused_bn();
    test_refuses_muon_streams();
    test_sgd_schedule();
    test_muon_schedule();
    test_large_batch_fields();
    test_record_muon_schedule();
    return test_finish("test_recipe");
}
