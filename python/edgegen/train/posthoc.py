"""Compressing a trained run without training it again: one-shot pruning (then the masks baked
in and, for channel/head pruning, the model physically shrunk) and post-training quantization
(dynamic or static INT8, INT4 weight-only, fp16/bf16), written as a new run folder that
``load_run``, ``edgegen eval`` and ``edgegen compare`` read like any other."""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import torch

from edgegen.train import checkpoint as ckpt
from edgegen.train.compression import SHRUNK_FILE

__all__ = ["compress_from"]


def _tag(compress) -> str:
    parts = []
    if compress.prune:
        parts.append(f"{compress.prune.kind.replace('Config', '').lower()}{getattr(compress.prune, 'amount', '')}")
    if compress.ptq:
        parts.append(compress.ptq.kind.replace("Config", "").lower())
    return "-".join(parts) or "none"


def compress_from(source, compress: dict, run_dir: str | os.PathLike | None = None, which: str = "last",
                  tracker=None) -> dict:
    """Apply the ``compress`` section (``prune`` and/or ``ptq``, as in an experiment config) to the
    trained model of ``source`` (a run folder or checkpoint). Writes ``run_dir`` (default
    ``<source>-<tag>``) with ``checkpoints/last.pt`` (the source config with this compress section,
    the pruned float weights) and the shipped model as tensors: ``model-ptq.safetensors`` (from
    save_quantized; of the shrunk model when channel/head pruning shrinks it),
    ``model-shrunk.safetensors`` (pruned and shrunk, not quantized) or ``model-sparse.safetensors``
    (unstructured pruning, from save_sparse). ``load_run`` rebuilds the shipped architecture from
    the checkpoint (pruning shrinks deterministically) and reads the tensors into it: nothing is
    unpickled. Returns the paths and what was done. ``tracker``: a tracker to log the new run
    into, or a callable ``(config, run_dir) -> tracker`` that opens one once the run is written
    (closed here)."""
    from edgegen.config import from_dict
    from edgegen.eval.runs import MAIN_MODULE, load_run
    from edgegen.train.config import CompressConfig

    if not isinstance(compress, dict) or not compress:
        raise ValueError("compress: expected a compress section with prune and/or ptq")
    cc = from_dict(CompressConfig, dict(compress))
    if cc.qat:
        raise ValueError("compress.qat: quantization-aware training needs training; run `edgegen compress CONFIG` "
                         "with qat, or use ptq here")
    if cc.prune is None and cc.ptq is None:
        raise ValueError("compress: expected prune and/or ptq")
    run = load_run(source, which=which, form="float")
    if run.config.compress is not None and run.config.compress.qat:
        raise ValueError("source: a QAT run is already quantized at its end; compress its float parent instead")
    out_dir = Path(run_dir) if run_dir else run.run_dir.with_name(f"{run.run_dir.name}-{_tag(cc)}")
    if out_dir.resolve() == Path(run.run_dir).resolve():
        raise ValueError(f"run_dir: {out_dir} is the source run itself; the compressed run needs its own folder")
    from edgegen.train.loop import check_run_dir_free

    try:  # last.pt is written last: a folder without it holds no finished run
        check_run_dir_free(out_dir)
    except FileExistsError:
        raise FileExistsError(f"run_dir: {out_dir} already holds a run; choose another folder or delete it "
                              "first") from None
    from edgegen.train.loop import prepare_run_dir

    prepare_run_dir(out_dir)  # before the model is compressed
    model = copy.deepcopy(run.model).eval()
    done, artifacts = [], {}
    if cc.prune is not None:
        from edgegen.prune import finalize_, prune_, shrink, sparsity

        prune_(model, cc.prune, example_inputs=model.example_inputs(2))
        finalize_(model)
        done.append(f"one-shot {cc.prune.kind} amount {getattr(cc.prune, 'amount', None)} "
                    f"(sparsity {sparsity(model):.3f})")
    float_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shipped = model
    if cc.prune is not None and cc.prune.shrinks:
        shipped = shrink(model, model.example_inputs(1))
        n0 = sum(p.numel() for p in model.parameters())
        n1 = sum(p.numel() for p in shipped.parameters())
        done.append(f"shrunk {n0} -> {n1} parameters")
    if cc.ptq is not None:
        from edgegen.quant import Int8StaticConfig, quantize_, save_quantized

        config, calib = cc.ptq, None
        if isinstance(config, Int8StaticConfig):
            calib = _calibration(run)
            if config.batches is None:  # every calibration batch
                config = replace(config, batches=len(calib))
        quantize_(shipped, config, calibration=calib)
        done.append(f"post-training {cc.ptq.kind}")
        # load_quantized reads it into the float model of the checkpoint, shrunk first if it was.
        save_quantized(shipped, out_dir / "model-ptq.safetensors")
        artifacts["quantized"] = str(out_dir / "model-ptq.safetensors")
    elif shipped is not model:
        from edgegen.tensor_files import write_safetensors

        write_safetensors(shipped.state_dict(), out_dir / SHRUNK_FILE)
        artifacts["shrunk"] = str(out_dir / SHRUNK_FILE)
    elif cc.prune is not None:
        from edgegen.prune import save_sparse

        save_sparse(shipped, out_dir / "model-sparse.safetensors")
        artifacts["sparse"] = str(out_dir / "model-sparse.safetensors")
    cfg = replace(run.config, name=f"{run.config.name}-{_tag(cc)}", compress=cc)
    snap = {"version": 1, "config": cfg.to_dict(), "state": {}, "modules": {MAIN_MODULE[cfg.task]: float_state},
            "source": str(run.checkpoint), "posthoc": done, "posthoc_tag": _tag(cc)}
    artifacts["checkpoint"] = str(ckpt.save_atomic(snap, out_dir / "checkpoints" / "last.pt"))
    opened = callable(tracker) and not hasattr(tracker, "log_config")
    if opened:
        tracker = tracker(cfg, out_dir)
    if tracker is not None:
        status = "FAILED"
        try:
            tracker.log_config(cfg)
            tracker.set_tags({"edgegen.compressed_from": str(run.checkpoint)})
            for p in artifacts.values():
                tracker.log_artifact(p)
            status = "FINISHED"
        finally:
            if opened:
                tracker.finish(status)
    return {"run_dir": str(out_dir), "source": str(run.checkpoint), "steps": done, "artifacts": artifacts}


def _calibration(run) -> list:
    """Static INT8 calibration inputs for a trained run (see :func:`calibration_inputs`); token
    blocks are read with the trained model's vocabulary."""
    cfg, batches = run.config, None
    if cfg.model.kind != "dcgan":
        from edgegen.train.data import build_batches

        vocab = run.model.config.vocab_size if cfg.data.is_text else None
        batches = build_batches(cfg.data, cfg.train.batch_size, cfg.train.seed, vocab)
    return calibration_inputs(cfg, batches)


def calibration_inputs(cfg, batches) -> list:
    """Static INT8 calibration inputs: the validation batches of ``batches`` (images, or token
    blocks' inputs); seeded latents for a DCGAN generator (``batches`` unused)."""
    if cfg.model.kind == "dcgan":
        g = torch.Generator().manual_seed(0)
        return [torch.randn(32, cfg.model.nz, generator=g) for _ in range(4)]
    out = [b[0] if isinstance(b, tuple) else b for b in batches.val_batches()]
    if not out:
        raise ValueError("compress.ptq: static INT8 needs calibration batches; the run's data has no validation "
                         "batches")
    return out
