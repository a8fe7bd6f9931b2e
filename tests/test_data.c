// test_data.c: the CIFAR-10 loader. On the real data in $DATA_DIR: counts, class balance and
// the published per-channel statistics. On files this test writes into fresh temporary
// folders: a synthetic set round-trips (CHW order, file order), and each kind of broken file
// fails with a message naming the file and the problem, leaving the struct zeroed. Names that
// are not regular files (a named pipe, a folder, a link to /dev/zero) are refused at once.
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cifar10.h"
#include "test.h"

#define FILE_BYTES ((size_t)CIFAR10_RECORDS_PER_FILE * CIFAR10_RECORD_BYTES)
#define ERR_SIZE 1024

static const char *const FILE_NAMES[6] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
    "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin",
};

static int contains(const char *text, const char *part) { return strstr(text, part) != NULL; }

static int split_is_zeroed(const Cifar10Split *split) {
    return split->n == 0 && split->images == NULL && split->labels == NULL;
}

// ---- the real data ----

static void check_class_counts(const Cifar10Split *split, int want_per_class, const char *what) {
    int counts[CIFAR10_CLASSES] = {0};
    for (int i = 0; i < split->n; i++) counts[split->labels[i]]++;
    for (int c = 0; c < CIFAR10_CLASSES; c++)
        CHECK(counts[c] == want_per_class, "%s class %d: %d images, want %d", what, c, counts[c],
              want_per_class);
}

// Per-channel mean and population std of pixel/255, from exact integer sums.
static void channel_stats(const Cifar10Split *split, double mean[3], double std[3]) {
    for (int c = 0; c < 3; c++) {
        uint64_t sum = 0, sum_squares = 0;
        for (int i = 0; i < split->n; i++) {
            const uint8_t *plane = split->images + (size_t)i * CIFAR10_IMAGE_BYTES + c * 1024;
            for (int p = 0; p < 1024; p++) {
                sum += plane[p];
                sum_squares += (uint64_t)plane[p] * plane[p];
            }
        }
        double count = (double)split->n * 1024;
        double mean_raw = (double)sum / count;
        mean[c] = mean_raw / 255.0;
        std[c] = sqrt((double)sum_squares / count - mean_raw * mean_raw) / 255.0;
    }
}

static void test_real_data(const char *dir) {
    Cifar10 data;
    char err[ERR_SIZE] = "";
    int status = cifar10_load(&data, dir, err, sizeof err);
    CHECK(status == 0, "loading %s failed: %s (run `make data`)", dir, err);
    if (status != 0) return;
    CHECK(data.train.n == 50000, "train has %d images, want 50000", data.train.n);
    CHECK(data.test.n == 10000, "test has %d images, want 10000", data.test.n);
    check_class_counts(&data.train, 5000, "train");
    check_class_counts(&data.test, 1000, "test");

    double mean[3], std[3];
    channel_stats(&data.train, mean, std);
    const double mean_4[3] = {0.4914, 0.4822, 0.4465}, std_4[3] = {0.2470, 0.2435, 0.2616};
    const double mean_8[3] = {0.49139968, 0.48215841, 0.44653091};
    const double std_8[3] = {0.24703223, 0.24348513, 0.26158784};
    const char *channel_names[3] = {"red", "green", "blue"};
    for (int c = 0; c < 3; c++) {
        char what[64];
        snprintf(what, sizeof what, "train %s mean (4 decimals)", channel_names[c]);
        CHECK_NEAR(mean[c], mean_4[c], 5e-5, what);
        snprintf(what, sizeof what, "train %s std (4 decimals)", channel_names[c]);
        CHECK_NEAR(std[c], std_4[c], 5e-5, what);
        snprintf(what, sizeof what, "train %s mean (published)", channel_names[c]);
        CHECK_NEAR(mean[c], mean_8[c], 5e-9, what);
        snprintf(what, sizeof what, "train %s std (published)", channel_names[c]);
        CHECK_NEAR(std[c], std_8[c], 5e-9, what);
    }
    cifar10_free(&data);
    CHECK(split_is_zeroed(&data.train) && split_is_zeroed(&data.test), "free leaves data zeroed");
}

// ---- synthetic files in temporary folders ----

// The pixel of global image i (counting across the six files) at channel c, row y, column x:
// it mixes every index, so any reordering of the layout changes the bytes.
static uint8_t synthetic_pixel(int i, int c, int y, int x) {
    return (uint8_t)(i * 31 + c * 101 + y * 7 + x);
}

