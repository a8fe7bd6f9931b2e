// graph.h: CUDA graphs for the training step (--graphs on). Each step's launches are
// captured from the stream exactly as they would run (the same kernels, cuDNN and cuBLAS
// calls, with the same arguments), and the GPU replays them as one graph, which spares it
// the gaps between separately launched kernels. A step's "shape" names the calls it makes
// (the step plan decides some: whether the whitening bias trains, whether lookahead or
// Muon's renormalization runs); each shape keeps one executable graph, and a later step of
// that shape only updates its arguments in place (cudaGraphExecUpdate), which is cheap.
// Capturing costs the host about what launching does, so the GPU stays the bottleneck.
#pragma once
#include <cuda_runtime.h>

#define STEP_GRAPH_SHAPES 16

typedef struct {
    cudaGraphExec_t exec[STEP_GRAPH_SHAPES];
    long instantiations, updates;  // for the setup's report: instantiations stay few
} StepGraphs;

StepGraphs *step_graphs_create(void);
void step_graphs_free(StepGraphs *g);
// Between these two calls, everything launched on `stream` is captured instead of run; the
// end launches it as shape `shape` (0 <= shape < STEP_GRAPH_SHAPES). g NULL: launches run
// as they come and both calls do nothing.
void step_graph_begin(StepGraphs *g, cudaStream_t stream);
void step_graph_end(StepGraphs *g, int shape, cudaStream_t stream);
