"""`audit:` settings (the `audit` section of `transferzoo fit --config`, and `transferzoo audit`'s flags)."""

from __future__ import annotations

from dataclasses import dataclass

from transferzoo.zoo.config import Config, setting

# Near-duplicate rule (transfer.audit.findings.near_pairs), chosen on hymenoptera with injected copies
# (bench/bench_audit.py: gaps 0-0.005 find all 20, 0.01-0.05 find 19, never with a wrong partner; 0.025
# keeps a margin against look-alike photos), reported on flowers; see README "Auditing your data".
NEAR_GAP = 0.025
NEAR_MIN_SIMILARITY = 0.7
NEAR_SAME_PHOTO = 0.95


@dataclass(frozen=True)
class AuditConfig(Config):
    enabled: bool = True  # fit / plan: audit when the features are extracted anyway (costs no feature pass)
    near_gap: float = setting(NEAR_GAP, ge=0, le=1)  # mutual nearest images, this much closer than the next
    near_min_similarity: float = setting(NEAR_MIN_SIMILARITY, ge=0, le=1)  # cosine of pooled features, at least
    near_same_photo: float = setting(NEAR_SAME_PHOTO, gt=0, le=1)  # cosine from which a pair is always flagged
    outlier_z: float = setting(4.0, gt=0)  # robust z-score below -outlier_z: far from every class
    label_min_margin: float = setting(0.0, ge=0, lt=1)  # confident learning: p(suggested) - p(given) above this
    folds: int = setting(5, ge=2, le=20)  # out-of-fold probabilities for label errors
    exclude_flagged: bool = False  # fit: train without what the audit flags (see transfer.audit.exclude)
    exclude: str | None = None  # fit: a list file of images to leave out (`audit --exclude-list` writes one)
    max_listed: int = setting(50, ge=1, le=10000)  # rows per finding in text / report.md (JSON has them all)
