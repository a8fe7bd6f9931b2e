// plot.h: benchstat --plot, the histograms of run files, drawn by gnuplot.
#pragma once
#include "runfile.h"

// Whether an executable gnuplot is on PATH.
int plot_gnuplot_found(void);

// Draws the accuracy and time histograms of files[0..n_files-1] (the runs that count, i.e.
// did not diverge) side by side into the PNG png_path: the files overlaid in distinct
// colours with a legend naming each, a labelled mean line per file, and a dashed line at
// each file's target (targets[i], a fraction; NAN draws none). Pipes a generated script
// into gnuplot. 0, or -1 and a message in err.
int plot_run_files(const char *png_path, const RunFile *files, const double *targets,
                   int n_files, char *err, size_t err_size);
