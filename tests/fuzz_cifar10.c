// fuzz_cifar10.c: fuzzes the CIFAR-10 reader, cifar10_load_file, with the engine of fuzz.h.
//
// The reader accepts one kind of file only: 10,000 records of 3,073 bytes, each starting with a
// label below 10. Random bytes would almost all fail the size check at once, so an input
// describes a file near a valid one instead:
//   byte 0    picks the size: values below 0xf0 give the exact size, so the records get
//             parsed; the top 16 pick one of eight wrong sizes (the rest of the input alone,
//             empty, one byte, one record, one byte or one record short or long);
//   the rest  overwrites the start of a valid file (labels 0..9 in turn, patterned pixels), so
//             the first records' labels, and so where the parsing stops, are fuzzed.
// An empty input is the empty file. The seeds in tests/fuzz/corpus/cifar10 reach each outcome.
//
// The contract checked on every input: cifar10_load_file returns 0 exactly when the file has
// the right size and every label is below 10, and then the split holds the file's 10,000
// labels and images byte for byte; otherwise it returns -1, leaves the split zeroed, and its
// message names the path, the problem (the wrong size, or the first bad record) and the fix.
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "cifar10.h"
#include "fuzz.h"

#define RECORD_BYTES ((size_t)CIFAR10_RECORD_BYTES)
#define FILE_BYTES ((size_t)CIFAR10_RECORDS_PER_FILE * RECORD_BYTES)
#define MAX_FILE_BYTES (FILE_BYTES + RECORD_BYTES)  // the longest of the wrong sizes
#define MAX_INPUT_BYTES (1 + 4 * RECORD_BYTES)      // the size byte and four records
#define ERR_BYTES 1024

// A file the reader loads. It stays open and unlinked, so nothing is left behind even when a
// sanitizer ends the process; the reader opens it by its /proc/self/fd name. Each input
// rewrites only the bytes that change.
typedef struct {
    int fd;
    char path[64];     // /proc/self/fd/N
    uint8_t *content;  // MAX_FILE_BYTES: the valid bytes with the last patch written here
    size_t size;       // the file's size now
    size_t patched;    // content[0..patched) is the patch; the rest equals valid_bytes
} FuzzFile;

// Two files, so that switching between a near-full size and a small one never rewrites 30 MB:
// sizes within a record of the full size go to near_full, the others to small.
static FuzzFile near_full = {.fd = -1}, small = {.fd = -1};
static uint8_t *valid_bytes;  // MAX_FILE_BYTES of a valid file and beyond

// What the inputs led to, for the summary.
static long n_loaded, n_wrong_size, n_bad_label, deepest_bad_record;

