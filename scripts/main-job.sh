#!/usr/bin/env bash
# The README's first command: installs the Debian packages, builds, and runs the
# main job. Until the trainer lands this runs the margin-softmax core for real:
# the same problem split over 1-4 MPI class shards, and against PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
for np in 1 2 3 4; do
  mpirun --oversubscribe --bind-to none -np "$np" build/tests/core/core_sharded_ce | tail -2
done
/usr/bin/python3 tests/core/margin_torch_ref.py build/bin/arcface-loss build/demo | tail -2
