// conv_graph.c: a conv direction as a cuDNN graph-API plan, and the timed choice between
// the engine configs and the legacy call (conv_graph.h).
#include "conv_graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "conv.h"
#include "gpu.h"

const char *const CONV_DIRECTION_NAMES[N_CONV_DIRECTIONS] = {"forward", "backward-data", "backward-filter"};

// Each direction's graph (fusion.h), and the uids of its operands in the legacy calls' order.
static const Fusion DIRECTION_GRAPHS[N_CONV_DIRECTIONS] = {FUSION_FPROP, FUSION_DGRAD, FUSION_WGRAD};
static const FusionUid OPERAND_UIDS[N_CONV_DIRECTIONS][3] = {
    {UID_X, UID_W, UID_Y}, {UID_W, UID_DY, UID_DOUT}, {UID_X, UID_DY, UID_DW}};

enum { MAX_CANDIDATES = 64, TIMED_RUNS = 5 };

// A plan and its graph, which the candidates of one choice share (owns_graph: this one
// frees it).
struct ConvGraph {
    ConvDirection direction;
    FusionGraph *graph;
    int owns_graph;
    FusionPlan plan;
};

static FusionGraph *new_graph(ConvDirection d, const FusionShape *s) {
    FusionGraph *graph = host_alloc(sizeof *graph);
    fusion_graph_build(graph, DIRECTION_GRAPHS[d], s, 1);
    return graph;
}

static void free_graph(FusionGraph *graph) {
    fusion_graph_free(graph);
    free(graph);
}

// A plan of graph from list's config (NULL if it is not usable).
static ConvGraph *listed(ConvDirection d, FusionGraph *graph, const FusionConfigs *list,
                         cudnnBackendDescriptor_t device, int config, int64_t max_workspace) {
    ConvGraph *g = host_alloc(sizeof *g);
    *g = (ConvGraph){.direction = d, .graph = graph};
    fusion_plan_build_listed(&g->plan, list, device, config, 1);
    if (!g->plan.plan || g->plan.workspace > max_workspace) {
        conv_graph_free(g);
        return NULL;
    }
    return g;
}

ConvGraph *conv_graph_create(cudnnBackendDescriptor_t device, ConvDirection d, const FusionShape *s, int config,
                             int64_t max_workspace) {
    FusionGraph *graph = new_graph(d, s);
    FusionConfigs list;
    FusionPlan status;
    fusion_configs_list(&list, &status, graph, device);
    ConvGraph *g = listed(d, graph, &list, device, config, max_workspace);
    fusion_configs_free(&list);
    if (g)
        g->owns_graph = 1;
    else
        free_graph(graph);
    return g;
}

int conv_graph_config(const ConvGraph *g) { return g->plan.config; }
int64_t conv_graph_engine(const ConvGraph *g) { return g->plan.engine; }

// Enqueues the conv; cuDNN's status (an engine may refuse at execution what it planned).
static cudnnStatus_t execute(const ConvGraph *g, cudnnHandle_t handle, const void *in0, const void *in1, void *out,
                             void *workspace) {
    void *by_uid[N_UIDS] = {0};
    const FusionUid *uid = OPERAND_UIDS[g->direction];
    by_uid[uid[0]] = (void *)in0;
    by_uid[uid[1]] = (void *)in1;
    by_uid[uid[2]] = out;
    cudnnBackendDescriptor_t pack = fusion_pack(g->graph, by_uid, workspace);
    cudnnStatus_t status = cudnnBackendExecute(handle, g->plan.plan, pack);
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(pack));
    return status;
}

void conv_graph_run(const ConvGraph *g, cudnnHandle_t handle, const void *in0, const void *in1, void *out,
                    void *workspace) {
    CUDNN_CHECK(execute(g, handle, in0, in1, out, workspace));
}

void conv_graph_free(ConvGraph *g) {
    if (!g) return;
    fusion_plan_free(&g->plan);
    if (g->owns_graph) free_graph(g->graph);
    free(g);
}

uint16_t *conv_graph_pattern(size_t count) {
    uint16_t *bits = host_alloc(count * sizeof *bits);
    uint64_t state = 1;
    for (size_t i = 0; i < count; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // an LCG: any spread of values will do
        uint32_t r = (uint32_t)(state >> 32);
        // sign, an exponent for 2^-4 to 2^0, ten bits of mantissa
        bits[i] = (uint16_t)((r & 0x8000u) | ((11u + (r >> 16) % 5u) << 10) | (r & 0x3ffu));
    }
    return bits;
}

// ---------------------------------------------------------------------------------------
// The choice

typedef struct {
    const ConvGraph *graph;
    const ConvTrial *trial;
} GraphRun;

static void run_graph(void *ctx) {
    const GraphRun *r = ctx;
    conv_graph_run(r->graph, r->trial->handle, r->trial->in0, r->trial->in1, r->trial->out, r->trial->workspace);
}

