#!/usr/bin/env bash
# One prepared GPU command: trains the bundled USEF-Conformer and its equal-budget joint-embedding
# twin side by side on one GPU (same data, steps, batch, optimizer, seed), then copies the best
# weights and the logs to $OUT. Needs only torch, numpy, pyyaml, safetensors, einops, tqdm there.
#   packs/all8k.npz: python tools/make_pack.py --speech ../shared/data/speech/manifest.csv \
#       ../shared/data/speech_extra/manifest.csv --noise ../shared/data/noise/manifest.csv --out packs/all8k.npz
# Usage (device tool, carry packs): OUT=/some/dir MINUTES=7.3 bash tools/gpu_train_bundled.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# EXTRA: overrides for every run. The d-vector table is attached to all of them so that the three
# draw the very same examples (the table also fixes the rule: the target talker is not speed-perturbed);
# models that take a reference ignore the vectors.
OUT=${OUT:-out}; MINUTES=${MINUTES:-7.3}; PILOT_STEPS=${PILOT_STEPS:-60}; EXTRA=${EXTRA-data.dvectors=packs/dvectors.npz}  # EXTRA= (empty) for a run without the table
mkdir -p "$OUT" exp
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# tag:config pairs trained side by side with equal budgets; the d-vector twin also needs
# packs/dvectors.npz (tools/make_dvectors.py --pack packs/all8k.npz --out packs/dvectors.npz)
confs=${CONFS:-"usef:egs/speakers/conf/bundled_usef_conformer_8k.yaml emb:egs/speakers/conf/bundled_embedding_conformer_8k.yaml dv:egs/speakers/conf/bundled_dvector_conformer_8k.yaml"}
tags=$(for pair in $confs; do printf '%s ' "${pair%%:*}"; done)

# 1) pilot: both runs together for a few steps to measure the step time they get side by side
for pair in $confs; do
  tag=${pair%%:*}; conf=${pair#*:}
  python3 -m usef.bin.train "$conf" --exp-dir exp/pilot_$tag --quiet train.max_steps=$PILOT_STEPS train.log_every=5 \
    train.dev_every=0 dev.n_items=0 train.max_minutes=1.0 $EXTRA > "exp/pilot_$tag.log" 2>&1 &
done
wait
steps=$(python3 - "$MINUTES" $tags <<'PY'
import json, sys
times = []
for tag in sys.argv[2:]:
    rows = [json.loads(l) for l in open(f"exp/pilot_{tag}/log.jsonl") if '"step_time"' in l]
    times += [r["step_time"] for r in rows[2:]] or [r["step_time"] for r in rows]
step = max(sorted(times)[len(times) // 2], 1e-3)
budget = float(sys.argv[1]) * 60 * 0.93  # dev evaluations and checkpoints take the rest
# twice the pilot's plan as the cap: the runs re-plan from their own pace (fit_schedule_to_minutes),
# because runs side by side go slower than the pilot (2026-12-04: 0.26 s a step against 0.11)
print(2 * max(500, int(budget / step) // 100 * 100))
PY
)
echo "pilot step time -> at most max_steps=$steps for $MINUTES min, fitted to the pace as they run"

# 2) the real runs, equal budgets, concurrently
for pair in $confs; do
  tag=${pair%%:*}; conf=${pair#*:}
  python3 -m usef.bin.train "$conf" --exp-dir exp/$tag --quiet train.max_steps=$steps train.fit_schedule_to_minutes=true \
    train.max_minutes=$MINUTES $EXTRA > "exp/train_$tag.log" 2>&1 &
done
wait
# 3) best weights (or the latest when no dev score exists yet) and logs, as one tar cut into
# 15 MB parts: the device tool returns at most 8 files of 16 MiB. Rebuild: cat results.tar.* | tar x
for tag in $tags; do
  last=$(ls -d exp/$tag/checkpoints/step_* 2>/dev/null | sort -t_ -k2 -n | tail -1)
  if [ ! -f exp/$tag/best/model.safetensors ]; then
    mkdir -p exp/$tag/best
    cp "$last"/model.safetensors "$last"/config.yaml exp/$tag/best/
  fi
  # LAST=1: the last weights too (no optimiser state), for averaging; mind the 64 MiB that come back
  if [ "${LAST:-0}" = 1 ] && [ -n "$last" ]; then
    mkdir -p exp/$tag/last; cp "$last"/model.safetensors "$last"/config.yaml exp/$tag/last/
  fi
  grep -v "^ *$" "exp/train_$tag.log" | tail -3
done
tar cf - $(for tag in $tags; do echo exp/$tag/best exp/$tag/last exp/$tag/best.json exp/$tag/log.jsonl; done) 2>/dev/null \
  | split -b 15000000 -d - "$OUT/results.tar."
ls -la "$OUT"
