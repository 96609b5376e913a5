"""The training loop every task shares: epochs of deterministic batches, checkpoints (atomic,
every epoch and every K steps, plus the best by validation loss), exact resume, progress bars
and tracking. What one step computes is the task's (``tasks``); compression, data parallelism,
the curve plot and progressive stages are units the loop calls (``compression``,
``distributed``, ``plots``, ``progressive``)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from edgegen.train import checkpoint as ckpt
from edgegen.train.config import ExperimentConfig
from edgegen.train.data import build_batches, shard, steps_in_epoch
from edgegen.train.distributed import Processes, pick_device
from edgegen.train.plots import plot_curves
from edgegen.train.tasks import TASKS

CHECKPOINT_VERSION = 1
# The training batches' and per-step noise's random streams; bumped when their draws change (a
# checkpoint of another version resumes on other batches than an uninterrupted run would see).
# Version 3: token batches past the stream's batches per epoch are fresh draws (they repeated).
STREAMS_VERSION = 3
HISTORY_KEYS = ("epoch", "step")  # where a validation was taken: kept in the history, not logged as metrics


@dataclass
class TrainState:
    """Where a run is (what a checkpoint stores besides the modules): steps, epoch and batch,
    the best validation loss, per-epoch validation metrics and the training-loss curve."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # next batch of the current epoch
    best_val: float = float("inf")
    history: list[dict] = field(default_factory=list)  # per-epoch validation metrics
    curve: list[list[float]] = field(default_factory=list)  # [step, training loss] for the plot


def default_run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name / f"seed{cfg.train.seed}"


def check_run_dir_free(run_dir) -> None:
    """FileExistsError unless ``run_dir`` is free for a new run: training over another run would
    mix the two (its best.pt would outlive the new run, its MLflow link would be replaced)."""
    run_dir = Path(run_dir)
    taken = [p for p in (run_dir / "checkpoints" / "last.pt",  # a run, or progressive distillation's stages
                         *sorted(run_dir.glob("stage*/checkpoints/last.pt"))) if p.is_file()]
    if taken:
        raise FileExistsError(f"run_dir: {run_dir} already holds a run ({taken[0]}); resume it (resume=True, "
                              "--resume) or choose another folder")


