// fuzz.c: the seeded mutation fuzzer described in fuzz.h: the flags, the seed corpus, the
// mutations, the budget loop with its crash file and per-input timeout, and --replay.
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_STACKED_MUTATIONS 5
#define DEFAULT_SEED 1
#define DEFAULT_TIMEOUT_SECONDS 10
#define PATH_BYTES 4096

typedef struct {
    uint8_t *bytes;  // never NULL, even when size is 0
    size_t size;
} Bytes;

typedef struct {
    Bytes *seeds;  // in file-name order
    size_t count;
} Corpus;

typedef struct {
    const char *corpus_dir;
    const char *crash_path;
    const char *replay_path;  // NULL: fuzz
    uint64_t seed;
    long runs;
    double seconds;
    long timeout_seconds;
} Options;

// The input being built, and what the mutations draw on.
typedef struct {
    uint8_t *data;          // capacity bytes, the first size of them in use
    size_t size;
    size_t capacity;        // the target's max_size
    uint8_t *scratch;       // capacity bytes, for copying a range
    uint64_t random_state;  // of this input's generator
    const Corpus *corpus;   // for splicing
} Input;

static char program_name[128];    // fuzz_NAME, the prefix of every message
static const char *program_path;  // argv[0], for the replay hint

// ---- messages ----

// Prints the error and exits. _exit skips the leak check at exit, which would report what the
// run still holds and replace the status.
__attribute__((format(printf, 2, 3), noreturn))
static void die(int status, const char *format, ...) {
    fflush(stdout);
    fprintf(stderr, "%s: error: ", program_name);
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fprintf(stderr, "\n");
    _exit(status);
}

// A target that runs past --timeout is stopped by SIGALRM, whose handler can only write a
// message prepared beforehand (a handler may call async-signal-safe functions only).
static char timeout_message[3 * PATH_BYTES];
static size_t timeout_length;

static void report_timeout(int signal_number) {
    (void)signal_number;
    ssize_t written = write(STDERR_FILENO, timeout_message, timeout_length);
    _exit(written < 0 ? 2 : 1);
}

static void arm_timeout_report(const Options *o, const char *input_path) {
    snprintf(timeout_message, sizeof timeout_message,
             "%s: error: an input ran longer than %ld s (--timeout); it is in %s; "
             "replay it with: %s --replay %s\n",
             program_name, o->timeout_seconds, input_path, program_path, input_path);
    timeout_length = strlen(timeout_message);
    signal(SIGALRM, report_timeout);
}

// ---- flags ----

static void usage(const FuzzConfig *config) {
    printf("usage: %s [--corpus DIR] [--seed N] [--runs N] [--seconds S] [--timeout S]\n"
           "       %*s [--crash-file FILE] [--replay FILE]\n"
           "Fuzzes the %s target: runs the seeds in DIR, then mutated seeds, until --runs\n"
           "inputs or --seconds are spent (0 lifts one of the limits). Input k depends only\n"
           "on --seed, k and the corpus. Each input is written to the crash file before it\n"
           "runs, so that a failing one can be run again alone with --replay FILE; --timeout\n"
           "stops an input that hangs. See tests/fuzz.h.\n"
           "Defaults: --corpus %s --seed %d --runs %ld --seconds %g\n"
           "          --timeout %d --crash-file build/fuzz-%s-crash.bin\n"
           "Exit status: 0 no failure; 1 the target failed (a sanitizer or an assertion may\n"
           "exit with its own non-zero status); 2 a bad flag, corpus or crash file.\n",
           program_path, (int)strlen(program_path), "", config->name, config->corpus_dir,
           DEFAULT_SEED, config->runs, config->seconds, DEFAULT_TIMEOUT_SECONDS, config->name);
}

__attribute__((noreturn))
static void bad_value(const char *flag, const char *value, const char *expected) {
    die(2, "bad value '%s' for %s: expected %s (see --help)", value, flag, expected);
}

static long parse_long(const char *flag, const char *value, long lo, long hi) {
    char *end;
    errno = 0;
    long number = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || number < lo || number > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "an integer in %ld..%ld", lo, hi);
        bad_value(flag, value, expected);
    }
    return number;
}

