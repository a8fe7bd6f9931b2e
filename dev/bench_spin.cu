// bench_spin.cu: a kernel that keeps a stream busy for a while, so that dev/kernel_bench
// can enqueue all its timed launches behind it: the GPU then runs them back to back, and
// the time between each launch's pair of events is the kernel's alone, not the host's
// launch overhead (which is longer than many of the kernels).
#include <cuda_runtime.h>
#include <stdint.h>

// One thread reads the global nanosecond timer until `nanoseconds` have passed.
__global__ void spin_kernel(uint64_t nanoseconds) {
    uint64_t start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < nanoseconds);
}

extern "C" cudaError_t launch_spin(uint64_t nanoseconds, cudaStream_t stream) {
    spin_kernel<<<1, 1, 0, stream>>>(nanoseconds);
    return cudaGetLastError();
}
