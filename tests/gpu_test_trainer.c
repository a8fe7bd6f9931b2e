// gpu_test_trainer.c: the GPU trainer against the CPU reference, step by step.
// (Host arrays come from tests/gpu_test.h's tracked allocations; free_all ends each test.)
//
// Same seed, same small network, same batches: the initial weights must be identical,
// the loader's images equal to fp16 rounding, and the logits, loss, gradients and weights
// of the first training steps (lookahead included) close within fp16 tolerances. Needs a
// GPU and CIFAR-10 in $DATA_DIR (default data/cifar10).
#define AIRBENCH_NO_MAIN
#include "../airbench/airbench.c"
#include "gpu_test.h"

enum { BATCH = 64, STEPS = 10, N_TEST = 1000 };
static const int WIDTHS[3] = {16, 32, 32};

// The GPU's flat buffer in the reference's layout: conv weights KRSC -> OIHW.
static float *params_as_reference(const Trainer *t, const float *gpu_flat) {
    const NetLayout *l = &t->layout;
    float *out = host_buffer(l->n_params * sizeof(float));
    memcpy(out, gpu_flat, l->n_params * sizeof(float));
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        for (int o = 0; o < ti->c_out; o++)
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++)
                    for (int ci = 0; ci < ti->c_in; ci++)
                        out[ti->offset + ((size_t)(o * ti->c_in + ci) * 3 + ky) * 3 + kx] =
                            gpu_flat[ti->offset + ((size_t)(o * 3 + ky) * 3 + kx) * ti->c_in + ci];
    }
    return out;
}

// The GPU's gradients in the reference's layout (convs from the fp16 buffer).
static float *grads_as_reference(const Trainer *t) {
    const NetLayout *l = &t->layout;
    float *flat = download_floats(t->grads, l->n_params);
    size_t n_conv = t->pb.end[SEG_CONV] - t->pb.begin[SEG_CONV];
    float *conv = download_halves(t->conv_grads, n_conv);
    memcpy(flat + t->pb.begin[SEG_CONV], conv, n_conv * sizeof(float));
    float *out = params_as_reference(t, flat);
    return out;
}

static void check_tensors(const char *what, const Trainer *t, const float *gpu, const float *ref, double bound,
                          int skip_whiten_w) {
    const NetLayout *l = &t->layout;
    for (int id = skip_whiten_w ? 1 : 0; id < l->n_tensors; id++) {
        const TensorInfo *ti = &l->tensors[id];
        char name[96];
        const char *kinds[] = {"whiten_w", "whiten_b", "conv", "head", "bn_bias"};
        snprintf(name, sizeof name, "%s %s %d.%d", what, kinds[ti->kind], ti->group, ti->conv);
        check_rel(name, gpu + ti->offset, ref + ti->offset, ti->size, bound);
    }
}

