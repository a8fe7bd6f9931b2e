// conv_cache.h: conv.c's algorithm cache file, which remembers each conv shape's timed
// choice per GPU model and cuDNN version, so that later processes start faster and make the
// same choice (which is what keeps two processes' runs bit-identical). Plain C, no CUDA:
// tests/test_conv_cache.c checks it on the CPU.
//
// One line per device key and shape, read whole at start and rewritten whole (a temporary
// file, then rename) when an entry is recorded:
//   <device key>|<batch> <c_in> <c_out> <side>|<forward> <backward-data> <backward-filter>
// The device key is "<GPU name>/sm<cc>/cudnn<version>" for the legacy algorithms, whose
// choices are their numbers; --conv-graph's entries have "/graph" appended and per direction
// "-" (the legacy call) or "g<config>.<engine>" (conv_graph.h). Lines starting with '#', and
// lines that do not parse, are skipped.
#pragma once
#include <stddef.h>

enum { CONV_CACHE_CHOICES = 3, CONV_CACHE_TOKEN = 24, CONV_CACHE_DEVICE = 328, CONV_CACHE_ENTRIES = 256 };

typedef struct {
    char device[CONV_CACHE_DEVICE];
    int batch, c_in, c_out, side;
    char choice[CONV_CACHE_CHOICES][CONV_CACHE_TOKEN];  // forward, backward data, backward filter
} ConvCacheEntry;

typedef struct {
    char path[4096];  // "" for no file: nothing is read or written
    ConvCacheEntry entries[CONV_CACHE_ENTRIES];
    int n;
} ConvCache;

// Reads the file at path (NULL or "": no file; a missing file: no entries yet).
void conv_cache_load(ConvCache *c, const char *path);
// The entry of a shape under a device key, or NULL.
const ConvCacheEntry *conv_cache_lookup(const ConvCache *c, const char *device, int batch, int c_in, int c_out,
                                        int side);
// Adds e (replacing the entry of its device key and shape) and rewrites the file; a full
// cache (CONV_CACHE_ENTRIES) keeps what it has. The cache only saves time: a file that
// cannot be written is a warning on stderr, not an error.
void conv_cache_record(ConvCache *c, const ConvCacheEntry *e);
// The legacy algorithm numbers of an entry (each 0..64); 0 if one is not such a number.
int conv_cache_legacy_algos(const ConvCacheEntry *e, int algo[CONV_CACHE_CHOICES]);
// A graph entry's token: 0 for "-" (the legacy call), 1 for "g<config>.<engine>" (both
// set), -1 for anything else.
int conv_cache_graph_token(const char *token, int *config, long long *engine);