static uint64_t parse_seed(const char *flag, const char *value) {
    char *end;
    errno = 0;
    unsigned long long number = strtoull(value, &end, 10);
    // strtoull would accept a sign and wrap "-1" around; a seed is digits only.
    if (errno != 0 || *value < '0' || *value > '9' || *end != '\0')
        bad_value(flag, value, "an unsigned 64-bit integer");
    return number;
}

static double parse_seconds(const char *flag, const char *value) {
    char *end;
    double seconds = strtod(value, &end);
    if (end == value || *end != '\0' || !(seconds >= 0 && seconds <= 1e7))
        bad_value(flag, value, "a number of seconds in 0..1e7");
    return seconds;
}

static Options parse_options(int argc, char **argv, const FuzzConfig *config) {
    static char default_crash_path[PATH_BYTES];
    snprintf(default_crash_path, sizeof default_crash_path, "build/fuzz-%s-crash.bin",
             config->name);
    Options o = {.corpus_dir = config->corpus_dir, .crash_path = default_crash_path,
                 .seed = DEFAULT_SEED, .runs = config->runs, .seconds = config->seconds,
                 .timeout_seconds = DEFAULT_TIMEOUT_SECONDS};
    for (int i = 1; i < argc; i += 2) {
        const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            usage(config);
            exit(0);
        }
        static const char *const known[] = {"--corpus", "--seed", "--runs", "--seconds",
                                            "--timeout", "--crash-file", "--replay"};
        bool is_known = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            is_known |= !strcmp(flag, known[k]);
        if (!is_known) die(2, "unknown flag '%s' (see --help)", flag);
        if (value == NULL) die(2, "%s needs a value (see --help)", flag);
        if (!strcmp(flag, "--corpus")) o.corpus_dir = value;
        else if (!strcmp(flag, "--seed")) o.seed = parse_seed(flag, value);
        else if (!strcmp(flag, "--runs")) o.runs = parse_long(flag, value, 0, 1000000000);
        else if (!strcmp(flag, "--seconds")) o.seconds = parse_seconds(flag, value);
        else if (!strcmp(flag, "--timeout")) o.timeout_seconds = parse_long(flag, value, 1, 3600);
        else if (!strcmp(flag, "--crash-file")) o.crash_path = value;
        else o.replay_path = value;
    }
    if (o.runs == 0 && o.seconds == 0)
        die(2, "--runs 0 with --seconds 0 would never end: give one of them a limit");
    return o;
}

// ---- files ----

