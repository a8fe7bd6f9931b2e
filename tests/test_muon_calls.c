// test_muon_calls.c: the GPU trainer's Muon step (airbench/muon.c) run on the CPU, against
// the reference's ref_muon_step, through the CPU stand-ins of tests/host/ (host.h):
// cublasGemmStridedBatchedEx with cuBLAS's column-major semantics (bf16 operands, fp32
// sums, the result rounded to bf16 once, every operand's extent over the whole batch inside
// one allocation), device-to-device copies, and the Muon kernels as kernels.h specifies
// them. So what this checks is muon.c's own logic: the grouping of equal
// shapes, the transposes, leading dimensions and strides of each call, the wide and tall
// orientations, the buffer that holds the result after an even or odd number of iterations,
// and the renormalization and decay. A wrong operand gives an error of order 1; the bound
// below leaves room only for the order of the sums and the bf16 roundings it moves. Each
// step also runs with every group on a stream of its own (--muon-streams on), which must
// give the same bits.
#include <stdlib.h>
#include <string.h>

#include "reference.h"
#include "test_helpers.h"
#include "trainer.h"

// Measured here: at most 3.5e-3 (where a bf16 rounding goes the other way in one iterate,
// the next ones carry it), most filters 1e-6 or less. Mistakes put into muon.c by hand (a
// swapped transpose, a wrong stride, the wrong result buffer, a stride of 0) either made an
// operand reach outside its buffer, which the stand-in refuses, or gave errors of 0.4 to 400.
#define CHANGE_BOUND 2e-2

// One Muon step of muon.c and of the reference from the same weights, momentum and fp16
// gradients; compares the change of every conv weight. Both treat a filter as the row-major
// (c_out, size / c_out) matrix of its flat values, so the layouts need no conversion here.
static void check_muon_step(const int widths[3], int ns_steps, int normalize) {
    Recipe recipe = RECIPE_94_MUON;
    memcpy(recipe.widths, widths, sizeof recipe.widths);
    recipe.muon_ns_steps = ns_steps;
    Trainer *t = calloc(1, sizeof *t);
    t->recipe = recipe;
    net_layout_init(&t->layout, recipe.widths, recipe.depth);
    const NetLayout *l = &t->layout;
    net_segments(l, t->pb.begin, t->pb.end);
    size_t n = l->n_params, conv_begin = t->pb.begin[SEG_CONV], n_conv = t->pb.end[SEG_CONV] - conv_begin;
    t->params = gpu_alloc(n * sizeof(float));
    t->momentum = gpu_alloc(n * sizeof(float));
    t->conv_half = gpu_alloc(n_conv * sizeof(__half));
    t->conv_grads = gpu_alloc(n_conv * sizeof(__half));
    CUDA_CHECK(cudaStreamCreate(&t->stream));
    CUBLAS_CHECK(cublasCreate(&t->cublas));
    CUBLAS_CHECK(cublasSetStream(t->cublas, t->stream));
    muon_alloc(t);

    RefNet *ref = ref_net_create(&recipe);
    ref->muon_bf16 = 1;
    random_floats(t->params, n, 0.0, 0.05);
    random_floats(t->momentum, n, 0.0, 0.01);
    float *grads = malloc(n_conv * sizeof(float));
    random_floats(grads, n_conv, 0.0, 0.02);
    memcpy(ref->params, t->params, n * sizeof(float));
    memcpy(ref->momentum, t->momentum, n * sizeof(float));
    memset(ref->grads, 0, n * sizeof(float));
    for (size_t i = 0; i < n_conv; i++) {
        t->conv_grads[i].x = float_to_half(grads[i]);
        ref->grads[conv_begin + i] = half_to_float(t->conv_grads[i].x);
    }
    float *before = malloc(n * sizeof(float)), *momentum_before = malloc(n * sizeof(float));
    memcpy(before, t->params, n * sizeof(float));
    memcpy(momentum_before, t->momentum, n * sizeof(float));

    StepPlan plan = {.muon_normalize = normalize, .muon_decay = 0.995};
    plan.group[GROUP_CONV] = (GroupStep){.lr = 0.08, .enabled = 1};
    // Each group on its own stream (--muon-streams on) first: the same GEMMs on the same
    // operands, so the same bits as one stream; then the step as it runs by default.
    muon_use_streams(t);
    muon_step(t, &plan);
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    float *by_group = malloc(n * sizeof(float));
    memcpy(by_group, t->params, n * sizeof(float));
    muon_free_streams(t);
    memcpy(t->params, before, n * sizeof(float));
    memcpy(t->momentum, momentum_before, n * sizeof(float));
    muon_step(t, &plan);
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    CHECK(!memcmp(by_group, t->params, n * sizeof(float)),
          "widths %d,%d,%d: the step with each group on its own stream differs from one stream's", widths[0],
          widths[1], widths[2]);
    ref_muon_step(ref, &recipe, &plan);

    printf("widths %d,%d,%d: %d Muon groups, %d Newton-Schulz steps, %s\n", widths[0], widths[1], widths[2],
           t->n_muon_groups, ns_steps, normalize ? "renormalized" : "not renormalized");
    for (int id = l->first_conv; id < l->first_conv + l->n_convs; id++) {
        const TensorInfo *ti = &l->tensors[id];
        float *got = malloc(ti->size * sizeof(float)), *want = malloc(ti->size * sizeof(float));
        for (size_t i = 0; i < ti->size; i++) {
            got[i] = t->params[ti->offset + i] - before[ti->offset + i];
            want[i] = ref->params[ti->offset + i] - before[ti->offset + i];
        }
        char what[96];
        snprintf(what, sizeof what, "conv %d.%d (%d x %d): its change against the reference's", ti->group, ti->conv,
                 ti->c_out, (int)(ti->size / ti->c_out));
        check_rel(what, got, want, ti->size, CHANGE_BOUND);
        int fp16_copy_ok = 1;
        for (size_t i = 0; i < ti->size; i++)
            fp16_copy_ok &= t->conv_half[ti->offset - conv_begin + i].x == float_to_half(t->params[ti->offset + i]);
        CHECK(fp16_copy_ok, "conv %d.%d: the fp16 copy is not the new weight rounded", ti->group, ti->conv);
        free(got);
        free(want);
    }
    ref_net_free(ref);
    free(before);
    free(momentum_before);
    free(by_group);
    free(grads);
    void *buffers[] = {t->params, t->momentum, t->conv_half, t->conv_grads, t->ns_x, t->ns_next, t->ns_gram,
                       t->ns_poly, t->sum_sq};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) cudaFree(buffers[i]);
    cublasDestroy(t->cublas);
    cudaStreamDestroy(t->stream);
    free(t);
}

int main(void) {
    // airbench94's shapes at a quarter of the width: 16x216, 16x144, 64x144, and three of
    // 64x576 (one group of three).
    const int quarter[3] = {16, 64, 64};
    // a tall first filter (224 x 216 has more rows than columns), then wide ones; only conv
    // 0.0 can be tall (c_out > 9 c_in), so a tall group always has one filter
    const int tall[3] = {224, 16, 16};
    check_muon_step(quarter, 5, 0);
    check_muon_step(quarter, 3, 1);  // an odd count: the result ends in the other buffer
    check_muon_step(tall, 5, 1);
    check_muon_step(tall, 3, 0);
    return test_finish("test_muon_calls");
}
