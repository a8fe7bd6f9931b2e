// fixture.h: reads the binary fixtures written by dev/make_fixtures.py (PyTorch).
//
// Format (little-endian): "ABFX", uint32 version (1), uint32 tensor count; then per tensor:
// uint32 name length, the name's bytes (no NUL), uint32 ndim, int32 dims[ndim], float32
// data (the product of the dims; ndim 0 is a scalar). Integers are stored as float32.
//
// fixture_load reads the whole file and copies each tensor's data into its own aligned
// buffer; fixture_get finds a tensor by name (and optionally checks its size) and prints a
// message naming the file and the tensor when it is missing or of the wrong size. Assumes a
// little-endian host (x86-64, aarch64).
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE_MAX_DIMS 8

typedef struct {
    char *name;
    int ndim;
    int dims[FIXTURE_MAX_DIMS];
    size_t count;   // number of values
    float *data;
} FixtureTensor;

typedef struct {
    char path[1024];
    int n;
    FixtureTensor *tensors;
} Fixture;

static inline void fixture_free(Fixture *f) {
    for (int i = 0; i < f->n; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].data);
    }
    free(f->tensors);
    f->tensors = NULL;
    f->n = 0;
}

// Reads bytes [*pos, *pos + size) of buf (length len) into out; 0 on success.
static inline int fixture_take_(const uint8_t *buf, size_t len, size_t *pos, void *out, size_t size) {
    if (size > len - *pos) return -1;
    memcpy(out, buf + *pos, size);
    *pos += size;
    return 0;
}

// Loads path into f. Returns 0, or -1 with a message in err naming the file and the problem.
static inline int fixture_load(Fixture *f, const char *path, char *err, size_t err_size) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(err, err_size, "cannot open fixture %.512s: %s (make it with `python3 dev/make_fixtures.py`)",
                 path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : (1 << 20);
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(file);
                snprintf(err, err_size, "fixture %.512s: out of memory", path);
                return -1;
            }
            buf = grown;
        }
        size_t got = fread(buf + len, 1, cap - len, file);
        len += got;
        if (got == 0) break;
    }
    int read_error = ferror(file);
    fclose(file);
    if (read_error) {
        free(buf);
        snprintf(err, err_size, "fixture %.512s: read error", path);
        return -1;
    }
    size_t pos = 0;
    char magic[4];
    uint32_t version = 0, count = 0;
    if (fixture_take_(buf, len, &pos, magic, 4) || memcmp(magic, "ABFX", 4) != 0 ||
        fixture_take_(buf, len, &pos, &version, 4) || fixture_take_(buf, len, &pos, &count, 4)) {
        free(buf);
        snprintf(err, err_size, "fixture %.512s: not an ABFX file", path);
        return -1;
    }
    if (version != 1) {
        free(buf);
        snprintf(err, err_size, "fixture %.512s: version %u, this reader knows 1", path, version);
        return -1;
    }
    f->tensors = calloc(count ? count : 1, sizeof(FixtureTensor));
    if (!f->tensors) {
        free(buf);
        snprintf(err, err_size, "fixture %.512s: out of memory", path);
        return -1;
    }
    for (uint32_t i = 0; i < count; i++) {
        FixtureTensor *t = &f->tensors[i];
        uint32_t name_len = 0, ndim = 0;
        const char *problem = NULL;
        if (fixture_take_(buf, len, &pos, &name_len, 4) || name_len > len - pos) {
            problem = "truncated name";
        } else {
            t->name = malloc(name_len + 1);
            if (!t->name) {
                problem = "out of memory";
            } else {
                fixture_take_(buf, len, &pos, t->name, name_len);
                t->name[name_len] = '\0';
                f->n = (int)i + 1;
                if (fixture_take_(buf, len, &pos, &ndim, 4) || ndim > FIXTURE_MAX_DIMS) {
                    problem = "bad ndim";
                } else {
                    t->ndim = (int)ndim;
                    t->count = 1;
                    for (uint32_t d = 0; d < ndim && !problem; d++) {
                        int32_t dim;
                        if (fixture_take_(buf, len, &pos, &dim, 4) || dim < 0) problem = "bad dims";
                        else t->dims[d] = dim, t->count *= (size_t)dim;
                    }
                    if (!problem) {
                        t->data = malloc(t->count ? t->count * sizeof(float) : 1);
                        if (!t->data) problem = "out of memory";
                        else if (t->count > (len - pos) / sizeof(float)) problem = "truncated data";
                        else fixture_take_(buf, len, &pos, t->data, t->count * sizeof(float));
                    }
                }
            }
        }
        if (problem) {
            snprintf(err, err_size, "fixture %.512s: tensor %u (%s): %s", path, i,
                     t->name ? t->name : "?", problem);
            f->n = (int)i + 1;
            fixture_free(f);
            free(buf);
            return -1;
        }
    }
    if (pos != len) {
        snprintf(err, err_size, "fixture %.512s: %zu bytes left after %u tensors", path, len - pos, count);
        fixture_free(f);
        free(buf);
        return -1;
    }
    free(buf);
    return 0;
}

// The tensor called name, or NULL (quietly).
static inline const FixtureTensor *fixture_find(const Fixture *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

// The data of tensor name, or NULL after printing why: missing, or (when want_count > 0)
// not want_count values.
static inline const float *fixture_get(const Fixture *f, const char *name, size_t want_count) {
    const FixtureTensor *t = fixture_find(f, name);
    if (!t) {
        printf("fixture %.512s: no tensor \"%s\" (regenerate with `python3 dev/make_fixtures.py`?)\n",
               f->path, name);
        return NULL;
    }
    if (want_count > 0 && t->count != want_count) {
        printf("fixture %.512s: tensor \"%s\" has %zu values, want %zu\n", f->path, name, t->count,
               want_count);
        return NULL;
    }
    return t->data;
}

// A scalar (the first value of tensor name), or fallback after printing why.
static inline double fixture_scalar(const Fixture *f, const char *name, double fallback) {
    const float *v = fixture_get(f, name, 0);
    return v ? v[0] : fallback;
}
