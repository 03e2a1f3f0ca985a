#!/bin/bash
# The trainer's own step time (log.jsonl's step_time), variants run in interleaved rounds so that
# the machine's drifts hit them alike. Numbers, not tests: run it on an otherwise idle machine.
#
#   bash tools/time_train_step.sh [ROUNDS] [STEPS]      (from the repository root)
#   CONF=... VARIANTS="autocast bf16w ddp_bf16w" OUT=exp/timing bash tools/time_train_step.sh 2 50
#
# Variants: autocast (train.bf16_cpu as the config says), bf16w (+ train.bf16_weights), *_w0 (no
# data worker), *_malloc (glibc keeps freed memory instead of unmapping it: MALLOC_* below), *_active
# (OpenMP threads spin instead of sleeping between parallel regions), *_tuned (both), ddp_* (torchrun, two
# one-thread processes of half the batch each). Steps 1-10 are
# left out of the mean (start-up). Prints each run's 10-step windows and the mean per variant.
set -euo pipefail
ROUNDS=${1:-2}; STEPS=${2:-50}
CONF=${CONF:-egs/speakers/conf/cpu_usef_conformer_8k_stage13b.yaml}
OUT=${OUT:-exp/timing}
HALF=$(python -c "import yaml,sys; print(max(1, yaml.safe_load(open('$CONF'))['train']['batch_size'] // 2))")
COMMON="train.grad_accum=1 data.mix.reference_length_group=batch train.max_steps=$STEPS train.max_minutes=null
 train.fit_schedule_to_minutes=false train.dev_every=0 train.log_every=10 train.save_every=100000 dev.n_items=0"
ONE="python -m usef.bin.train $CONF --quiet --threads 2"
TWO="python -m torch.distributed.run --standalone --nproc_per_node=2 -m usef.bin.train $CONF --quiet --threads 1"
MALLOC="MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824"
KNOWN=" autocast bf16w bf16w_w0 bf16w_malloc bf16w_active bf16w_tuned ddp_autocast ddp_bf16w ddp_bf16w_w0 "
run_variant() {  # a variant's name says what it changes: ddp_ prefix, bf16w, then one suffix
  local v=$1 d=$2 launch=$ONE threads=2 envs="" extra=""
  case $v in ddp_*) launch=$TWO; threads=1; extra="train.batch_size=$HALF" ;; esac
  case $v in *bf16w*) extra="$extra train.bf16_weights=true" ;; esac
  case $v in
    *_w0) extra="$extra train.num_workers=0" ;;
    *_malloc) envs=$MALLOC ;;
    *_active) envs="OMP_WAIT_POLICY=ACTIVE" ;;
    *_tuned) envs="OMP_WAIT_POLICY=ACTIVE $MALLOC" ;;
  esac
  env $envs OMP_NUM_THREADS=$threads $launch --exp-dir "$d" $COMMON $extra
}
for v in ${VARIANTS:-autocast bf16w ddp_bf16w ddp_autocast}; do
  [[ $KNOWN == *" $v "* ]] || { echo "unknown variant $v" >&2; exit 2; }
done
for r in $(seq 1 "$ROUNDS"); do
  for v in ${VARIANTS:-autocast bf16w ddp_bf16w ddp_autocast}; do
    d=$OUT/${v}_$r; rm -rf "$d"
    run_variant "$v" "$d"
  done
done
OUT=$OUT python - <<'PY'
import collections, glob, json, os, statistics
means = collections.defaultdict(list)
for path in sorted(glob.glob(os.path.join(os.environ["OUT"], "*", "log.jsonl"))):
    run = os.path.basename(os.path.dirname(path))
    windows = [r["step_time"] for r in map(json.loads, open(path)) if "step_time" in r and r["step"] > 10]
    means[run.rsplit("_", 1)[0]].append(statistics.mean(windows))
    print(f"{run:16s} windows {' '.join(f'{t:.3f}' for t in windows)}  mean {statistics.mean(windows):.3f} s")
for variant, values in means.items():
    print(f"{variant:16s} {statistics.mean(values):.3f} s per step  (rounds: {', '.join(f'{v:.3f}' for v in values)})")
PY
