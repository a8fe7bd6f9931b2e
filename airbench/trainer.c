// trainer.c: the trainer's state set up and torn down (trainer.h): the GPU buffers of the
// parameters, activations and backward scratch, the data uploaded once, the stream, the
// cuBLAS handle and the convolution plans, and with data filtering the proxy network.
#include <stdlib.h>
#include <time.h>

#include "trainer.h"

// Activations for batches of up to n images, BN statistics for up to bn_groups groups.
static void alloc_activations(Activations *a, const NetLayout *l, int n, int bn_groups) {
    size_t b = (size_t)n;
    a->x = gpu_alloc(b * 3 * 32 * 32 * sizeof(__half));
    a->whiten_out = gpu_alloc(b * WHITEN_SIDE * WHITEN_SIDE * WHITEN_WIDTH * sizeof(__half));
    for (int g = 0; g < 3; g++) {
        size_t c = l->widths[g], in_side = net_group_in_side(g), side = net_group_out_side(g);
        a->pooled[g] = gpu_alloc(b * side * side * c * sizeof(__half));
        a->pool_argmax[g] = gpu_alloc(b * side * side * c);
        for (int j = 0; j < l->depth; j++) {
            size_t conv_rows = j == 0 ? b * in_side * in_side : b * side * side;
            a->conv_out[g][j] = gpu_alloc(conv_rows * c * sizeof(__half));
            a->act[g][j] = gpu_alloc(b * side * side * c * sizeof(__half));
            a->bn_mean[g][j] = gpu_alloc(bn_groups * c * sizeof(float));
            a->bn_rstd[g][j] = gpu_alloc(bn_groups * c * sizeof(float));
        }
    }
    a->features = gpu_alloc(b * l->widths[2] * sizeof(float));
    a->feature_argmax = gpu_alloc(b * l->widths[2]);
    a->logits = gpu_alloc(b * NET_CLASSES * sizeof(float));
    a->labels = gpu_alloc(b);
}

static void free_activations(Activations *a, int depth) {
    void *buffers[] = {a->x, a->whiten_out, a->features, a->feature_argmax, a->logits, a->labels};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) cudaFree(buffers[i]);
    for (int g = 0; g < 3; g++) {
        cudaFree(a->pooled[g]);
        cudaFree(a->pool_argmax[g]);
        for (int j = 0; j < depth; j++) {
            void *layer[] = {a->conv_out[g][j], a->act[g][j], a->bn_mean[g][j], a->bn_rstd[g][j]};
            for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++) cudaFree(layer[i]);
        }
    }
}

// The flat buffers in net.h's order and their segments (kernels.h): whitening bias, convs,
// head, BN biases. The segments come first: the conv buffers' sizes are read from them.
static void alloc_params(Trainer *t) {
    const NetLayout *l = &t->layout;
    ParamBuffers *pb = &t->pb;
    net_segments(l, pb->begin, pb->end);
    size_t n = l->n_params, n_conv = pb->end[SEG_CONV] - pb->begin[SEG_CONV];
    t->params = gpu_alloc(n * sizeof(float));
    t->momentum = gpu_alloc(n * sizeof(float));
    t->grads = gpu_alloc(n * sizeof(float));
    t->ema_params = gpu_alloc(n * sizeof(float));
    t->conv_half = gpu_alloc(n_conv * sizeof(__half));
    t->conv_grads = gpu_alloc(n_conv * sizeof(__half));
    for (int g = 0; g < 3; g++) t->n_running += 2 * (size_t)l->depth * l->widths[g];
    t->running = gpu_alloc(t->n_running * sizeof(float));
    t->ema_running = gpu_alloc(t->n_running * sizeof(float));
    pb->params = t->params;
    pb->momentum = t->momentum;
    pb->grads = t->grads;
    pb->conv_grads = t->conv_grads;
    pb->conv_half = t->conv_half;
}

