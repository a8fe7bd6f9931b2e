// cli.h: the trainer's command line (flags, help, checks) and what it records about itself
// in the run file: the header (variant, git state, GPU, command, environment, the complete
// recipe) and one object per run.
#pragma once
#include <stdint.h>

#include "conv.h"
#include "recipe.h"
#include "runfile.h"

#define MAX_ENV 32

typedef struct {
    const char *data_dir, *json_path, *conv_cache;
    const Variant *variant;  // the named recipe, before --set and the shorthand flags
    Recipe recipe;           // what is trained
    int runs, quiet, warmup, test_images;  // test_images 0: all
    int graphs;                            // training steps as CUDA graphs (graph.h)
    int wgrad_stream;                      // the filter gradients on their own stream (trainer.h)
    int muon_streams;                      // each Muon group's Newton-Schulz on its own stream (trainer.h)
    int fused_bn;                          // BatchNorm backward reductions in the dgrads (trainer.h)
    int conv_graph;                        // ConvGraphChoice: graph-API engines for the convs (conv.h)
    int stats_blocks;                      // the per-channel reductions' block cap (kernels.h)
    uint64_t seed;
    ConvAlgoChoice conv_algo;
    int n_env;
    const char *env[MAX_ENV];  // KEY=VALUE strings recorded in the run file
    char command[4096];
} Options;

typedef struct {
    int epoch;
    double train_loss, train_acc, test_acc, time_s;  // time_s: cumulative GPU time
} EpochLog;

typedef struct {
    uint64_t seed;
    double accuracy, time_s, wall_s;
    int n_epochs;
    EpochLog *epochs;
    char divergence[160];  // why the run diverged; "" when it did not
    int interrupted;       // a signal arrived: the run stopped early and does not count
} RunResult;

// Fills o from argv (the variant from --variant, else from the program's name, e.g.
// airbench94-muon, else 94). Returns 0 to run, 1 after printing --help, -1 after printing
// an error (exit 2).
int parse_args(int argc, char **argv, Options *o);
// The one-line summary of what is about to run.
void print_setup(const Options *o, const char *gpu_name, int major, int minor, int n_train, int n_test);
// The run file's top-level fields (runfile_begin adds schema, complete, runs, summary).
cJSON *run_file_header(const Options *o, int conv_deterministic);
cJSON *run_json(const RunResult *run);