// Reads the regular file at path (at most max_size bytes) into fresh memory; what names it in
// messages (e.g. "seed").
static Bytes read_file(const char *path, size_t max_size, const char *what) {
    struct stat info;
    if (stat(path, &info) != 0) die(2, "cannot read the %s %s: %s", what, path, strerror(errno));
    // A named pipe would block the read below, a device might never end.
    if (!S_ISREG(info.st_mode)) die(2, "the %s %s is not a regular file", what, path);
    if ((uintmax_t)info.st_size > max_size)
        die(2, "the %s %s is %lld bytes, over the target's limit of %zu: shorten it",
            what, path, (long long)info.st_size, max_size);
    // One byte more, so that an empty file has a buffer too (memcpy wants valid pointers).
    Bytes file = {.bytes = malloc((size_t)info.st_size + 1), .size = (size_t)info.st_size};
    FILE *stream = fopen(path, "rb");
    if (file.bytes == NULL || stream == NULL ||
        fread(file.bytes, 1, file.size, stream) != file.size)
        die(2, "cannot read the %s %s: %s", what, path, strerror(errno));
    fclose(stream);
    return file;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The names in dir, dot files left out, sorted so that the seed order is the same everywhere.
static char **list_names(const char *dir, size_t *count) {
    DIR *listing = opendir(dir);
    if (listing == NULL)
        die(2, "cannot open the corpus folder %s: %s (pass --corpus DIR)", dir, strerror(errno));
    char **names = NULL;
    *count = 0;
    for (struct dirent *entry; (entry = readdir(listing)) != NULL;) {
        if (entry->d_name[0] == '.') continue;
        names = realloc(names, (*count + 1) * sizeof *names);
        if (names == NULL || (names[*count] = strdup(entry->d_name)) == NULL)
            die(2, "out of memory listing %s", dir);
        (*count)++;
    }
    closedir(listing);
    if (*count == 0) die(2, "the corpus folder %s holds no seed files: add at least one", dir);
    qsort(names, *count, sizeof *names, compare_names);
    return names;
}

static Corpus load_corpus(const char *dir, size_t max_size) {
    Corpus corpus;
    char **names = list_names(dir, &corpus.count);
    corpus.seeds = malloc(corpus.count * sizeof *corpus.seeds);
    if (corpus.seeds == NULL) die(2, "out of memory loading %s", dir);
    for (size_t i = 0; i < corpus.count; i++) {
        char path[PATH_BYTES];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        corpus.seeds[i] = read_file(path, max_size, "seed");
        free(names[i]);
    }
    free(names);
    return corpus;
}

static void free_corpus(Corpus *corpus) {
    for (size_t i = 0; i < corpus->count; i++) free(corpus->seeds[i].bytes);
    free(corpus->seeds);
}

// Writes the input to the crash file before it runs, so that a crash leaves it there.
static void save_input(int crash_fd, const Input *in, const char *crash_path) {
    if (pwrite(crash_fd, in->data, in->size, 0) != (ssize_t)in->size ||
        ftruncate(crash_fd, (off_t)in->size) != 0)
        die(2, "cannot write %s: %s", crash_path, strerror(errno));
}

// ---- random numbers ----

// splitmix64 (Steele, Lea and Flood, 2014): tiny and well mixed; the state is all there is.
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// The generator of input k: a function of the run's seed and k only, so that input k is the
// same however many inputs came before it.
static uint64_t input_random_state(uint64_t seed, long k) {
    uint64_t state = seed;
    // Multiplying k by an odd constant spreads it over all bits before it meets the seed.
    state = next_random(&state) ^ ((uint64_t)k * 0xd1b54a32d192ed03ULL);
    next_random(&state);
    return state;
}

// A uniform number in 0..n-1 (0 when n is 0); the modulo bias is negligible at these sizes.
static size_t below(Input *in, size_t n) {
    return n == 0 ? 0 : (size_t)(next_random(&in->random_state) % n);
}

// A length in 1..limit (limit >= 1). The upper bound is itself uniform, so short lengths are
// likelier than long ones, as in most fuzzers.
static size_t pick_length(Input *in, size_t limit) {
    return 1 + below(in, 1 + below(in, limit));
}

// Fills n bytes with random bytes, zeros, 0xff bytes or one random byte repeated.
static void fill(Input *in, uint8_t *bytes, size_t n) {
    switch (below(in, 4)) {
    case 0:
        for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)next_random(&in->random_state);
        break;
    case 1: memset(bytes, 0, n); break;
    case 2: memset(bytes, 0xff, n); break;
    default: memset(bytes, (uint8_t)next_random(&in->random_state), n); break;
    }
}

// ---- mutations: each changes the input in place and keeps it within capacity ----

static void flip_bit(Input *in) {
    if (in->size > 0) in->data[below(in, in->size)] ^= (uint8_t)(1u << below(in, 8));
}

static void flip_byte(Input *in) {
    if (in->size > 0) in->data[below(in, in->size)] ^= 0xff;
}

static void random_byte(Input *in) {
    if (in->size > 0) in->data[below(in, in->size)] = (uint8_t)next_random(&in->random_state);
}

// Writes a boundary value as 1, 2 or 4 bytes (cut to the width), little- or big-endian.
static void interesting_value(Input *in) {
    static const uint32_t values[] = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff,
                                      0x7fffffff, 0x80000000, 0xffffffff};
    size_t width = (size_t)1 << below(in, 3);
    if (in->size < width) return;
    uint32_t value = values[below(in, sizeof values / sizeof values[0])];
    size_t at = below(in, in->size - width + 1);
    bool big_endian = below(in, 2);
    for (size_t i = 0; i < width; i++)
        in->data[at + i] = (uint8_t)(value >> (8 * (big_endian ? width - 1 - i : i)));
}

