"""Probes: classifiers fit full-batch on cached features, and the strategies built on them.

- `losses`: hand-written losses and penalties (autograd Functions, gradient-checked in the tests);
- `linear`: the probe (linear or MLP head on standardised features, L-BFGS) and its folding into a
  head on raw features;
- `cv`: repeated stratified k-fold cross-validation over a penalty grid, all folds in one batched run;
- `knn`: the k-nearest-neighbour baseline (L1/L2, k by leave-one-out);
- `strategy`: the `linear` and `stages` strategies (feature set and penalty by CV, the saved model
  checked against the probe on real images).

May import `zoo`, `transfer.features`, `transfer.config`, `transfer.context`, `transfer.report`.
"""
