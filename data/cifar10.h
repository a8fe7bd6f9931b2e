// cifar10.h: load the CIFAR-10 binary files into memory.
//
// The binary layout: each file holds 10,000 records of 3,073 bytes, a label byte (0..9)
// then 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major).
#pragma once
#include <stddef.h>
#include <stdint.h>

#define CIFAR10_IMAGE_BYTES 3072
#define CIFAR10_RECORD_BYTES 3073
#define CIFAR10_RECORDS_PER_FILE 10000
#define CIFAR10_CLASSES 10

typedef struct {
    int n;            // number of images
    uint8_t *images;  // n x 3 x 32 x 32 (CHW per image, as in the files)
    uint8_t *labels;  // n, each 0..9
} Cifar10Split;

typedef struct {
    Cifar10Split train;  // data_batch_1..5.bin, in file order: 50,000 images
    Cifar10Split test;   // test_batch.bin: 10,000 images
} Cifar10;

// Loads the six files from dir. Returns 0 on success. On failure returns -1, writes a
// message naming the file, the problem and what to do into err (err_size bytes), and
// leaves *data zeroed with nothing allocated.
int cifar10_load(Cifar10 *data, const char *dir, char *err, size_t err_size);

// Loads one file (exactly 10,000 records) into a fresh split; same error contract.
int cifar10_load_file(Cifar10Split *split, const char *path, char *err, size_t err_size);

void cifar10_free(Cifar10 *data);
void cifar10_free_split(Cifar10Split *split);