// Moves the bytes from at onwards n places up (the caller checked that they fit).
static void open_gap(Input *in, size_t at, size_t n) {
    memmove(in->data + at + n, in->data + at, in->size - at);
    in->size += n;
}

static void insert_bytes(Input *in) {
    if (in->size == in->capacity) return;
    size_t n = pick_length(in, in->capacity - in->size);
    size_t at = below(in, in->size + 1);
    open_gap(in, at, n);
    fill(in, in->data + at, n);
}

static void delete_range(Input *in) {
    if (in->size == 0) return;
    size_t n = pick_length(in, in->size);
    size_t at = below(in, in->size - n + 1);
    memmove(in->data + at, in->data + at + n, in->size - at - n);
    in->size -= n;
}

// Inserts a copy of a range of the input somewhere in it.
static void duplicate_range(Input *in) {
    size_t room = in->capacity - in->size;
    if (in->size == 0 || room == 0) return;
    size_t n = pick_length(in, in->size < room ? in->size : room);
    memcpy(in->scratch, in->data + below(in, in->size - n + 1), n);
    size_t at = below(in, in->size + 1);
    open_gap(in, at, n);
    memcpy(in->data + at, in->scratch, n);
}

// Copies a range of the input over another place in it; the size stays.
static void copy_range(Input *in) {
    if (in->size == 0) return;
    size_t n = pick_length(in, in->size);
    size_t from = below(in, in->size - n + 1), to = below(in, in->size - n + 1);
    memmove(in->data + to, in->data + from, n);
}

// Keeps a prefix of the input and appends a suffix of a random seed, up to the capacity.
static void splice(Input *in) {
    const Bytes *other = &in->corpus->seeds[below(in, in->corpus->count)];
    size_t keep = below(in, in->size + 1);
    size_t from = below(in, other->size + 1);
    size_t n = other->size - from;
    if (n > in->capacity - keep) n = in->capacity - keep;
    memcpy(in->data + keep, other->bytes + from, n);
    in->size = keep + n;
}

static void truncate_input(Input *in) {
    if (in->size > 0) in->size = below(in, in->size);
}

static void extend(Input *in) {
    if (in->size == in->capacity) return;
    size_t n = pick_length(in, in->capacity - in->size);
    fill(in, in->data + in->size, n);
    in->size += n;
}

typedef void (*Mutation)(Input *in);
static const Mutation MUTATIONS[] = {
    flip_bit,        flip_byte,  random_byte, interesting_value, insert_bytes,   delete_range,
    duplicate_range, copy_range, splice,      truncate_input,    extend,
};
#define N_MUTATIONS (sizeof MUTATIONS / sizeof MUTATIONS[0])

// Makes input number k: the seeds as they are first, then random seeds with 1 to
// MAX_STACKED_MUTATIONS mutations each.
static void make_input(Input *in, uint64_t run_seed, long k) {
    const Corpus *corpus = in->corpus;
    in->random_state = input_random_state(run_seed, k);
    bool as_is = (size_t)k < corpus->count;
    const Bytes *seed = &corpus->seeds[as_is ? (size_t)k : below(in, corpus->count)];
    memcpy(in->data, seed->bytes, seed->size);
    in->size = seed->size;
    if (as_is) return;
    size_t n_mutations = 1 + below(in, MAX_STACKED_MUTATIONS);
    for (size_t i = 0; i < n_mutations; i++) MUTATIONS[below(in, N_MUTATIONS)](in);
}