def prepare_run_dir(run_dir, what: str = "run_dir") -> Path:
    """Create ``run_dir`` (with its parents) and check that files can be written in it, before
    anything is trained: a path that is a file, lies under a file or cannot be written is a
    ValueError naming ``what`` (the argument or config key the path came from)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{what}: {run_dir} is a file, expected a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}: cannot create the folder {run_dir} ({exc.strerror or exc}); expected a "
                         "writable folder") from None
    # A name of this call's own: ranks on other hosts sharing the folder may have the same pid.
    probe = run_dir / f".edgegen-write-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in {run_dir} ({exc.strerror or exc}); expected a writable "
                         "folder") from None
    return run_dir


class Trainer:
    """``Trainer(cfg, run_dir=None, tracker=None, callbacks=())``; ``fit(resume=False)``.

    ``run_dir`` defaults to ``<output_dir>/<name>/seed<seed>``; checkpoints go to
    ``run_dir/checkpoints/{last,best}.pt``. ``callbacks``: ``fn(trainer, metrics)`` after every
    optimizer step (tests use one to kill the process mid-run). With ``torchrun`` (WORLD_SIZE > 1)
    every process computes the same global batch and trains on its rows of it through
    DistributedDataParallel (gloo on CPU, NCCL on GPU); rank 0 writes checkpoints and logs.
    """

    def __init__(self, cfg: ExperimentConfig, run_dir: str | os.PathLike | None = None, tracker=None,
                 callbacks: tuple[Callable, ...] = (), progress: bool | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.procs = Processes(pick_device(cfg.train.device))
        self.world, self.rank, self.device = self.procs.world, self.procs.rank, self.procs.device
        from edgegen.tracking import NullTracker

        self.tracker = tracker if (tracker is not None and self.rank == 0) else NullTracker()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        ckpt.seed_everything(cfg.train.seed)
        tc = cfg.train
        if tc.batch_size % (self.world * cfg.optim.grad_accum):
            raise ValueError(f"train.batch_size: {tc.batch_size} must divide evenly into {self.world} processes x "
                             f"{cfg.optim.grad_accum} accumulation steps")
        # The model first: the token data is read with its vocabulary (a GPT-2 from init_from has
        # its checkpoint's, whatever the section says).
        self.task = TASKS[cfg.task](cfg, self.device, None)
        self.batches = build_batches(cfg.data, tc.batch_size, tc.seed, self.task.vocab_size)
        self.steps_per_epoch = steps_in_epoch(self.batches, tc.steps_per_epoch)
        total = tc.epochs * self.steps_per_epoch
        self.total_steps = self.task.total_steps = min(total, tc.max_steps) if tc.max_steps else total
        if cfg.optim.grad_accum > 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                            for mod in self.task.modules.values() for m in mod.modules()):
            import warnings

            warnings.warn(f"optim.grad_accum: {cfg.optim.grad_accum} micro-batches with a BatchNorm model "
                          f"({cfg.model.kind}): BatchNorm normalises each micro-batch with its own statistics, so "
                          "the update is not the full batch's (set grad_accum: 1 for that)", UserWarning,
                          stacklevel=2)
        self.compression = None
        if cfg.compress is not None:
            from edgegen.train.compression import Compression

            self.compression = Compression(cfg.compress, self.task.main_model(), self.total_steps)
        self.task.build_optimizers()
        self.task.wrapped = self.procs.wrap(self.task.modules)
        self.state = TrainState()

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _snapshot(self) -> dict:
        t = self.task
        return {
            "version": CHECKPOINT_VERSION,
            "streams": STREAMS_VERSION,
            "config": self.cfg.to_dict(),
            "state": self.state.__dict__.copy(),
            "modules": {k: m.state_dict() for k, m in t.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in t.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in t.schedulers.items()},
            "rng": ckpt.rng_state(),
        }

    def save(self, name: str = "last.pt") -> Path | None:
        if self.rank != 0:
            return None
        return ckpt.save_atomic(self._snapshot(), self.checkpoint_dir / name)

    def load(self, path: str | os.PathLike) -> None:
        snap = ckpt.load(path)
        if snap.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {snap.get('version')}, expected {CHECKPOINT_VERSION}")
        streams = snap.get("streams", 1)
        # Version 3 changed only the token batches past batches_per_epoch: a run that draws none is as it was.
        unchanged = streams == 2 and not (self.cfg.data.is_text and
                                          self.steps_per_epoch > self.batches.batches_per_epoch)
        if streams != STREAMS_VERSION and not unchanged:
            import warnings

            warnings.warn(f"{path}: written by an edgegen whose training batches or per-step noise were drawn "
                          f"differently (stream version {streams}, now {STREAMS_VERSION}): the resumed "
                          "run goes on, but not on the batches an uninterrupted run would have seen", UserWarning,
                          stacklevel=2)
        saved, now = ckpt.experiment_config(snap).to_dict(), self.cfg.to_dict()
        for c in (saved, now):  # may differ between the run and its resumption
            c.pop("tracking", None), c.pop("output_dir", None)
            c["train"] = {k: v for k, v in c["train"].items() if k not in ("device", "threads", "log_every")}
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ValueError(f"{path}: the checkpoint was written by a different config (sections {diff} differ); "
                             "resume with the same config")
        from edgegen.prune.masks import load_pruned_state_dict

        for k, m in self.task.modules.items():
            load_pruned_state_dict(m, snap["modules"][k])
        for k, o in self.task.optimizers.items():
            o.load_state_dict(snap["optimizers"][k])
        for k, s in self.task.schedulers.items():
            s.load_state_dict(snap["schedulers"][k])
        self.state = TrainState(**snap["state"])
        ckpt.set_rng_state(snap["rng"])

    # ------------------------------------------------------------------ the loop
    def _progress_bar(self, total: int, initial: int):
        from tqdm import tqdm

        disable = (not sys.stderr.isatty()) if self.progress is None else not self.progress
        return tqdm(total=total, initial=initial, disable=disable or self.rank != 0, dynamic_ncols=True,
                    desc=self.cfg.name, unit="step")

    def fit(self, resume: bool = False) -> dict:
        """Train to the end (or resume from ``checkpoints/last.pt`` first); returns the final
        validation metrics and the paths written."""
        last = self.checkpoint_dir / "last.pt"
        resumed = resume and last.is_file()
        if resumed:
            self.load(last)
        elif not resume:
            check_run_dir_free(self.run_dir)
        prepare_run_dir(self.run_dir)  # an unwritable folder fails now, not after the first epoch
        if self.rank == 0:
            self._remove_stale_temporary_files()
        cfg, st = self.cfg, self.state
        if self.rank == 0:
            # metrics.jsonl holds this run's records only: an earlier run's file (one that died
            # before its first checkpoint) is moved aside; a resumed run drops what it trains again.
            self.tracker.start_local_log(st.step if resumed else None,
                                         validated=bool(st.history) and st.history[-1].get("step") == st.step)
        # The config goes into every record this run opens: at the first step, or when a resumed
        # run had to open a new one (a reattached record has it already).
        if not getattr(self.tracker, "reattached", False) and self.rank == 0:
            self.tracker.log_config(cfg)
            if cfg.data.name.startswith("synthetic"):
                self.tracker.set_tags({"synthetic_data": "true"})
        bar = self._progress_bar(self.total_steps, st.step)
        t_last, samples = time.perf_counter(), 0
        val = st.history[-1] if st.history else {}
        try:
            while st.epoch < cfg.train.epochs and st.step < self.total_steps:
                while st.batch_in_epoch < self.steps_per_epoch and st.step < self.total_steps:
                    batch = self.batches.train_batch(st.epoch, st.batch_in_epoch)
                    local = shard(batch, self.rank, self.world)
                    metrics = self.task.train_step(local, st.step, rank_rows=self.procs.rows(),
                                                   global_batch=cfg.train.batch_size)
                    st.step += 1
                    st.batch_in_epoch += 1
                    st.curve.append([st.step, float(metrics["loss"])])
                    samples += cfg.train.batch_size
                    if self.compression is not None:
                        metrics.update(self.compression.after_step(st.step))
                    if st.step % cfg.train.log_every == 0 or st.step == self.total_steps:
                        now = time.perf_counter()
                        metrics["samples_per_s"] = samples / max(now - t_last, 1e-9)
                        t_last, samples = now, 0
                        self.tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, st.step)
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                    if cfg.train.checkpoint_every and st.step % cfg.train.checkpoint_every == 0:
                        self.save()
                    for cb in self.callbacks:
                        cb(self, metrics)
                # At the end of an epoch, or where max_steps stops training inside one: the
                # final metrics are always those of the model as it stands.
                val = self._validate()
            # A run resumed from a checkpoint written at its last step (then interrupted before
            # its final validation) has no steps left: it is validated here.
            if not st.history or st.history[-1].get("step") != st.step:
                val = self._validate()
        finally:
            bar.close()
        return self._finish(val)

    def _remove_stale_temporary_files(self) -> None:
        """The temporary files of checkpoint writes a killed process left (``.last.<pid>-<id>.tmp.pt``
        and the like: never renamed, never to be); none of this run's own exist yet."""
        for folder, stems in ((self.checkpoint_dir, ("last", "best")), (self.run_dir, ("model",))):
            for stem in stems:
                for tmp in folder.glob(f".{stem}.*-*.tmp.pt"):
                    tmp.unlink(missing_ok=True)

    def _validate(self) -> dict:
        """Validate the model as it stands, record it, keep best.pt and write last.pt."""
        st = self.state
        val = self.task.validate(self.batches.val_batches())
        val["epoch"], val["step"] = st.epoch, st.step
        st.history.append(val)
        self.tracker.log_metrics({k: v for k, v in val.items() if k not in HISTORY_KEYS}, st.step)
        if st.batch_in_epoch >= self.steps_per_epoch:  # epoch complete
            st.epoch += 1
            st.batch_in_epoch = 0
        if val["val_loss"] < st.best_val:
            st.best_val = val["val_loss"]
            self.save("best.pt")
        self.save()
        return val

    def _calibration_inputs(self):
        """Model inputs for static quantization, as post-hoc compression takes them: the validation
        batches (images, or token ids); seeded latents for a DCGAN generator."""
        from edgegen.train.posthoc import calibration_inputs

        return [b.to(self.device) for b in calibration_inputs(self.cfg, self.batches)]

    def _finish(self, val: dict) -> dict:
        out = {"final": val, "best_val_loss": self.state.best_val, "steps": self.state.step,
               "checkpoint": str(self.checkpoint_dir / "last.pt")}
        comp = self.compression
        if comp is not None and comp.quantizes and self.rank == 0:
            path = comp.quantize(self.task.main_model().eval(), self.run_dir, self._calibration_inputs)
            out["quantized"] = str(path)
            out["final_float"] = val
            val = self.task.validate(self.batches.val_batches())
            out["final"] = val
        if comp is not None and comp.pruner is not None and not comp.quantizes and self.rank == 0:
            out["pruned"] = str(comp.save_pruned(self.task.main_model(), self.run_dir))
        if self.rank == 0:
            st = self.state
            plot = plot_curves(st.curve, st.history, self.steps_per_epoch, self.cfg.name, self.run_dir / "curves.png")
            if plot is not None:
                out["plot"] = str(plot)
                self.tracker.log_artifact(plot)
            self.tracker.log_metrics({"final/" + k: v for k, v in val.items() if k not in HISTORY_KEYS},
                                     self.state.step)
            if "final_float" in out:
                self.tracker.log_metrics({"final_float/" + k: v for k, v in out["final_float"].items()
                                          if k not in HISTORY_KEYS}, self.state.step)
            # The model once (weights only, the best checkpoint's if there is one); the full
            # checkpoints (optimizer state, RNG) stay in the run folder, referenced by tags.
            best = self.checkpoint_dir / "best.pt"
            self.tracker.set_tags({"checkpoint.last": str((self.checkpoint_dir / "last.pt").resolve()),
                                   **({"checkpoint.best": str(best.resolve())} if best.is_file() else {})})
            weights = self.run_dir / "model.pt"
            snap = ckpt.load(best if best.is_file() else self.checkpoint_dir / "last.pt")
            ckpt.save_atomic({"config": snap["config"], "modules": snap["modules"]}, weights)
            self.tracker.log_artifact(weights)
            for k in ("quantized", "pruned"):
                if k in out:
                    self.tracker.log_artifact(out[k])
        return out


def train_experiment(cfg: ExperimentConfig, run_dir: str | os.PathLike, tracker=None, resume: bool = False,
                     progress: bool | None = None, callbacks: tuple[Callable, ...] = ()) -> dict:
    """Run an experiment: one Trainer, or for distillation with ``distill.stages`` the chain of
    stages (:func:`edgegen.train.progressive.train_progressive`)."""
    if cfg.task == "distill" and cfg.distill.stages:
        from edgegen.train.progressive import train_progressive

        return train_progressive(cfg, run_dir, tracker, resume, progress, callbacks)
    return Trainer(cfg, Path(run_dir), tracker, callbacks=callbacks, progress=progress).fit(resume=resume)