// Microseconds a run of run(ctx) takes on the stream: the mean of TIMED_RUNS after one
// run to warm up.
static float time_us(cudaStream_t stream, void (*run)(void *), void *ctx) {
    cudaEvent_t start, end;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&end));
    run(ctx);
    CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < TIMED_RUNS; i++) run(ctx);
    CUDA_CHECK(cudaEventRecord(end, stream));
    CUDA_CHECK(cudaEventSynchronize(end));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(end));
    return 1e3f * ms / TIMED_RUNS;
}

static float half_value(uint16_t h) {
    int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float v = exponent == 0    ? ldexpf((float)mantissa, -24)
              : exponent == 31 ? (mantissa ? NAN : INFINITY)
                               : ldexpf((float)(mantissa | 0x400), exponent - 25);
    return h & 0x8000 ? -v : v;
}

// The trial's output as floats, in a new array.
static float *output_values(const ConvTrial *t) {
    CUDA_CHECK(cudaStreamSynchronize(t->stream));
    uint16_t *bits = host_alloc(t->out_count * sizeof *bits);
    CUDA_CHECK(cudaMemcpy(bits, t->out, t->out_count * sizeof *bits, cudaMemcpyDeviceToHost));
    float *values = host_alloc(t->out_count * sizeof *values);
    for (size_t i = 0; i < t->out_count; i++) values[i] = half_value(bits[i]);
    free(bits);
    return values;
}

// The largest difference of the trial's output from the reference's values, over the
// largest of those; infinite if the output has a value that is not finite.
static double difference_from(const ConvTrial *t, const float *reference) {
    float *values = output_values(t);
    double largest = 0, difference = 0;
    for (size_t i = 0; i < t->out_count; i++) {
        if (!isfinite(values[i])) difference = INFINITY;
        largest = fmax(largest, fabs(reference[i]));
        difference = fmax(difference, fabs((double)values[i] - reference[i]));
    }
    free(values);
    return largest > 0 ? difference / largest : difference;
}

// The fastest candidate left, or -1 if none is.
static int fastest(ConvGraph *const *candidates, const float *us, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (candidates[i] && (best < 0 || us[i] < us[best])) best = i;
    return best;
}

ConvGraph *conv_graph_choose(cudnnBackendDescriptor_t device, ConvDirection d, const FusionShape *s,
                             const ConvTrial *trial, int always, ConvChoiceReport *report) {
    // Another direction's trial may have left this one's inputs holding its outputs.
    CUDA_CHECK(cudaMemcpy(trial->in0, trial->pattern, trial->in_count[0] * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(trial->in1, trial->pattern + 1, trial->in_count[1] * sizeof(uint16_t),
                          cudaMemcpyHostToDevice));
    *report = (ConvChoiceReport){.legacy_us = time_us(trial->stream, trial->legacy, trial->legacy_ctx)};
    float *reference = output_values(trial);
    // Every candidate plans from one list of configs, of one graph (the heuristics take far
    // longer than planning a config); the kept one frees the graph.
    FusionGraph *graph = new_graph(d, s);
    FusionConfigs list;
    FusionPlan status;
    fusion_configs_list(&list, &status, graph, device);
    ConvGraph *candidates[MAX_CANDIDATES];
    float us[MAX_CANDIDATES];
    int n = 0;
    for (int config = 0; config < list.n && n < MAX_CANDIDATES; config++) {
        ConvGraph *g = listed(d, graph, &list, device, config, trial->workspace_bytes);
        if (!g) continue;
        if (execute(g, trial->handle, trial->in0, trial->in1, trial->out, trial->workspace) != CUDNN_STATUS_SUCCESS) {
            report->failed++;
            conv_graph_free(g);
            continue;
        }
        GraphRun run = {g, trial};
        us[n] = time_us(trial->stream, run_graph, &run);
        candidates[n++] = g;
    }
    fusion_configs_free(&list);
    report->usable = n;
    int first = fastest(candidates, us, n);
    if (first >= 0) report->fastest_us = us[first], report->fastest_engine = conv_graph_engine(candidates[first]);
    // The fastest that computes what the legacy call does, if it beats it.
    ConvGraph *kept = NULL;
    for (int best; !kept && (best = fastest(candidates, us, n)) >= 0;) {
        if (!always && us[best] >= report->legacy_us) break;
        GraphRun run = {candidates[best], trial};
        run_graph(&run);
        double difference = difference_from(trial, reference);
        if (difference <= 1e-2) {
            kept = candidates[best];
            report->chosen_us = us[best];
            report->difference = difference;
        } else {
            report->refused++;
            conv_graph_free(candidates[best]);
        }
        candidates[best] = NULL;
    }
    for (int i = 0; i < n; i++) conv_graph_free(candidates[i]);
    free(reference);
    if (kept) {
        kept->owns_graph = 1;
    } else {
        report->chosen_us = report->legacy_us;
        free_graph(graph);
    }
    return kept;
}

// ---------------------------------------------------------------------------------------
// The choice for a plan of conv.h

typedef struct {
    Convs *c;
    const ConvPlan *p;
    ConvDirection d;
    ConvTrial trial;
} LegacyRun;

// The legacy call of a direction on the trial's operands (the plan's graph not chosen yet).
static void run_legacy(void *ctx) {
    const LegacyRun *r = ctx;
    const ConvTrial *t = &r->trial;
    if (r->d == CONV_FORWARD) conv_forward(r->c, r->p, t->in0, t->in1, t->out);
    if (r->d == CONV_BACKWARD_DATA) conv_backward_data(r->c, r->p, t->in0, t->in1, t->out, 0);
    if (r->d == CONV_BACKWARD_FILTER) conv_backward_filter(r->c, r->p, t->in0, t->in1, t->out);
}

// Direction d of plan p on the site's scratch operands: forward x, w -> y; backward data
// w, y -> x; backward filter x, y -> w.
static ConvTrial trial_of(const ConvPlan *p, ConvDirection d, const ConvGraphSite *site) {
    size_t pixels = (size_t)p->batch * p->side * p->side;
    size_t x = pixels * p->c_in, y = pixels * p->c_out, w = (size_t)p->c_out * p->c_in * 9;
    const ConvTrial operands[N_CONV_DIRECTIONS] = {
        {.in0 = site->x, .in1 = site->w, .in_count = {x, w}, .out = site->y, .out_count = y},
        {.in0 = site->w, .in1 = site->y, .in_count = {w, y}, .out = site->x, .out_count = x},
        {.in0 = site->x, .in1 = site->y, .in_count = {x, y}, .out = site->w, .out_count = w}};
    ConvTrial t = operands[d];
    t.handle = site->handle[d];
    CUDNN_CHECK(cudnnGetStream(t.handle, &t.stream));
    t.workspace = site->workspace[d];
    t.workspace_bytes = site->workspace_bytes;
    t.pattern = site->pattern;
    t.legacy = run_legacy;
    return t;
}

int convs_graph_count(Convs *c, const NetLayout *l, int batch, int *total) {
    int used = 0;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++)
            for (int d = 0; d < N_CONV_DIRECTIONS; d++) used += conv_plan(c, batch, g, j)->graph[d] != NULL;
    *total = 3 * l->depth * N_CONV_DIRECTIONS;
    return used;
}