// Copies the reference's parameters to the GPU trainer (convs OIHW -> KRSC), as its
// parameters and lookahead state, and refreshes the fp16 conv copy.
static void upload_reference_params(Trainer *t, const RefNet *ref) {
    const NetLayout *l = &t->layout;
    float *flat = host_buffer(l->n_params * sizeof(float));
    memcpy(flat, ref->params, l->n_params * sizeof(float));
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        for (int oc = 0; oc < ti->c_out; oc++)
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++)
                    for (int ci = 0; ci < ti->c_in; ci++)
                        flat[ti->offset + ((size_t)(oc * 3 + ky) * 3 + kx) * ti->c_in + ci] =
                            ref->params[ti->offset + ((size_t)(oc * ti->c_in + ci) * 3 + ky) * 3 + kx];
    }
    CUDA_CHECK(cudaMemcpy(t->params, flat, l->n_params * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->ema_params, flat, l->n_params * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(launch_refresh_conv_half(&t->pb, t->stream));
}

// One training batch on both sides: the same augmented images, then the GPU's forward,
// loss and backward, and the reference's. Returns the reference's loss.
static double forward_backward_both(Trainer *t, RefNet *ref, const Cifar10 *data, uint64_t seed, int step,
                                    int whiten_bias_grad, float *batch, uint8_t *labels, float *ref_logits) {
    const Recipe *r = &t->recipe;
    ref_train_batch(batch, labels, &data->train, data->train.n, r, seed, recipe_batch_first(r, step, data->train.n),
                    NULL, r->batch_size);
    load_batch(t, step, seed, NULL, r->batch_size);
    CUDA_CHECK(cudaMemsetAsync(t->loss_sum, 0, sizeof(double), t->stream));
    train_forward(t, r->batch_size);
    backward(t, r->batch_size, whiten_bias_grad);
    return ref_forward_backward(ref, batch, labels, r->batch_size, (float)r->label_smoothing, whiten_bias_grad,
                                ref_logits, NULL);
}

static void check_first_batch(Trainer *t, RefNet *ref, const float *batch, const uint8_t *labels,
                              const float *ref_logits, double ref_loss) {
    float *x = download_halves(t->acts.x, (size_t)BATCH * CIFAR10_IMAGE_BYTES);
    float max_diff = 0.0f;
    for (size_t i = 0; i < (size_t)BATCH * CIFAR10_IMAGE_BYTES; i++) max_diff = fmaxf(max_diff, fabsf(x[i] - batch[i]));
    printf("  loader max |gpu - ref| %.2e\n", max_diff);
    CHECK(max_diff <= 4e-3f, "loader images differ from the reference's by %g", max_diff);
    uint8_t gpu_labels[BATCH];
    CUDA_CHECK(cudaMemcpy(gpu_labels, t->acts.labels, BATCH, cudaMemcpyDeviceToHost));
    CHECK(!memcmp(gpu_labels, labels, BATCH), "loader labels differ from the reference's");
    float *logits = download_floats(t->acts.logits, BATCH * NET_CLASSES);
    check_rel("logits", logits, ref_logits, BATCH * NET_CLASSES, 2e-2);
    double gpu_loss;
    CUDA_CHECK(cudaMemcpy(&gpu_loss, t->loss_sum, sizeof(double), cudaMemcpyDeviceToHost));
    printf("  loss gpu %.5f ref %.5f\n", gpu_loss, ref_loss);
    CHECK(fabs(gpu_loss - ref_loss) <= 1e-2 * fabs(ref_loss), "loss %f vs reference %f", gpu_loss, ref_loss);
    // fp16 activations and gradients: the conv-weight gradients of a conv followed by BN
    // sum terms that largely cancel, so their fp16 rounding shows (measured on an H100:
    // up to 4.6e-2 for the first conv, <= 5e-3 for every other tensor). SiLU has not run on
    // a GPU yet; this test on the CPU (tests/test_host.sh: the kernels run by tests/emu),
    // which gives the H100's 4.6e-2 for GELU's first conv and its TTA-logit error 1.08e-3,
    // gives 6.3e-2 for SiLU's.
    double grad_bound = t->recipe.activation == ACTIVATION_SILU ? 8e-2 : 5e-2;
    float *grads = grads_as_reference(t);
    check_tensors("grad", t, grads, ref->grads, grad_bound, 1);
}

// A recipe at the test's small widths and batch.
static Recipe small_recipe(Recipe recipe) {
    memcpy(recipe.widths, WIDTHS, sizeof WIDTHS);
    recipe.batch_size = BATCH;
    return recipe;
}

// The reference's initial state from the seed, whitening from the recipe's first images.
static void init_reference(RefNet *ref, const Recipe *recipe, const Cifar10 *data, uint64_t seed) {
    int n = recipe->whiten_images;
    float *whiten_images = host_buffer((size_t)n * CIFAR10_IMAGE_BYTES * sizeof(float));
    ref_normalize_images(whiten_images, data->train.images, n);
    ref_net_init(ref, recipe, seed, whiten_images, n);
}

// --conv-graph's choice (conv_graph.c) at two of airbench94's conv shapes, batch 8: with
// `always`, every direction gets a graph plan that agrees with the legacy call; against a
// legacy call that computes something else (other filters) every config is refused; and
// against one five times as slow (it runs five times), a graph plan wins without `always`.
typedef struct {
    Convs *convs;
    const ConvPlan *plan;
    const ConvTrial *trial;
    const void *other_w;  // NULL: the trial's filters
    int repeats;
} TestLegacy;

static void test_legacy_forward(void *ctx) {
    const TestLegacy *l = ctx;
    for (int i = 0; i < l->repeats; i++)
        conv_forward(l->convs, l->plan, l->trial->in0, l->other_w ? l->other_w : l->trial->in1, l->trial->out);
}

static void test_conv_graph_choice(void) {
    enum { CHOICE_BATCH = 8 };
    static const int widths[3] = {64, 256, 256};
    NetLayout layout;
    net_layout_init(&layout, widths, 2);
    int batch = CHOICE_BATCH;
    size_t largest = conv_largest_operand(&layout, batch);
    void *x = dev_alloc(largest * 2), *w = dev_alloc(largest * 2), *y = dev_alloc(largest * 2);
    void *other_w = dev_alloc(largest * 2), *workspace = dev_alloc((size_t)64 << 20);
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    Convs *c = convs_create(stream, CONV_ALGO_FIND, NULL, &layout, &batch, 1, x, w, y);
    cudnnHandle_t handle;
    CUDNN_CHECK(cudnnCreate(&handle));
    CUDNN_CHECK(cudnnSetStream(handle, stream));
    uint16_t *pattern = conv_graph_pattern(largest + 2);
    CUDA_CHECK(cudaMemcpy(other_w, pattern + 2, largest * 2, cudaMemcpyHostToDevice));  // other filters
    ConvGraphSite site = {.handle = {handle, handle, handle}, .workspace = {workspace, workspace, workspace},
                          .workspace_bytes = (int64_t)64 << 20, .x = x, .w = w, .y = y,
                          .device = fusion_device_from_handle(handle), .pattern = pattern};
    const int convs[2][2] = {{0, 0}, {1, 0}};
    for (int k = 0; k < 2; k++) {
        ConvPlan p = *conv_plan(c, batch, convs[k][0], convs[k][1]);  // a copy: its graphs are freed here
        printf("--conv-graph at conv %d.%d (%d>%d at %dx%d, batch %d):", convs[k][0], convs[k][1], p.c_in, p.c_out,
               p.side, p.side, batch);
        char choice[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN];
        conv_choose_graphs(c, &p, &site, 1, NULL, choice);
        for (int d = 0; d < N_CONV_DIRECTIONS; d++) {
            printf(" %s %s", CONV_DIRECTION_NAMES[d], choice[d]);
            CHECK(p.graph[d] && choice[d][0] == 'g', "always: conv %d.%d's %s got no graph plan", convs[k][0],
                  convs[k][1], CONV_DIRECTION_NAMES[d]);
            conv_graph_free(p.graph[d]);
            p.graph[d] = NULL;
        }
        printf("\n");
        FusionShape shape = {.batch = batch, .c_in = p.c_in, .c_out = p.c_out, .side = p.side};
        CHECK(!conv_graph_create(site.device, CONV_FORWARD, &shape, 1000, site.workspace_bytes),
              "a plan was made of config 1000 of the heuristics' list");
        size_t pixels = (size_t)batch * p.side * p.side;
        ConvTrial trial = {.handle = handle, .stream = stream, .workspace = workspace,
                           .workspace_bytes = site.workspace_bytes, .in0 = x, .in1 = w,
                           .in_count = {pixels * p.c_in, (size_t)p.c_out * p.c_in * 9}, .pattern = pattern, .out = y,
                           .out_count = pixels * p.c_out, .legacy = test_legacy_forward};
        TestLegacy wrong = {c, &p, &trial, other_w, 1}, slow = {c, &p, &trial, NULL, 5};
        ConvChoiceReport r;
        trial.legacy_ctx = &wrong;
        ConvGraph *g = conv_graph_choose(site.device, CONV_FORWARD, &shape, &trial, 1, &r);
        CHECK(!g && r.usable >= 1 && r.refused == r.usable,
              "against other numbers: %s, %d configs timed, %d refused", g ? "a graph plan kept" : "none kept",
              r.usable, r.refused);
        conv_graph_free(g);
        trial.legacy_ctx = &slow;
        g = conv_graph_choose(site.device, CONV_FORWARD, &shape, &trial, 0, &r);
        printf("  forward against a legacy call run 5 times (%.1f us): %s %.1f us, largest difference %.2g\n",
               r.legacy_us, g ? "graph plan" : "legacy", r.chosen_us, r.difference);
        CHECK(g && r.chosen_us < r.legacy_us && r.difference <= 1e-2 && r.refused == 0,
              "against a slow legacy call: %s at %.1f us (legacy %.1f us), difference %.2g, %d refused",
              g ? "a graph plan" : "none", r.chosen_us, r.legacy_us, r.difference, r.refused);
        conv_graph_free(g);
    }
    free(pattern);
    cudnnBackendDestroyDescriptor(site.device);
    CUDNN_CHECK(cudnnDestroy(handle));
    convs_free(c);
    CUDA_CHECK(cudaStreamDestroy(stream));
    free_all();
}

// Nesterov SGD with lookahead for STEPS steps on both sides, then TTA logits; with
// bn_group > 0, BatchNorm statistics per group of that many images (simulated workers);
// `activation` after the ConvGroups' BNs.
static void test_sgd_steps(const Cifar10 *data, int bn_group, Activation activation, int fused_bn,
                           ConvGraphChoice conv_graph) {
    Recipe recipe = small_recipe(RECIPE_94);
    recipe.bn_group = bn_group;
    recipe.activation = activation;
    const uint64_t seed = 7;
    Trainer *t = trainer_create(&recipe, data, data->train.n, N_TEST, CONV_ALGO_FIND, NULL);
    trainer_use_conv_graph(t, conv_graph, NULL);
    if (fused_bn) trainer_use_fused_bn(t);
    RefNet *ref = ref_net_create(&recipe);
    const NetLayout *l = &t->layout;
    int total = recipe_total_steps(&recipe, data->train.n), spe = recipe_steps_per_epoch(&recipe, data->train.n);
    int total_directions, graph_directions = convs_graph_count(t->convs, l, BATCH, &total_directions);
    printf("airbench94 recipe: widths %d,%d,%d, batch %d, BN groups of %d, %s%s", WIDTHS[0], WIDTHS[1], WIDTHS[2],
           BATCH, bn_group ? bn_group : BATCH, RECIPE_ACTIVATIONS[activation], fused_bn ? ", --fused-bn on" : "");
    if (conv_graph)
        printf(", --conv-graph %s (%d of %d conv directions)", CONV_GRAPH_CHOICES[conv_graph], graph_directions,
               total_directions);
    printf(", %d steps compared\n", STEPS);
    CHECK(conv_graph != CONV_GRAPH_ALWAYS || graph_directions == total_directions,
          "--conv-graph always: only %d of the %d conv directions run graph plans", graph_directions, total_directions);

    // Initialization: identical weights from the shared RNG; whitening from the patches.
    init_reference(ref, &recipe, data, seed);
    init_params(t, seed);
    init_whitening(t);
    float *gpu_flat = download_floats(t->params, l->n_params);
    float *gpu_params = params_as_reference(t, gpu_flat);
    int identical = 1;
    for (size_t i = l->tensors[1].offset; i < l->n_params; i++) identical &= gpu_params[i] == ref->params[i];
    CHECK(identical, "initial weights (all but the whitening conv) differ from the reference's");
    check_rel("whitening weights", gpu_params, ref->params, l->tensors[0].size, 1e-4);
    upload_reference_params(t, ref);  // from here on both start from the same state

    float *batch = host_buffer((size_t)BATCH * CIFAR10_IMAGE_BYTES * sizeof(float));
    uint8_t labels[BATCH];
    float ref_logits[BATCH * NET_CLASSES];
    for (int step = 0; step < STEPS; step++) {  // both follow the one schedule, lookahead included
        StepPlan plan = recipe_step_plan(&recipe, step, total, spe);
        double ref_loss = forward_backward_both(t, ref, data, seed, step, plan.group[GROUP_WHITEN_BIAS].enabled,
                                                batch, labels, ref_logits);
        if (step == 0) check_first_batch(t, ref, batch, labels, ref_logits, ref_loss);
        optimizer_step(t, &plan);
        ref_optimizer_step(ref, &recipe, &plan);
    }
    // The first group's BN biases and the whitening bias move at 64x the learning rate (or
    // see the first conv's noisiest gradient): after 10 steps they differ by 4-6% (H100);
    // every other tensor by < 0.3%.
    float *flat = download_floats(t->params, l->n_params);
    float *params = params_as_reference(t, flat);
    check_tensors("after steps:", t, params, ref->params, 1e-1, 0);
    float *running = download_floats(t->running, t->n_running);
    check_rel("running stats", running, ref->running, t->n_running, 3e-2);

    // Evaluation from the same state: TTA logits (N_TEST fits one evaluation batch).
    upload_reference_params(t, ref);
    CUDA_CHECK(cudaMemcpy(t->running, ref->running, t->n_running * sizeof(float), cudaMemcpyHostToDevice));
    evaluate_async(t, 2);
    double gpu_acc = read_accuracy(t);
    float *test_images = host_buffer((size_t)N_TEST * CIFAR10_IMAGE_BYTES * sizeof(float));
    float *logits = host_buffer((size_t)N_TEST * NET_CLASSES * sizeof(float));
    ref_normalize_images(test_images, data->test.images, N_TEST);
    ref_tta_logits(ref, test_images, N_TEST, 2, TTA_WEIGHTS_AIRBENCH, logits);
    float *gpu_logits = download_floats(t->acts.logits, (size_t)N_TEST * NET_CLASSES);
    check_rel("TTA logits", gpu_logits, logits, (size_t)N_TEST * NET_CLASSES, 2e-2);
    printf("  TTA accuracy gpu %.4f\n", gpu_acc);
    ref_net_free(ref);
    trainer_free(t);
    free_all();
}

// --fused-bn on against off, one batch from the same state: only the dgrads and the
// BatchNorm reductions differ, in where fp16 rounds (the fused dgrad keeps its output in
// fp32 and writes dz in fp16; the unfused one writes d_out in fp16), so every gradient must
// agree far more closely than either does with the fp32 reference.
// Measured on the CPU (tests/host): at most 3.3e-3 (a BN bias; the convs' 4e-4 to 9e-4; the
// layers above every fused dgrad 0), for GELU and SiLU alike; the fp32 reference is 4.6e-2
// from either at the first conv.
static void test_fused_gradients(const Cifar10 *data, Recipe recipe, double bound) {
    recipe = small_recipe(recipe);
    const uint64_t seed = 13;
    Trainer *t = trainer_create(&recipe, data, data->train.n, N_TEST, CONV_ALGO_FIND, NULL);
    printf("%s recipe: one batch's gradients with --fused-bn on against off\n", recipe.name);
    init_params(t, seed);
    init_whitening(t);
    float *grads[2];
    for (int fused = 0; fused < 2; fused++) {
        if (fused) trainer_use_fused_bn(t);
        load_batch(t, 0, seed, NULL, recipe.batch_size);
        CUDA_CHECK(cudaMemsetAsync(t->loss_sum, 0, sizeof(double), t->stream));
        train_forward(t, recipe.batch_size);
        backward(t, recipe.batch_size, 1);
        grads[fused] = grads_as_reference(t);
    }
    check_tensors("fused against unfused: grad", t, grads[1], grads[0], bound, 1);
    trainer_free(t);
    free_all();
}

// Every conv's update (after - before) against the reference's, from the same state.
static void check_conv_updates(const Trainer *t, const float *gpu_after, const float *ref_after,
                               const float *before, double bound) {
    const NetLayout *l = &t->layout;
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        float *gpu_delta = host_buffer(ti->size * sizeof(float)), *ref_delta = host_buffer(ti->size * sizeof(float));
        for (size_t i = 0; i < ti->size; i++) {
            gpu_delta[i] = gpu_after[ti->offset + i] - before[ti->offset + i];
            ref_delta[i] = ref_after[ti->offset + i] - before[ti->offset + i];
        }
        char name[96];
        snprintf(name, sizeof name, "muon update conv %d.%d (%dx%d)", ti->group, ti->conv, ti->c_out,
                 (int)(ti->size / ti->c_out));
        check_rel(name, gpu_delta, ref_delta, ti->size, bound);
    }
}