// The backward scratch; d_act and d_conv hold the largest activation (conv (0, 0)'s).
// Values of the largest activation (and conv-output gradient) of `batch` images: the
// whitening output or the first conv's output, at the whitening's side.
static size_t largest_activation(const Trainer *t, size_t batch) {
    int width = t->layout.widths[0] > WHITEN_WIDTH ? t->layout.widths[0] : WHITEN_WIDTH;
    return batch * WHITEN_SIDE * WHITEN_SIDE * width;
}

static void alloc_scratch(Trainer *t) {
    const NetLayout *l = &t->layout;
    size_t b = (size_t)t->max_batch, widest = 0, largest_group_act = 0;
    size_t largest = largest_activation(t, b);
    for (int g = 0; g < 3; g++) {
        size_t act = (size_t)net_group_out_side(g) * net_group_out_side(g) * l->widths[g];
        if (act > largest_group_act) largest_group_act = act;
        if ((size_t)l->widths[g] > widest) widest = l->widths[g];
    }
    t->d_act = gpu_alloc(largest * sizeof(__half));
    t->d_conv = gpu_alloc(largest * sizeof(__half));
    t->d_residual = gpu_alloc(b * largest_group_act * sizeof(__half));
    t->d_logits = gpu_alloc(b * NET_CLASSES * sizeof(float));
    t->d_features = gpu_alloc(b * l->widths[2] * sizeof(float));
    size_t partial_floats = (size_t)STATS_MAX_BLOCKS * 2 * (widest > COV_ENTRIES ? widest : COV_ENTRIES);
    size_t cov_floats = (size_t)patch_cov_blocks(t->recipe.whiten_images) * COV_ENTRIES;
    t->partials = gpu_alloc((partial_floats > cov_floats ? partial_floats : cov_floats) * sizeof(float));
    t->bn_sums = gpu_alloc(2 * widest * sizeof(float));
    t->bn_group_bias = gpu_alloc(bn_groups(t, t->recipe.batch_size, 1) * widest * sizeof(float));
    t->loss_sum = gpu_alloc(sizeof(double));
    t->correct = gpu_alloc(sizeof(int));
    // Scratch contents for the cuDNN algorithm search: any finite values.
    CUDA_CHECK(cudaMemset(t->d_act, 0, largest * sizeof(__half)));
    CUDA_CHECK(cudaMemset(t->conv_half, 0, (t->pb.end[SEG_CONV] - t->pb.begin[SEG_CONV]) * sizeof(__half)));
}