// ---- running ----

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Runs the target on a copy of the input in a buffer of exactly its size, so that the address
// sanitizer catches a read one byte past the end.
static void run_target(const FuzzConfig *config, const Options *o, const uint8_t *data,
                       size_t size, const char *input_path) {
    uint8_t *exact = malloc(size);
    if (exact == NULL && size > 0) die(2, "out of memory for an input of %zu bytes", size);
    if (size > 0) memcpy(exact, data, size);
    alarm((unsigned)o->timeout_seconds);
    int status = config->target(exact, size);
    alarm(0);
    free(exact);
    if (status != 0)
        die(1, "the target returned %d, not 0, on the input in %s; replay it with: %s --replay %s",
            status, input_path, program_path, input_path);
}

static int replay(const FuzzConfig *config, const Options *o) {
    Bytes input = read_file(o->replay_path, SIZE_MAX - 1, "input");  // any size: no limit
    arm_timeout_report(o, o->replay_path);
    run_target(config, o, input.bytes, input.size, o->replay_path);
    printf("%s: replayed %s (%zu bytes): no failure\n", program_name, o->replay_path, input.size);
    free(input.bytes);
    return 0;
}

static bool budget_left(const Options *o, long k, double start) {
    return (o->runs == 0 || k < o->runs) && (o->seconds == 0 || now_seconds() - start < o->seconds);
}

// FNV-1a, 64 bits, over the input's bytes and then its size (so that "ab","c" != "a","bc").
static uint64_t hash_input(uint64_t hash, const Input *in) {
    const uint64_t prime = 0x100000001b3ULL;
    for (size_t i = 0; i < in->size; i++) hash = (hash ^ in->data[i]) * prime;
    return (hash ^ in->size) * prime;
}

// Runs inputs until the budget, counted from start, is spent; returns how many ran and sets
// *hash to a hash of all of them, in order: equal for runs that made the same inputs.
static long fuzz_loop(const FuzzConfig *config, const Options *o, Input *in, int crash_fd,
                      double start, uint64_t *hash) {
    *hash = 0xcbf29ce484222325ULL;  // FNV-1a's offset basis
    long k = 0;
    for (; budget_left(o, k, start); k++) {
        make_input(in, o->seed, k);
        *hash = hash_input(*hash, in);
        save_input(crash_fd, in, o->crash_path);
        run_target(config, o, in->data, in->size, o->crash_path);
    }
    return k;
}

static int fuzz(const FuzzConfig *config, const Options *o) {
    Corpus corpus = load_corpus(o->corpus_dir, config->max_size);
    int crash_fd = open(o->crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (crash_fd < 0)
        die(2, "cannot create the crash file %s: %s (run from the repository root after "
            "make, or pass --crash-file FILE)", o->crash_path, strerror(errno));
    printf("%s: corpus %s (%zu files), seed %llu, budget %ld inputs or %g s (0: no limit); "
           "a failing input stays in %s: replay it with %s --replay %s\n",
           program_name, o->corpus_dir, corpus.count, (unsigned long long)o->seed, o->runs,
           o->seconds, o->crash_path, program_path, o->crash_path);
    fflush(stdout);  // a sanitizer ends the process without flushing
    arm_timeout_report(o, o->crash_path);
    Input in = {.data = malloc(config->max_size), .capacity = config->max_size,
                .scratch = malloc(config->max_size), .corpus = &corpus};
    if (in.data == NULL || in.scratch == NULL) die(2, "out of memory for inputs");
    double start = now_seconds();
    uint64_t hash;
    long n_inputs = fuzz_loop(config, o, &in, crash_fd, start, &hash);
    close(crash_fd);
    unlink(o->crash_path);
    printf("%s: %ld inputs in %.1f s (inputs hash %016llx), no failure\n", program_name,
           n_inputs, now_seconds() - start, (unsigned long long)hash);
    if (config->summary != NULL) config->summary();
    printf("RESULT 1 0\n");
    free(in.data);
    free(in.scratch);
    free_corpus(&corpus);
    return 0;
}

int fuzz_main(int argc, char **argv, const FuzzConfig *config) {
    snprintf(program_name, sizeof program_name, "fuzz_%s", config->name);
    program_path = argv[0];
    if (config->max_size == 0) die(2, "the target's max_size is 0");
    Options o = parse_options(argc, argv, config);
    return o.replay_path != NULL ? replay(config, &o) : fuzz(config, &o);
}
