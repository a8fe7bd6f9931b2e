#!/bin/sh
# dev/device.sh CMD...: runs CMD on the lent GPU machine (see ../shared/device/README.md)
# with the build environment set: cJSON from the carried .debs unpacked into /tmp/sysroot,
# cuDNN from the CUDA toolkit or else from PyTorch's nvidia-cudnn package, CIFAR-10 in
# /tmp/cifar10 (staged by ../shared/device/stage-cifar10). The copy has no .git: pass
# GIT_COMMIT=<sha> GIT_DIRTY=0 in the environment so run files name their commit.
set -eu
if [ ! -f /tmp/sysroot/usr/include/cjson/cJSON.h ]; then
    [ -d .debs ] || { echo "dev/device.sh: carry .debs (../shared/device/stage-debs)" >&2; exit 2; }
    sh .debs/unpack.sh /tmp/sysroot > /dev/null
fi
export CJSON_HOME=/tmp/sysroot/usr
if [ -z "${CUDNN_HOME:-}" ]; then
    if [ -f /usr/local/cuda/include/cudnn.h ]; then
        CUDNN_HOME=/usr/local/cuda
    else
        CUDNN_HOME=$(python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])')
    fi
fi
export CUDNN_HOME DATA_DIR=/tmp/cifar10
exec "$@"
