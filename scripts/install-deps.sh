#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing and the main job need.
set -euo pipefail
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake pkg-config git ca-certificates \
  openmpi-bin libopenmpi-dev libopenblas-dev \
  libhdf5-openmpi-dev hdf5-tools \
  libprotobuf-c-dev protobuf-c-compiler \
  libjpeg62-turbo-dev zlib1g-dev libpng-dev \
  python3-torch python3-h5py python3-numpy python3-pil \
  dataset-fashion-mnist \
  slurm-wlm munge \
  gnuplot-nox clang libclang-rt-14-dev iproute2 procps \
  libdnnl-dev libonnx-dev libzip-dev python3-onnx python3-opencv >/dev/null