size_t conv_largest_operand(const NetLayout *l, int batch) {
    size_t largest = 0;
    for (int g = 0; g < 3; g++)
        for (int j = 0; j < l->depth; j++) {
            size_t c_in = (size_t)net_conv_in(l->widths, g, j), c_out = (size_t)l->widths[g];
            size_t pixels = (size_t)batch * net_conv_side(g, j) * net_conv_side(g, j);
            size_t sizes[3] = {pixels * c_in, pixels * c_out, c_out * c_in * 9};
            for (int k = 0; k < 3; k++) largest = sizes[k] > largest ? sizes[k] : largest;
        }
    return largest;
}

void conv_choose_graphs(Convs *c, ConvPlan *p, const ConvGraphSite *site, int always, FILE *log,
                        char choice[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN]) {
    FusionShape s = {.batch = p->batch, .c_in = p->c_in, .c_out = p->c_out, .side = p->side};
    for (int d = 0; d < N_CONV_DIRECTIONS; d++) {
        LegacyRun run = {.c = c, .p = p, .d = (ConvDirection)d, .trial = trial_of(p, (ConvDirection)d, site)};
        run.trial.legacy_ctx = &run;
        ConvChoiceReport r;
        ConvGraph *g = conv_graph_choose(site->device, (ConvDirection)d, &s, &run.trial, always, &r);
        p->graph[d] = g;
        snprintf(choice[d], sizeof choice[d], "-");
        if (g) snprintf(choice[d], sizeof choice[d], "g%d.%lld", conv_graph_config(g), (long long)conv_graph_engine(g));
        if (!log) continue;
        fprintf(log, "conv %d>%d at %dx%d, batch %d, %s: ", p->c_in, p->c_out, p->side, p->side, p->batch,
                CONV_DIRECTION_NAMES[d]);
        fprintf(log, "legacy %.1f us, fastest of %d graph configs %.1f us (engine %lld); ", r.legacy_us, r.usable,
                r.fastest_us, (long long)r.fastest_engine);
        if (r.failed) fprintf(log, "%d more failed to run; ", r.failed);
        if (g)
            fprintf(log, "kept engine %lld (config %d), %.1f us", (long long)conv_graph_engine(g), conv_graph_config(g),
                    r.chosen_us);
        else
            fprintf(log, "kept the legacy call");
        if (r.refused) fprintf(log, "; %d faster configs refused: other numbers", r.refused);
        fprintf(log, "\n");
    }
}
