"""The parity gate: how far an exported graph's outputs are from its reference's, and whether that
is within tolerance.

Numbers per comparison: max and mean absolute difference of the outputs (logits, or probabilities
for an ensemble), the lowest and mean cosine similarity per image, top-1 agreement, and the
accuracy of both sides when labels exist. Tolerances (a `Tolerance` each):

- fp32 vs PyTorch: max abs diff <= 1e-4 and 100 % top-1 agreement;
- int8 vs the fp32 graph, on real images: accuracy drop <= 1 point, top-1 agreement >= 98 %;
- fp16 vs the fp32 graph, on real images: accuracy drop <= 0.5 point, top-1 agreement >= 99 %,
  every image's cosine similarity >= 0.999 (fp16 keeps ~3 significant digits, so an absolute bound
  on logits would be arbitrary).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    name: str
    max_abs_diff: float | None = None
    min_top1_agreement: float = 1.0
    max_accuracy_drop: float | None = None  # fraction: 0.01 is one point
    min_cosine: float | None = None


FP32 = Tolerance("fp32", max_abs_diff=1e-4, min_top1_agreement=1.0)
INT8 = Tolerance("int8", min_top1_agreement=0.98, max_accuracy_drop=0.01)
FP16 = Tolerance("fp16", min_top1_agreement=0.99, max_accuracy_drop=0.005, min_cosine=0.999)
TOLERANCES = {t.name: t for t in (FP32, INT8, FP16)}


@dataclass
class Comparison:
    name: str  # 'random batch 1', 'real images'...
    reference: str  # 'pytorch' | 'onnx fp32'
    tolerance: str
    count: int
    max_abs_diff: float
    mean_abs_diff: float
    min_cosine: float
    mean_cosine: float
    top1_agreement: float
    accuracy_reference: float | None = None
    accuracy_onnx: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)


def compare(
    name: str,
    reference: np.ndarray,
    onnx_out: np.ndarray,
    tol: Tolerance,
    labels: np.ndarray | None = None,
    reference_name: str = "pytorch",
) -> Comparison:
    if reference.shape != onnx_out.shape:
        return Comparison(
            name,
            reference_name,
            tol.name,
            len(reference),
            float("inf"),
            float("inf"),
            -1.0,
            -1.0,
            0.0,
            failures=[f"output shape {onnx_out.shape} != reference {reference.shape}"],
        )
    diff = np.abs(reference.astype(np.float64) - onnx_out.astype(np.float64))
    if not np.isfinite(onnx_out).all():
        diff = np.full_like(diff, np.inf)
    cos = _cosine(reference, onnx_out)
    agree = float((reference.argmax(1) == onnx_out.argmax(1)).mean())
    c = Comparison(
        name,
        reference_name,
        tol.name,
        len(reference),
        float(diff.max()),
        float(diff.mean()),
        float(cos.min()),
        float(cos.mean()),
        agree,
    )
    if labels is not None and len(labels):
        c.accuracy_reference = float((reference.argmax(1) == labels).mean())
        c.accuracy_onnx = float((onnx_out.argmax(1) == labels).mean())
    if tol.max_abs_diff is not None and not c.max_abs_diff <= tol.max_abs_diff:
        c.failures.append(f"max abs diff {c.max_abs_diff:.3g} > {tol.max_abs_diff:g}")
    if agree < tol.min_top1_agreement:
        c.failures.append(f"top-1 agreement {agree:.2%} < {tol.min_top1_agreement:.0%}")
    if tol.min_cosine is not None and not c.min_cosine >= tol.min_cosine:
        c.failures.append(f"min cosine similarity {c.min_cosine:.5f} < {tol.min_cosine}")
    if tol.max_accuracy_drop is not None and c.accuracy_reference is not None:
        drop = c.accuracy_reference - c.accuracy_onnx
        if drop > tol.max_accuracy_drop + 1e-12:
            c.failures.append(
                f"accuracy drop {drop:.2%} > {tol.max_accuracy_drop:.1%} "
                f"({c.accuracy_reference:.2%} -> {c.accuracy_onnx:.2%})"
            )
    return c


def summary(comparisons: list[Comparison]) -> dict:
    """The compact numbers that go into the model's metadata."""
    real = [c for c in comparisons if c.name.startswith("real")]
    out = {
        "passed": all(c.passed for c in comparisons),
        "max_abs_diff": max(c.max_abs_diff for c in comparisons),
        "min_cosine": min(c.min_cosine for c in comparisons),
    }
    for c in real:
        key = c.tolerance
        out[key] = {
            "images": c.count,
            "top1_agreement": c.top1_agreement,
            "max_abs_diff": c.max_abs_diff,
            "accuracy_reference": c.accuracy_reference,
            "accuracy_onnx": c.accuracy_onnx,
            "reference": c.reference,
        }
    return out


def onnx_outputs(sess, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Output 0 of an onnxruntime session for `x`, in batches of `batch_size`."""
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)
