"""Feature extraction: the frozen backbone run once per image, as fast as this machine allows.

The frozen *feature module* returns, in one forward pass, the global-average-pooled output of every
feature stage (``stage0``..``stageK``: exactly what ``zoo.assembly.TransferModel(stages=...)``
computes) and the backbone's pooled pre-logits features (``top``: what ``stages=None`` computes).

Engines, fastest first (``engine="auto"`` picks the first that works):
- ``onnxruntime``: the feature module exported once with ``torch.onnx.export`` to the feature cache
  directory; at export its outputs are checked against PyTorch on real images (max abs diff
  <= 1e-3, relative to the output scale); ORT runs with intra-op threads = cores, full graph
  optimisation. Several times faster than eager PyTorch on CPU.
- ``torch``: eager PyTorch under ``inference_mode`` (used when export or the check fails).

Decoding (``zoo.load_rgb``: EXIF, RGB, bomb-safe) and the model's eval transform run in background
threads (PIL and torch release the GIL), overlapping with inference, in a bounded window: memory
stays flat whatever the number of images. Features go to the on-disk cache (`featcache`) in chunks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferzoo import zoo
from transferzoo.transfer.config import FeatureConfig
from transferzoo.zoo import runtime, sources
from transferzoo.zoo.fileio import file_digest, write_json
from transferzoo.zoo.images import normalise

from .cache import FeatureCache

log = logging.getLogger(__name__)
CHUNK_IMAGES = 1024  # images per cache chunk (rows written to disk at once)
# decoded images held ahead of inference while the engine is being built (first run of a model):
# decoding goes on during the export + check instead of stalling after a few batches. 224 px
# float32 CHW is 0.6 MB an image, so this bounds that memory at ~150 MB.
PREFETCH_WHILE_BUILDING = 256
GPU_MIN_BATCH = 64  # on CUDA a batch of 8 leaves the GPU idle between launches
GPU_CHECK_TOL = 3e-2  # GPU vs CPU features, relative to the output scale (bf16 has an 8-bit mantissa)


def output_dims(model_name: str) -> dict[str, int]:
    i = zoo.info(model_name)
    dims = {f"stage{s.index}": s.num_chs for s in i.stages}
    dims["top"] = i.num_features
    return dims


# -- engines ------------------------------------------------------------------------------------
class OrtEngine:
    name = "onnxruntime"

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})


# -- devices ------------------------------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(requested: str) -> str:
    """'cpu' or 'cuda' for `FeatureConfig.device`: auto takes CUDA when torch sees a GPU, else the
    CPU (and logs why); 'cuda' without a visible GPU is an error saying what to do."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"feature device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        raise RuntimeError(
            "--device cuda: no CUDA device is visible to torch (torch.cuda.is_available() is False); "
            "use --device cpu, or auto to take a GPU only when there is one"
        )
    log.info("features on the CPU: no CUDA device visible (torch.cuda.is_available() is False)")
    return "cpu"


def gpu_engine(ex: Extractor, cpu_engine):
    """onnxruntime's CUDA provider on the exported (CPU-verified) file when it is installed, else
    torch on CUDA."""
    onnx_path = ex.cache.dir / "features.onnx"
    if isinstance(cpu_engine, OrtEngine) and onnx_path.exists():
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            eng = OrtEngine(
                runtime.session(onnx_path, ex.threads, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            )
            eng.name = "onnxruntime-cuda"
            return eng
    from .torch_engine import TorchCudaEngine

    return TorchCudaEngine(ex._ensure_module())


def checked_gpu_engine(cpu_engine, gpu, sample: np.ndarray, info: dict):
    """`gpu` if its outputs on `sample` (real images) match the CPU engine's within GPU_CHECK_TOL of
    the output scale, else the CPU engine (logged): the cache holds one set of features whatever
    the device."""
    try:
        want, got = cpu_engine(sample), gpu(sample)
        worst = max(float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max())) for a, b in zip(want, got))
    except Exception as e:  # a CUDA error, out of memory, an unsupported op
        log.warning("GPU feature engine failed on the check images (%s); using the CPU", e)
        info["gpu_fallback_reason"] = str(e)
        return cpu_engine
    info.update(gpu_engine=gpu.name, gpu_max_rel_diff=worst)
    if worst > GPU_CHECK_TOL:
        log.warning("GPU features differ from the CPU's by %.2e (> %.0e); using the CPU", worst, GPU_CHECK_TOL)
        info["gpu_fallback_reason"] = f"max relative difference {worst:.2e} > {GPU_CHECK_TOL:g}"
        return cpu_engine
    return gpu


