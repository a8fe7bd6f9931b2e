// conv_cache.c: the algorithm cache file (conv_cache.h).
#include "conv_cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void conv_cache_load(ConvCache *c, const char *path) {
    c->n = 0;
    snprintf(c->path, sizeof c->path, "%s", path ? path : "");
    FILE *f = c->path[0] ? fopen(c->path, "r") : NULL;
    if (!f) return;
    char line[512];
    while (c->n < CONV_CACHE_ENTRIES && fgets(line, sizeof line, f)) {
        ConvCacheEntry *e = &c->entries[c->n];
        char *bar = strchr(line, '|');
        if (line[0] == '#' || !bar || (size_t)(bar - line) >= sizeof e->device) continue;
        snprintf(e->device, sizeof e->device, "%.*s", (int)(bar - line), line);
        if (sscanf(bar, "|%d %d %d %d|%23s %23s %23s", &e->batch, &e->c_in, &e->c_out, &e->side, e->choice[0],
                   e->choice[1], e->choice[2]) == 7)
            c->n++;
    }
    fclose(f);
}

static void save(const ConvCache *c) {
    char tmp[sizeof c->path + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", c->path);
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL && fprintf(f, "# airbench.c cuDNN algorithm cache (airbench/conv_cache.h); delete it to "
                                     "re-time\n") > 0;
    for (int i = 0; ok && i < c->n; i++) {
        const ConvCacheEntry *e = &c->entries[i];
        ok = fprintf(f, "%s|%d %d %d %d|%s %s %s\n", e->device, e->batch, e->c_in, e->c_out, e->side, e->choice[0],
                     e->choice[1], e->choice[2]) > 0;
    }
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, c->path) != 0) {
        fprintf(stderr, "warning: cannot write the conv algorithm cache %s: %s\n", c->path, strerror(errno));
        remove(tmp);
    }
}

const ConvCacheEntry *conv_cache_lookup(const ConvCache *c, const char *device, int batch, int c_in, int c_out,
                                        int side) {
    for (int i = 0; i < c->n; i++) {
        const ConvCacheEntry *e = &c->entries[i];
        if (!strcmp(e->device, device) && e->batch == batch && e->c_in == c_in && e->c_out == c_out && e->side == side)
            return e;
    }
    return NULL;
}

void conv_cache_record(ConvCache *c, const ConvCacheEntry *e) {
    if (!c->path[0]) return;
    ConvCacheEntry *slot = (ConvCacheEntry *)conv_cache_lookup(c, e->device, e->batch, e->c_in, e->c_out, e->side);
    if (!slot && c->n == CONV_CACHE_ENTRIES) return;
    *(slot ? slot : &c->entries[c->n++]) = *e;
    save(c);
}

int conv_cache_legacy_algos(const ConvCacheEntry *e, int algo[CONV_CACHE_CHOICES]) {
    for (int d = 0; d < CONV_CACHE_CHOICES; d++) {
        char *end;
        long v = strtol(e->choice[d], &end, 10);
        if (end == e->choice[d] || *end || v < 0 || v > 64) return 0;
        algo[d] = (int)v;
    }
    return 1;
}

int conv_cache_graph_token(const char *token, int *config, long long *engine) {
    if (!strcmp(token, "-")) return 0;
    int used = 0;
    if (sscanf(token, "g%d.%lld%n", config, engine, &used) == 2 && !token[used] && *config >= 0 && *engine >= 0)
        return 1;
    return -1;
}