// The target cannot run without its files: an error of the machine, not of the reader.
static void setup_failed(const char *what) {
    fprintf(stderr, "fuzz_cifar10: error: cannot %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void make_valid_bytes(void) {
    valid_bytes = malloc(MAX_FILE_BYTES);
    if (valid_bytes == NULL) setup_failed("allocate the valid file's bytes");
    for (size_t at = 0; at < MAX_FILE_BYTES; at++) {
        size_t record = at / RECORD_BYTES, offset = at % RECORD_BYTES;
        valid_bytes[at] = offset == 0 ? (uint8_t)(record % CIFAR10_CLASSES)
                                      : (uint8_t)(record * 7 + offset * 13);
    }
}

static void open_file(FuzzFile *file) {
    const char *tmp = getenv("TMPDIR");
    char template[4096];
    snprintf(template, sizeof template, "%s/fuzz_cifar10.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    file->fd = mkstemp(template);
    if (file->fd < 0) setup_failed("create a temporary file (set TMPDIR to a writable folder)");
    unlink(template);
    snprintf(file->path, sizeof file->path, "/proc/self/fd/%d", file->fd);
    if (access(file->path, R_OK) != 0) setup_failed("reach the file through /proc (Linux only)");
    file->content = malloc(MAX_FILE_BYTES);
    if (file->content == NULL) setup_failed("allocate a file's bytes");
    memcpy(file->content, valid_bytes, MAX_FILE_BYTES);
}

static void write_range(const FuzzFile *file, size_t from, size_t to) {
    if (to > from && pwrite(file->fd, file->content + from, to - from, (off_t)from) !=
                         (ssize_t)(to - from))
        setup_failed("write a temporary file");
}

// Makes the file the valid bytes up to size with patch over its start (patch_size <= size).
static void write_file(FuzzFile *file, const uint8_t *patch, size_t patch_size, size_t size) {
    size_t changed = file->patched > patch_size ? file->patched : patch_size;
    memcpy(file->content, valid_bytes, file->patched);  // undo the last patch
    memcpy(file->content, patch, patch_size);
    file->patched = patch_size;
    if (ftruncate(file->fd, (off_t)size) != 0) setup_failed("resize a temporary file");
    write_range(file, 0, changed < size ? changed : size);
    if (size > file->size) write_range(file, file->size, size);  // zeros after the truncation
    file->size = size;
}

// The file size that the input's first byte picks.
static size_t pick_size(uint8_t size_byte, size_t rest_size) {
    if (size_byte < 0xf0) return FILE_BYTES;
    switch (size_byte & 7) {
    case 0: return rest_size;
    case 1: return 0;
    case 2: return 1;
    case 3: return RECORD_BYTES;
    case 4: return FILE_BYTES - 1;
    case 5: return FILE_BYTES + 1;
    case 6: return FILE_BYTES - RECORD_BYTES;
    default: return FILE_BYTES + RECORD_BYTES;
    }
}

// The file's first record with a label of 10 or more, or -1. Only patched records can have one.
static long first_bad_record(const FuzzFile *file) {
    for (size_t at = 0; at < file->patched; at += RECORD_BYTES)
        if (file->content[at] >= CIFAR10_CLASSES) return (long)(at / RECORD_BYTES);
    return -1;
}

static void check_loaded(const Cifar10Split *split, const FuzzFile *file) {
    FUZZ_ASSERT(split->n == CIFAR10_RECORDS_PER_FILE, "loaded %d images, want 10000", split->n);
    for (size_t r = 0; r < CIFAR10_RECORDS_PER_FILE; r++) {
        const uint8_t *record = file->content + r * RECORD_BYTES;
        FUZZ_ASSERT(split->labels[r] == record[0], "record %zu: label %d, the file has %d", r,
                    split->labels[r], record[0]);
        FUZZ_ASSERT(!memcmp(split->images + r * CIFAR10_IMAGE_BYTES, record + 1,
                            CIFAR10_IMAGE_BYTES), "record %zu: the image differs from the file",
                    r);
    }
}

// The refusal names the path, the reason it must have and the fix.
static void check_refused(const Cifar10Split *split, const FuzzFile *file, const char *err,
                          long bad_record) {
    FUZZ_ASSERT(split->n == 0 && split->images == NULL && split->labels == NULL,
                "the split is not zeroed after a failure");
    FUZZ_ASSERT(strstr(err, file->path) != NULL, "the message does not name %s: '%s'",
                file->path, err);
    FUZZ_ASSERT(strstr(err, "get_cifar10.sh") != NULL, "the message lacks the fix: '%s'", err);
    char reason[64] = "wrong size";
    if (file->size == FILE_BYTES) snprintf(reason, sizeof reason, "record %ld ", bad_record);
    FUZZ_ASSERT(strstr(err, reason) != NULL, "the message lacks '%s': '%s'", reason, err);
}

static int fuzz_cifar10(const uint8_t *data, size_t size) {
    if (valid_bytes == NULL) {
        make_valid_bytes();
        open_file(&near_full);
        open_file(&small);
    }
    uint8_t size_byte = size > 0 ? data[0] : 0xf0;  // an empty input is the empty file
    const uint8_t *rest = size > 0 ? data + 1 : data;
    size_t rest_size = size > 0 ? size - 1 : 0;
    size_t file_size = pick_size(size_byte, rest_size);
    FuzzFile *file = file_size + RECORD_BYTES >= FILE_BYTES ? &near_full : &small;
    write_file(file, rest, rest_size < file_size ? rest_size : file_size, file_size);

    long bad_record = first_bad_record(file);
    bool must_load = file_size == FILE_BYTES && bad_record < 0;
    Cifar10Split split;
    memset(&split, 0xab, sizeof split);  // garbage the reader must overwrite, not free
    char err[ERR_BYTES] = "";
    int status = cifar10_load_file(&split, file->path, err, sizeof err);
    FUZZ_ASSERT(status == (must_load ? 0 : -1), "returned %d for a file of %zu bytes whose "
                "first bad label is in record %ld (-1: none): %s", status, file_size,
                bad_record, err);
    if (must_load) {
        check_loaded(&split, file);
        cifar10_free_split(&split);
        n_loaded++;
    } else {
        check_refused(&split, file, err, bad_record);
        n_wrong_size += file_size != FILE_BYTES;
        n_bad_label += file_size == FILE_BYTES;
        if (bad_record > deepest_bad_record) deepest_bad_record = bad_record;
    }
    return 0;
}

static void print_summary(void) {
    printf("fuzz_cifar10: files loaded %ld, refused for the size %ld, refused for a label %ld "
           "(the deepest in record %ld)\n",
           n_loaded, n_wrong_size, n_bad_label, deepest_bad_record);
}

int main(int argc, char **argv) {
    static const FuzzConfig config = {
        .name = "cifar10",
        .target = fuzz_cifar10,
        .max_size = MAX_INPUT_BYTES,
        .corpus_dir = "tests/fuzz/corpus/cifar10",
        .runs = 100,     // 2 to 5 s under the sanitizers: a full load costs tens of ms
        .seconds = 10,
        .summary = print_summary,
    };
    return fuzz_main(argc, argv, &config);
}