// The label of global image i; it also depends on the file number, so files cannot be swapped.
static uint8_t synthetic_label(int i) {
    return (uint8_t)((i * 7 + i / CIFAR10_RECORDS_PER_FILE) % CIFAR10_CLASSES);
}

// The bytes of file number file_index (0..5) of the synthetic set; the caller frees them.
static uint8_t *synthetic_file(int file_index) {
    uint8_t *bytes = malloc(FILE_BYTES);
    if (bytes == NULL) abort();
    for (int r = 0; r < CIFAR10_RECORDS_PER_FILE; r++) {
        int i = file_index * CIFAR10_RECORDS_PER_FILE + r;
        uint8_t *record = bytes + (size_t)r * CIFAR10_RECORD_BYTES;
        record[0] = synthetic_label(i);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    record[1 + c * 1024 + y * 32 + x] = synthetic_pixel(i, c, y, x);
    }
    return bytes;
}

static void path_in(char *path, size_t size, const char *dir, const char *name) {
    snprintf(path, size, "%s/%s", dir, name);
}

static void write_bytes(const char *dir, const char *name, const uint8_t *bytes, size_t size) {
    char path[4096];
    path_in(path, sizeof path, dir, name);
    FILE *file = fopen(path, "wb");
    if (file == NULL || fwrite(bytes, 1, size, file) != size || fclose(file) != 0) {
        printf("cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
}

// Writes synthetic file number file_index under name, with size_change bytes cut off (< 0) or
// zero bytes appended (> 0).
static void write_synthetic(const char *dir, const char *name, int file_index,
                            long size_change) {
    uint8_t *bytes = synthetic_file(file_index);
    if (size_change > 0) {
        bytes = realloc(bytes, FILE_BYTES + size_change);
        if (bytes == NULL) abort();
        memset(bytes + FILE_BYTES, 0, size_change);
    }
    write_bytes(dir, name, bytes, FILE_BYTES + size_change);
    free(bytes);
}

static char *make_temp_dir(void) {
    const char *tmp = getenv("TMPDIR");
    char template[4096];
    snprintf(template, sizeof template, "%s/test_data.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *dir = mkdtemp(template);
    if (dir == NULL) {
        printf("mkdtemp %s: %s\n", template, strerror(errno));
        abort();
    }
    return strdup(dir);
}

// Hard-links (or, failing that, rewrites) synthetic file file_index from one folder to another.
static void share_file(const char *from_dir, const char *to_dir, int file_index) {
    char from[4096], to[4096];
    path_in(from, sizeof from, from_dir, FILE_NAMES[file_index]);
    path_in(to, sizeof to, to_dir, FILE_NAMES[file_index]);
    if (link(from, to) != 0) write_synthetic(to_dir, FILE_NAMES[file_index], file_index, 0);
}

static void remove_temp_dir(char *dir) {
    char path[4096];
    for (int f = 0; f < 6; f++) {
        path_in(path, sizeof path, dir, FILE_NAMES[f]);
        unlink(path);
    }
    if (rmdir(dir) != 0) printf("note: cannot remove %s: %s\n", dir, strerror(errno));
    free(dir);
}

// Checks that the split holds synthetic images first..first+n-1.
static void check_synthetic_split(const Cifar10Split *split, int first, int n, const char *what) {
    CHECK(split->n == n, "%s has %d images, want %d", what, split->n, n);
    if (split->n != n) return;
    int wrong_labels = 0, wrong_pixels = 0;
    for (int k = 0; k < n; k++) {
        int i = first + k;
        wrong_labels += split->labels[k] != synthetic_label(i);
        const uint8_t *image = split->images + (size_t)k * CIFAR10_IMAGE_BYTES;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    wrong_pixels += image[c * 1024 + y * 32 + x] != synthetic_pixel(i, c, y, x);
    }
    CHECK(wrong_labels == 0, "%s: %d labels differ from the file", what, wrong_labels);
    CHECK(wrong_pixels == 0, "%s: %d pixels differ from the file (CHW order)", what, wrong_pixels);
}

// A valid synthetic set in a temporary folder; returns the folder for the other cases to share.
static char *test_synthetic_set(void) {
    char *dir = make_temp_dir();
    for (int f = 0; f < 6; f++) write_synthetic(dir, FILE_NAMES[f], f, 0);
    Cifar10 data;
    char err[ERR_SIZE] = "";
    int status = cifar10_load(&data, dir, err, sizeof err);
    CHECK(status == 0, "synthetic set failed to load: %s", err);
    if (status == 0) {
        check_synthetic_split(&data.train, 0, 50000, "synthetic train");
        check_synthetic_split(&data.test, 50000, 10000, "synthetic test");
        // One spot check spelled out: image 1, blue channel (c=2), row 3, column 5.
        CHECK(data.train.images[CIFAR10_IMAGE_BYTES + 2 * 1024 + 3 * 32 + 5] ==
                  synthetic_pixel(1, 2, 3, 5), "image 1 blue (3,5) is not at CHW offset");
    }
    cifar10_free(&data);

    Cifar10Split split;
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[2]);
    status = cifar10_load_file(&split, path, err, sizeof err);
    CHECK(status == 0, "loading %s alone failed: %s", path, err);
    if (status == 0) check_synthetic_split(&split, 20000, 10000, "data_batch_3.bin alone");
    cifar10_free_split(&split);
    return dir;
}

// Loads a broken single file and checks the failure names it and each expected part.
static void expect_file_error(const char *path, const char *what, const char *part1,
                              const char *part2) {
    Cifar10Split split;
    memset(&split, 0xAB, sizeof split);  // garbage the loader must overwrite, not free
    char err[ERR_SIZE] = "";
    int status = cifar10_load_file(&split, path, err, sizeof err);
    CHECK(status == -1, "%s: load returned %d, want -1", what, status);
    CHECK(split_is_zeroed(&split), "%s: split not zeroed after failure", what);
    CHECK(contains(err, path), "%s: message does not name %s: %s", what, path, err);
    CHECK(contains(err, part1), "%s: message lacks \"%s\": %s", what, part1, err);
    CHECK(contains(err, part2), "%s: message lacks \"%s\": %s", what, part2, err);
    CHECK(contains(err, "get_cifar10.sh"), "%s: message lacks the fix: %s", what, err);
}

static void test_broken_file(const char *what, const char *name, long size_change,
                             const char *part1, const char *part2) {
    char *dir = make_temp_dir();
    write_synthetic(dir, name, 0, size_change);
    char path[4096];
    path_in(path, sizeof path, dir, name);
    expect_file_error(path, what, part1, part2);
    remove_temp_dir(dir);
}

static void test_bad_label(void) {
    char *dir = make_temp_dir();
    uint8_t *bytes = synthetic_file(0);
    bytes[(size_t)1234 * CIFAR10_RECORD_BYTES] = 10;
    write_bytes(dir, FILE_NAMES[0], bytes, FILE_BYTES);
    free(bytes);
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[0]);
    expect_file_error(path, "label 10", "record 1234", "label 10");
    remove_temp_dir(dir);
}

static void test_missing_file(void) {
    char *dir = make_temp_dir();
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[0]);
    expect_file_error(path, "missing file", "cannot open", strerror(ENOENT));

    char small_err[16];  // a short buffer gets a truncated, terminated message
    Cifar10Split split;
    CHECK(cifar10_load_file(&split, path, small_err, sizeof small_err) == -1, "missing file");
    CHECK(strlen(small_err) == sizeof small_err - 1, "short error buffer: %s", small_err);
    remove_temp_dir(dir);
}

