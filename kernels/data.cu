// data.cu: the GPU loaders. One block per image: thread 0 makes the image's random
// decisions once (augment.h, the same functions as the CPU reference, so the choices are
// bit-identical), the block stages the source image's 3072 bytes and the 3 x 256 table of
// its input values (aug_normalize, then the image's brightness and contrast jitter) in
// shared memory, then every thread writes 8 consecutive output pixels of one row as one
// 16-byte store.
#include "augment.h"
#include "kernel_common.h"

#define LOADER_THREADS 128
#define IMAGE_VECTORS (3 * 32 * 32 / 8)  // 16-byte output vectors per image: 384

// What happens to one image: its source index, its flip, shift, cutout square, and
// brightness and contrast (0 and 1: none).
struct ImageView {
    uint32_t image;
    int flip, dy, dx, cut_y, cut_x, cut_size;
    float brightness, contrast;
};

// Copies the 3072 source bytes of an image (CHW) into shared memory, 16 bytes a thread, and
// fills normalized[c * 256 + value] with value's input value in channel c: aug_normalize,
// jittered by the view's brightness and contrast (the same for every pixel of the image).
__device__ __forceinline__ void stage_image(uint4 *staged, float *normalized, const uint8_t *image,
                                            const ImageView &view) {
    const uint4 *src = reinterpret_cast<const uint4 *>(image);
    for (int i = threadIdx.x; i < 3072 / 16; i += blockDim.x) staged[i] = src[i];
    for (int i = threadIdx.x; i < 3 * 256; i += blockDim.x)
        normalized[i] = aug_jitter_apply(aug_normalize((uint8_t)(i % 256), i / 256), view.brightness, view.contrast);
}

// Writes the 32x32x3 normalized view of the staged image to dst (CHW fp16). Vector v
// covers channel c = v / 128, row y = (v / 4) % 32, columns x0 .. x0 + 7 (x0 = 8 (v % 4)),
// i.e. dst[c*1024 + y*32 + x0 ...] = dst[8 v ...].
__device__ __forceinline__ void write_view(__half *dst, const uint8_t *src, const float *normalized,
                                           const ImageView &view) {
    for (int v = threadIdx.x; v < IMAGE_VECTORS; v += blockDim.x) {
        int c = v / 128, y = (v / 4) % 32, x0 = (v % 4) * 8;
        float values[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int x = x0 + k, sy, sx;
            aug_source_pixel(y, x, view.dy, view.dx, view.flip, &sy, &sx);
            bool in_cutout = view.cut_size && y >= view.cut_y && y < view.cut_y + view.cut_size &&
                             x >= view.cut_x && x < view.cut_x + view.cut_size;
            values[k] = in_cutout ? 0.0f : normalized[c * 256 + src[(c * 32 + sy) * 32 + sx]];
        }
        store_half8(dst + (size_t)v * 8, values);
    }
}

// Output row `row` is example first + (rows ? rows[row] : row) of the training stream.
__global__ void train_loader_kernel(__half *x, uint8_t *batch_labels, const uint8_t *images, const uint8_t *labels,
                                    int n_train, const int *rows, int64_t first, uint64_t seed, int translate,
                                    int translate_mode, int cutout, float jitter_brightness, float jitter_contrast) {
    __shared__ uint4 staged[3072 / 16];
    __shared__ float normalized[3 * 256];
    __shared__ ImageView view;
    int row = blockIdx.x;
    if (threadIdx.x == 0) {  // the same calls, in the same order, as ref_train_batch
        uint32_t epoch;
        ImageView v;
        v.image = aug_stream_image(seed, first + (rows ? rows[row] : row), (uint32_t)n_train, &epoch);
        v.flip = aug_flip(seed, epoch, v.image);
        v.dy = v.dx = v.cut_y = v.cut_x = 0;
        v.cut_size = cutout;
        if (translate) aug_translate(seed, (TranslateMode)translate_mode, translate, epoch, v.image, &v.dy, &v.dx);
        if (cutout) aug_cutout(seed, cutout, epoch, v.image, &v.cut_y, &v.cut_x);
        aug_jitter(seed, jitter_brightness, jitter_contrast, epoch, v.image, &v.brightness, &v.contrast);
        view = v;
        batch_labels[row] = labels[v.image];
    }
    __syncthreads();
    stage_image(staged, normalized, images + (size_t)view.image * 3072, view);
    __syncthreads();
    write_view(x + (size_t)row * 3072, reinterpret_cast<const uint8_t *>(staged), normalized, view);
}

// Output row b is test image indices[b], or image b when indices is NULL.
__global__ void eval_loader_kernel(__half *x, const uint8_t *images, const int *indices, int flip, int shift) {
    __shared__ uint4 staged[3072 / 16];
    __shared__ float normalized[3 * 256];
    uint32_t image = indices ? (uint32_t)indices[blockIdx.x] : blockIdx.x;
    ImageView view = {image, flip, shift, shift, 0, 0, 0, 0.0f, 1.0f};  // test images: no jitter
    stage_image(staged, normalized, images + (size_t)image * 3072, view);
    __syncthreads();
    write_view(x + (size_t)blockIdx.x * 3072, reinterpret_cast<const uint8_t *>(staged), normalized, view);
}

extern "C" {

cudaError_t launch_train_loader(__half *x, uint8_t *batch_labels, const uint8_t *images, const uint8_t *labels,
                                int n_train, int n, const int *rows, int64_t first, uint64_t seed, int translate,
                                int translate_mode, int cutout, float jitter_brightness, float jitter_contrast,
                                cudaStream_t stream) {
    if (n > 0)
        train_loader_kernel<<<n, LOADER_THREADS, 0, stream>>>(x, batch_labels, images, labels, n_train, rows, first,
                                                              seed, translate, translate_mode, cutout,
                                                              jitter_brightness, jitter_contrast);
    return cudaGetLastError();
}

cudaError_t launch_eval_loader(__half *x, const uint8_t *images, int n, int flip, int shift, cudaStream_t stream) {
    if (n > 0) eval_loader_kernel<<<n, LOADER_THREADS, 0, stream>>>(x, images, NULL, flip, shift);
    return cudaGetLastError();
}

cudaError_t launch_eval_loader_indexed(__half *x, const uint8_t *images, const int *indices, int n, int flip,
                                       int shift, cudaStream_t stream) {
    if (n > 0) eval_loader_kernel<<<n, LOADER_THREADS, 0, stream>>>(x, images, indices, flip, shift);
    return cudaGetLastError();
}

}  // extern "C"