def image_decoder(model_name: str):
    """path -> float32 CHW array: exactly the model's timm eval transform."""
    pre = zoo.preprocessing(model_name)
    steps = zoo.factory.resize_crop(pre)

    def decode(path: str) -> np.ndarray:
        return normalise(np.asarray(steps(zoo.load_rgb(path)), dtype=np.uint8), pre.mean, pre.std)

    return decode


# -- extraction ---------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """Features of `paths` (rows in order); `ok[i]` is False for an image that failed to decode."""

    paths: list[str]
    ok: np.ndarray
    arrays: dict[str, np.ndarray]  # "top", "stage3", "flip:top"... -> [n, dim] (rows of failed images are 0)
    classifier: tuple[np.ndarray, np.ndarray] | None
    failures: list[tuple[str, str]] = field(default_factory=list)
    engine: str = "cache"
    timings: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    def get(self, name: str, view: str = "orig") -> np.ndarray:
        return self.arrays[name if view == "orig" else f"{view}:{name}"]


class Extractor:
    """Feature extraction for one model + preprocessing, backed by the on-disk cache."""

    def __init__(self, model_name: str, cfg: FeatureConfig | None = None, weights=None, progress: bool | None = None):
        self.model_name = zoo.get(model_name).name
        self.cfg = cfg or FeatureConfig()
        self.weights = weights
        self.threads = self.cfg.threads or os.cpu_count() or 1
        # auto asks torch whether CUDA is there, so only when something is computed (a run on cached
        # features imports no torch); an explicit cuda is checked now, to fail before any work
        self._device = None if self.cfg.device == "auto" else resolve_device(self.cfg.device)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.pre = zoo.preprocessing(self.model_name)
        self.dims = output_dims(self.model_name)
        identity = {
            "model": self.model_name,
            "weights_sha256": sources.weights_sha256(zoo.get(self.model_name), weights),
            "preprocessing": self.pre.to_dict(),
        }
        self.cache = FeatureCache(self.cfg.resolved_cache_dir(), identity, self.dims, self.cfg.cache_key)
        self._engine = None
        self._module = None
        self.classifier: tuple[np.ndarray, np.ndarray] | None = None
        clf = self.cache.get_array("classifier")
        if clf is not None:
            self.classifier = (clf[:, :-1].copy(), clf[:, -1].copy())
        self.engine_info: dict = {}

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.cfg.device)
        return self._device

    def classifier_known(self) -> bool:
        """The pretrained head is stored in the cache (or the model has none, recorded as such)."""
        return self.classifier is not None or (self.cache.dir / "no_classifier").exists()

    # the engine is built lazily: a run whose features are all cached never loads the model
    def _ensure_module(self):
        if self._module is None:
            from .torch_engine import build_feature_module

            self._module, clf = build_feature_module(self.model_name, self.weights)
            if clf is not None:
                self.classifier = clf
                self.cache.put_array("classifier", np.concatenate([clf[0], clf[1][:, None]], axis=1))
            else:
                (self.cache.dir / "no_classifier").touch()
        return self._module

    def _verified_onnx(self, onnx_path: Path, check_path: Path) -> dict | None:
        """The check record of a cached ONNX feature model, if it is still the file that was checked."""
        if not (onnx_path.exists() and check_path.exists()):
            return None
        try:
            check = json.loads(check_path.read_text())
        except (OSError, ValueError):
            return None
        if check.get("sha256") != file_digest(onnx_path):
            log.warning("cached ONNX feature model %s does not match its check record; exporting again", onnx_path)
            return None
        return check

    def engine(self, sample: np.ndarray | None = None):
        """The engine (built on first use, checked on `sample`, real images): the CPU engine, or on
        CUDA (`FeatureConfig.device`) a GPU engine that agreed with it on `sample`."""
        if self._engine is not None:
            return self._engine
        cpu = self._cpu_engine(sample)
        if self.device == "cuda":
            if sample is None:
                raise RuntimeError("no real images to check the GPU engine against")
            cpu = checked_gpu_engine(cpu, gpu_engine(self, cpu), sample[:4], self.engine_info)
        self._engine = cpu
        return self._engine

    def _cpu_engine(self, sample: np.ndarray | None):
        onnx_path = self.cache.dir / "features.onnx"
        check_path = self.cache.dir / "features.onnx.check.json"
        check = self._verified_onnx(onnx_path, check_path) if self.cfg.engine != "torch" else None
        if check is not None and self.classifier_known():
            try:  # exported and checked before: the PyTorch model is not even built
                engine = OrtEngine(runtime.session(onnx_path, self.threads))
                self.engine_info = {"exported": False, **check}
                return engine
            except Exception as e:  # an unloadable file: export again below
                log.warning("cached ONNX feature model unusable (%s); exporting again", e)
        import torch

        from transferzoo.export.onnx_export import verified_session
        from transferzoo.transfer.threads import torch_threads

        from .torch_engine import TorchEngine

        module = self._ensure_module()
        torch_engine = TorchEngine(module, self.threads)
        if self.cfg.engine == "torch":
            return torch_engine
        t0 = time.perf_counter()
        try:
            if sample is None:
                raise RuntimeError("no real images to check the ONNX export against")
            names = tuple(f"out{i}" for i in range(len(self.dims)))
            x = torch.from_numpy(np.ascontiguousarray(sample[:4]))
            with torch_threads(1):  # 4 images: thread start-up costs more than it saves
                session, worst = verified_session(module, onnx_path, x, output_names=names, threads=self.threads)
            self.engine_info = {"exported": True, "max_rel_diff": worst}
            write_json(check_path, {"max_rel_diff": worst, "images": len(x), "sha256": file_digest(onnx_path)})
            self.engine_info["setup_seconds"] = round(time.perf_counter() - t0, 3)
            return OrtEngine(session)
        except Exception as e:  # export unsupported, ORT missing, mismatch: eager PyTorch is still correct
            if self.cfg.engine == "onnxruntime":
                raise RuntimeError(f"onnxruntime engine unavailable for {self.model_name}: {e}") from e
            log.warning("onnxruntime engine unavailable (%s); using PyTorch", e)
            self.engine_info = {"fallback_reason": str(e)}
            return torch_engine

    def _decoder(self, flip: bool):
        decode_one = image_decoder(self.model_name)

        def decode(path: str):
            try:
                x = decode_one(path)
            except zoo.ImageError as e:
                return None, e.reason
            return (np.stack([x, x[:, :, ::-1]]) if flip else x[None]), None

        return decode

    def extract(self, paths: list[str], flip: bool = False) -> FeatureSet:
        """Features of every path (computing only what the cache lacks); `flip` adds the
        horizontally flipped view as "flip:<output>" arrays."""
        t0 = time.perf_counter()
        paths = [os.path.abspath(p) for p in paths]
        views = ["orig"] + (["flip"] if flip else [])
        keys = self.cache.file_keys(paths, workers=max(2, self.threads))
        vkeys = {v: [f"{k}|{v}" for k in keys] for v in views}
        locs = {v: self.cache.lookup(vkeys[v]) for v in views}
        todo = [i for i in range(len(paths)) if any(locs[v][i] is None for v in views)]
        t_keys = time.perf_counter() - t0
        failures: dict[int, str] = {}
        engine_name = "cache"
        t_compute = 0.0
        phases: dict = {}
        if todo:
            t1 = time.perf_counter()
            failures_out: dict[int, str] = {}
            engine_name, phases = self._compute([paths[i] for i in todo], [keys[i] for i in todo], flip, failures_out)
            failures = {todo[j]: r for j, r in failures_out.items()}
            locs = {v: self.cache.lookup(vkeys[v]) for v in views}
            t_compute = time.perf_counter() - t1
        ok = np.array([all(locs[v][i] is not None for v in views) for i in range(len(paths))], dtype=bool)
        arrays = {}
        for v in views:
            good = [locs[v][i] for i in range(len(paths)) if ok[i]]
            for name, dim in self.dims.items():
                arr = np.zeros((len(paths), dim), dtype=np.float32)
                if good:
                    arr[ok] = self.cache.gather(good, name)
                arrays[name if v == "orig" else f"{v}:{name}"] = arr
        return FeatureSet(
            paths=paths,
            ok=ok,
            arrays=arrays,
            classifier=self.classifier,
            failures=[(paths[i], r) for i, r in sorted(failures.items())],
            engine=engine_name,
            timings={
                "keys_seconds": round(t_keys, 3),
                "compute_seconds": round(t_compute, 3),
                "total_seconds": round(time.perf_counter() - t0, 3),
                **phases,
                "computed_images": len(todo),
                "cached_images": len(paths) - len(todo),
                **({"engine": self.engine_info} if todo else {}),
            },
            cache={"dir": str(self.cache.dir), "key_mode": self.cfg.cache_key},
        )

    def _compute(
        self, paths: list[str], keys: list[str], flip: bool, failures: dict[int, str]
    ) -> tuple[str, dict[str, float]]:
        """Decode, infer and cache `paths` -> (engine name, seconds per phase: engine build and
        check, inference, waiting for decoding, writing the cache)."""
        from tqdm.auto import tqdm

        decode = self._decoder(flip)
        bs = self.cfg.batch_size if self.device == "cpu" else max(self.cfg.batch_size, GPU_MIN_BATCH)
        views = ["orig"] + (["flip"] if flip else [])
        pending_keys: list[str] = []  # one chunk's worth, flushed to the cache
        pending: dict[str, list[np.ndarray]] = {n: [] for n in self.dims}
        names = list(self.dims)
        spent = {"engine_seconds": 0.0, "infer_seconds": 0.0, "decode_wait_seconds": 0.0, "write_seconds": 0.0}

        def flush():
            t = time.perf_counter()
            if pending_keys:
                arrays = {n: np.concatenate(pending[n]) for n in names}
                self.cache.add(list(pending_keys), arrays)
                pending_keys.clear()
                for n in names:
                    pending[n].clear()
            spent["write_seconds"] += time.perf_counter() - t

        def run_batch(batch: list[tuple[int, np.ndarray]]):
            x = np.concatenate([b for _, b in batch])  # [n * views, C, H, W]
            t = time.perf_counter()
            engine = self.engine(x)
            t1 = time.perf_counter()
            outs = engine(x)
            spent["engine_seconds"] += t1 - t
            spent["infer_seconds"] += time.perf_counter() - t1
            nv = len(views)
            for vi, v in enumerate(views):
                for n, o in zip(names, outs):
                    pending[n].append(o[vi::nv])
                pending_keys.extend(f"{keys[i]}|{v}" for i, _ in batch)
            if len(pending_keys) >= CHUNK_IMAGES * nv:
                flush()

        # on the CPU the engine needs the cores too; on a GPU decoding is the CPU's only job
        workers = max(1, min(4, self.threads)) if self.device == "cpu" else max(1, self.threads)
        bar = tqdm(
            total=len(paths), desc=f"features ({self.model_name})", unit="img", disable=not self.progress, leave=False
        )
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window = []
            batch: list[tuple[int, np.ndarray]] = []
            it = iter(range(len(paths)))
            exhausted = False
            while True:
                ahead = bs * 3 if self._engine is not None else max(bs * 3, PREFETCH_WHILE_BUILDING)
                while not exhausted and len(window) < ahead:
                    i = next(it, None)
                    if i is None:
                        exhausted = True
                        break
                    window.append((i, pool.submit(decode, paths[i])))
                if not window:
                    break
                i, fut = window.pop(0)
                t = time.perf_counter()
                x, err = fut.result()
                spent["decode_wait_seconds"] += time.perf_counter() - t
                bar.update(1)
                if err is not None:
                    failures[i] = err
                else:
                    batch.append((i, x))
                if len(batch) >= bs:
                    run_batch(batch)
                    batch = []
            if batch:
                run_batch(batch)
        flush()
        bar.close()
        return (self._engine.name if self._engine is not None else "cache"), {k: round(v, 3) for k, v in spent.items()}
