# airbench.c: `make` builds every program into build/, `make test` runs the CPU test suite
# (gcc and cJSON are enough: what needs CUDA is skipped, with a line saying so), `make
# gpu-test` runs the checks that need a GPU, `make gpu-sanitize` runs them under
# compute-sanitizer (dev/gpu_sanitize.sh), and `make host-sanitize` runs the GPU side on the
# CPU (tests/host/'s library stand-ins, tests/emu/'s kernels) under AddressSanitizer and UBSan,
# and `make host-racecheck` the kernels on the CPU under ThreadSanitizer.
#
# Locations are overridable: CUDA_HOME, CUDNN_HOME (may be a Python package folder holding
# include/ and lib/), CJSON_HOME (a prefix holding include/cjson/cJSON.h and lib/.../libcjson.so).
# CUDA_ARCH lists the compute capabilities to build machine code for, oldest first; PTX of
# the last one is added so that newer GPUs can run it too.

CUDA_HOME ?= /usr/local/cuda
CUDNN_HOME ?= $(CUDA_HOME)
CJSON_HOME ?= /usr
CUDA_ARCH ?= 80 90
CC ?= gcc
NVCC ?= $(CUDA_HOME)/bin/nvcc
BUILD ?= build
OBJ := $(BUILD)/obj
MIN_CUDA_MAJOR := 12

# ---- dependencies: found, or a message saying what to install -----------------------------
CJSON_HEADER := $(wildcard $(CJSON_HOME)/include/cjson/cJSON.h)
CJSON_LIBDIR := $(patsubst %/,%,$(dir $(firstword $(wildcard $(addsuffix /libcjson.so*,\
                $(CJSON_HOME)/lib/x86_64-linux-gnu $(CJSON_HOME)/lib64 $(CJSON_HOME)/lib $(CJSON_HOME)/lib/aarch64-linux-gnu)))))
CJSON_PROBLEM := $(if $(CJSON_HEADER),$(if $(CJSON_LIBDIR),,no libcjson.so under $(CJSON_HOME)/lib*),no $(CJSON_HOME)/include/cjson/cJSON.h)
ifneq ($(CJSON_PROBLEM),)
ifeq ($(filter clean help,$(MAKECMDGOALS)),)
$(error cJSON is missing: $(CJSON_PROBLEM). Install it (Debian/Ubuntu: sudo apt-get install libcjson-dev) or set CJSON_HOME to its prefix)
endif
endif
CJSON_INC := $(if $(filter /usr,$(CJSON_HOME)),,-I$(CJSON_HOME)/include)
CJSON_LIBS := $(if $(filter /usr,$(CJSON_HOME)),,-L$(CJSON_LIBDIR) -Wl,-rpath,$(CJSON_LIBDIR)) -lcjson

# CUDA: nvcc of version >= 12 with the runtime and cuBLAS, and cuDNN 9 (which may ship only
# libcudnn.so.9, no dev symlink). CUDA_PROBLEM says what is missing; empty when all is there.
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
CUDNN_LIBFILE := $(firstword $(wildcard $(CUDNN_HOME)/lib64/libcudnn.so* $(CUDNN_HOME)/lib/libcudnn.so* \
                 $(CUDNN_HOME)/lib/x86_64-linux-gnu/libcudnn.so*))
