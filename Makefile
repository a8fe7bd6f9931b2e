# airbench.c: `make` builds every program into build/, `make test` runs the CPU test suite,
# `make gpu-test` runs the checks that need a GPU, `make gpu-sanitize` runs them under
# compute-sanitizer (dev/gpu_sanitize.sh).
#
# Locations are overridable: CUDA_HOME, CUDNN_HOME (the GPU machine keeps cuDNN inside a
# Python package), CJSON_HOME (a prefix holding include/cjson/cJSON.h and lib/.../libcjson.so).
# CUDA_ARCH lists the compute capabilities to build for.

CUDA_HOME ?= /usr/local/cuda
CUDNN_HOME ?= $(CUDA_HOME)
CJSON_HOME ?= /usr
CUDA_ARCH ?= 80 90
CC ?= gcc
NVCC ?= $(CUDA_HOME)/bin/nvcc
BUILD := build

INCLUDES := -Iairbench -Ikernels -Idata -I$(BUILD)
CJSON_INC := $(if $(filter /usr,$(CJSON_HOME)),,-I$(CJSON_HOME)/include)
CJSON_LIBDIR := $(firstword $(wildcard $(CJSON_HOME)/lib/x86_64-linux-gnu $(CJSON_HOME)/lib64 $(CJSON_HOME)/lib))
CJSON_LIBS := $(if $(filter /usr,$(CJSON_HOME)),,-L$(CJSON_LIBDIR) -Wl,-rpath,$(CJSON_LIBDIR)) -lcjson

CFLAGS ?= -O3 -g
CFLAGS += -std=gnu11 -Wall -Wextra -fopenmp $(INCLUDES) $(CJSON_INC)
LDLIBS := -lm -fopenmp

# CUDA: the runtime, cuBLAS and cuDNN. cuDNN may ship only libcudnn.so.9 (no dev symlink).
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
CUDNN_LIBDIR := $(firstword $(wildcard $(CUDNN_HOME)/lib64/libcudnn.so* $(CUDNN_HOME)/lib/libcudnn.so*))
CUDNN_LIBDIR := $(if $(CUDNN_LIBDIR),$(dir $(CUDNN_LIBDIR)),$(CUDA_LIBDIR))
CUDNN_LIB := $(if $(wildcard $(CUDNN_LIBDIR)/libcudnn.so),-lcudnn,-l:libcudnn.so.9)
CUDA_INC := -I$(CUDA_HOME)/include -I$(CUDNN_HOME)/include
CUDA_LIBS := -L$(CUDA_LIBDIR) -L$(CUDNN_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -Wl,-rpath,$(CUDNN_LIBDIR) \
             $(CUDNN_LIB) -lcublas -lcudart
# GPU programs link with gcc: the kernels' objects need the C++ runtime and cudart.
GPU_LINK = $(CC) $^ -o $@ $(LDLIBS) $(CUDA_LIBS) $(CJSON_LIBS) -lstdc++
NVCC_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a))
NVCCFLAGS ?= -O3
NVCCFLAGS += -std=c++17 $(NVCC_GENCODE) $(INCLUDES) -Xcompiler -Wall,-Wextra

# The git commit and dirty flag compiled into every run file; rewritten only on change.
# Overridable where the tree has no .git (the GPU machine gets a copy of the files only).
$(shell mkdir -p $(BUILD))
GIT_COMMIT ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
GIT_DIRTY ?= $(shell test -z "$$(git status --porcelain --untracked-files=no 2>/dev/null)" && echo 0 || echo 1)
VERSION_TEXT := \#define GIT_COMMIT "$(GIT_COMMIT)"\n\#define GIT_DIRTY $(GIT_DIRTY)
$(shell printf '$(VERSION_TEXT)\n' | cmp -s - $(BUILD)/version.h || printf '$(VERSION_TEXT)\n' > $(BUILD)/version.h)

CPU_PROGRAMS := $(BUILD)/airbench-ref $(BUILD)/benchstat
GPU_VARIANTS := 94 95 96 94-muon
GPU_PROGRAMS := $(foreach v,$(GPU_VARIANTS),$(BUILD)/airbench$(v))
CPU_TESTS := $(BUILD)/test_augment $(BUILD)/test_data $(BUILD)/test_reference $(BUILD)/test_benchstat
SHELL_TESTS := tests/test_cli.sh tests/test_train.sh tests/test_bench.sh tests/test_get_cifar10.sh
GPU_TESTS := $(BUILD)/gpu_test_kernels $(BUILD)/gpu_test_trainer
DEV_PROGRAMS := $(BUILD)/kernel_bench

