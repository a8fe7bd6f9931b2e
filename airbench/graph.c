// graph.c: the training step as a CUDA graph (graph.h).
#include "graph.h"

#include <stdlib.h>

#include "gpu.h"

StepGraphs *step_graphs_create(void) { return host_alloc(sizeof(StepGraphs)); }

void step_graphs_free(StepGraphs *g) {
    if (!g) return;
    for (int i = 0; i < STEP_GRAPH_SHAPES; i++)
        if (g->exec[i]) cudaGraphExecDestroy(g->exec[i]);
    free(g);
}

// Global mode: a call anywhere in the process that cannot be captured (a synchronization, an
// allocation) fails the capture instead of running out of order.
void step_graph_begin(StepGraphs *g, cudaStream_t stream) {
    if (g) CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
}

// Updating fails when the captured calls differ from the executable graph's in more than
// their arguments (a shape the caller did not tell apart); then the shape's graph is made
// anew, which is slower but as correct.
void step_graph_end(StepGraphs *g, int shape, cudaStream_t stream) {
    if (!g) return;
    if (shape < 0 || shape >= STEP_GRAPH_SHAPES) die(1, "step graph shape %d out of range", shape);
    cudaGraph_t graph;
    cudaError_t err = cudaStreamEndCapture(stream, &graph);
    if (err != cudaSuccess)
        die(1, "capturing a training step as a CUDA graph failed (%s): a call in the step cannot be captured "
               "with this CUDA, cuDNN or cuBLAS; run without --graphs", cudaGetErrorString(err));
    cudaGraphExec_t *exec = &g->exec[shape];
    if (*exec) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(*exec, graph, &info) == cudaSuccess) {
            g->updates++;
        } else {
            (void)cudaGetLastError();  // the failed update's error is not sticky: clear it
            CUDA_CHECK(cudaGraphExecDestroy(*exec));
            *exec = NULL;
        }
    }
    if (!*exec) {
        CUDA_CHECK(cudaGraphInstantiate(exec, graph, 0));
        g->instantiations++;
    }
    CUDA_CHECK(cudaGraphLaunch(*exec, stream));
    CUDA_CHECK(cudaGraphDestroy(graph));
}
