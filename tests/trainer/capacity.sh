#!/bin/bash
# Start-up capacity check (core/capacity.c): configurations that cannot fit are
# refused before anything large is allocated, on every rank, with exit status 2
# (the message printed once, by the lowest rank that saw it, naming the rank at fault)
# and a message that names the quantity, its size and what to change; nothing
# is written. (1) 10^11 classes on one server at sample_rate 1e-4: the shard
# (about 12 TiB) exceeds any node's MemAvailable; (2) the same at sample_rate 1:
# a worker's slice of the sampled centres exceeds the int range of the fc
# kernels; (3) 2*10^7 classes (a 2.5 GiB shard) under ulimit -v 1.4 GiB: the
# rank's address-space limit. A job that fits passing the check is trainer_chunked's business.
# usage: capacity.sh ARCFACE_TRAIN MPIRUN_WORDS_SEPARATED_BY_BAR WORKDIR
set -u
bin=$1; IFS='|' read -r -a mpirun <<< "$2"; work=$3
rm -rf "$work"; mkdir -p "$work"
fails=0
check() { # name, expected words..., -- args...
    local name=$1; shift
    local want=()
    while [ "$1" != "--" ]; do want+=("$1"); shift; done; shift
    ( [ -n "${AS_LIMIT_KIB:-}" ] && ulimit -v "$AS_LIMIT_KIB"
      exec "${mpirun[@]}" -np 3 "$bin" --network fmnist --embedding_size 16 --max_steps 1 --loader_threads 1 --threads 1 \
        --resume none --batch_size 4 --ps 1 --rec synthetic:ids=97,per_id=4,size=28,channels=1,seed=3 \
        --output "$work/$name/out" "$@" ) > "$work/$name.log" 2>&1
    local rc=$? ok=1
    local lines; lines=$(grep -c "the job does not fit" "$work/$name.log")
    echo "$name: exit $rc (expected 2); 'the job does not fit' printed $lines times (expected once)"
    [ "$rc" = 2 ] && [ "$lines" = 1 ] || ok=0
    for w in "${want[@]}"; do
        if grep "the job does not fit" "$work/$name.log" | head -1 | grep -qF -- "$w"; then echo "  names: $w"
        else echo "  MISSING: $w"; ok=0; fi
    done
    [ -e "$work/$name/out" ] && { echo "  the refused job wrote $work/$name/out"; ok=0; }
    [ $ok = 1 ] || { fails=$((fails + 1)); sed -n 1,20p "$work/$name.log"; }
}
check shard "server 0 (rank 2)" "shard of the fc centres" "TiB" "MemAvailable" "add servers (ps)" -- \
    --num_classes 100000000000 --sample_rate 0.0001
check slice "worker 0 (rank 0)" "slice of the sampled centres is 50000000000 rows" "add workers or lower sample_rate" -- \
    --num_classes 100000000000 --sample_rate 1
AS_LIMIT_KIB=1500000 check address_space "server 0 (rank 2)" "address-space limit of 1.4 GiB" "2.5 GiB" \
    "add servers (ps)" -- --num_classes 20000000 --sample_rate 0.001
echo "$((3 - fails)) passed, $fails failed"
[ $fails = 0 ]
