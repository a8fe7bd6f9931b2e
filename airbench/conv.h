// conv.h: the network's 3x3 convolutions through cuDNN (NHWC fp16, fp32 accumulation).
//
// A plan holds the descriptors and the three algorithms (forward, backward data, backward
// filter) of one conv shape at one batch size. The algorithms are chosen once per shape:
// by timing every candidate (cudnnFind), by cuDNN's heuristics, or from the algorithm
// cache file (conv_cache.h), which remembers the timed choice per GPU model, cuDNN version and shape, so
// that later processes start faster and make the same choice (the same choice is what
// makes two processes' runs bit-identical). Only deterministic algorithms are taken when
// cuDNN offers one. With --conv-graph (convs_use_graph_engines), a direction may instead
// run a plan of cuDNN's graph API (conv_graph.h), chosen and cached the same way.
#pragma once
#include <cudnn.h>
#include <stdint.h>
#include <stdio.h>

#include "conv_cache.h"
#include "conv_graph.h"
#include "kernels.h"
#include "net.h"

typedef enum { CONV_ALGO_CACHED, CONV_ALGO_FIND, CONV_ALGO_HEURISTIC } ConvAlgoChoice;
// "cached": the cache file's choice, timing (and recording) shapes it lacks; "find": time
// every candidate now and record the choice; "heuristic": cuDNN's ranked pick, no timing
// and no cache (a fast start, e.g. under compute-sanitizer).
extern const char *const CONV_ALGO_CHOICES[];  // the names, in enum order, NULL-terminated

typedef struct {
    int batch, c_in, c_out, side;  // side x side in and out (pad 1)
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnConvolutionFwdAlgo_t fwd_algo;
    cudnnConvolutionBwdDataAlgo_t bwd_data_algo;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo;
    // --conv-graph (convs_use_graph_engines): the graph plan each direction runs instead of
    // its legacy algorithm (NULL: the legacy algorithm).
    ConvGraph *graph[N_CONV_DIRECTIONS];
} ConvPlan;

typedef struct Convs Convs;

// The cuDNN handle (on stream), its workspace, and the plans of the network's convs at
// each of the n_batches batch sizes, all made here: timing runs on the scratch buffers x,
// w and y (overwriting them), each at least as large as any conv's input, filter and
// output at the largest batch. cache_path may be NULL (no cache file).
Convs *convs_create(cudaStream_t stream, ConvAlgoChoice choice, const char *cache_path, const NetLayout *layout,
                    const int *batches, int n_batches, __half *scratch_x, __half *scratch_w, __half *scratch_y);
void convs_free(Convs *c);
// The plan of conv (g, j) at a batch size given to convs_create.
const ConvPlan *conv_plan(Convs *c, int batch, int g, int j);
// Whether every chosen algorithm so far is deterministic.
int convs_deterministic(const Convs *c);

typedef enum { CONV_GRAPH_OFF, CONV_GRAPH_ON, CONV_GRAPH_ALWAYS } ConvGraphChoice;
extern const char *const CONV_GRAPH_CHOICES[];  // "off", "on", "always", NULL-terminated
// --conv-graph on: each direction of each conv at the first batch size given to
// convs_create (the training batch) runs the fastest of its legacy algorithm and the graph
// API's usable engine configs (conv_graph_choose), chosen as the algorithms are: from the
// cache file (under the device's key with "/graph" added) or timed on the scratch buffers
// (overwriting them) and recorded. always: the fastest graph plan even where the legacy
// call is faster, timed every time (to measure or test the graph plans). An input gradient
// that adds to its output (conv_backward_data's accumulate) keeps the legacy call. What was
// timed is written to log, one line a direction (NULL: nothing). Dies with exit code 2
// under --conv-algo heuristic, which times nothing.
void convs_use_graph_engines(Convs *c, ConvGraphChoice choice, FILE *log);

// ---- the graph choice's plumbing, shared with the CPU stand-in (in conv_graph.c) --------
// Where the choice runs a plan's directions: each one's legacy handle (its stream) and
// workspace, the scratch operands (each as large as any conv's input, filters and output at
// the plan's batch), the GPU's properties, and the operands' data (conv_graph_pattern of
// conv_largest_operand + 1 values).
typedef struct {
    cudnnHandle_t handle[N_CONV_DIRECTIONS];
    void *workspace[N_CONV_DIRECTIONS];
    int64_t workspace_bytes;
    void *x, *w, *y;
    cudnnBackendDescriptor_t device;
    const uint16_t *pattern;
} ConvGraphSite;
// How many directions of the network's convs at a batch size (conv_plan) run graph plans;
// *total: of how many.
int convs_graph_count(Convs *c, const NetLayout *l, int batch, int *total);
// The largest operand, in values, of the network's convs at a batch size.
size_t conv_largest_operand(const NetLayout *l, int batch);
// Sets p->graph[d] of each direction to conv_graph_choose's choice against the legacy call
// (conv_forward, ... while p->graph[d] is unset), its cache token in choice[d] ("-", or
// "g<config>.<engine>": conv_cache.h), and writes what was timed to log (NULL: nothing).
void conv_choose_graphs(Convs *c, ConvPlan *p, const ConvGraphSite *site, int always, FILE *log,
                        char choice[N_CONV_DIRECTIONS][CONV_CACHE_TOKEN]);

// y = conv(x, w).
void conv_forward(Convs *c, const ConvPlan *p, const __half *x, const __half *w, __half *y);
// dw = the filter gradient from the input x and the output gradient dy; on the filter
// stream once convs_use_filter_stream has set one, else on the convs' stream.
void conv_backward_filter(Convs *c, const ConvPlan *p, const __half *x, const __half *dy, __half *dw);
// From now on conv_backward_filter runs on `stream`, with a cuDNN handle and workspace of its
// own (so that it can run beside the other convolutions); the caller orders it with events.
void convs_use_filter_stream(Convs *c, cudaStream_t stream);
// dx = (or += when accumulate) the input gradient from the filter w and dy.
void conv_backward_data(Convs *c, const ConvPlan *p, const __half *w, const __half *dy, __half *dx, int accumulate);
