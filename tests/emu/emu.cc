// emu.cc: runs a kernel launch on the CPU (emu.h says what is modelled). Blocks are handed
// out to worker threads; within a block every CUDA thread is a fiber. A fiber is started
// once on its own stack (makecontext) and parks at its end, to run the next block's body
// when resumed; switching between fibers and the block's scheduler is _setjmp/_longjmp, no
// system call.
#include "emu.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

extern "C" {
#include "host.h"
}

// Under AddressSanitizer (make host-sanitize) each switch of stacks is announced to it, so
// that it keeps one shadow stack per fiber.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SWITCH_STACK(fake_save, bottom, size) __sanitizer_start_switch_fiber(fake_save, bottom, size)
#define ARRIVED_ON_STACK(fake, bottom_old, size_old) __sanitizer_finish_switch_fiber(fake, bottom_old, size_old)
#else
#define SWITCH_STACK(fake_save, bottom, size) ((void)0)
#define ARRIVED_ON_STACK(fake, bottom_old, size_old) ((void)0)
#endif

// With EMU_RACECHECK (make host-racecheck: the kernels built with ThreadSanitizer, this file
// without, so that its own bookkeeping is not watched) each fiber is a ThreadSanitizer fiber
// and every switch leaves the fibers unordered; what orders them is what orders CUDA
// threads: a launch after the host's work before it, a barrier or shuffle after every
// arrival at it, the host after the launch's end. Blocks that follow each other on one
// worker thread are ordered too (they reuse its shared memory), blocks on different worker
// threads are not. So an access of one CUDA thread that conflicts with another's, with no
// barrier between, is reported as a data race, as compute-sanitizer's racecheck would.
#if defined(EMU_RACECHECK)
#include <sanitizer/tsan_interface.h>
#define RACE_CONTEXT() __tsan_get_current_fiber()
#define RACE_NEW_CONTEXT() __tsan_create_fiber(0)
#define RACE_SWITCH_TO(context) __tsan_switch_to_fiber(context, __tsan_switch_to_fiber_no_sync)
#define RACE_RELEASE(address) __tsan_release((void *)(address))
#define RACE_ACQUIRE(address) __tsan_acquire((void *)(address))
#else
#define RACE_CONTEXT() NULL
#define RACE_NEW_CONTEXT() NULL
#define RACE_SWITCH_TO(context) ((void)0)
#define RACE_RELEASE(address) ((void)0)
#define RACE_ACQUIRE(address) ((void)0)
#endif

__thread EmuThreadState *emu_self;

