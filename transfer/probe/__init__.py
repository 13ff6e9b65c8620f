"""Probes: classifiers fit full-batch on cached features, and the strategies built on them.

- `losses`: the default probe's objective (linear, cross-entropy, L2; numpy, value and gradient by
  hand) and the log-loss;
- `autograd_losses`: the other losses and penalties as torch autograd Functions (gradient-checked in
  the tests), imported only for the MLP head, hinge, L1 and elastic net;
- `linear`: the probe (its layers as numpy arrays; linear or MLP head on standardised features,
  L-BFGS) and its folding into a head on raw features;
- `solver`: full-batch L-BFGS on numpy arrays (torch tensors through their numpy views for the
  autograd path);
- `cv`: repeated stratified k-fold cross-validation over a penalty grid, all folds in one batched run;
- `knn`: the k-nearest-neighbour baseline (L1/L2, k by leave-one-out);
- `strategy`: the `linear` and `stages` strategies (feature set and penalty by CV; the saved model
  is the cached pretrained backbone + the probe's head, checked against the probe).

The default probe, the CV, the kNN and the model file of `strategy` need no torch: a run on cached
features never imports it.
May import `zoo`, `transfer.features`, `transfer.config`, `transfer.context`, `transfer.report`.
"""