// One Muon step against the reference's, like with like: the reference takes the GPU's
// gradients (fp16 for the convs) and rounds to bf16 where the GPU does (muon_bf16), so
// what is left is accumulation order. Against the fp32 reference with its own fp32
// gradients the step differed by 2.0-2.7% on an H100 at 790450e, which this no longer
// mixes in. Bound 2e-3 on each conv's update: the CPU measures the accumulation-order
// spread of bf16 Newton-Schulz at these shapes at <= 5.1e-5 (test_reference, "NS bf16
// accumulation-order spread"; 7.7e-4 at airbench94's 256x2304), and the GPU adds its own
// fp32 sums of squares.
static void test_muon_step(const Cifar10 *data) {
    Recipe recipe = small_recipe(RECIPE_94_MUON);
    const uint64_t seed = 11;
    Trainer *t = trainer_create(&recipe, data, data->train.n, N_TEST, CONV_ALGO_FIND, NULL);
    RefNet *ref = ref_net_create(&recipe);
    const NetLayout *l = &t->layout;
    int total = recipe_total_steps(&recipe, data->train.n);
    StepPlan plan = recipe_step_plan(&recipe, 0, total, recipe_steps_per_epoch(&recipe, data->train.n));
    printf("airbench94-muon recipe: one step, widths %d,%d,%d, batch %d\n", WIDTHS[0], WIDTHS[1], WIDTHS[2], BATCH);
    init_reference(ref, &recipe, data, seed);
    upload_reference_params(t, ref);
    CUDA_CHECK(cudaMemset(t->momentum, 0, l->n_params * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(t->running, ref->running, t->n_running * sizeof(float), cudaMemcpyHostToDevice));
    float *batch = host_buffer((size_t)BATCH * CIFAR10_IMAGE_BYTES * sizeof(float));
    uint8_t labels[BATCH];
    float ref_logits[BATCH * NET_CLASSES];
    forward_backward_both(t, ref, data, seed, 0, 1, batch, labels, ref_logits);
    float *gpu_grads = grads_as_reference(t);
    memcpy(ref->grads, gpu_grads, l->n_params * sizeof(float));
    ref->muon_bf16 = 1;
    float *before = host_buffer(l->n_params * sizeof(float));
    memcpy(before, ref->params, l->n_params * sizeof(float));
    optimizer_step(t, &plan);
    ref_optimizer_step(ref, &recipe, &plan);
    float *flat = download_floats(t->params, l->n_params);
    float *params = params_as_reference(t, flat);
    check_conv_updates(t, params, ref->params, before, 2e-3);
    // the SGD groups see the same gradients in fp32 on both sides
    for (int id = 0; id < l->n_tensors; id++) {
        const TensorInfo *ti = &l->tensors[id];
        if (ti->kind == TENSOR_CONV) continue;
        char name[96];
        snprintf(name, sizeof name, "muon step: SGD tensor %d", id);
        check_rel(name, params + ti->offset, ref->params + ti->offset, ti->size, 1e-5);
    }
    ref_net_free(ref);
    trainer_free(t);
    free_all();
}

// Selective TTA (the record's evaluation: the 25% least sure test images get the 6 views,
// weighted uniformly) from the same state on both sides. The GPU ranks its own fp16-path
// logits, so an image whose top probability is within fp16 noise of the k-th may swap in
// or out: the chosen sets must agree on at least 95% of the k, and the final logits
// within the TTA logits' bound.
static void test_selective_tta(const Cifar10 *data) {
    Recipe recipe = small_recipe(RECIPE_94);
    recipe.tta_select_frac = 0.25;
    recipe.tta_weights = TTA_WEIGHTS_UNIFORM;
    Trainer *t = trainer_create(&recipe, data, data->train.n, N_TEST, CONV_ALGO_FIND, NULL);
    RefNet *ref = ref_net_create(&recipe);
    init_reference(ref, &recipe, data, 3);
    upload_reference_params(t, ref);
    CUDA_CHECK(cudaMemcpy(t->running, ref->running, t->n_running * sizeof(float), cudaMemcpyHostToDevice));
    evaluate_async(t, 2);
    double gpu_acc = read_accuracy(t);
    int k = recipe_tta_images(&recipe, N_TEST);
    float *test_images = HOST_FLOATS((size_t)N_TEST * CIFAR10_IMAGE_BYTES);
    float *logits = HOST_FLOATS((size_t)N_TEST * NET_CLASSES), *sure = HOST_FLOATS(N_TEST);
    ref_normalize_images(test_images, data->test.images, N_TEST);
    ref_evaluate_logits(ref, test_images, N_TEST, &recipe, logits);
    check_rel("selective TTA logits", download_floats(t->test_logits, (size_t)N_TEST * NET_CLASSES), logits,
              (size_t)N_TEST * NET_CLASSES, 2e-2);
    int *gpu_chosen = host_buffer((size_t)k * sizeof(int)), *ref_chosen = host_buffer((size_t)k * sizeof(int));
    download(gpu_chosen, t->tta_indices, (size_t)k * sizeof(int));
    float *plain = HOST_FLOATS((size_t)N_TEST * NET_CLASSES);
    ref_forward(ref, test_images, N_TEST, 0, plain);
    ref_top_probabilities(sure, plain, N_TEST);
    ref_select_lowest(ref_chosen, sure, N_TEST, k);
    int common = 0;
    for (int i = 0, j = 0; i < k && j < k;) {  // both lists ascend
        if (gpu_chosen[i] == ref_chosen[j]) common++, i++, j++;
        else if (gpu_chosen[i] < ref_chosen[j]) i++;
        else j++;
    }
    printf("  selective TTA: %d of %d chosen images shared with the reference, accuracy gpu %.4f\n", common, k,
           gpu_acc);
    CHECK(common >= 0.95 * k, "selective TTA: only %d of the %d chosen images agree with the reference", common, k);
    ref_net_free(ref);
    trainer_free(t);
    free_all();
}

// Data filtering (96-filter at small widths, batch 64, 32 kept): the proxy scores
// FILTER_BATCHES batches and steps on every 4th, then the main network (depth 3) takes a
// step on each of those batches' kept examples. Like with like: at each batch the
// reference scores with its own proxy, and the GPU's choice of kept rows, compared with the
// reference's, is what both then use (an example whose loss is within fp16 noise of the cut
// may fall either side).
enum { FILTER_BATCHES = 10 };

// The reference's proxy state after scoring batch `step` against the GPU's: per-example
// losses within fp16 tolerance, the kept rows mostly the same; returns the shared count.
static int compare_proxy_batch(Trainer *t, RefNet *ref_proxy, const Cifar10 *data, uint64_t seed, int step,
                               float *batch, uint8_t *labels, int *ref_kept) {
    const Recipe *r = &t->recipe;
    int n = r->batch_size, keep = r->filter_keep;
    ref_train_batch(batch, labels, &data->train, data->train.n, r, seed, recipe_batch_first(r, step, data->train.n),
                    NULL, n);
    float *losses = HOST_FLOATS(n);
    ref_proxy_score(ref_proxy, batch, labels, n, (float)r->label_smoothing, losses);
    ref_select_highest(ref_kept, losses, n, keep);
    proxy_score(t, step, seed);
    char what[64];
    snprintf(what, sizeof what, "proxy per-example losses, batch %d", step);
    check_rel(what, download_floats(t->proxy->example_losses, n), losses, n, 2e-2);
    int *gpu_kept = host_buffer((size_t)keep * sizeof(int)), common = 0;
    download(gpu_kept, t->kept_rows + (size_t)step * keep, (size_t)keep * sizeof(int));
    for (int i = 0, j = 0; i < keep && j < keep;) {  // both lists ascend
        if (gpu_kept[i] == ref_kept[j]) common++, i++, j++;
        else if (gpu_kept[i] < ref_kept[j]) i++;
        else j++;
    }
    memcpy(ref_kept, gpu_kept, (size_t)keep * sizeof(int));
    return common;
}

static void test_filter_steps(const Cifar10 *data) {
    Recipe recipe = small_recipe(RECIPE_96_FILTER);
    recipe.filter_keep = BATCH / 2;
    const int proxy_widths[3] = {8, 16, 16};
    memcpy(recipe.proxy_widths, proxy_widths, sizeof proxy_widths);
    const uint64_t seed = 5;
    Trainer *t = trainer_create(&recipe, data, data->train.n, N_TEST, CONV_ALGO_FIND, NULL);
    Recipe proxy_recipe = recipe_proxy(&recipe);
    RefNet *ref = ref_net_create(&recipe), *ref_proxy = ref_net_create(&proxy_recipe);
    int total = recipe_total_steps(&recipe, data->train.n), spe = recipe_steps_per_epoch(&recipe, data->train.n);
    int keep = recipe.filter_keep;
    printf("airbench96-filter recipe: widths %d,%d,%d, proxy %d,%d,%d, batch %d keeping %d, %d proxy batches "
           "then as many main steps\n", WIDTHS[0], WIDTHS[1], WIDTHS[2], proxy_widths[0], proxy_widths[1],
           proxy_widths[2], BATCH, keep, FILTER_BATCHES);
    init_reference(ref, &recipe, data, seed);
    init_reference(ref_proxy, &proxy_recipe, data, recipe_proxy_seed(seed));
    init_params(t, seed);
    init_params(t->proxy, recipe_proxy_seed(seed));
    upload_reference_params(t, ref);
    upload_reference_params(t->proxy, ref_proxy);
    CUDA_CHECK(cudaMemset(t->proxy->loss_sum, 0, sizeof(double)));
    CUDA_CHECK(cudaMemset(t->proxy->correct, 0, sizeof(int)));

    float *batch = host_buffer((size_t)BATCH * CIFAR10_IMAGE_BYTES * sizeof(float));
    uint8_t labels[BATCH];
    int *kept = host_buffer((size_t)FILTER_BATCHES * keep * sizeof(int)), common = 0;
    for (int step = 0; step < FILTER_BATCHES; step++) {
        int *step_kept = kept + (size_t)step * keep;
        common += compare_proxy_batch(t, ref_proxy, data, seed, step, batch, labels, step_kept);
        if (step % recipe.proxy_step_every) continue;
        StepPlan plan = recipe_step_plan(&proxy_recipe, step, total, spe);
        proxy_step(t, step, &plan);
        ref_proxy_step(ref_proxy, &proxy_recipe, &plan, batch, labels, BATCH, step_kept, keep);
    }
    printf("  %d of %d kept rows shared with the reference\n", common, FILTER_BATCHES * keep);
    CHECK(common >= 0.9 * FILTER_BATCHES * keep, "only %d of the %d kept rows agree with the reference", common,
          FILTER_BATCHES * keep);
    // 3 proxy steps: the BN biases move at 64x the lr (see test_sgd_steps)
    float *proxy_params = params_as_reference(t->proxy, download_floats(t->proxy->params, t->proxy->layout.n_params));
    check_tensors("proxy after steps:", t->proxy, proxy_params, ref_proxy->params, 1e-1, 0);
    float *whiten_bias = proxy_params + t->proxy->layout.tensors[1].offset, largest = 0.0f;
    for (int i = 0; i < WHITEN_WIDTH; i++) largest = fmaxf(largest, fabsf(whiten_bias[i]));
    CHECK(largest == 0.0f, "the proxy's whitening bias moved (|b| up to %g)", largest);

    // The main network on the kept examples: the same images (from the GPU's kept rows)
    for (int step = 0; step < FILTER_BATCHES; step++) {
        const int *step_kept = kept + (size_t)step * keep;
        StepPlan plan = recipe_step_plan(&recipe, step, total, spe);
        ref_train_batch(batch, labels, &data->train, data->train.n, &recipe, seed,
                        recipe_batch_first(&recipe, step, data->train.n), step_kept, keep);
        Options o = {.seed = seed};
        train_step(t, step, total, &o);
        if (step == 0) {
            float *x = download_halves(t->acts.x, (size_t)keep * CIFAR10_IMAGE_BYTES);
            float max_diff = 0.0f;
            for (size_t i = 0; i < (size_t)keep * CIFAR10_IMAGE_BYTES; i++) max_diff = fmaxf(max_diff, fabsf(x[i] - batch[i]));
            uint8_t gpu_labels[BATCH];
            download(gpu_labels, t->acts.labels, keep);
            CHECK(max_diff <= 4e-3f && !memcmp(gpu_labels, labels, keep), "the kept examples' images (max diff %g) "
                  "or labels differ from the reference's", max_diff);
        }
        ref_train_step(ref, &recipe, &plan, batch, labels, keep, NULL);
    }
    float *params = params_as_reference(t, download_floats(t->params, t->layout.n_params));
    check_tensors("main after filtered steps:", t, params, ref->params, 1e-1, 0);
    ref_net_free(ref);
    ref_net_free(ref_proxy);
    trainer_free(t);
    free_all();
}

// Everything a run leaves in a network's state, as bytes: weights, momentum, lookahead and
// BN running state.
static uint8_t *network_state(const Trainer *t, size_t *bytes) {
    size_t p = t->layout.n_params * sizeof(float), r = t->n_running * sizeof(float);
    *bytes = 3 * p + 2 * r;
    uint8_t *state = host_buffer(*bytes);
    download(state, t->params, p);
    download(state + p, t->momentum, p);
    download(state + 2 * p, t->ema_params, p);
    download(state + 3 * p, t->running, r);
    download(state + 3 * p + r, t->ema_running, r);
    return state;
}

// The ways test_run_modes runs the same short run.
enum { RUN_PLAIN, RUN_GRAPHS, RUN_STREAMS, RUN_BOTH, RUN_MODES };
static const char *const RUN_MODE_NAMES[RUN_MODES] = {"as it is", "with CUDA graphs",
                                                      "with the filter gradients (and each Muon group) on "
                                                      "streams of their own",
                                                      "with both"};

// Sets t (and its proxy) up for `mode`: graphs made anew or dropped; the filter stream and a
// Muon recipe's group streams, once set, stay (only the main network has them).
static void set_run_mode(Trainer *t, int mode) {
    for (Trainer *net = t; net; net = net == t ? t->proxy : NULL) {
        step_graphs_free(net->graphs);
        net->graphs = mode == RUN_GRAPHS || mode == RUN_BOTH ? step_graphs_create() : NULL;
    }
    if (mode == RUN_STREAMS) {
        trainer_use_filter_stream(t);
        if (t->recipe.muon) muon_use_streams(t);
    }
}

// A whole short run (init, whitening, proxy training, steps, evaluation) in each mode: the
// graphs replay the same kernels with the same arguments, the filter stream runs the same
// convolutions on the same buffers and the Muon group streams the same GEMMs, ordered by
// events, so the final states, losses and accuracies must be identical to the bit. The
// recipe's schedule changes shape within the run: the whitening bias freezes, lookahead
// fires, and (Muon) renormalization comes and goes. On the CPU, HOST_STREAMS=late and early
// run the streams in adversarial orders (tests/host/cuda_host.c), so that a missing event
// changes the numbers. With fused_bn,
// every mode runs with --fused-bn on; with conv_graph, with --conv-graph so.
static void test_run_modes(const Cifar10 *data, Recipe recipe, int fused_bn, ConvGraphChoice conv_graph) {
    enum { GRAPH_STEPS = 24, GRAPH_TEST_IMAGES = 200 };
    recipe = small_recipe(recipe);
    recipe.epochs = (double)GRAPH_STEPS * BATCH / data->train.n;
    recipe.whiten_bias_epochs = 7.0 * BATCH / data->train.n;  // frozen from step 7 on
    if (recipe.filter_keep) {
        recipe.filter_keep = BATCH / 2;
        const int proxy_widths[3] = {8, 16, 16};
        memcpy(recipe.proxy_widths, proxy_widths, sizeof proxy_widths);
    }
    Trainer *t = trainer_create(&recipe, data, data->train.n, GRAPH_TEST_IMAGES, CONV_ALGO_FIND, NULL);
    trainer_use_conv_graph(t, conv_graph, NULL);
    if (fused_bn) trainer_use_fused_bn(t);
    Options o = {.seed = 3};
    size_t bytes[RUN_MODES], proxy_bytes[RUN_MODES] = {0};
    uint8_t *state[RUN_MODES], *proxy_state[RUN_MODES] = {NULL};
    RunResult run[RUN_MODES];
    long made = 0, updated = 0, proxy_made = 0, proxy_updated = 0;
    for (int mode = 0; mode < RUN_MODES; mode++) {
        set_run_mode(t, mode);
        run[mode] = run_training(t, &o, -1, 0);
        state[mode] = network_state(t, &bytes[mode]);
        if (t->proxy) proxy_state[mode] = network_state(t->proxy, &proxy_bytes[mode]);
        if (mode == RUN_GRAPHS) {
            made = t->graphs->instantiations, updated = t->graphs->updates;
            if (t->proxy) proxy_made = t->proxy->graphs->instantiations, proxy_updated = t->proxy->graphs->updates;
        }
    }
    int total = recipe_total_steps(&recipe, data->train.n);
    printf("%s recipe%s%s with CUDA graphs: %d steps, %ld graphs made, %ld updated", recipe.name,
           fused_bn ? " (--fused-bn on)" : "", conv_graph ? " (--conv-graph always)" : "", total, made, updated);
    if (t->proxy) printf("; proxy: %ld made, %ld updated", proxy_made, proxy_updated);
    printf("\n");
    for (int mode = 1; mode < RUN_MODES; mode++) {
        const char *how = RUN_MODE_NAMES[mode];
        CHECK(!memcmp(state[0], state[mode], bytes[0]), "%s: the network state after a run %s differs from the "
              "one as it is", recipe.name, how);
        CHECK(!t->proxy || !memcmp(proxy_state[0], proxy_state[mode], proxy_bytes[0]),
              "%s: the proxy's state after a run %s differs from the one as it is", recipe.name, how);
        CHECK(run[0].accuracy == run[mode].accuracy && run[0].n_epochs == run[mode].n_epochs &&
                  run[0].epochs[0].train_loss == run[mode].epochs[0].train_loss,
              "%s: accuracy %.6f / %.6f or first-epoch loss %.9g / %.9g differ as it is and %s", recipe.name,
              run[0].accuracy, run[mode].accuracy, run[0].epochs[0].train_loss, run[mode].epochs[0].train_loss, how);
    }
    // every step after its shape's first only updates a graph; at most 8 shapes (step_shape)
    CHECK(made >= 2 && made <= 8 && made + updated == total, "%s: %ld graphs made and %ld updated for %d steps",
          recipe.name, made, updated, total);
    for (int i = 0; i < RUN_MODES; i++) free(run[i].epochs);
    trainer_free(t);
    free_all();
}

int main(void) {
    const char *data_dir = getenv("DATA_DIR") ? getenv("DATA_DIR") : "data/cifar10";
    char gpu_name[256];
    int major, minor;
    describe_gpu(gpu_name, sizeof gpu_name, &major, &minor);
    printf("GPU %s\n", gpu_name);
    Cifar10 data;
    char err[512];
    if (cifar10_load(&data, data_dir, err, sizeof err)) die(1, "%s", err);
    data.test.n = N_TEST;
    test_conv_graph_choice();
    test_sgd_steps(&data, 0, ACTIVATION_GELU, 0, CONV_GRAPH_OFF);
    test_sgd_steps(&data, BATCH / 4, ACTIVATION_GELU, 0, CONV_GRAPH_OFF);
    test_sgd_steps(&data, 0, ACTIVATION_SILU, 0, CONV_GRAPH_OFF);
    test_sgd_steps(&data, 0, ACTIVATION_GELU, 1, CONV_GRAPH_OFF);
    test_sgd_steps(&data, 0, ACTIVATION_SILU, 1, CONV_GRAPH_OFF);
    test_sgd_steps(&data, 0, ACTIVATION_GELU, 0, CONV_GRAPH_ALWAYS);
    test_fused_gradients(&data, RECIPE_94, 1e-2);
    test_fused_gradients(&data, RECIPE_94_RECORD, 1e-2);
    test_muon_step(&data);
    test_selective_tta(&data);
    test_filter_steps(&data);
    test_run_modes(&data, RECIPE_94, 0, CONV_GRAPH_OFF);
    test_run_modes(&data, RECIPE_94_RECORD, 0, CONV_GRAPH_OFF);
    test_run_modes(&data, RECIPE_96_FILTER, 0, CONV_GRAPH_OFF);
    test_run_modes(&data, RECIPE_94_RECORD, 1, CONV_GRAPH_OFF);
    test_run_modes(&data, RECIPE_96_FILTER, 0, CONV_GRAPH_ALWAYS);
    cifar10_free(&data);
    return test_finish("gpu_test_trainer");
}