namespace {

const int MAX_THREADS = 1024, WARPS = MAX_THREADS / 32;
const size_t STACK_BYTES = 256 * 1024;  // the C library's erff and expf need little; glibc's printf more

enum FiberState { RUNNABLE, AT_BARRIER, DONE };

struct Fiber {
    EmuThreadState self;
    int linear;  // threadIdx flattened: x fastest
    FiberState state;
    bool started;
    jmp_buf resume;
    ucontext_t start_context;
    char *stack;
    long shuffles;             // how many this fiber has made in this block
    const char *barrier_file;  // where it waits, for the check that all wait at one place
    int barrier_line;
    long barriers;  // how many this fiber has passed in this block
    void *fake_stack;  // AddressSanitizer's, while the fiber is switched out
    void *race_context;  // ThreadSanitizer's (EMU_RACECHECK)
};

// The addresses whose release and acquire order the fibers of one block (EMU_RACECHECK),
// fresh for each block so that nothing orders it with a block on another worker. A barrier
// or a warp's shuffle alternates between two by the parity of its count, so that a thread
// already past the next one does not order a thread still leaving this one.
struct BlockOrder {
    char barrier[2], shuffle[WARPS][2], done;
};

// One launch: the kernel's body and what goes wrong in it.
struct Launch {
    const EmuConfig *config;
    const char *kernel;
    void (*body)(void *);
    void *context;
    std::atomic<long> next_block;
    long n_blocks;
    std::atomic<int> failed;  // the first fault is reported; the launch ends as failed
    char start, end;          // EMU_RACECHECK: the host before the launch, the launch before the host
};

// A worker thread's fibers and the block it is running.
struct Worker {
    Fiber fibers[MAX_THREADS];
    int n_threads;
    jmp_buf scheduler;
    void *scheduler_fake_stack;  // AddressSanitizer's bookkeeping of the scheduler's stack
    const void *scheduler_stack;
    size_t scheduler_stack_bytes;
    void *scheduler_race_context;
    char previous_blocks;  // EMU_RACECHECK: the blocks this worker ran before
    BlockOrder *order;
    Launch *launch;
    uint64_t shuffle_bits[WARPS][2][32];  // per warp, per parity of the shuffle count, per lane
    long shuffle_seq[WARPS][2][32];       // which shuffle of its lane the bits belong to
    int counts[2];                        // __syncthreads_count sums, by parity of the barrier count
};

thread_local Worker *worker;
thread_local Fiber *fiber;

void fault(const char *format, const char *detail) {
    Launch *l = worker->launch;
    if (l->failed.exchange(1) == 0) {
        fprintf(stderr, "emu: kernel %s, block (%u,%u,%u) thread (%u,%u,%u): ", l->kernel, fiber->self.block_idx.x,
                fiber->self.block_idx.y, fiber->self.block_idx.z, fiber->self.thread_idx.x, fiber->self.thread_idx.y,
                fiber->self.thread_idx.z);
        fprintf(stderr, format, detail);
        fprintf(stderr, "\n");
    }
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_scheduler(void) {
    if (!_setjmp(fiber->resume)) {
        SWITCH_STACK(&fiber->fake_stack, worker->scheduler_stack, worker->scheduler_stack_bytes);
        RACE_SWITCH_TO(worker->scheduler_race_context);
        _longjmp(worker->scheduler, 1);
    }
    ARRIVED_ON_STACK(fiber->fake_stack, NULL, NULL);
}

// A fiber's whole life: each time it is resumed after parking, it runs the current block's
// body for the thread it has been given. `fiber` and `worker` are re-read after each switch.
void fiber_main(void) {
    ARRIVED_ON_STACK(NULL, &worker->scheduler_stack, &worker->scheduler_stack_bytes);
    for (;;) {
        RACE_ACQUIRE(&worker->launch->start);
        RACE_ACQUIRE(&worker->previous_blocks);
        worker->launch->body(worker->launch->context);
        RACE_RELEASE(&worker->order->done);
        fiber->state = DONE;
        yield_to_scheduler();
    }
}

void make_stack(Fiber *f) {
    void *mem = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        perror("emu: mmap of a fiber stack");
        exit(2);
    }
    mprotect(mem, (size_t)getpagesize(), PROT_NONE);  // an overflow faults at once
    f->stack = (char *)mem;
}

void start_fiber(Fiber *f) {
    getcontext(&f->start_context);
    f->start_context.uc_stack.ss_sp = f->stack;
    f->start_context.uc_stack.ss_size = STACK_BYTES;
    f->start_context.uc_link = NULL;
    makecontext(&f->start_context, fiber_main, 0);
    f->started = true;
    setcontext(&f->start_context);
}

// All fibers still running wait at a barrier: they must wait at the same one.
void release_barrier(void) {
    Worker *w = worker;
    const Fiber *first = NULL;
    for (int i = 0; i < w->n_threads; i++) {
        Fiber *f = &w->fibers[i];
        if (f->state != AT_BARRIER) continue;
        if (!first) {
            first = f;
        } else if (f->barrier_line != first->barrier_line || f->barriers != first->barriers ||
                   strcmp(f->barrier_file, first->barrier_file)) {
            fiber = f;
            char where[512];
            snprintf(where, sizeof where, "%s:%d, and thread %d at %s:%d", f->barrier_file, f->barrier_line,
                     first->linear, first->barrier_file, first->barrier_line);
            fault("the block's threads wait at different __syncthreads: this one at %s", where);
            break;
        }
    }
    w->counts[(first->barriers + 1) & 1] = 0;  // the next barrier's sum; nobody reads it any more
    for (int i = 0; i < w->n_threads; i++)
        if (w->fibers[i].state == AT_BARRIER) w->fibers[i].state = RUNNABLE;
}

// Runs fiber f until it yields; the scheduler's frame is this one, which holds no state.
__attribute__((noinline)) void resume(Worker *w, Fiber *f) {
    fiber = f;
    emu_self = &f->self;
    if (!f->stack) make_stack(f);  // before the switch is announced to AddressSanitizer
    if (!_setjmp(w->scheduler)) {
        SWITCH_STACK(&w->scheduler_fake_stack, f->stack, STACK_BYTES);
        if (!f->race_context) f->race_context = RACE_NEW_CONTEXT();
        RACE_SWITCH_TO(f->race_context);
        if (!f->started) start_fiber(f);
        _longjmp(f->resume, 1);
    }
    ARRIVED_ON_STACK(w->scheduler_fake_stack, NULL, NULL);
}

void run_block(Worker *w, long block) {
    const EmuConfig *c = w->launch->config;
    uint3 block_idx = make_uint3((unsigned)(block % c->grid.x), (unsigned)(block / c->grid.x % c->grid.y),
                                 (unsigned)(block / ((long)c->grid.x * c->grid.y)));
    for (int i = 0; i < w->n_threads; i++) {
        Fiber *f = &w->fibers[i];
        f->self.thread_idx = make_uint3(i % c->block.x, i / c->block.x % c->block.y, i / (c->block.x * c->block.y));
        f->self.block_idx = block_idx;
        f->self.block_dim = c->block;
        f->self.grid_dim = c->grid;
        f->linear = i;
        f->state = RUNNABLE;
        f->shuffles = f->barriers = 0;
    }
    w->counts[0] = w->counts[1] = 0;
    memset(w->shuffle_seq, 0xff, sizeof w->shuffle_seq);
    w->order = new BlockOrder();
    for (int live = w->n_threads; live > 0;) {
        int ran = 0;
        for (int i = 0; i < w->n_threads; i++) {
            Fiber *f = &w->fibers[i];
            if (f->state != RUNNABLE) continue;
            resume(w, f);
            ran++;
            if (f->state == DONE) live--;
        }
        if (!ran && live > 0) release_barrier();
    }
    emu_self = NULL;
    RACE_ACQUIRE(&w->order->done);  // the block's end before the worker's next block and the host
    RACE_RELEASE(&w->previous_blocks);
    RACE_RELEASE(&w->launch->end);
    delete w->order;  // its addresses forget what ordered this block
    w->order = NULL;
}

void work(Launch *l) {
    static thread_local Worker *mine;
    if (!mine) {
        mine = new Worker();  // zeroed: no fiber started
        mine->scheduler_race_context = RACE_CONTEXT();
    }
    worker = mine;
    worker->launch = l;
    const EmuConfig *c = l->config;
    worker->n_threads = (int)(c->block.x * c->block.y * c->block.z);
    for (long b; (b = l->next_block.fetch_add(1)) < l->n_blocks;) run_block(worker, b);
}

// The worker threads besides the launching one: EMU_THREADS in all (default: the cores). Every
// worker takes part in every launch (most find the blocks already taken), so that a launch
// ends only when no worker can still touch it.
struct Pool {
    std::mutex mutex;
    std::condition_variable wake, done;
    Launch *launch = NULL;
    long generation = 0;
    int pending = 0;  // workers yet to finish the current launch
    int n_helpers = 0;