KERNEL_SRCS := $(wildcard kernels/*.cu)
KERNEL_OBJS := $(patsubst kernels/%.cu,$(BUILD)/kernels/%.o,$(KERNEL_SRCS))
HEADERS := $(wildcard airbench/*.h kernels/*.h data/*.h tests/*.h) $(BUILD)/version.h

DATA_DIR ?= data/cifar10

.PHONY: all cpu test gpu-test gpu-sanitize data clean
.SECONDARY:  # keep the per-variant objects between builds
all: $(CPU_PROGRAMS) $(GPU_PROGRAMS) $(GPU_TESTS) $(DEV_PROGRAMS)
cpu: $(CPU_PROGRAMS) $(CPU_TESTS)

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# The CPU reference, as a program and as a library for the tests (main compiled out).
$(BUILD)/airbench-ref: $(BUILD)/airbench/reference.o $(BUILD)/data/cifar10.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)
$(BUILD)/reference_lib.o: airbench/reference.c $(HEADERS)
	$(CC) $(CFLAGS) -DREFERENCE_NO_MAIN -c $< -o $@

$(BUILD)/benchstat: $(BUILD)/tools/benchstat.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)

$(BUILD)/test_augment: $(BUILD)/tests/test_augment.o
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_data: $(BUILD)/tests/test_data.o $(BUILD)/data/cifar10.o
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_reference: $(BUILD)/tests/test_reference.o $(BUILD)/reference_lib.o $(BUILD)/data/cifar10.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)
$(BUILD)/test_benchstat: $(BUILD)/tests/test_benchstat.o
	$(CC) $^ -o $@ $(LDLIBS)

# The GPU trainer: one C file, one binary per variant (compile-time recipe).
variant_define = -DAIRBENCH_VARIANT=$(subst -muon,0,$(1))
$(BUILD)/airbench/airbench%.o: airbench/airbench.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_INC) $(call variant_define,$*) -c $< -o $@
$(BUILD)/airbench%: $(BUILD)/airbench/airbench%.o $(BUILD)/reference_lib.o $(BUILD)/data/cifar10.o $(KERNEL_OBJS)
	$(GPU_LINK)

$(BUILD)/gpu_test_kernels: $(BUILD)/tests/gpu_test_kernels.o $(BUILD)/reference_lib.o $(BUILD)/data/cifar10.o $(KERNEL_OBJS)
	$(GPU_LINK)
$(BUILD)/tests/gpu_test_kernels.o: tests/gpu_test_kernels.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_INC) -c $< -o $@
$(BUILD)/gpu_test_trainer: $(BUILD)/tests/gpu_test_trainer.o $(BUILD)/reference_lib.o $(BUILD)/data/cifar10.o $(KERNEL_OBJS)
	$(GPU_LINK)
$(BUILD)/tests/gpu_test_trainer.o: tests/gpu_test_trainer.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_INC) -DAIRBENCH_VARIANT=94 -c $< -o $@

# The kernel bench: dev/*.c (driver and harnesses, with tests/gpu_test.h) and dev/*.cu (its
# spin kernel, and any v2 kernel being tried beside v1).
BENCH_OBJS := $(patsubst dev/%.c,$(BUILD)/dev/%.o,$(wildcard dev/*.c)) \
              $(patsubst dev/%.cu,$(BUILD)/dev/%.o,$(wildcard dev/*.cu))
$(BUILD)/kernel_bench: $(BENCH_OBJS) $(BUILD)/reference_lib.o $(BUILD)/data/cifar10.o $(KERNEL_OBJS)
	$(GPU_LINK)
$(BUILD)/dev/%.o: dev/%.c $(HEADERS) $(wildcard dev/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_INC) -Itests -c $< -o $@
$(BUILD)/dev/%.o: dev/%.cu $(HEADERS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

data: $(DATA_DIR)/test_batch.bin
$(DATA_DIR)/test_batch.bin:
	data/get_cifar10.sh $(DATA_DIR)

test: cpu $(BUILD)/airbench94 data
	@DATA_DIR=$(DATA_DIR) tests/run.sh $(CPU_TESTS) $(SHELL_TESTS)

gpu-test: all data
	@DATA_DIR=$(DATA_DIR) tests/run.sh $(GPU_TESTS)

gpu-sanitize: $(BUILD)/gpu_test_kernels $(BUILD)/airbench94 data
	DATA_DIR=$(DATA_DIR) dev/gpu_sanitize.sh

clean:
	rm -rf $(BUILD)
