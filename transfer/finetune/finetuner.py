"""`partial` and `full` finetuning: a zoo backbone + new head trained end to end on the user's images.

    from transferzoo.transfer.finetune.finetuner import Finetuner
    cfg = FinetuneConfig(unfreeze=2).resolved("partial")
    ft = Finetuner(splits, "efficientnet_lite0", "partial", cfg, run_dir="runs/x")
    result = ft.train()            # -> FinetuneResult (model, summary, history, val predictions)
    ft.write_run(result, plan)     # run directory (transfer/RUN_DIR.md), with metrics.jsonl + curves.png

- partial: the top `unfreeze` blocks + head train, with discriminative LRs; the frozen prefix runs
  once per image and cached view (`transfer.prefix_cache`), never per epoch; frozen BatchNorm layers
  stay in eval mode (`transfer.freeze`).
- full: every layer trains with layer-wise LR decay; images stream from disk every epoch.
Both: warmup + schedule (`transfer.optim`), the loop's checks and checkpoints (`transfer.trainloop`),
DDP under torchrun (`transfer.ddp`), channels-last memory on every device (`loop.MEMORY_FORMAT`), bf16
autocast when CUDA is present.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from transferzoo import zoo
from transferzoo.transfer.config import FinetuneConfig
from transferzoo.transfer.data import DataSplits, Sample
from transferzoo.zoo import assembly as za

from . import checkpoint as ckpt
from . import ddp as ddp_mod
from . import prefix_cache as pc
from .freeze import FreezeInfo, train_mode, unfreeze_top
from .loop import MEMORY_FORMAT, LoopData, LoopResult, evaluate, run, write_jsonl
from .optim import create_optimizer, create_schedule


@dataclass
class FinetuneResult:
    model: za.TransferModel
    spec: za.ModelSpec
    summary: dict
    history: list[dict]
    val_pred: np.ndarray
    val_true: np.ndarray
    val_prob: np.ndarray
    preprocessing: zoo.Preprocessing
    config: FinetuneConfig


def init_new_layers(module: nn.Module, how: str) -> None:
    """Xavier (Glorot) or He (Kaiming) initialisation of a new head's linear layers, zero biases.
    The last layer is scaled down so the initial predictions are near uniform (loss about ln C)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for m in linears:
        if how == "xavier":
            nn.init.xavier_uniform_(m.weight)
        else:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    if linears:
        with torch.no_grad():
            linears[-1].weight.mul_(0.1)


def preprocessing_for(model_name: str, cfg: FinetuneConfig) -> zoo.Preprocessing:
    pre = zoo.preprocessing(model_name)
    if cfg.image_size:
        pre = replace(pre, input_size=(3, cfg.image_size, cfg.image_size))
    return pre


def transforms_for(pre: zoo.Preprocessing, cfg: FinetuneConfig):
    train_tf = zoo.factory.transform(
        pre,
        training=True,
        scale=(cfg.scale_min, 1.0),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        color_jitter=cfg.color_jitter or None,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.random_erasing,
    )
    return train_tf, zoo.factory.transform(pre)


class _EpochSampler(torch.utils.data.Sampler):
    """Indices `epoch * N + i` in a (seed, epoch)-shuffled order, this rank's share: the dataset
    decodes the epoch from the index, so augmentations are seeded per (epoch, image) even with
    persistent workers."""

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.epoch = n, seed, shuffle, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self) -> np.ndarray:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        )
        if self.world > 1:
            per = math.ceil(self.n / self.world)
            order = np.resize(order, per * self.world)[self.rank :: self.world]
        return order

    def __iter__(self):
        return iter((self.epoch * self.n + self._rows()).tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


class _SeededImages(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample], transform, seed: int):
        self.samples, self.transform, self.seed = list(samples), transform, seed

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, j):
        epoch, i = divmod(int(j), len(self.samples))
        s = self.samples[i]
        with pc.seeded_rng(self.seed, epoch, i):
            return self.transform(zoo.load_rgb(s.path)), s.label


