# Sourced by the recipes: `train_launcher` fills the array `trainer` with the command that starts
# `python -m usef.bin.train` on $ngpu GPUs (torchrun with $torchrun_opts when ngpu > 1), from the
# recipe's $python launcher.
train_launcher() {
  read -r -a trainer <<< "$python"
  if [ "$ngpu" -gt 1 ]; then
    read -r -a dist_opts <<< "$torchrun_opts"
    trainer+=(-m torch.distributed.run "${dist_opts[@]}" "--nproc_per_node=$ngpu")
  fi
  trainer+=(-m usef.bin.train)
}