// A whole-set load that fails on one file: the message names it, nothing stays allocated.
static void expect_set_error(const char *dir, const char *what, const char *name,
                             const char *part) {
    Cifar10 data;
    memset(&data, 0xAB, sizeof data);
    char err[ERR_SIZE] = "";
    int status = cifar10_load(&data, dir, err, sizeof err);
    CHECK(status == -1, "%s: load returned %d, want -1", what, status);
    CHECK(split_is_zeroed(&data.train) && split_is_zeroed(&data.test),
          "%s: data not zeroed after failure", what);
    CHECK(contains(err, name), "%s: message does not name %s: %s", what, name, err);
    CHECK(contains(err, part), "%s: message lacks \"%s\": %s", what, part, err);
}

static void test_set_without_test_batch(const char *valid_dir) {
    char *dir = make_temp_dir();
    for (int f = 0; f < 5; f++) share_file(valid_dir, dir, f);
    expect_set_error(dir, "no test_batch.bin", "test_batch.bin", strerror(ENOENT));
    remove_temp_dir(dir);
}

static void test_set_with_bad_train_file(const char *valid_dir) {
    char *dir = make_temp_dir();
    for (int f = 0; f < 6; f++)
        if (f != 2) share_file(valid_dir, dir, f);
    write_synthetic(dir, FILE_NAMES[2], 2, 1);
    expect_set_error(dir, "data_batch_3.bin one byte long", "data_batch_3.bin", "30730001");
    remove_temp_dir(dir);
}