def plan_unfreeze(plan: dict | None, model) -> int:
    """The plan's `unfreeze_blocks` (counted on `zoo.info(...).blocks`, the backbone's coarse groups,
    as `block_groups(model.backbone)` counts them). No plan: 1 (the top block)."""
    from .freeze import block_groups

    k = int((plan or {}).get("unfreeze_blocks") or 0)
    if k <= 0:
        return 1
    return min(k, len(block_groups(model.backbone)))


def _fingerprint(
    model_name: str, strategy: str, cfg: FinetuneConfig, splits: DataSplits, world: int, weights: dict | None = None
) -> str:
    """What a checkpoint and the prefix cache belong to. --epochs may change on resume (the schedule
    is rebuilt for the new length); the starting weights (--weights: their sha256) may not."""
    d = cfg.to_dict()
    for k in ("epochs", "workers", "checkpoint", "patience"):
        d.pop(k, None)  # may change between a run and its resume
    return pc.cache_key(
        model=model_name,
        weights=weights,
        strategy=strategy,
        cfg=d,
        world=world,
        classes=splits.classes,
        train=[(s.path, s.label) for s in splits.train],
        val=[(s.path, s.label) for s in splits.val],
    )


class Finetuner:
    """Everything a finetuning run needs, set up once: model, frozen part, data path (cached prefix
    or streamed images), optimizer. `train()`, `lr_find()` and `search()` use it."""

    def __init__(
        self,
        splits: DataSplits,
        model_name: str,
        strategy: str,
        cfg: FinetuneConfig,
        *,
        run_dir=None,
        plan: dict | None = None,
        weights=None,
        resume: bool = False,
        log=None,
        progress: bool | None = None,
        dist: ddp_mod.Dist | None = None,
    ):
        """`cfg` is resolved for `strategy` here if it is not already (FinetuneConfig.resolved)."""
        self.t0 = time.perf_counter()
        cfg = cfg.resolved(strategy, cfg.seed or 0)
        self.splits, self.strategy, self.cfg, self.plan = splits, strategy, cfg, plan
        self.model_name = zoo.get(model_name).name
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._owns_dist = dist is None  # a process group this finetuner joined, it leaves in close()
        self.dist = dist or ddp_mod.setup()
        self._log = log or (lambda s: print(s, file=sys.stderr))
        self.device = self.dist.device
        self.amp = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.workers = cfg.workers if cfg.workers is not None else min(4, os.cpu_count() or 1)
        self.resume = resume
        self.progress = progress
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        import random

        random.seed(cfg.seed)
        if not splits.train or not splits.val:
            raise ValueError("finetuning needs training and validation images")
        unfreeze = cfg.unfreeze
        self.spec = za.ModelSpec(
            model=self.model_name,
            num_classes=len(splits.classes),
            head=za.HeadSpec(dropout=cfg.dropout),
            drop_path_rate=cfg.drop_path,
        )
        self.model = za.build(self.spec, pretrained=True, weights=weights)
        if strategy == "partial" and unfreeze is None:
            unfreeze = plan_unfreeze(plan, self.model)
        self.unfreeze = unfreeze if strategy == "partial" else None
        init_new_layers(self.model.head, cfg.init)
        self.freeze: FreezeInfo = unfreeze_top(self.model, self.unfreeze)
        self.model.to(self.device).to(memory_format=MEMORY_FORMAT)
        self.pre = preprocessing_for(self.model_name, cfg)
        self.train_tf, self.eval_tf = transforms_for(self.pre, cfg)
        prov = za.weights_provenance(self.model)  # by content: a moved weights file is the same start
        start = {k: v for k, v in prov.items() if k != "location" or not prov.get("sha256")}
        self.fingerprint = _fingerprint(self.model_name, strategy, cfg, splits, self.dist.world, start)
        self.split = None
        self.cache_info: dict = {}
        if strategy == "partial" and cfg.cache_prefix:
            self.split = pc.split_backbone(self.model)
            if self.split is None:
                self.log("note: this backbone cannot be cut into a cached prefix; streaming images every epoch")
        self._setup_data()
        self.trainable = self.split.suffix if self.split is not None else self.model
        self.initial_state = {k: v.detach().clone() for k, v in self.trainable.state_dict().items()}

    # -- helpers ----------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    @property
    def cache_dir(self) -> Path:
        base = self.run_dir if self.run_dir is not None else Path(os.environ.get("TMPDIR", "/tmp"))
        return base / "cache" / f"prefix-{self.fingerprint}"

    def _progress(self) -> bool:
        return (sys.stderr.isatty() if self.progress is None else self.progress) and self.dist.is_main

    def _setup_data(self) -> None:
        cfg = self.cfg
        bs = cfg.batch_size
        if self.split is not None:
            # built or reused, the cache leaves the global RNG streams where it found them (building it
            # drew from them: a DataLoader's base seed), so a run resumed from a kill before its first
            # checkpoint, which reuses the cache, trains exactly like an uninterrupted one
            with pc.preserved_rng():
                t = time.perf_counter()
                key = pc.cache_key(fp=self.fingerprint, cut=self.split.cut, pre=self.pre.to_dict())
                engine = pc.prefix_engine(
                    self.split.prefix,
                    self.cache_dir,
                    self.pre.input_size,
                    self.device,
                    self.amp,
                    "torch" if self.dist.enabled else cfg.prefix_engine,
                )
                common = dict(
                    input_size=self.pre.input_size,
                    batch_size=bs,
                    workers=self.workers,
                    load=zoo.load_rgb,
                    device=self.device,
                    progress=self._progress(),
                    rank=self.dist.rank,
                    world=self.dist.world,
                    barrier=self.dist.barrier if self.dist.enabled else None,
                    log=self.log,
                )
                self.log(
                    f"caching the frozen prefix's activations (entering {self.split.cut}): "
                    f"{len(self.splits.train)} train images x {cfg.views} views + {len(self.splits.val)} val"
                )
                self.train_cache = pc.build_split_cache(
                    self.cache_dir,
                    "train",
                    key + "t",
                    engine,
                    self.splits.train,
                    self.train_tf,
                    cfg.views,
                    cfg.seed,
                    **common,
                )
                self.val_cache = pc.build_split_cache(
                    self.cache_dir, "val", key + "v", engine, self.splits.val, self.eval_tf, 1, cfg.seed, **common
                )
                shape = list(self.train_cache.x.shape)
                self.cache_info = {
                    "cut": self.split.cut,
                    "views": cfg.views,
                    "engine": engine.name,
                    "shape": shape[1:],
                    "bytes": int(self.train_cache.x.nbytes + self.val_cache.x.nbytes),
                    "seconds": round(time.perf_counter() - t, 2),
                }
                self.log(
                    f"prefix cache: {self.cache_info['bytes'] / 2**20:.0f} MiB on disk, "
                    f"{self.cache_info['seconds']:.1f}s"
                )
            n = len(self.splits.train)
            self.steps_per_epoch = math.ceil(math.ceil(n / self.dist.world) / bs)
        else:
            self.train_ds = _SeededImages(self.splits.train, self.train_tf, cfg.seed)
            self.train_sampler = _EpochSampler(len(self.train_ds), cfg.seed, True, self.dist.rank, self.dist.world)
            self.train_loader = torch.utils.data.DataLoader(
                self.train_ds,
                batch_size=bs,
                sampler=self.train_sampler,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                drop_last=len(self.train_sampler) > bs and len(self.train_sampler) % bs == 1,
                prefetch_factor=4 if self.workers else None,
            )
            from transferzoo.transfer.data import ImageDataset

            self.val_loader = torch.utils.data.DataLoader(
                ImageDataset(self.splits.val, self.eval_tf),
                batch_size=bs,
                shuffle=False,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
            )
            self.steps_per_epoch = len(self.train_loader)

    def _cached_train(self, epoch: int, subset: int | None = None, seed: int | None = None):
        c, bs, V = self.train_cache, self.cfg.batch_size, self.train_cache.views
        n = len(c) if subset is None else subset
        g = np.random.default_rng([self.cfg.seed if seed is None else seed, epoch])
        order = g.permutation(n)
        rows = order * V + g.integers(0, V, n)
        if self.dist.enabled:
            per = math.ceil(n / self.dist.world)
            rows = np.resize(rows, per * self.dist.world)[self.dist.rank :: self.dist.world]
        for i in range(0, len(rows), bs):
            r = rows[i : i + bs]
            if len(r) < 2 and i > 0:
                break  # a batch of one cannot train BatchNorm
            yield c.batch(r), torch.from_numpy(c.y[r // V])

    def _cached_val(self):
        c, bs = self.val_cache, self.cfg.batch_size
        for i in range(0, len(c), bs):
            r = np.arange(i, min(i + bs, len(c)))
            yield c.batch(r), torch.from_numpy(c.y[r])

    def _streamed_train(self, epoch: int):
        self.train_sampler.set_epoch(epoch)
        yield from self.train_loader

    def loop_data(self) -> LoopData:
        if self.split is not None:
            return LoopData(train=self._cached_train, val=self._cached_val, steps_per_epoch=self.steps_per_epoch)
        return LoopData(
            train=self._streamed_train, val=lambda: iter(self.val_loader), steps_per_epoch=self.steps_per_epoch
        )

    def set_train(self) -> None:
        if self.split is not None:
            self.split.suffix.train()
        else:
            train_mode(self.model, self.freeze)

    def reset(self) -> None:
        self.trainable.load_state_dict(self.initial_state)

    def _run(
        self,
        cfg: FinetuneConfig,
        *,
        ckpt_dir=None,
        resume_state=None,
        on_epoch=None,
        epochs=None,
        data: LoopData | None = None,
        check_initial=True,
        extra_state=None,
        progress: bool | None = None,
    ) -> LoopResult:
        optimizer = create_optimizer(self.model, cfg)
        data = data or self.loop_data()
        sched = create_schedule(optimizer, cfg, data.steps_per_epoch, epochs)
        module = self.dist.wrap(self.trainable)
        return run(
            module=module,
            set_train=self.set_train,
            state_module=self.trainable,
            optimizer=optimizer,
            scheduler=sched,
            data=data,
            cfg=cfg,
            num_classes=len(self.splits.classes),
            device=self.device,
            amp=self.amp,
            ckpt_dir=ckpt_dir,
            resume=resume_state,
            fingerprint=self.fingerprint,
            on_epoch=on_epoch,
            is_main=self.dist.is_main,
            progress=self._progress() if progress is None else progress,
            all_reduce=self.dist.all_reduce_sum if self.dist.enabled else None,
            log=self.log,
            epochs=epochs,
            check_initial=check_initial,
            extra_state=extra_state,
        )

    # -- optional checks ----------------------------------------------------------------------------
    def overfit_check(self, n: int, steps: int = 60) -> dict:
        """Can the trainable part drive the training loss to ~0 on `n` images? (A model that cannot
        overfit a handful of examples has a bug in its data or wiring.) Weights are restored after."""
        samples = self.splits.train[:0]
        cfg = replace(
            self.cfg,
            epochs=steps,
            warmup_epochs=0,
            label_smoothing=0.0,
            mixup=0.0,
            cutmix=0.0,
            dropout=0.0,
            patience=0,
            weight_decay=0.0,
            checkpoint=False,
            schedule="constant",
        )
        if self.split is not None:
            n = min(n, len(self.train_cache))
            rng = np.random.default_rng(self.cfg.seed)
            idx = np.sort(rng.choice(len(self.train_cache), n, replace=False))
            x = self.train_cache.batch(idx * self.train_cache.views)
            y = torch.from_numpy(self.train_cache.y[idx])
        else:
            rng = np.random.default_rng(self.cfg.seed)
            idx = np.sort(rng.choice(len(self.splits.train), min(n, len(self.splits.train)), replace=False))
            samples = [self.splits.train[i] for i in idx]
            x = torch.stack([self.eval_tf(zoo.load_rgb(s.path)) for s in samples])
            y = torch.tensor([s.label for s in samples])
        data = LoopData(train=lambda e: iter([(x, y)]), val=lambda: iter([(x, y)]), steps_per_epoch=1)
        res = self._run(cfg, data=data, check_initial=False, progress=False)
        final = res.history[-1]
        self.reset()
        ok = final["train_loss"] < 0.1 or final["val_accuracy"] == 1.0
        out = {
            "images": int(len(y)),
            "steps": steps,
            "final_loss": final["train_loss"],
            "accuracy": final["val_accuracy"],
            "passed": ok,
        }
        self.log(
            f"overfit check on {len(y)} images: loss {final['train_loss']:.4f}, accuracy {final['val_accuracy']:.3f} "
            + (
                "(passed)"
                if ok
                else "(FAILED: the model cannot fit a handful of images; check the data and the learning rate)"
            )
        )
        return out

    def search(self, trials: int, epochs: int) -> tuple[FinetuneConfig, list[dict]]:
        """Random search over lr (log-uniform, base/10..base*10) and weight decay (1e-5..0.1) for
        `epochs` epochs each; returns the config with the best validation accuracy."""
        rng = np.random.default_rng([self.cfg.seed, 7])
        base = self.cfg.lr
        results = []
        for t in range(trials):
            lr = float(base * 10 ** rng.uniform(-1, 1))
            wd = float(10 ** rng.uniform(-5, -1))
            cfg = replace(
                self.cfg,
                lr=lr,
                weight_decay=wd,
                epochs=epochs,
                warmup_epochs=min(self.cfg.warmup_epochs, epochs - 1) if epochs > 1 else 0,
                patience=0,
                checkpoint=False,
            )
            try:
                res = self._run(cfg, check_initial=False)
                acc = res.best_val_accuracy
                loss = min(h["val_loss"] for h in res.history)
            except ValueError as e:  # diverged
                acc, loss = 0.0, float("inf")
                self.log(f"  trial {t + 1}: {e}")
            results.append({"trial": t + 1, "lr": lr, "weight_decay": wd, "val_accuracy": acc, "val_loss": loss})
            self.log(f"search trial {t + 1}/{trials}: lr {lr:.2e} wd {wd:.1e} -> val acc {acc:.4f} loss {loss:.4f}")
            self.reset()
        best = max(results, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
        return replace(self.cfg, lr=best["lr"], weight_decay=best["weight_decay"]), results

    # -- the run ----------------------------------------------------------------------------------
    def train(self) -> FinetuneResult:
        cfg = self.cfg
        extra: dict = {}
        ckpt_dir = self.run_dir / "checkpoint" if self.run_dir is not None and cfg.checkpoint else None
        resume_state = None
        if self.resume and ckpt_dir is not None:
            resume_state = ckpt.load(ckpt_dir)
            if resume_state is None:
                self.log(f"no checkpoint in {ckpt_dir}: starting from the beginning")
            elif resume_state.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"the checkpoint in {ckpt_dir} belongs to a different run (other data, model or "
                    "settings); resume with the same command, or drop --resume to start over"
                )
            else:
                extra = dict(resume_state.get("extra") or {})
        if resume_state is None:
            if cfg.overfit_check:
                extra["overfit_check"] = self.overfit_check(cfg.overfit_check)
            if cfg.search:
                best_cfg, trials = self.search(cfg.search, cfg.search_epochs)
                extra["search"] = trials
                extra["search_cfg"] = {"lr": best_cfg.lr, "weight_decay": best_cfg.weight_decay}
                self.log(f"search picked lr {best_cfg.lr:.2e}, weight decay {best_cfg.weight_decay:.1e}")
        if extra.get("search_cfg"):
            cfg = self.cfg = replace(cfg, **extra["search_cfg"])

        def on_epoch(history):
            if self.run_dir is not None:
                write_jsonl(self.run_dir / "metrics.jsonl", history)
                from transferzoo.transfer.report.figures import write_curves

                write_curves(self.run_dir / "curves.png", history)

        res = self._run(cfg, ckpt_dir=ckpt_dir, resume_state=resume_state, on_epoch=on_epoch, extra_state=extra)
        if self.split is not None:
            loss, acc, pred, true, prob = evaluate(
                self.trainable, self._cached_val(), self.device, self.amp, with_probs=True
            )
        else:
            loss, acc, pred, true, prob = evaluate(
                self.model, iter(self.val_loader), self.device, self.amp, with_probs=True
            )
        self.model.eval()
        summary = self._summary(cfg, res, acc, loss, pred, true, extra)
        if self.splits.test:
            from transferzoo.transfer.data import ImageDataset

            loader = torch.utils.data.DataLoader(
                ImageDataset(self.splits.test, self.eval_tf), batch_size=cfg.batch_size, num_workers=self.workers
            )
            tl, ta, _, _ = evaluate(self.model, loader, self.device, self.amp)
            summary["test_accuracy"], summary["test_loss"] = round(ta, 6), round(tl, 6)
        self.model.to("cpu").to(memory_format=torch.contiguous_format)
        return FinetuneResult(
            model=self.model,
            spec=self.spec,
            summary=summary,
            history=res.history,
            val_pred=pred,
            val_true=true,
            val_prob=prob,
            preprocessing=self.pre,
            config=cfg,
        )

    def _summary(self, cfg, res: LoopResult, acc, loss, pred, true, extra) -> dict:
        from transferzoo.transfer.report.markdown import confusion_matrix

        C = len(self.splits.classes)
        cm = confusion_matrix(true, pred, C)
        per_class = {
            name: {"support": int(cm[i].sum()), "recall": round(float(cm[i, i] / max(1, cm[i].sum())), 4)}
            for i, name in enumerate(self.splits.classes)
        }
        s = {
            "strategy": self.strategy,
            "model": self.model_name,
            "val_accuracy": round(float(acc), 6),
            "val_loss": round(float(loss), 6),
            "num_classes": C,
            "num_train": len(self.splits.train),
            "num_val": len(self.splits.val),
            "wall_seconds": round(time.perf_counter() - self.t0, 2),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            "stopped": res.stopped,
            "trained_blocks": self.freeze.trained_blocks,
            "num_blocks": self.freeze.num_blocks,
            "trainable_params": self.freeze.trainable_params,
            "total_params": self.freeze.total_params,
            "optimizer": cfg.optimizer,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "schedule": cfg.schedule,
            "image_size": self.pre.input_size[-1],
            "world_size": self.dist.world,
            "device": str(self.device),
            "initial_loss": res.checks.get("initial_loss"),
            "ln_num_classes": res.checks.get("ln_num_classes"),
            "initial_loss_ok": res.checks.get("initial_loss_ok"),
            "confusion": cm.tolist(),
            "per_class": per_class,
        }
        if self.cache_info:
            s["prefix_cache"] = self.cache_info
        s.update({k: v for k, v in extra.items() if k != "search_cfg"})
        return s

    # -- output ------------------------------------------------------------------------------------
    def write_run(
        self, result: FinetuneResult, plan: dict | None = None, config: dict | None = None, keep_cache: bool = False
    ) -> Path | None:
        """The run directory (rank 0 only); the prefix cache is removed unless `keep_cache`."""
        if self.run_dir is None or not self.dist.is_main:
            return None
        from transferzoo.transfer.report.finetune import finetune_extra_files
        from transferzoo.transfer.rundir import write_run

        extra = finetune_extra_files(result, self.splits, plan)
        cfg = {"model": self.model_name, "strategy": self.strategy, "finetune": result.config.to_dict()}
        cfg.update(config or {})
        out = write_run(
            self.run_dir,
            spec=result.spec,
            state=result.model.state_dict(),
            labels=self.splits.classes,
            preprocessing=result.preprocessing,
            weights=za.weights_provenance(result.model),
            summary=result.summary,
            config=cfg,
            plan=plan,
            splits=self.splits,
            extra_files=extra,
        )
        if not keep_cache:
            pc.remove(self.run_dir / "cache")
        return out

    def close(self) -> None:
        """Stop the persistent DataLoader workers now rather than at garbage collection (dropping the
        loaders drops their iterators, whose finalizer shuts the worker processes down), and leave
        the DDP process group."""
        for name in ("train_loader", "val_loader"):
            if hasattr(self, name):
                delattr(self, name)
        if self._owns_dist:
            ddp_mod.cleanup(self.dist)