    Pool() {
        const char *env = getenv("EMU_THREADS");
        int n = env ? atoi(env) : (int)std::thread::hardware_concurrency();
        n_helpers = (n < 1 ? 1 : n > 64 ? 64 : n) - 1;
        for (int i = 0; i < n_helpers; i++) std::thread([this] { serve(); }).detach();
    }
    void serve(void) {
        for (long seen = 0;;) {
            Launch *l;
            {
                std::unique_lock<std::mutex> lock(mutex);
                wake.wait(lock, [&] { return generation != seen; });
                seen = generation;
                l = launch;
            }
            work(l);
            std::lock_guard<std::mutex> lock(mutex);
            if (--pending == 0) done.notify_all();
        }
    }
    void run(Launch *l) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            launch = l;
            generation++;
            pending = n_helpers;
        }
        wake.notify_all();
        work(l);
        std::unique_lock<std::mutex> lock(mutex);
        done.wait(lock, [&] { return pending == 0; });
    }
};

bool valid(const EmuConfig &c, const char **why) {
    long threads = (long)c.block.x * c.block.y * c.block.z;
    *why = !c.grid.x || !c.grid.y || !c.grid.z                 ? "a grid dimension is 0"
           : c.grid.y > 65535 || c.grid.z > 65535              ? "grid y or z over 65535"
           : !threads                                          ? "a block dimension is 0"
           : threads > MAX_THREADS                             ? "over 1024 threads per block"
           : c.block.z > 64                                    ? "block z over 64"
           : c.shared_bytes > 0                                ? "dynamic shared memory (the kernels use none)"
                                                               : NULL;
    return !*why;
}

}  // namespace

