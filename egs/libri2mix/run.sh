#!/usr/bin/env bash
# Libri2Mix target speech extraction: data check -> enrollment lists -> train -> average ->
# evaluate on test -> RESULTS.md. Every step calls `python -m usef.bin.*`; nothing here trains
# by itself.
#
#   bash run.sh --librimix_root /data/Libri2Mix --conf conf/usef_tfgridnet.yaml --ngpu 4
#   stage=2 stop_stage=3 librimix_root=/data/Libri2Mix bash run.sh
#
# Variables (environment or --name value): see the defaults below.
set -euo pipefail

stage=${stage:-0}                    # first stage to run
stop_stage=${stop_stage:-5}          # last stage to run
librimix_root=${librimix_root:-}     # folder holding wav8k/ and/or wav16k/ (LibriMix layout)
ngpu=${ngpu:-1}                      # 0: CPU; 1: one GPU; N > 1: torchrun with N processes
ncpu=${ncpu:-1}                      # with ngpu 0: N > 1 CPU processes of one thread each (torchrun)
conf=${conf:-conf/usef_tfgridnet.yaml}
exp=${exp:-}                         # default exp/<conf name>
sample_rate=${sample_rate:-8000}     # must match the model of $conf
mode=${mode:-min}                    # min | max
mix_type=${mix_type:-mix_clean}      # mix_clean | mix_both | mix_single
n_average=${n_average:-5}            # checkpoints averaged in stage 3 (best by dev SI-SDRi)
eval_seed=${eval_seed:-0}            # seed of the test enrollment draw (fixed list, written once)
test_enrollment=${test_enrollment:-} # test list to use instead, e.g. SpeakerBeam's map_mixture2enrollment
torchrun_opts=${torchrun_opts:---standalone}  # e.g. "--nnodes 2 --node_rank 0 --rdzv_endpoint host:29500"
train_opts=${train_opts:-}           # extra key=value overrides, e.g. "train.max_steps=1000"
eval_opts=${eval_opts:-}             # extra usef eval flags, e.g. "--no-pesq --limit 200"
python=${python:-python}

vars=" stage stop_stage librimix_root ngpu ncpu conf exp sample_rate mode mix_type n_average eval_seed test_enrollment torchrun_opts train_opts eval_opts python "
. "$(dirname "${BASH_SOURCE[0]}")/../parse_options.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../train_launcher.sh"

# a relative test_enrollment is meant from the caller's folder: make it absolute before the cd
if [ -n "$test_enrollment" ] && [[ $test_enrollment != /* ]]; then
  test_enrollment=$PWD/$test_enrollment
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
# run from a source checkout without installing
export PYTHONPATH="$(cd ../.. && pwd)${PYTHONPATH:+:$PYTHONPATH}"
exp=${exp:-exp/$(basename "$conf" .yaml)}
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
for s in 0 1 2 4; do
  if run_stage $s && [ -z "$librimix_root" ]; then
    echo "$0: stage $s needs librimix_root (the folder holding wav8k/ or wav16k/)" >&2
    exit 2
  fi
done
device=cuda
[ "$ngpu" -eq 0 ] && device=cpu
data_opts=("data.root=$librimix_root" "data.sample_rate=$sample_rate" "data.mode=$mode" "data.mix_type=$mix_type"
           "train.device=$device")
read -r -a extra_train <<< "$train_opts"
read -r -a extra_eval <<< "$eval_opts"
read -r -a launcher <<< "$python"
enrollment_opts=()
if [ -n "$test_enrollment" ]; then
  enrollment_opts=(--enrollment "$test_enrollment")
  if run_stage 4 && [ ! -f "$test_enrollment" ]; then
    echo "$0: test_enrollment $test_enrollment: no such file" >&2
    exit 2
  fi
fi

if run_stage 0; then
  echo "stage 0: check the training data under $librimix_root"
  "${launcher[@]}" -m usef.bin.train "$conf" "${data_opts[@]}" dev.n_items=0 "${extra_train[@]}" \
    --exp-dir "$exp" --prepare
fi

if run_stage 1; then
  echo "stage 1: enrollment lists (dev: $exp/dev_enrollment.csv; test: written by stage 4 with seed $eval_seed)"
  "${launcher[@]}" -m usef.bin.train "$conf" "${data_opts[@]}" "${extra_train[@]}" --exp-dir "$exp" --prepare
fi

if run_stage 2; then
  train_launcher  # --resume: re-running the stage continues the run exactly where it stopped
  echo "stage 2: train $conf into $exp on $train_where"
  "${trainer[@]}" "$conf" "${data_opts[@]}" "${trainer_opts[@]}" "${extra_train[@]}" --exp-dir "$exp" --resume
fi

model_dir=$exp/average_best$n_average
if run_stage 3; then
  echo "stage 3: average the $n_average best checkpoints into $model_dir"
  "${launcher[@]}" -m usef.bin.average "$exp" --best "$n_average" --out "$model_dir"
fi

if run_stage 4; then
  echo "stage 4: evaluate $model_dir on Libri2Mix test ($sample_rate Hz, $mode, $mix_type;" \
       "enrollment: ${test_enrollment:-seeded list $exp/eval_test/enrollment.csv, seed $eval_seed})"
  "${launcher[@]}" -m usef.bin.main eval --libri2mix "$librimix_root" --subset test --sample-rate "$sample_rate" \
    --mode "$mode" --mix-type "$mix_type" --model "$model_dir" --out-dir "$exp/eval_test" \
    --device "$device" --seed "$eval_seed" ${enrollment_opts[@]+"${enrollment_opts[@]}"} "${extra_eval[@]}"
fi

if run_stage 5; then
  echo "stage 5: $exp/RESULTS.md"
  "${launcher[@]}" -m usef.bin.results "$exp/eval_test/summary.json" --out "$exp/RESULTS.md" \
    --title "Libri2Mix test results: $conf" --model "$model_dir"
fi
