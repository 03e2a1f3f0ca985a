#!/usr/bin/env bash
# Dynamic mixing from speaker-labelled audio (the route the bundled models take): data check ->
# held-out evaluation set -> train -> average -> evaluate -> RESULTS.md. Every step calls
# `python -m usef.bin.*`.
#
# Speech: a manifest CSV (path,speaker), a folder with one sub-folder per speaker, or a .npz pack
# (usef.data.write_pack). Development speakers are held out of training (dev_speakers N, or the
# conf's data.dev_speaker_list) and give the dev curve; stage 1 draws a second, differently seeded
# set of mixtures of the same held-out speakers for the final evaluation.
#
#   bash run.sh --speech /data/my_speakers --noise /data/noise/manifest.csv --ngpu 1
#   bash run.sh --conf egs/speakers/conf/bundled_usef_conformer_8k.yaml     # the bundled model
#
# Relative paths are taken from the directory you call the script from; config files are read
# from the repository root (their own paths, e.g. packs/all8k.npz, are relative to it).
set -euo pipefail

stage=${stage:-0}
stop_stage=${stop_stage:-5}
conf=${conf:-egs/speakers/conf/usef_conformer_8k.yaml}
speech=${speech:-}                   # overrides data.speech (manifest .csv, speaker folder or .npz pack)
noise=${noise:-}                     # overrides data.noise ("none" disables noise)
dev_speakers=${dev_speakers:-}       # overrides data.dev_speakers (held-out speaker count)
ngpu=${ngpu:-1}                      # 0: CPU; 1: one GPU; N > 1: torchrun with N processes
ncpu=${ncpu:-1}                      # with ngpu 0: N > 1 CPU processes of one thread each (torchrun)
exp=${exp:-}                         # default exp/speakers_<conf name>
n_average=${n_average:-3}
eval_items=${eval_items:-500}        # mixtures in the held-out evaluation set
eval_seed=${eval_seed:-777}          # its seed (must differ from dev.seed: no selection bias)
torchrun_opts=${torchrun_opts:---standalone}
train_opts=${train_opts:-}           # extra key=value overrides
eval_opts=${eval_opts:-}             # extra usef eval flags, e.g. "--no-pesq"
python=${python:-python}

vars=" stage stop_stage conf speech noise dev_speakers ngpu ncpu exp n_average eval_items eval_seed torchrun_opts train_opts eval_opts python "
. "$(dirname "${BASH_SOURCE[0]}")/../parse_options.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../train_launcher.sh"

absolute() { case "$1" in /*|"") printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
speech=$(absolute "$speech")
[ "$noise" = none ] || noise=$(absolute "$noise")
[ -z "$exp" ] || exp=$(absolute "$exp")
if [ -f "$conf" ]; then conf=$(absolute "$conf"); fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exp=${exp:-exp/speakers_$(basename "$conf" .yaml)}
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

device=cuda
[ "$ngpu" -eq 0 ] && device=cpu
data_opts=("train.device=$device")
[ -z "$speech" ] || data_opts+=("data.speech=$speech")
[ "$noise" != none ] || data_opts+=("data.noise=null")
[ "$noise" = none ] || [ -z "$noise" ] || data_opts+=("data.noise=$noise")
[ -z "$dev_speakers" ] || data_opts+=("data.dev_speakers=$dev_speakers" "data.dev_speaker_list=null")
read -r -a extra_train <<< "$train_opts"
read -r -a extra_eval <<< "$eval_opts"
read -r -a launcher <<< "$python"
model_dir=$exp/average_best$n_average

if run_stage 0; then
  echo "stage 0: check the speech and noise of $conf"
  "${launcher[@]}" -m usef.bin.train "$conf" "${data_opts[@]}" dev.n_items=0 "${extra_train[@]}" \
    --exp-dir "$exp" --prepare
fi

if run_stage 1; then
  echo "stage 1: held-out evaluation set ($eval_items mixtures of the dev speakers, seed $eval_seed)"
  "${launcher[@]}" -m usef.bin.train "$conf" "${data_opts[@]}" "${extra_train[@]}" \
    "dev.n_items=$eval_items" "dev.seed=$eval_seed" --exp-dir "$exp" --write-dev-set "$exp/heldout"
fi

if run_stage 2; then
  train_launcher  # --resume: re-running the stage continues the run exactly where it stopped
  echo "stage 2: train $conf into $exp on $train_where"
  "${trainer[@]}" "$conf" "${data_opts[@]}" "${trainer_opts[@]}" "${extra_train[@]}" --exp-dir "$exp" --resume
fi

if run_stage 3; then
  echo "stage 3: average the $n_average best checkpoints into $model_dir"
  "${launcher[@]}" -m usef.bin.average "$exp" --best "$n_average" --out "$model_dir"
fi

if run_stage 4; then
  echo "stage 4: evaluate $model_dir on $exp/heldout/eval.csv"
  "${launcher[@]}" -m usef.bin.main eval --list "$exp/heldout/eval.csv" --model "$model_dir" \
    --out-dir "$exp/eval_heldout" --device "$device" "${extra_eval[@]}"
fi

if run_stage 5; then
  echo "stage 5: $exp/RESULTS.md"
  "${launcher[@]}" -m usef.bin.results "$exp/eval_heldout/summary.json" --out "$exp/RESULTS.md" \
    --title "Held-out speakers: $conf" --model "$model_dir"
fi
