# Sourced by the recipes: `train_launcher` fills the array `trainer` with the command that starts
# `python -m usef.bin.train` from the recipe's $python launcher: on $ngpu GPUs (torchrun with
# $torchrun_opts when ngpu > 1), or with ngpu 0 and ncpu > 1 as $ncpu CPU processes of one thread
# each (torchrun, gloo), `trainer_opts` with the overrides that launch needs, and `train_where`
# (words for the recipe's log line).
#
# Why several CPU processes: on this project's 2-core CPU two one-thread processes ran a training
# step of the default config (16 x 3 s, bf16) 10-13 % faster than one two-thread process (1.24 and
# 1.49 s against 1.43 and 1.64 s, two rounds). train.batch_size is per process: halve it (or set
# it with train_opts) to keep the global batch.
train_launcher() {
  read -r -a trainer <<< "$python"
  trainer_opts=()
  train_where="$ngpu GPU(s)"
  local procs=$ngpu
  if [ "$ngpu" -eq 0 ]; then
    train_where="the CPU, ${ncpu:-1} process(es)"
    if [ "${ncpu:-1}" -gt 1 ]; then
      procs=$ncpu
      trainer_opts+=("train.threads=1")
    fi
  fi
  if [ "$procs" -gt 1 ]; then
    read -r -a dist_opts <<< "$torchrun_opts"
    trainer+=(-m torch.distributed.run "${dist_opts[@]}" "--nproc_per_node=$procs")
  fi
  trainer+=(-m usef.bin.train)
}