// Runs a checked launch's grid to completion.
static void emu_run(const EmuConfig &config, void (*body)(void *), void *context, const char *kernel) {
    static Pool *pool = new Pool;  // never destroyed: its threads wait until the process ends
    Launch l;
    l.config = &config;
    l.kernel = kernel;
    l.body = body;
    l.context = context;
    l.next_block = 0;
    l.n_blocks = (long)config.grid.x * config.grid.y * config.grid.z;
    l.failed = 0;
    RACE_RELEASE(&l.start);
    pool->run(&l);
    RACE_ACQUIRE(&l.end);
    if (l.failed) host_launch_failed(cudaErrorLaunchFailure, 1);
}

// A submitted launch: what emu_run needs, owned until it has run.
struct Submitted {
    EmuConfig config;
    void (*body)(void *);
    void *context;
    void (*release)(void *);
    const char *kernel;
};

static void run_submitted(void *p) {
    Submitted *s = static_cast<Submitted *>(p);
    emu_run(s->config, s->body, s->context, s->kernel);
    s->release(s->context);
    delete s;
}

void emu_submit(const EmuConfig &config, void (*body)(void *), void *context, void (*release)(void *),
                const char *kernel) {
    host_note(kernel);
    const char *why;
    if (!valid(config, &why)) {
        fprintf(stderr, "emu: launch of %s: %s\n", kernel, why);
        host_launch_failed(cudaErrorInvalidConfiguration, 0);
        release(context);
        return;
    }
    host_enqueue(config.stream, run_submitted, new Submitted{config, body, context, release, kernel});
}

bool emu_pointer_ok(const char *kernel, int index, const void *p) {
    if (!p || host_inside_allocation(p, 0)) return true;
    fprintf(stderr, "emu: launch of %s: argument %d (%p) points into no cudaMalloc allocation\n", kernel, index, p);
    host_launch_failed(cudaErrorIllegalAddress, 1);
    return false;
}

static void wait_at_barrier(const char *file, int line, int predicate) {
    fiber->barrier_file = file;
    fiber->barrier_line = line;
    worker->counts[fiber->barriers & 1] += predicate != 0;
    fiber->state = AT_BARRIER;
    RACE_RELEASE(&worker->order->barrier[fiber->barriers & 1]);
    yield_to_scheduler();
    RACE_ACQUIRE(&worker->order->barrier[fiber->barriers & 1]);
    fiber->barriers++;
}

void emu_syncthreads(const char *file, int line) { wait_at_barrier(file, line, 0); }

int emu_syncthreads_count(int predicate, const char *file, int line) {
    long parity = fiber->barriers & 1;
    wait_at_barrier(file, line, predicate);
    return worker->counts[parity];
}

void emu_check_full_mask(unsigned mask) {
    if (mask != 0xffffffffu) fault("%s", "a shuffle with a partial mask (emu.h models full warps only)");
}

uint64_t emu_shuffle(uint64_t bits, int source) {
    Fiber *f = fiber;
    Worker *w = worker;
    int warp = f->linear / 32, lane = f->linear % 32, parity = (int)(f->shuffles & 1);
    w->shuffle_bits[warp][parity][lane] = bits;
    w->shuffle_seq[warp][parity][lane] = f->shuffles;
    RACE_RELEASE(&w->order->shuffle[warp][parity]);
    yield_to_scheduler();  // the other lanes write theirs in the same pass
    f = fiber;
    RACE_ACQUIRE(&w->order->shuffle[warp][parity]);
    uint64_t out = bits;
    if (source >= 0 && source < 32 && warp * 32 + source < w->n_threads) {
        if (w->shuffle_seq[warp][parity][source] != f->shuffles)
            fault("%s", "a shuffle reads a lane that is not at the same shuffle (exited or diverged)");
        out = w->shuffle_bits[warp][parity][source];
    }
    f->shuffles++;
    return out;
}
