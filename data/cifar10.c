// cifar10.c: load the CIFAR-10 binary files into memory (see cifar10.h), validating the type
// and size of each file and every label, with error messages that say which file, what is
// wrong and what to do. Nothing here blocks on a named pipe or reads an endless device.
#include "cifar10.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_BYTES ((long long)CIFAR10_RECORDS_PER_FILE * CIFAR10_RECORD_BYTES)
#define TRAIN_FILES 5
#define FETCH_HINT "run data/get_cifar10.sh to fetch CIFAR-10"

__attribute__((format(printf, 3, 4)))
static void set_error(char *err, size_t err_size, const char *format, ...) {
    if (err == NULL || err_size == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(err, err_size, format, args);
    va_end(args);
}

// A word for what a file that is not regular is, for messages.
static const char *kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISFIFO(mode)) return "a named pipe";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "a special file";
}

// Fails unless the file is a regular file of exactly FILE_BYTES bytes.
static int check_file(const struct stat *info, const char *path, char *err, size_t err_size) {
    if (!S_ISREG(info->st_mode)) {
        set_error(err, err_size, "%s is %s, not a regular file; move it away or delete it, then %s",
                  path, kind_of(info->st_mode), FETCH_HINT);
        return -1;
    }
    if ((long long)info->st_size != FILE_BYTES) {
        set_error(err, err_size,
                  "%s has the wrong size: %lld bytes, expected %lld (%d records of %d bytes); "
                  "the file is truncated or corrupt: delete it and %s",
                  path, (long long)info->st_size, FILE_BYTES, CIFAR10_RECORDS_PER_FILE,
                  CIFAR10_RECORD_BYTES, FETCH_HINT);
        return -1;
    }
    return 0;
}

// Clears O_NONBLOCK and wraps fd in a stream; NULL with errno set on failure.
static FILE *blocking_stream(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == -1) return NULL;
    return fdopen(fd, "rb");
}

// Opens path for reading if it is a CIFAR-10 file by type and size; NULL with err set if not.
// O_NONBLOCK makes opening a named pipe (which would wait for a writer) or a device return at
// once, so the type is checked before anything is read; it is cleared again for the reads.
static FILE *open_checked(const char *path, char *err, size_t err_size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        set_error(err, err_size, "cannot open %s: %s; %s", path, strerror(errno), FETCH_HINT);
        return NULL;
    }
    struct stat info;
    if (fstat(fd, &info) != 0) {
        set_error(err, err_size, "cannot stat %s: %s; %s", path, strerror(errno), FETCH_HINT);
    } else if (check_file(&info, path, err, err_size) == 0) {
        FILE *file = blocking_stream(fd);
        if (file != NULL) return file;
        set_error(err, err_size, "cannot open %s: %s; %s", path, strerror(errno), FETCH_HINT);
    }
    close(fd);
    return NULL;
}

// Reads the file's records into labels[0..9999] and images[0..9999] (CHW, as stored).
static int read_records(FILE *file, const char *path, uint8_t *images, uint8_t *labels,
                        char *err, size_t err_size) {
    uint8_t record[CIFAR10_RECORD_BYTES];
    for (int i = 0; i < CIFAR10_RECORDS_PER_FILE; i++) {
        if (fread(record, 1, sizeof record, file) != sizeof record) {
            set_error(err, err_size, "cannot read record %d of %s: %s; %s", i, path,
                      ferror(file) ? strerror(errno) : "unexpected end of file", FETCH_HINT);
            return -1;
        }
        if (record[0] >= CIFAR10_CLASSES) {
            set_error(err, err_size,
                      "%s: record %d (counting from 0) has label %d, expected 0..%d; "
                      "the file is corrupt: delete it and %s",
                      path, i, record[0], CIFAR10_CLASSES - 1, FETCH_HINT);
            return -1;
        }
        labels[i] = record[0];
        memcpy(images + (size_t)i * CIFAR10_IMAGE_BYTES, record + 1, CIFAR10_IMAGE_BYTES);
    }
    return 0;
}

// Loads one file's 10,000 records into the given slots of an already allocated split.
static int load_into(const char *path, uint8_t *images, uint8_t *labels, char *err,
                     size_t err_size) {
    FILE *file = open_checked(path, err, err_size);
    if (file == NULL) return -1;
    int status = read_records(file, path, images, labels, err, err_size);
    fclose(file);
    return status;
}

static int alloc_split(Cifar10Split *split, int n, char *err, size_t err_size) {
    split->images = malloc((size_t)n * CIFAR10_IMAGE_BYTES);
    split->labels = malloc((size_t)n);
    if (split->images == NULL || split->labels == NULL) {
        cifar10_free_split(split);
        set_error(err, err_size, "out of memory allocating %d CIFAR-10 images", n);
        return -1;
    }
    split->n = n;
    return 0;
}

// Loads the named files of dir, in order, into one fresh split.
static int load_split(Cifar10Split *split, const char *dir, const char *const *names,
                      int n_files, char *err, size_t err_size) {
    if (alloc_split(split, n_files * CIFAR10_RECORDS_PER_FILE, err, err_size) != 0) return -1;
    for (int f = 0; f < n_files; f++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[f]) >= (int)sizeof path) {
            set_error(err, err_size, "the path %s/%s is too long", dir, names[f]);
            cifar10_free_split(split);
            return -1;
        }
        size_t first = (size_t)f * CIFAR10_RECORDS_PER_FILE;
        if (load_into(path, split->images + first * CIFAR10_IMAGE_BYTES, split->labels + first,
                      err, err_size) != 0) {
            cifar10_free_split(split);
            return -1;
        }
    }
    return 0;
}

int cifar10_load(Cifar10 *data, const char *dir, char *err, size_t err_size) {
    static const char *const train_names[TRAIN_FILES] = {
        "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
        "data_batch_4.bin", "data_batch_5.bin",
    };
    static const char *const test_names[1] = {"test_batch.bin"};
    memset(data, 0, sizeof *data);
    if (load_split(&data->train, dir, train_names, TRAIN_FILES, err, err_size) != 0 ||
        load_split(&data->test, dir, test_names, 1, err, err_size) != 0) {
        cifar10_free(data);
        return -1;
    }
    return 0;
}

int cifar10_load_file(Cifar10Split *split, const char *path, char *err, size_t err_size) {
    memset(split, 0, sizeof *split);
    if (alloc_split(split, CIFAR10_RECORDS_PER_FILE, err, err_size) != 0) return -1;
    if (load_into(path, split->images, split->labels, err, err_size) != 0) {
        cifar10_free_split(split);
        return -1;
    }
    return 0;
}

void cifar10_free(Cifar10 *data) {
    if (data == NULL) return;
    cifar10_free_split(&data->train);
    cifar10_free_split(&data->test);
}

void cifar10_free_split(Cifar10Split *split) {
    if (split == NULL) return;
    free(split->images);
    free(split->labels);
    memset(split, 0, sizeof *split);
}
