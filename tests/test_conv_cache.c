// test_conv_cache.c: the algorithm cache file (airbench/conv_cache.c) on the CPU, where
// conv.c itself never runs. Files written before --conv-graph still load; comments, torn and
// malformed lines are skipped; an entry is found by device key and shape only; recording
// replaces an entry or adds one, rewrites the file without leaving a temporary one behind,
// and a reload gives back what was recorded, graph tokens included; a file that cannot be
// written is a warning and the entries stay in memory; a full cache keeps what it has; the
// legacy numbers and the graph tokens are read strictly.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conv_cache.h"
#include "test.h"

static char tmp_dir[] = "/tmp/test_conv_cache-XXXXXX";

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "test_conv_cache: cannot write %s\n", path);
        exit(2);
    }
}

static ConvCacheEntry entry(const char *device, int batch, const char *fwd, const char *data, const char *filter) {
    ConvCacheEntry e = {.batch = batch, .c_in = 24, .c_out = 64, .side = 31};
    snprintf(e.device, sizeof e.device, "%s", device);
    snprintf(e.choice[0], sizeof e.choice[0], "%s", fwd);
    snprintf(e.choice[1], sizeof e.choice[1], "%s", data);
    snprintf(e.choice[2], sizeof e.choice[2], "%s", filter);
    return e;
}

static int same_entry(const ConvCacheEntry *a, const ConvCacheEntry *b) {
    int same = !strcmp(a->device, b->device) && a->batch == b->batch && a->c_in == b->c_in && a->c_out == b->c_out &&
               a->side == b->side;
    for (int d = 0; d < CONV_CACHE_CHOICES; d++) same &= !strcmp(a->choice[d], b->choice[d]);
    return same;
}

static void test_load(const char *path) {
    write_file(path, "# a comment\n"
                     "NVIDIA H100 80GB HBM3/sm90/cudnn91900|1024 24 64 31|1 0 5\n"
                     "NVIDIA H100 80GB HBM3/sm90/cudnn91900/graph|1024 24 64 31|g3.65 - g0.62\n"
                     "no bar here\n"
                     "NVIDIA H100 80GB HBM3/sm90/cudnn91900|1024 64 256|1 0\n"  // torn
                     "NVIDIA H100 80GB HBM3/sm90/cudnn91900|2000 24 64 31|6 1 0");  // no newline at the end
    ConvCache *c = malloc(sizeof *c);
    conv_cache_load(c, path);
    CHECK(c->n == 3, "%d entries loaded from a file with 3 good lines", c->n);
    const char *h100 = "NVIDIA H100 80GB HBM3/sm90/cudnn91900";
    const ConvCacheEntry *e = conv_cache_lookup(c, h100, 1024, 24, 64, 31);
    int algo[CONV_CACHE_CHOICES];
    CHECK(e && conv_cache_legacy_algos(e, algo) && algo[0] == 1 && algo[1] == 0 && algo[2] == 5,
          "the legacy entry of 1024 24 64 31 is not 1 0 5");
    CHECK(conv_cache_lookup(c, h100, 2000, 24, 64, 31) != NULL, "the last line (no newline) is not loaded");
    CHECK(!conv_cache_lookup(c, h100, 1024, 64, 256, 15), "a torn line was loaded");
    CHECK(!conv_cache_lookup(c, h100, 512, 24, 64, 31), "an entry found for another batch");
    CHECK(!conv_cache_lookup(c, h100, 1024, 32, 64, 31), "an entry found for another c_in");
    CHECK(!conv_cache_lookup(c, h100, 1024, 24, 72, 31), "an entry found for another c_out");
    CHECK(!conv_cache_lookup(c, h100, 1024, 24, 64, 15), "an entry found for another side");
    CHECK(!conv_cache_lookup(c, "NVIDIA A100/sm80/cudnn91900", 1024, 24, 64, 31), "an entry found for another GPU");
    char graph_key[CONV_CACHE_DEVICE];
    snprintf(graph_key, sizeof graph_key, "%s/graph", h100);
    e = conv_cache_lookup(c, graph_key, 1024, 24, 64, 31);
    CHECK(e && !strcmp(e->choice[0], "g3.65") && !strcmp(e->choice[1], "-") && !strcmp(e->choice[2], "g0.62"),
          "the graph entry is not g3.65 - g0.62");
    CHECK(e && !conv_cache_legacy_algos(e, algo), "graph tokens read as legacy algorithm numbers");
    conv_cache_load(c, "/nonexistent/dir/algos.txt");
    CHECK(c->n == 0, "a missing file gave %d entries", c->n);
    conv_cache_load(c, NULL);
    CHECK(c->n == 0 && !c->path[0], "no path: entries or a path");
    free(c);
}

