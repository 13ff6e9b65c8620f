"""`audit:` settings (the `audit` section of `transferzoo fit --config`, and `transferzoo audit`'s flags)."""

from __future__ import annotations

from dataclasses import dataclass

from transferzoo.zoo.config import Config, setting

# Chosen on hymenoptera with injected copies (bench/bench_audit.py), reported on flowers; see README "Auditing".
NEAR_THRESHOLD = 0.85


@dataclass(frozen=True)
class AuditConfig(Config):
    enabled: bool = True  # fit / plan: audit when the features are extracted anyway (costs no feature pass)
    near_threshold: float = setting(NEAR_THRESHOLD, gt=0, le=1)  # cosine similarity of pooled features
    outlier_z: float = setting(4.0, gt=0)  # robust z-score below -outlier_z: far from every class
    label_min_margin: float = setting(0.0, ge=0, lt=1)  # confident learning: p(suggested) - p(given) above this
    folds: int = setting(5, ge=2, le=20)  # out-of-fold probabilities for label errors
    exclude_flagged: bool = False  # fit: train without what the audit flags (see transfer.audit.exclude)
    exclude: str | None = None  # fit: a list file of images to leave out (`audit --exclude-list` writes one)
    max_listed: int = setting(50, ge=1, le=10000)  # rows per finding in text / report.md (JSON has them all)
