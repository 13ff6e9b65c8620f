"""Probes: classifiers fit full-batch on cached features, and the strategies built on them.

- `losses`: hand-written losses and penalties (autograd Functions, gradient-checked in the tests);
- `linear`: the probe (linear or MLP head on standardised features, L-BFGS) and its folding into a
  head on raw features;
- `solver`: full-batch L-BFGS (scipy's L-BFGS-B on a torch objective; torch.optim would import
  torch._dynamo, 1.4 s);
- `cv`: repeated stratified k-fold cross-validation over a penalty grid, all folds in one batched run;
- `knn`: the k-nearest-neighbour baseline (L1/L2, k by leave-one-out);
- `strategy`: the `linear` and `stages` strategies (feature set and penalty by CV; the saved model
  is the cached pretrained backbone + the probe's head, checked against the probe).

May import `zoo`, `transfer.features`, `transfer.config`, `transfer.context`, `transfer.report`.
"""
