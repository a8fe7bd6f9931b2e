// augment.h: which augmentation each training image gets in each epoch.
//
// Pure functions of (seed, epoch, image index) built on rng.h, compiled both into the CPU
// reference and into the GPU loader kernel, so both make the same choices. The pixel work
// itself (reflect padding, crop, flip, jitter, cutout) is done by the callers.
#pragma once
#include "rng.h"

typedef enum { TRANSLATE_RANDOM = 0, TRANSLATE_DERANDOMIZED = 1 } TranslateMode;

// Alternating flip: each image draws one bit before training; in epoch e it is flipped iff
// that bit XOR (e mod 2), so it changes orientation every epoch.
RNG_HD int aug_flip(uint64_t seed, uint32_t epoch, uint32_t image) {
    uint32_t flip_bit = rng_u32(seed, RNG_STREAM_FLIP, 0, image) & 1u;
    return (int)(flip_bit ^ (epoch & 1u));
}

// Translation offsets (dy, dx), each in [-T, T]. Random mode: an independent uniform draw
// over the (2T+1)^2 offsets per image per epoch. Derandomized mode: each image walks through
// all (2T+1)^2 offsets in its own random order, so any (2T+1)^2 consecutive epochs see every
// offset exactly once.
RNG_HD void aug_translate(uint64_t seed, TranslateMode mode, int max_shift, uint32_t epoch,
                          uint32_t image, int *dy, int *dx) {
    uint32_t side = 2u * (uint32_t)max_shift + 1u, n_offsets = side * side, k;
    if (mode == TRANSLATE_DERANDOMIZED)
        k = rng_permute(seed, RNG_STREAM_TRANSLATE_ORDER, image, epoch % n_offsets, n_offsets);
    else
        k = rng_below(rng_u32(seed, RNG_STREAM_TRANSLATE, epoch, image), n_offsets);
    *dy = (int)(k / side) - max_shift;
    *dx = (int)(k % side) - max_shift;
}

// Cutout: top-left corner (y0, x0) of a size x size square lying wholly inside the image,
// uniform over the (32 - size + 1)^2 positions.
RNG_HD void aug_cutout(uint64_t seed, int size, uint32_t epoch, uint32_t image, int *y0, int *x0) {
    uint32_t side = 32u - (uint32_t)size + 1u;
    uint32_t k = rng_below(rng_u32(seed, RNG_STREAM_CUTOUT, epoch, image), side * side);
    *y0 = (int)(k / side);
    *x0 = (int)(k % side);
}

// Brightness and contrast jitter of an image in an epoch: brightness b uniform in [-B, B)
// and contrast c = 1 + u, u uniform in [-C, C) (so c in [1 - C, 1 + C) up to the rounding
// of the sum), independent draws, B = max_brightness, C = max_contrast. An amplitude of 0
// gives exactly b = 0 (no draw), c = 1. Every operation is rounded on its own (the products
// by rng_mul_rn, so that neither they nor the callers' sums with b fuse into an FMA), so
// host and device get the same bits.
RNG_HD void aug_jitter(uint64_t seed, float max_brightness, float max_contrast, uint32_t epoch, uint32_t image,
                       float *brightness, float *contrast) {
    *brightness = 0.0f;
    *contrast = 1.0f;
    if (max_brightness > 0.0f)
        *brightness = rng_mul_rn(rng_unit_pm(rng_u32(seed, RNG_STREAM_BRIGHTNESS, epoch, image)), max_brightness);
    if (max_contrast > 0.0f)
        *contrast = 1.0f + rng_mul_rn(rng_unit_pm(rng_u32(seed, RNG_STREAM_CONTRAST, epoch, image)), max_contrast);
}

// A jittered normalized value: (x + b) * c, two roundings (an add followed by a multiply
// is no multiply-add, so no compiler can fuse it). With b = 0 and c = 1 it is x, bit for
// bit, for every x but -0, which aug_normalize never returns.
RNG_HD float aug_jitter_apply(float x, float brightness, float contrast) {
    return (x + brightness) * contrast;
}

// The image at position `slot` of epoch `epoch`'s shuffled order of n_train images.
RNG_HD uint32_t aug_shuffle(uint64_t seed, uint32_t epoch, uint32_t slot, uint32_t n_train) {
    return rng_permute(seed, RNG_STREAM_SHUFFLE, epoch, slot, n_train);
}

// Example `position` of the stream of training examples, in which data epoch e holds
// positions [e n_train, (e + 1) n_train) in its shuffled order: its epoch (into *epoch, the
// epoch every augmentation of the example draws with) and its image.
RNG_HD uint32_t aug_stream_image(uint64_t seed, int64_t position, uint32_t n_train, uint32_t *epoch) {
    *epoch = (uint32_t)(position / n_train);
    return aug_shuffle(seed, *epoch, (uint32_t)(position % n_train), n_train);
}

// The network's input value of a pixel byte of channel c: x / 255, then normalized with
// the CIFAR-10 per-channel mean and std.
RNG_HD float aug_normalize(uint8_t value, int c) {
    const float mean = c == 0 ? 0.4914f : c == 1 ? 0.4822f : 0.4465f;
    const float std = c == 0 ? 0.2470f : c == 1 ? 0.2435f : 0.2616f;
    return ((float)value / 255.0f - mean) / std;
}

// Reflect padding index (PyTorch's 'reflect': the edge pixel is not repeated), valid for
// coordinates within one image size of the border.
RNG_HD int aug_reflect(int i, int size) {
    if (i < 0) return -i;
    if (i >= size) return 2 * size - 2 - i;
    return i;
}

// Where output pixel (y, x) of a 32x32 training view comes from in the source image: the
// view is the image shifted by (dy, dx) with reflect padding, then mirrored if flip.
RNG_HD void aug_source_pixel(int y, int x, int dy, int dx, int flip, int *src_y, int *src_x) {
    int view_x = flip ? 31 - x : x;
    *src_y = aug_reflect(y + dy, 32);
    *src_x = aug_reflect(view_x + dx, 32);
}