static void upload_data(Trainer *t, const Cifar10 *data) {
    t->train_images = gpu_alloc((size_t)t->n_train * CIFAR10_IMAGE_BYTES);
    t->train_labels = gpu_alloc(t->n_train);
    t->test_images = gpu_alloc((size_t)t->n_test * CIFAR10_IMAGE_BYTES);
    t->test_labels = gpu_alloc(t->n_test);
    CUDA_CHECK(cudaMemcpy(t->train_images, data->train.images, (size_t)t->n_train * CIFAR10_IMAGE_BYTES,
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->train_labels, data->train.labels, t->n_train, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->test_images, data->test.images, (size_t)t->n_test * CIFAR10_IMAGE_BYTES,
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(t->test_labels, data->test.labels, t->n_test, cudaMemcpyHostToDevice));
}

// Data filtering's proxy network: a Trainer of recipe_proxy's recipe for training batches
// of batch_size only (it is never evaluated), sharing the main network's data, stream and
// cuBLAS handle, with its own convolution plans at that batch size.
static Trainer *proxy_create(const Trainer *main_net, ConvAlgoChoice conv_algo, const char *conv_cache) {
    Trainer *p = host_alloc(sizeof(Trainer));
    p->recipe = recipe_proxy(&main_net->recipe);
    int n = p->recipe.batch_size, keep = main_net->recipe.filter_keep;
    p->n_train = main_net->n_train;
    net_layout_init(&p->layout, p->recipe.widths, p->recipe.depth);
    p->max_batch = n;
    alloc_params(p);
    alloc_activations(&p->acts, &p->layout, n, bn_groups(p, n, 1));
    alloc_scratch(p);
    p->example_losses = gpu_alloc((size_t)n * sizeof(float));
    p->loss_weights = gpu_alloc((size_t)n * sizeof(float));
    p->ones = gpu_alloc((size_t)keep * sizeof(float));
    float *ones = host_alloc((size_t)keep * sizeof(float));
    for (int i = 0; i < keep; i++) ones[i] = 1.0f;
    CUDA_CHECK(cudaMemcpy(p->ones, ones, (size_t)keep * sizeof(float), cudaMemcpyHostToDevice));
    free(ones);
    p->train_images = main_net->train_images;
    p->train_labels = main_net->train_labels;
    p->stream = main_net->stream;
    p->cublas = main_net->cublas;
    p->convs = convs_create(p->stream, conv_algo, conv_cache, &p->layout, &n, 1, p->d_act, p->conv_half, p->d_conv);
    return p;
}

Trainer *trainer_create(const Recipe *recipe, const Cifar10 *data, int n_train, int n_test,
                        ConvAlgoChoice conv_algo, const char *conv_cache) {
    Trainer *t = host_alloc(sizeof(Trainer));
    t->recipe = *recipe;
    t->n_train = n_train;
    t->n_test = n_test;
    net_layout_init(&t->layout, recipe->widths, recipe->depth);
    int train_batch = recipe_train_batch(recipe);
    t->max_batch = train_batch > EVAL_BATCH ? train_batch : EVAL_BATCH;
    alloc_params(t);
    alloc_activations(&t->acts, &t->layout, t->max_batch, bn_groups(t, recipe->batch_size, 1));
    alloc_scratch(t);
    if (recipe->muon) muon_alloc(t);
    int tta_images = recipe_tta_images(recipe, n_test);
    if (tta_images < n_test) {
        t->test_logits = gpu_alloc((size_t)n_test * NET_CLASSES * sizeof(float));
        t->top_probability = gpu_alloc((size_t)n_test * sizeof(float));
        t->tta_indices = gpu_alloc((size_t)n_test * sizeof(int));
    }
    upload_data(t, data);
    CUDA_CHECK(cudaStreamCreate(&t->stream));
    CUBLAS_CHECK(cublasCreate(&t->cublas));
    CUBLAS_CHECK(cublasSetStream(t->cublas, t->stream));
    t->cublas_workspace = gpu_alloc(CUBLAS_WORKSPACE_BYTES);
    CUBLAS_CHECK(cublasSetWorkspace(t->cublas, t->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    // Every batch size the convs will see: training (the kept examples, with data
    // filtering), full evaluation chunks, the last chunk, and the last chunk of the
    // selectively augmented images.
    int batches[4] = {train_batch, n_test < EVAL_BATCH ? n_test : EVAL_BATCH}, n_batches = 2;
    if (n_test % EVAL_BATCH) batches[n_batches++] = n_test % EVAL_BATCH;
    if (tta_images < n_test && tta_images % EVAL_BATCH) batches[n_batches++] = tta_images % EVAL_BATCH;
    t->convs = convs_create(t->stream, conv_algo, conv_cache, &t->layout, batches, n_batches, t->d_act, t->conv_half,
                            t->d_conv);
    if (recipe->filter_keep) {
        t->kept_rows = gpu_alloc((size_t)recipe_total_steps(recipe, n_train) * recipe->filter_keep * sizeof(int));
        t->proxy = proxy_create(t, conv_algo, conv_cache);
    }
    return t;
}

void trainer_use_filter_stream(Trainer *t) {
    if (t->filter_stream) return;
    CUDA_CHECK(cudaStreamCreate(&t->filter_stream));
    CUDA_CHECK(cudaEventCreateWithFlags(&t->d_conv_ready, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) CUDA_CHECK(cudaEventCreateWithFlags(&t->filter_done[i], cudaEventDisableTiming));
    t->d_conv_spare = gpu_alloc(largest_activation(t, (size_t)recipe_train_batch(&t->recipe)) * sizeof(__half));
    convs_use_filter_stream(t->convs, t->filter_stream);
}

void trainer_use_conv_graph(Trainer *t, ConvGraphChoice choice, FILE *log) {
    struct timespec begin, end;
    clock_gettime(CLOCK_MONOTONIC, &begin);
    convs_use_graph_engines(t->convs, choice, log);
    if (t->proxy) convs_use_graph_engines(t->proxy->convs, choice, log);
    clock_gettime(CLOCK_MONOTONIC, &end);
    int total, used = convs_graph_count(t->convs, &t->layout, recipe_train_batch(&t->recipe), &total);
    if (log && choice != CONV_GRAPH_OFF)
        fprintf(log, "--conv-graph %s: %d of the %d conv directions at the training batch run graph-API engines "
                "(chosen in %.1f s)\n", CONV_GRAPH_CHOICES[choice], used, total,
                (double)(end.tv_sec - begin.tv_sec) + 1e-9 * (double)(end.tv_nsec - begin.tv_nsec));
}

void trainer_use_fused_bn(Trainer *t) {
    const NetLayout *l = &t->layout;
    char why[512];
    if (recipe_refuses_fused_bn(&t->recipe, why, sizeof why)) die(2, "%s", why);
    if (t->fusion_cudnn) return;
    int n = recipe_train_batch(&t->recipe);
    CUDNN_CHECK(cudnnCreate(&t->fusion_cudnn));
    CUDNN_CHECK(cudnnSetStream(t->fusion_cudnn, t->stream));
    cudnnBackendDescriptor_t device = fusion_device_from_handle(t->fusion_cudnn);
    int widest = l->widths[0] > l->widths[1] ? l->widths[0] : l->widths[1];
    t->fused_sums = gpu_alloc(2 * (size_t)(widest > l->widths[2] ? widest : l->widths[2]) * sizeof(float));
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++) {
            if (g == 0 && j == 0) continue;
            FusionShape shape = {n, net_conv_in(l->widths, g, j), l->widths[g], net_conv_side(g, j), t->recipe.activation};
            t->fused[g][j] = fused_dgrad_create(device, &shape);
        }
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(device));
}

int trainer_deterministic(const Trainer *t) {
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < NET_MAX_DEPTH; j++)
            if (t->fused[g][j] && !fused_dgrad_deterministic(t->fused[g][j])) return 0;
    return convs_deterministic(t->convs) && (!t->proxy || convs_deterministic(t->proxy->convs));
}

// The buffers and convolutions of one network; not the data, the stream or the cuBLAS
// handle, which a proxy shares with its main network (trainer_free releases those).
static void free_network(Trainer *t) {
    step_graphs_free(t->graphs);
    convs_free(t->convs);
    free_activations(&t->acts, t->layout.depth);
    void *buffers[] = {t->params, t->momentum, t->grads, t->ema_params, t->conv_half, t->conv_grads,
                       t->running, t->ema_running, t->d_act, t->d_conv, t->d_residual, t->d_logits,
                       t->d_features, t->partials, t->bn_sums, t->bn_group_bias, t->loss_sum, t->correct, t->ns_x, t->ns_next,
                       t->ns_gram, t->ns_poly, t->sum_sq, t->test_logits, t->top_probability, t->tta_indices,
                       t->kept_rows, t->example_losses, t->loss_weights, t->ones, t->d_conv_spare, t->fused_sums};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) cudaFree(buffers[i]);
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < NET_MAX_DEPTH; j++) fused_dgrad_free(t->fused[g][j]);
    if (t->fusion_cudnn) cudnnDestroy(t->fusion_cudnn);
    if (t->filter_stream) {
        cudaEventDestroy(t->d_conv_ready);
        for (int i = 0; i < 2; i++) cudaEventDestroy(t->filter_done[i]);
        cudaStreamDestroy(t->filter_stream);
    }
    muon_free_streams(t);
}

void trainer_free(Trainer *t) {
    if (t->proxy) {
        free_network(t->proxy);
        free(t->proxy);
    }
    free_network(t);
    void *data[] = {t->train_images, t->train_labels, t->test_images, t->test_labels};
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) cudaFree(data[i]);
    cublasDestroy(t->cublas);
    cudaFree(t->cublas_workspace);
    cudaStreamDestroy(t->stream);
    free(t);
}
