#!/usr/bin/env bash
# Where jobs/eval.sbatch puts its results when OUT is not given, with the real
# arcface-train and arcface-eval: <run>/eval for a checkpoint in <run>/checkpoints/
# and for a model file in the run folder itself; <dir>/<model name>-eval for a
# model file anywhere else. The last case is the README's own example: a
# backbone exported to model.h5 in the project root, evaluated from there,
# used to write results.csv and the ROC curves into the source folder eval/.
#
#   eval_sbatch.sh BIN_DIR SOURCE_DIR WORKDIR
set -u
bin=$(cd "$1" && pwd) src=$(cd "$2" && pwd) work=$3
rm -rf "$work" && mkdir -p "$work" || exit 1
fails=0
check() { # check DESCRIPTION CONDITION...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}

# A tiny run: 2 steps of the 28x28 network on synthetic identities.
if ! OMPI_MCA_rmaps_base_oversubscribe=1 "$bin/arcface-train" --network fmnist --embedding_size 16 \
     --num_classes 23 --rec synthetic:ids=23,per_id=4,size=28,channels=1,seed=9 --batch_size 8 \
     --max_steps 2 --save_every 2 --val_targets "" --threads 1 --loader_threads 1 \
     --output "$work/run" >"$work/train.log" 2>&1; then
  cat "$work/train.log"; echo "FAIL: the training run that makes the model failed"; exit 1
fi
ckpt=$work/run/checkpoints/ckpt_00000002.h5
[ -f "$ckpt" ] || { echo "FAIL: no $ckpt"; exit 1; }

# A folder laid out like this project's root: its eval/ holds sources.
mkdir -p "$work/proj/eval" "$work/download"
echo "/* a source file */" >"$work/proj/eval/verify.c"
cp "$ckpt" "$work/proj/model.h5"
cp "$ckpt" "$work/run/model.h5"
cp "$ckpt" "$work/download/r50.h5"

# sbatch_eval CWD MODEL: runs the script as sbatch would, without OUT.
sbatch_eval() {
  (cd "$1" && env -u OUT BIN_DIR="$bin" MODEL="$2" THREADS=1 \
     TARGETS="synthetic:ids=60,per_id=20,size=28,channels=1,seed=5" bash "$src/jobs/eval.sbatch") \
    >"$work/eval.log" 2>&1 || { cat "$work/eval.log"; return 1; }
}

# (A checkpoint in <run>/checkpoints/ is tests/ckpt/durable.py's case.)
sbatch_eval "$work/run" model.h5
check "a model file in the run folder: runs (exit 0)" test $? -eq 0
check "a model file in the run folder: results in <run>/eval" test -s "$work/run/eval/results.csv"
sbatch_eval "$work/proj" model.h5
check "model.h5 in a project root: runs (exit 0)" test $? -eq 0
check "model.h5 in a project root: results in model-eval/" test -s "$work/proj/model-eval/results.csv"
check "model.h5 in a project root: the source folder eval/ is left alone ($(ls "$work/proj/eval" | tr '\n' ' '))" \
  test "$(ls "$work/proj/eval")" = verify.c
sbatch_eval "$work" download/r50.h5
check "a model in a plain folder: results in download/r50-eval/" test -s "$work/download/r50-eval/results.csv"
check "a model in a plain folder: nothing outside it" test ! -e "$work/eval"

[ $fails -eq 0 ] && echo PASS || echo "FAIL: $fails checks"
exit $((fails > 0))