// ---- names that are not regular files ----

// Opening a named pipe for reading waits for a writer, so a loader that opens before it checks
// would hang the suite. Each such load runs under an alarm whose handler prints this message
// (set beforehand: a handler may only call async-signal-safe functions) and exits 1.
#define BLOCK_SECONDS 5
static char blocked_message[8192];
static size_t blocked_length;

static void report_blocked(int signal_number) {
    (void)signal_number;
    ssize_t written = write(STDOUT_FILENO, blocked_message, blocked_length);
    _exit(written < 0 ? 2 : 1);
}

// Arms the alarm for one load of path that must not block; alarm(0) disarms it.
static void arm_block_alarm(const char *what, const char *path) {
    snprintf(blocked_message, sizeof blocked_message,
             "FAIL %s: %s: the loader still blocked after %d s on %s; it must refuse a name "
             "that is not a regular file without waiting\n",
             __FILE__, what, BLOCK_SECONDS, path);
    blocked_length = strlen(blocked_message);
    fflush(stdout);  // the handler's _exit would drop what is buffered
    signal(SIGALRM, report_blocked);
    alarm(BLOCK_SECONDS);
}

// The loader refuses path, which is kind (e.g. "a folder"), within BLOCK_SECONDS.
static void expect_refused_at_once(const char *path, const char *what, const char *kind) {
    arm_block_alarm(what, path);
    expect_file_error(path, what, "not a regular file", kind);
    alarm(0);
}

static void test_named_pipe(void) {
    char *dir = make_temp_dir();
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[0]);
    int made = mkfifo(path, 0600);
    CHECK(made == 0, "mkfifo %s: %s", path, strerror(errno));
    if (made == 0) expect_refused_at_once(path, "named pipe", "a named pipe");
    remove_temp_dir(dir);
}

static void test_folder(void) {
    char *dir = make_temp_dir();
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[0]);
    int made = mkdir(path, 0700);
    CHECK(made == 0, "mkdir %s: %s", path, strerror(errno));
    if (made == 0) expect_refused_at_once(path, "folder", "a folder");
    rmdir(path);
    remove_temp_dir(dir);
}

// /dev/zero never ends: a loader that skipped the check would read it as records of label 0.
static void test_link_to_dev_zero(void) {
    char *dir = make_temp_dir();
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[0]);
    int made = symlink("/dev/zero", path);
    CHECK(made == 0, "symlink %s: %s", path, strerror(errno));
    if (made == 0) expect_refused_at_once(path, "link to /dev/zero", "a character device");
    remove_temp_dir(dir);
}

// The whole-set loader (airbench-ref, the trainer) with a named pipe as test_batch.bin.
static void test_set_with_named_pipe(const char *valid_dir) {
    char *dir = make_temp_dir();
    for (int f = 0; f < 5; f++) share_file(valid_dir, dir, f);
    char path[4096];
    path_in(path, sizeof path, dir, FILE_NAMES[5]);
    int made = mkfifo(path, 0600);
    CHECK(made == 0, "mkfifo %s: %s", path, strerror(errno));
    if (made == 0) {
        arm_block_alarm("named pipe in a set", path);
        expect_set_error(dir, "named pipe in a set", "test_batch.bin", "a named pipe");
        alarm(0);
    }
    remove_temp_dir(dir);
}

int main(void) {
    const char *data_dir = getenv("DATA_DIR");
    test_real_data(data_dir && *data_dir ? data_dir : "data/cifar10");
    // First, so that a loader that blocks leaves only a small temporary folder behind.
    test_named_pipe();
    test_folder();
    test_link_to_dev_zero();

    char *valid_dir = test_synthetic_set();
    test_broken_file("truncated file", FILE_NAMES[5], -100, "30729900", "expected 30730000");
    test_broken_file("one extra byte", FILE_NAMES[1], 1, "30730001", "expected 30730000");
    test_bad_label();
    test_missing_file();
    test_set_without_test_batch(valid_dir);
    test_set_with_bad_train_file(valid_dir);
    test_set_with_named_pipe(valid_dir);
    remove_temp_dir(valid_dir);
    return test_finish("test_data");
}