CUDNN_LIBDIR := $(patsubst %/,%,$(dir $(CUDNN_LIBFILE)))
NVCC_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
CUDA_HINT := install the CUDA toolkit >= $(MIN_CUDA_MAJOR) (developer.nvidia.com/cuda-downloads, or Debian/Ubuntu's \
             NVIDIA repository: sudo apt-get install cuda-toolkit) or set CUDA_HOME
CUDNN_HINT := install cuDNN 9 (sudo apt-get install cudnn9-cuda-12 from NVIDIA's repository, or \
              pip install nvidia-cudnn-cu12 and set CUDNN_HOME to the package folder) or set CUDNN_HOME
# The first of these that fails is the problem reported.
CUDA_PROBLEM := $(strip \
    $(if $(NVCC_VERSION),\
    $(if $(shell test $(NVCC_VERSION) -ge $(MIN_CUDA_MAJOR) && echo ok),\
    $(if $(wildcard $(CUDA_HOME)/include/cublas_v2.h),\
    $(if $(wildcard $(CUDNN_HOME)/include/cudnn.h),\
    $(if $(CUDNN_LIBFILE),,no libcudnn.so* under $(CUDNN_HOME)/lib*: $(CUDNN_HINT)),\
    no cudnn.h in $(CUDNN_HOME)/include: $(CUDNN_HINT)),\
    no cublas_v2.h in $(CUDA_HOME)/include: $(CUDA_HINT)),\
    nvcc is CUDA $(NVCC_VERSION): $(CUDA_HINT)),\
    no nvcc at $(NVCC): $(CUDA_HINT)))

CUDNN_LIB := $(if $(wildcard $(CUDNN_LIBDIR)/libcudnn.so),-lcudnn,-l:libcudnn.so.9)
CUDA_INC := -I$(CUDA_HOME)/include -I$(CUDNN_HOME)/include
CUDA_LIBS := -L$(CUDA_LIBDIR) -L$(CUDNN_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -Wl,-rpath,$(CUDNN_LIBDIR) \
             $(CUDNN_LIB) -lcublas -lcudart

# ---- flags ---------------------------------------------------------------------------------
INCLUDES := -Iairbench -Ikernels -Idata -I$(BUILD)
DEPFLAGS = -MMD -MP
CFLAGS ?= -O3 -g
CFLAGS += -std=gnu11 -Wall -Wextra -fopenmp $(INCLUDES) $(CJSON_INC)
LDLIBS := -lm -fopenmp
NVCC_GENCODE := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
                -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
NVCCFLAGS ?= -O3
NVCCFLAGS += -std=c++17 $(NVCC_GENCODE) $(INCLUDES) -Xcompiler -Wall,-Wextra
# GPU programs link with gcc: the kernels' objects need the C++ runtime and cudart.
GPU_LINK = $(CC) $^ -o $@ $(LDLIBS) $(CUDA_LIBS) $(CJSON_LIBS) -lstdc++

# ---- the git state compiled into every run file ---------------------------------------------
# Commit, dirty flag, and for a dirty tree the sha256 of the uncommitted changes (tracked
# diff plus untracked files, runs/ excluded) and the files they touch. version.h is
# rewritten only when this changes. GIT_* from the environment win (the GPU machine gets
# a copy of the files without .git).
$(shell mkdir -p $(BUILD))
GIT_PATHS := -- . ':(exclude)runs'
GIT_COMMIT ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
GIT_CHANGED_FILES ?= $(strip $(shell git status --porcelain --untracked-files=all $(GIT_PATHS) 2>/dev/null | cut -c4-))
GIT_DIRTY ?= $(if $(GIT_CHANGED_FILES),1,0)
GIT_DIFF_SHA256 ?= $(if $(GIT_CHANGED_FILES),$(shell { git diff HEAD --binary $(GIT_PATHS); \
                   git ls-files -z --others --exclude-standard $(GIT_PATHS) | xargs -0 -r sha256sum; } | \
                   sha256sum | cut -c1-64))
VERSION_TEXT := \#define GIT_COMMIT "$(GIT_COMMIT)"\n\#define GIT_DIRTY $(GIT_DIRTY)\n\#define GIT_DIFF_SHA256 \
                "$(GIT_DIFF_SHA256)"\n\#define GIT_CHANGED_FILES "$(subst ",,$(GIT_CHANGED_FILES))"
$(shell printf '$(VERSION_TEXT)\n' | cmp -s - $(BUILD)/version.h || printf '$(VERSION_TEXT)\n' > $(BUILD)/version.h)

# ---- what is built -------------------------------------------------------------------------
VARIANTS := 94 95 96 94-muon 94-record 96-filter
CPU_PROGRAMS := $(BUILD)/airbench-ref $(BUILD)/benchstat
CPU_TESTS := $(BUILD)/test_augment $(BUILD)/test_data $(BUILD)/test_recipe $(BUILD)/test_reference \
             $(BUILD)/test_reference_fd $(BUILD)/test_benchstat $(BUILD)/test_runfile $(BUILD)/test_conv_cache
SHELL_TESTS := tests/test_cli.sh tests/test_train.sh tests/test_bench.sh tests/test_faults.sh tests/test_run_peer.sh \
               tests/test_get_cifar10.sh tests/test_profile.sh tests/test_gpu_check.sh
TRAINER := $(BUILD)/airbench
TRAINER_ALIASES := $(foreach v,$(VARIANTS),$(BUILD)/airbench$(v))
GPU_TEST_PROGRAMS := $(BUILD)/gpu_test_kernels $(BUILD)/gpu_test_trainer
GPU_TESTS := $(GPU_TEST_PROGRAMS) tests/gpu_test_repro.sh
DEV_PROGRAMS := $(BUILD)/kernel_bench $(BUILD)/fusion_bench
GPU_PROGRAMS := $(TRAINER) $(TRAINER_ALIASES) $(GPU_TEST_PROGRAMS) $(DEV_PROGRAMS)
# Fuzz targets (tests/fuzz.h): built with the sanitizers, objects in build/obj/fuzz/; make
# test runs each for its default budget of a few seconds, and test_fuzz.sh checks the engine.
FUZZ_TESTS := $(BUILD)/fuzz_cifar10 $(BUILD)/fuzz_runfile
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
CPU_TESTS += $(FUZZ_TESTS)
SHELL_TESTS += tests/test_fuzz.sh
# The trainer's GPU-side C files and the GPU tests on the CPU: tests/host/'s stand-ins for
# libcudart, cuBLAS and cuDNN's convolutions (host.h) and the kernels run by tests/emu/. They
# need CUDA's headers, not a GPU (skipped without CUDA). tests/test_emu checks the emulation;
# tests/test_host.sh runs the GPU tests so built. tests/test_fusion.sh asks cuDNN about
# dev/fusion's graphs for an H100 without one (deviceless plans).
HOST_PROGRAMS := $(BUILD)/host_test_kernels $(BUILD)/host_test_trainer $(BUILD)/host_airbench \
                 $(BUILD)/host_kernel_bench $(BUILD)/host_fusion_bench
CUDA_HOST_TESTS := $(BUILD)/test_emu $(BUILD)/test_muon_calls tests/test_host.sh tests/test_fusion.sh
ifeq ($(CUDA_PROBLEM),)
CPU_TESTS += $(BUILD)/test_emu $(BUILD)/test_muon_calls
SHELL_TESTS += tests/test_host.sh tests/test_fusion.sh
endif

KERNEL_OBJS := $(patsubst kernels/%.cu,$(OBJ)/kernels/%.o,$(wildcard kernels/*.cu))
REFERENCE_LIB := $(OBJ)/airbench/reference.o $(OBJ)/airbench/reference_layers.o $(OBJ)/airbench/recipe.o \
                 $(OBJ)/data/cifar10.o
TRAINER_OBJS := $(OBJ)/airbench/cli.o $(OBJ)/airbench/conv.o $(OBJ)/airbench/conv_cache.o $(OBJ)/airbench/conv_graph.o \
                $(OBJ)/airbench/gpu.o $(OBJ)/airbench/graph.o $(OBJ)/airbench/muon.o $(OBJ)/airbench/trainer.o \
                $(OBJ)/airbench/fusion.o $(OBJ)/airbench/runfile.o $(REFERENCE_LIB) $(KERNEL_OBJS)
GPU_C_OBJS := $(OBJ)/airbench/airbench.o $(OBJ)/airbench/cli.o $(OBJ)/airbench/conv.o $(OBJ)/airbench/conv_graph.o \
              $(OBJ)/airbench/gpu.o $(OBJ)/airbench/graph.o $(OBJ)/airbench/trainer.o $(OBJ)/airbench/fusion.o \
              $(OBJ)/airbench/muon.o $(OBJ)/tests/gpu_test_kernels.o $(OBJ)/tests/gpu_test_trainer.o \
              $(OBJ)/tests/test_muon_calls.o

DATA_DIR ?= data/cifar10

.PHONY: all cpu gpu test gpu-test gpu-sanitize host-sanitize host-racecheck data clean check-cuda
all: cpu gpu
cpu: $(CPU_PROGRAMS) $(CPU_TESTS) $(BUILD)/fake_trainer $(if $(CUDA_PROBLEM),,$(HOST_PROGRAMS))
ifeq ($(CUDA_PROBLEM),)
gpu: $(GPU_PROGRAMS)
else
gpu:
	@echo "make: skipped the GPU programs ($(GPU_PROGRAMS)): $(CUDA_PROBLEM)"
endif

# Any GPU object first checks that CUDA is usable, and fails with the reason otherwise.
check-cuda:
	@test -z "$(CUDA_PROBLEM)" || { echo "make: cannot build GPU code: $(CUDA_PROBLEM)" >&2; exit 2; }

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@
$(GPU_C_OBJS): CFLAGS += $(CUDA_INC)
$(GPU_C_OBJS): | check-cuda

$(OBJ)/kernels/%.o: kernels/%.cu | check-cuda
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(DEPFLAGS) -c $< -o $@

# The CPU reference (REFERENCE_LIB, for the tests and the trainer) and its training program.
$(BUILD)/airbench-ref: $(OBJ)/airbench/airbench_ref.o $(OBJ)/airbench/runfile.o $(REFERENCE_LIB)
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)

$(BUILD)/benchstat: $(OBJ)/tools/benchstat.o $(OBJ)/tools/stats.o $(OBJ)/tools/plot.o $(OBJ)/airbench/runfile.o $(OBJ)/airbench/recipe.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)

$(BUILD)/test_augment: $(OBJ)/tests/test_augment.o
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_data: $(OBJ)/tests/test_data.o $(OBJ)/data/cifar10.o
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_recipe: $(OBJ)/tests/test_recipe.o $(REFERENCE_LIB)
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_reference: $(OBJ)/tests/test_reference.o $(REFERENCE_LIB)
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_reference_fd: $(OBJ)/tests/test_reference_fd.o $(REFERENCE_LIB)
	$(CC) $^ -o $@ $(LDLIBS)
$(BUILD)/test_benchstat: $(OBJ)/tests/test_benchstat.o $(OBJ)/tools/stats.o
	$(CC) $^ -o $@ $(LDLIBS)
# The kernels themselves on the CPU (tests/emu/): each kernels/*.cu with its launches
# rewritten, kernel<<<config>>>(args) -> emu_launch(EmuConfig(config), "kernel", kernel)(args),
# compiled by the host C++ compiler with tests/emu/emu.h, whose emu.cc runs every CUDA thread
# of a block as a fiber.
EMU_CXXFLAGS ?= -O2 -g
EMU_FLAGS = -std=c++17 -ffp-contract=off -Wall -Wextra -Wno-unknown-pragmas $(INCLUDES) $(CUDA_INC) -Itests -Itests/host
EMU_LAUNCH_REWRITE := s/\b([A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(/emu_launch(EmuConfig($$2), "$$1", $$1)(/g
EMU_OBJS := $(patsubst %.cu,$(OBJ)/emu/%.o,$(wildcard kernels/*.cu)) $(OBJ)/emu/emu.o
.PRECIOUS: $(OBJ)/emu/%.cpp  # kept: the objects' dependency files name them
$(OBJ)/emu/%.cpp: %.cu
	@mkdir -p $(dir $@)
	{ echo '#line 1 "$<"'; perl -pe '$(EMU_LAUNCH_REWRITE)' $<; } > $@
$(OBJ)/emu/%.o: $(OBJ)/emu/%.cpp tests/emu/emu.h | check-cuda
	$(CXX) $(EMU_CXXFLAGS) $(EMU_FLAGS) $(DEPFLAGS) -include tests/emu/emu.h -c $< -o $@
# EMU_RUNTIME_FLAGS: emu.cc's own, when they differ from the kernels' (make host-racecheck).
$(OBJ)/emu/emu.o: tests/emu/emu.cc tests/emu/emu.h | check-cuda
	@mkdir -p $(dir $@)
	$(CXX) $(or $(EMU_RUNTIME_FLAGS),$(EMU_CXXFLAGS)) $(EMU_FLAGS) -U_FORTIFY_SOURCE $(DEPFLAGS) -c $< -o $@

# The host programs: the GPU side's C files on tests/host/'s runtime, cuBLAS and cuDNN
# stand-ins and the emulated kernels.
HOST_C_OBJS := $(patsubst %.c,$(OBJ)/%.o,$(wildcard tests/host/*.c))
$(HOST_C_OBJS): CFLAGS += $(CUDA_INC) -Itests -Itests/host
$(HOST_C_OBJS): | check-cuda
# conv_host.c's --conv-graph runs the real graph code (conv_graph.c, fusion.c).
GRAPH_OBJS := $(OBJ)/airbench/fusion.o $(OBJ)/airbench/conv_graph.o
HOST_OBJS := $(HOST_C_OBJS) $(EMU_OBJS) $(GRAPH_OBJS)
HOST_LINK = $(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS) -lstdc++ -lpthread
$(BUILD)/test_muon_calls: $(OBJ)/tests/test_muon_calls.o $(OBJ)/airbench/muon.o $(OBJ)/airbench/gpu.o $(HOST_OBJS) \
                          $(REFERENCE_LIB)
	$(HOST_LINK)
$(BUILD)/test_emu: $(OBJ)/emu/tests/emu/test_emu.o $(OBJ)/emu/emu.o $(OBJ)/tests/host/cuda_host.o
	$(HOST_LINK)
$(BUILD)/host_test_kernels: $(OBJ)/tests/gpu_test_kernels.o $(OBJ)/airbench/gpu.o $(HOST_OBJS) $(REFERENCE_LIB)
	$(HOST_LINK)
HOST_TRAINER_OBJS := $(filter-out $(OBJ)/airbench/conv.o $(GRAPH_OBJS) $(KERNEL_OBJS),$(TRAINER_OBJS)) $(HOST_OBJS)
$(BUILD)/host_test_trainer: $(OBJ)/tests/gpu_test_trainer.o $(HOST_TRAINER_OBJS)
	$(HOST_LINK)
# The trainer program itself on the CPU (slow: for small runs in tests/test_host.sh).
$(BUILD)/host_airbench: $(OBJ)/airbench/airbench.o $(HOST_TRAINER_OBJS)
	$(HOST_LINK)
$(BUILD)/test_runfile: $(OBJ)/tests/test_runfile.o $(OBJ)/airbench/runfile.o $(OBJ)/airbench/recipe.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)
$(BUILD)/test_conv_cache: $(OBJ)/tests/test_conv_cache.o $(OBJ)/airbench/conv_cache.o
	$(CC) $^ -o $@ $(LDLIBS)
# A trainer without a GPU, on the real run-file writer, for bench.sh's tests.
$(BUILD)/fake_trainer: $(OBJ)/tests/fake_trainer.o $(OBJ)/airbench/runfile.o $(OBJ)/airbench/recipe.o
	$(CC) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)

$(OBJ)/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FUZZ_CFLAGS) $(DEPFLAGS) -c $< -o $@
$(BUILD)/fuzz_cifar10: $(OBJ)/fuzz/tests/fuzz_cifar10.o $(OBJ)/fuzz/tests/fuzz.o $(OBJ)/fuzz/data/cifar10.o
	$(CC) $(FUZZ_CFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/fuzz_runfile: $(OBJ)/fuzz/tests/fuzz_runfile.o $(OBJ)/fuzz/tests/fuzz.o $(OBJ)/fuzz/airbench/runfile.o \
                       $(OBJ)/fuzz/airbench/recipe.o
	$(CC) $(FUZZ_CFLAGS) $^ -o $@ $(LDLIBS) $(CJSON_LIBS)
$(BUILD)/fuzz_selftest: $(OBJ)/fuzz/tests/fuzz_selftest.o $(OBJ)/fuzz/tests/fuzz.o
	$(CC) $(FUZZ_CFLAGS) $^ -o $@ $(LDLIBS)
test: $(BUILD)/fuzz_selftest  # for tests/test_fuzz.sh

# The GPU trainer: one program; the variant comes from --variant or from the name it is
# called by, so build/airbench94, airbench95, ... are links to it.
$(TRAINER): $(OBJ)/airbench/airbench.o $(TRAINER_OBJS)
	$(GPU_LINK)
$(TRAINER_ALIASES): $(TRAINER)
	ln -sf airbench $@

$(BUILD)/gpu_test_kernels: $(OBJ)/tests/gpu_test_kernels.o $(REFERENCE_LIB) $(KERNEL_OBJS)
	$(GPU_LINK)
$(BUILD)/gpu_test_trainer: $(OBJ)/tests/gpu_test_trainer.o $(TRAINER_OBJS)
	$(GPU_LINK)

# The kernel bench: dev/*.c (driver and harnesses, with tests/gpu_test.h) and dev/*.cu (its
# spin kernel, and any v2 kernel being tried beside v1).
BENCH_C_OBJS := $(patsubst dev/%.c,$(OBJ)/dev/%.o,$(wildcard dev/*.c))
BENCH_OBJS := $(BENCH_C_OBJS) $(patsubst dev/%.cu,$(OBJ)/dev/%.o,$(wildcard dev/*.cu))
$(BUILD)/kernel_bench: $(BENCH_OBJS) $(REFERENCE_LIB) $(KERNEL_OBJS)
	$(GPU_LINK)
$(BENCH_C_OBJS): CFLAGS += $(CUDA_INC) -Itests
$(BENCH_C_OBJS): | check-cuda
$(OBJ)/dev/%.o: dev/%.cu | check-cuda
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) $(DEPFLAGS) -c $< -o $@
# The fusion bench (dev/fusion/): cuDNN graphs of conv + BatchNorm fusions, against the
# trainer's conv (conv.c) and kernels.
FUSION_OBJS := $(OBJ)/dev/fusion/fusion_bench.o
$(BUILD)/fusion_bench: $(FUSION_OBJS) $(GRAPH_OBJS) $(OBJ)/airbench/conv.o $(OBJ)/airbench/conv_cache.o \
                       $(OBJ)/airbench/gpu.o $(REFERENCE_LIB) $(KERNEL_OBJS)
	$(GPU_LINK)
$(OBJ)/dev/fusion/fusion_bench.o: CFLAGS += $(CUDA_INC) -Itests
$(OBJ)/dev/fusion/fusion_bench.o: | check-cuda
# kernel_bench on the CPU: its harnesses and any v2 kernel of dev/*.cu checked against the
# reference (the times it prints are the CPU's); dev/bench_spin.cu reads the GPU's timer, and
# on the CPU there is nothing to wait for (cuda_host.c's launch_spin).
HOST_BENCH_OBJS := $(BENCH_C_OBJS) $(patsubst %.cu,$(OBJ)/emu/%.o,$(filter-out dev/bench_spin.cu,$(wildcard dev/*.cu)))
$(BUILD)/host_kernel_bench: $(HOST_BENCH_OBJS) $(OBJ)/airbench/gpu.o $(REFERENCE_LIB) $(HOST_OBJS)
	$(HOST_LINK)
# The fusion bench on the CPU: its GPU way run against tests/host/cudnn_graph_host.c's graphs.
$(BUILD)/host_fusion_bench: $(FUSION_OBJS) $(OBJ)/airbench/gpu.o $(REFERENCE_LIB) $(HOST_OBJS)
	$(HOST_LINK)

data: $(DATA_DIR)/test_batch.bin
$(DATA_DIR)/test_batch.bin:
	data/get_cifar10.sh $(DATA_DIR)

# The CPU suite; with CUDA it also builds the GPU programs, whose command lines test_cli.sh
# and test_gpu_check.sh check.
test: cpu data $(if $(CUDA_PROBLEM),,$(GPU_PROGRAMS))
	@$(if $(CUDA_PROBLEM),echo "make test: skipped building the GPU trainer ($(CUDA_PROBLEM)); its command-line checks are skipped too")
	@$(if $(CUDA_PROBLEM),echo "make test: skipped $(CUDA_HOST_TESTS) (the GPU-side files on the CPU, which need CUDA's headers)")
	@DATA_DIR=$(DATA_DIR) tests/run.sh $(CPU_TESTS) $(SHELL_TESTS)

# The GPU programs only: a GPU machine need not have the CPU side's tools (the sanitizer
# runtimes of the fuzzers, g++ for the kernels on the CPU).
gpu-test: gpu data | check-cuda
	@DATA_DIR=$(DATA_DIR) tests/run.sh $(GPU_TESTS)

# The host programs built with AddressSanitizer and UBSan in $(BUILD)/asan and run as
# tests/test_host.sh runs them: memory errors of the trainer's host-side C code and of the
# kernels (each CUDA thread's accesses, as compute-sanitizer's memcheck would see them).
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
host-sanitize: data | check-cuda
	CFLAGS="-O2 -g -fno-omit-frame-pointer $(ASAN_FLAGS)" EMU_CXXFLAGS="-O2 -g -fno-omit-frame-pointer $(ASAN_FLAGS)" \
	    $(MAKE) BUILD=$(BUILD)/asan LDLIBS="$(LDLIBS) $(ASAN_FLAGS)" \
	    $(addprefix $(BUILD)/asan/,$(notdir $(HOST_PROGRAMS)) test_emu)
	@DATA_DIR=$(DATA_DIR) HOST_BUILD=$(BUILD)/asan tests/run.sh $(BUILD)/asan/test_emu tests/test_host.sh

# The kernels on the CPU under ThreadSanitizer in $(BUILD)/tsan (emu.cc uninstrumented, with
# EMU_RACECHECK): data races between the CUDA threads of a block, and between blocks that run
# on different worker threads, as compute-sanitizer's racecheck would see them.
TSAN_FLAGS := -fsanitize=thread
host-racecheck: | check-cuda
	CFLAGS="-O1 -g $(TSAN_FLAGS)" EMU_CXXFLAGS="-O1 -g $(TSAN_FLAGS)" EMU_RUNTIME_FLAGS="-O2 -g -DEMU_RACECHECK" \
	    $(MAKE) BUILD=$(BUILD)/tsan LDLIBS="$(LDLIBS) $(TSAN_FLAGS)" \
	    $(addprefix $(BUILD)/tsan/,host_test_kernels host_kernel_bench test_emu)
	@HOST_BUILD=$(BUILD)/tsan tests/run.sh tests/test_racecheck.sh

gpu-sanitize: $(BUILD)/gpu_test_kernels $(BUILD)/airbench94 data | check-cuda
	DATA_DIR=$(DATA_DIR) dev/gpu_sanitize.sh

clean:
	rm -rf $(BUILD)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)