static void test_record(const char *path) {
    remove(path);
    ConvCache *c = malloc(sizeof *c), *again = malloc(sizeof *again);
    conv_cache_load(c, path);
    ConvCacheEntry legacy = entry("GPU/sm90/cudnn9", 1024, "1", "0", "5");
    ConvCacheEntry graph = entry("GPU/sm90/cudnn9/graph", 1024, "g3.65", "-", "g12.0");
    conv_cache_record(c, &legacy);
    conv_cache_record(c, &graph);
    legacy.choice[2][0] = '4';  // re-timed: replaces the entry
    conv_cache_record(c, &legacy);
    CHECK(c->n == 2, "%d entries after recording two shapes and replacing one", c->n);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "the temporary file %s stayed behind", tmp);
    conv_cache_load(again, path);
    CHECK(again->n == 2, "%d entries read back, 2 recorded", again->n);
    const ConvCacheEntry *e = conv_cache_lookup(again, "GPU/sm90/cudnn9", 1024, 24, 64, 31);
    CHECK(e && same_entry(e, &legacy), "the replaced legacy entry does not read back as recorded");
    e = conv_cache_lookup(again, "GPU/sm90/cudnn9/graph", 1024, 24, 64, 31);
    CHECK(e && same_entry(e, &graph), "the graph entry does not read back as recorded");

    // No file: recording is a no-op; an unwritable one: a warning, and the entry in memory.
    conv_cache_load(c, NULL);
    conv_cache_record(c, &legacy);
    CHECK(c->n == 0, "with no file an entry was recorded");
    conv_cache_load(c, "/nonexistent/dir/algos.txt");
    fprintf(stderr, "(a warning about /nonexistent/dir/algos.txt is expected next)\n");
    conv_cache_record(c, &legacy);
    CHECK(c->n == 1 && conv_cache_lookup(c, "GPU/sm90/cudnn9", 1024, 24, 64, 31),
          "an unwritable file lost the entry from memory");
    free(c);
    free(again);
}

static void test_full(const char *path) {
    remove(path);
    ConvCache *c = malloc(sizeof *c);
    conv_cache_load(c, path);
    for (int i = 0; i < CONV_CACHE_ENTRIES + 3; i++) {
        ConvCacheEntry e = entry("GPU/sm90/cudnn9", i + 1, "1", "1", "1");
        conv_cache_record(c, &e);
    }
    CHECK(c->n == CONV_CACHE_ENTRIES, "%d entries in a cache of %d", c->n, CONV_CACHE_ENTRIES);
    ConvCacheEntry first = entry("GPU/sm90/cudnn9", 1, "2", "2", "2");
    conv_cache_record(c, &first);  // a full cache still replaces
    const ConvCacheEntry *e = conv_cache_lookup(c, "GPU/sm90/cudnn9", 1, 24, 64, 31);
    CHECK(e && !strcmp(e->choice[0], "2"), "a full cache did not replace an entry it holds");
    conv_cache_load(c, path);
    CHECK(c->n == CONV_CACHE_ENTRIES, "%d entries read back from a full cache's file", c->n);
    free(c);
}

static void test_tokens(void) {
    struct {
        const char *token;
        int kind, config;
        long long engine;
    } cases[] = {{"-", 0, 0, 0},       {"g3.65", 1, 3, 65}, {"g0.0", 1, 0, 0},   {"g3", -1, 0, 0},
                 {"g3.65x", -1, 0, 0}, {"3", -1, 0, 0},     {"", -1, 0, 0},      {"g-1.5", -1, 0, 0},
                 {"--", -1, 0, 0},     {"g3.-5", -1, 0, 0}, {"G3.65", -1, 0, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int config = -7;
        long long engine = -7;
        int kind = conv_cache_graph_token(cases[i].token, &config, &engine);
        CHECK(kind == cases[i].kind && (kind != 1 || (config == cases[i].config && engine == cases[i].engine)),
              "graph token '%s': kind %d (config %d, engine %lld), expected %d", cases[i].token, kind, config,
              engine, cases[i].kind);
    }
    const char *bad_legacy[] = {"-1", "65", "1x", "", "g1.2"};
    for (size_t i = 0; i < sizeof bad_legacy / sizeof *bad_legacy; i++) {
        ConvCacheEntry e = entry("d", 1, "0", "0", bad_legacy[i]);
        int algo[CONV_CACHE_CHOICES];
        CHECK(!conv_cache_legacy_algos(&e, algo), "'%s' read as a legacy algorithm number", bad_legacy[i]);
    }
    ConvCacheEntry e = entry("d", 1, "0", "64", "7");
    int algo[CONV_CACHE_CHOICES];
    CHECK(conv_cache_legacy_algos(&e, algo) && algo[0] == 0 && algo[1] == 64 && algo[2] == 7,
          "0 64 7 not read as legacy algorithm numbers");
}

int main(void) {
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/conv_algos.txt", tmp_dir);
    test_load(path);
    test_record(path);
    test_full(path);
    test_tokens();
    remove(path);
    rmdir(tmp_dir);
    return test_finish("test_conv_cache");
}
