"""The audit: what a user cannot see in their own folder -- exact and near duplicates (and the leak
they make across train / val / test), likely label errors, outliers -- from what fitting already
holds: each image's content hash (the feature cache key), its pooled features, and out-of-fold
probabilities of a linear probe.

- `config`: AuditConfig (the `audit:` settings);
- `findings`: the algorithms on arrays (similarity scan, pixel twins, out-of-fold probabilities,
  confident learning, outlier scores);
- `core`: `audit_features` -> the JSON-ready result;
- `exclude`: what to leave out (`flagged`), the editable list file, dropping images from the splits;
- `sheet`: the contact sheet PNG;
- `run`: the `audit` command's driver, the `plan` / `fit` hooks, the text forms.

May import `zoo` and the rest of `transfer` (features, probe, context); nothing above.
"""
