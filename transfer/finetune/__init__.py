"""Finetuning: `partial` (the top blocks and a new head) and `full` (every layer), end to end.

- `finetuner`: set-up once (model, frozen part, data path, transforms) and the run (`train`,
  overfit check, random search);
- `loop`: the epoch loop (checks on the first loss and divergence, early stopping, checkpoints);
- `optim`: timm optimizers and schedules with layer-wise / discriminative learning rates;
- `freeze`: which blocks train, frozen BatchNorm kept in eval mode;
- `prefix_cache`: the frozen prefix's activations computed once per image and view, on disk;
- `checkpoint`: per-epoch checkpoints for `--resume`; `ddp`: torchrun / DistributedDataParallel;
- `lr_find`: the learning-rate range test; `strategy`: the `partial` and `full` strategies.

May import `zoo`, `export` (the verified torch -> ONNX step), `transfer.config`, `transfer.data`,
`transfer.context`, `transfer.report`, `transfer.rundir`.
"""
