#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine: installs the packages,
# builds, and runs the main job — ArcFace on Fashion-MNIST (Debian's
# dataset-fashion-mnist) with the small network, 2 workers and 1 parameter server
# under mpirun, checkpointing as it goes, evaluating every epoch — then evaluates
# the final checkpoint (nearest-centre and 10-fold verification accuracy on the test
# split), draws the charts, and says where everything is.
#
# Running it again RESUMES: the trainer continues from the newest complete
# checkpoint in work_dirs/fmnist (or, when training had finished, does nothing and
# the evaluation runs again). To RESTART from scratch: FRESH=1 bash scripts/main-job.sh
# (it deletes work_dirs/fmnist first). OUT=DIR puts the run somewhere else;
# TRAIN_ARGS="--margin_grad analytic" passes extra keys to the trainer.
#
# Stopping: training runs under jobs/launch.sh, so SIGTERM or SIGINT to its pid (or
# SIGUSR1 to mpirun) checkpoints and ends the job with status 3; run the script again
# to continue; Ctrl-C does the same (launch.sh keeps mpirun out of the terminal's
# process group; jobs/README.md, docs/faults.md).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
OUT=${OUT:-work_dirs/fmnist}
if [ "${SKIP_INSTALL:-0}" != 1 ]; then bash scripts/install-deps.sh; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" 2>&1 | grep -E "error|warning" || true
[ -x build/bin/arcface-train ] || { echo "main-job: the build failed"; exit 1; }
t1=$(date +%s)
echo "main-job: installed and built in $((t1 - t0)) s"

[ "${FRESH:-0}" = 1 ] && { echo "main-job: FRESH=1, removing $OUT"; rm -rf "$OUT"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
jobs/launch.sh mpirun --oversubscribe --bind-to none -np 3 build/bin/arcface-train jobs/fmnist.conf --ps 1 --output "$OUT" \
  ${TRAIN_ARGS:-} \
  | grep -vE '^[a-z_0-9]+ = '
t2=$(date +%s)
echo "main-job: trained in $((t2 - t1)) s"

ckpt="$OUT/checkpoints/$(cat "$OUT/checkpoints/latest")"
mkdir -p "$OUT/eval"
build/bin/arcface-eval --model "$ckpt" --target fmnist-test:/usr/share/datasets/fashion-mnist \
  --roc-dir "$OUT/eval" --results "$OUT/eval/results.csv" --threads 2
build/bin/arcface-plot metrics "$OUT/metrics.csv" "$OUT/plots" >/dev/null
t3=$(date +%s)

read -r ver centre < <(awk -F, '$1 == "fmnist" { print $3, $8 }' "$OUT/eval/results.csv")
ok=$(awk -v v="$ver" -v c="$centre" 'BEGIN { print (c >= 0.90 && v >= 0.92) ? "yes" : "NO" }')
cat <<SUMMARY

==================== arcface-cpu main job ====================
Fashion-MNIST test split, ArcFace (s=64, m=0.5), fmnist network, 2 workers + 1 server
  nearest-centre accuracy : $centre   (target >= 0.90)
  verification accuracy   : $ver   (10-fold, 6,000 pairs; target >= 0.92)
  targets met             : $ok
checkpoint : $ckpt
metrics    : $OUT/metrics.csv
plots      : $OUT/plots/{loss,lr,throughput,val}.png
ROC        : $OUT/eval/fmnist_roc.png  (data: $OUT/eval/fmnist_roc.csv)
time       : install+build $((t1 - t0)) s, training $((t2 - t1)) s, evaluation $((t3 - t2)) s
again      : rerunning resumes from the newest checkpoint; FRESH=1 restarts from scratch
===============================================================
SUMMARY
