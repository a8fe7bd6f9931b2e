// conv_graph.h: a network conv's forward, input gradient or filter gradient as an
// execution plan of cuDNN's graph API at one engine config, and the choice between those
// engine configs and the legacy API's call (--conv-graph, conv.h).
//
// The legacy API (cudnnFind...) picks among a fixed list of algorithms; the graph API's
// heuristics offer 40-odd engine configs per conv (knob variants of a dozen engines). The
// choice times the legacy call and every usable config on the same operands and keeps the
// fastest, provided its output agrees with the legacy call's to fp16 rounding. Usable: the
// plan finalizes, cuDNN does not note the engine as nondeterministic, it compiles no kernel
// at run time (seconds each), and its workspace fits.
#pragma once
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

#include "fusion.h"

typedef enum { CONV_FORWARD, CONV_BACKWARD_DATA, CONV_BACKWARD_FILTER, N_CONV_DIRECTIONS } ConvDirection;
extern const char *const CONV_DIRECTION_NAMES[N_CONV_DIRECTIONS];  // "forward", "backward-data", ...

typedef struct ConvGraph ConvGraph;

// The plan of config `config` (an index into the heuristics' list, mode A then fallback) of
// direction d at shape s (its activation is ignored), or NULL if that config is not usable
// (above) with at most max_workspace bytes.
ConvGraph *conv_graph_create(cudnnBackendDescriptor_t device, ConvDirection d, const FusionShape *s, int config,
                             int64_t max_workspace);
int conv_graph_config(const ConvGraph *g);
int64_t conv_graph_engine(const ConvGraph *g);  // the engine's global index
// Enqueues the conv on the handle's stream. The operands are the legacy calls' (conv.h):
// forward x, w -> y; backward data w, dy -> dx; backward filter x, dy -> dw (fp16).
void conv_graph_run(const ConvGraph *g, cudnnHandle_t handle, const void *in0, const void *in1, void *out,
                    void *workspace);
void conv_graph_free(ConvGraph *g);
// count fp16 values (their bits, in a new host array): pseudo-random, of either sign and
// magnitudes 1/16 to 2, so that a conv's sums stay far from fp16's range.
uint16_t *conv_graph_pattern(size_t count);

// What the choice runs: the legacy call (legacy(legacy_ctx) enqueues it on `stream`) and
// the graph plans on the same operands: in0 and in1 (in_count fp16 values each, set from
// pattern first: in0 from its first value, in1 from its second, so that the two differ and
// operands taken in the wrong order show), out_count fp16 values written to out.
typedef struct {
    cudnnHandle_t handle;  // on stream
    cudaStream_t stream;
    void *workspace;
    int64_t workspace_bytes;
    void *in0, *in1;
    size_t in_count[2];
    const uint16_t *pattern;  // at least one value more than either input (conv_graph_pattern)
    void *out;
    size_t out_count;
    void (*legacy)(void *legacy_ctx);
    void *legacy_ctx;
} ConvTrial;

typedef struct {
    int usable;              // configs timed (of the heuristics' list)
    int failed;              // configs that planned but whose first run cuDNN refused (left out)
    int refused;             // of those, checked (the fastest left) and found to give other numbers
    float legacy_us;         // the legacy call, a run
    float fastest_us;        // the fastest usable config (0: none), checked or not
    int64_t fastest_engine;  // its engine
    float chosen_us;         // the kept one (legacy_us when the legacy call is kept)
    double difference;       // the kept graph's largest difference from the legacy output, over its largest value
} ConvChoiceReport;

// Times every usable config of direction d at shape s against the legacy call, and returns
// the plan of the fastest one whose output agrees with the legacy call's (largest
// difference at most 1e-2 of the legacy output's largest value, all finite), if it is
// faster than the legacy call; with `always`, even if it is not. NULL: keep the legacy call.
// A config whose first run cuDNN refuses (an engine may refuse at execution what it
// planned) is left out, not fatal.
ConvGraph *conv_graph_choose(cudnnBackendDescriptor_t device, ConvDirection d, const FusionShape *s,
                             const ConvTrial *trial, int always, ConvChoiceReport *report);
