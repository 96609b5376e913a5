"""Compression during a training run, as one unit the loop calls at three points: before the
optimizers exist (QAT wrappers, the gradual-pruning schedule), after every optimizer step (the
pruning step) and at the end (conversion / post-training quantization, or the pruned model in
its shipped form)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

from torch import nn

from edgegen.train.config import CompressConfig, check_prune_steps

SHRUNK_FILE = "model-shrunk.safetensors"  # a channel/head-pruned model's tensors, physically shrunk


class Compression:
    def __init__(self, cc: CompressConfig, model: nn.Module, total_steps: int):
        self.cc, self.pruner = cc, None
        if cc.qat:
            from edgegen.quant import QATConfig, quantize_

            quantize_(model, QATConfig(step="prepare"))  # before the optimizer exists: LSQ adds scale parameters
        if cc.prune is not None:
            from edgegen.prune import CubicSchedule, GradualPruner

            check_prune_steps(cc, total_steps)
            pc = cc.prune
            end = cc.prune_end if cc.prune_end is not None else max(cc.prune_begin + 1, (3 * total_steps) // 4)
            freq = cc.prune_frequency if cc.prune_frequency is not None else max(1, (end - cc.prune_begin) // 20)
            schedule = CubicSchedule(0.0, float(pc.amount), cc.prune_begin, end, freq)
            example = model.example_inputs() if hasattr(model, "example_inputs") else None
            self.pruner = GradualPruner(model, pc, schedule, example_inputs=example)

    @property
    def quantizes(self) -> bool:
        return bool(self.cc.qat or self.cc.ptq)

    def after_step(self, step: int) -> dict[str, float]:
        """Metrics of this step's compression (``sparsity`` when the schedule pruned: the model's
        measured sparsity, see :meth:`GradualPruner.step`)."""
        if self.pruner is None:
            return {}
        sparsity = self.pruner.step(step)
        return {} if sparsity is None else {"sparsity": sparsity}

    def quantize(self, model: nn.Module, run_dir: Path, calibration: Callable[[], list]) -> Path:
        """Convert the QAT model, or quantize the trained one (static INT8 calibrates on
        ``calibration()``, all of it unless the config sets ``batches``), in place; saved at its
        real size. Returns the file."""
        from dataclasses import replace

        from edgegen.quant import Int8StaticConfig, QATConfig, quantize_, save_quantized

        if self.cc.qat:
            quantize_(model, QATConfig(step="convert"))
            path = run_dir / "model-int8.safetensors"
        else:
            config, calib = self.cc.ptq, None
            if isinstance(config, Int8StaticConfig):
                calib = calibration()
                if config.batches is None:  # every validation batch
                    config = replace(config, batches=len(calib))
            quantize_(model, config, calibration=calib)
            path = run_dir / "model-ptq.safetensors"
        save_quantized(model, path)
        return path

    def save_pruned(self, model: nn.Module, run_dir: Path) -> Path:
        """The pruned model as it would be shipped, beside the masked checkpoint: channel/head
        pruning physically shrunk (``model-shrunk.safetensors``, the small model's tensors; its
        architecture is what ``shrink`` makes of the checkpoint), unstructured or N:M sparsity
        compressed (``model-sparse.safetensors``, bitmask + non-zeros)."""
        from edgegen.prune import finalize_, save_sparse, shrink
        from edgegen.tensor_files import write_safetensors

        model = finalize_(copy.deepcopy(model).eval().cpu())
        if self.cc.prune.shrinks:
            path = run_dir / SHRUNK_FILE
            write_safetensors(shrink(model, model.example_inputs(1)).state_dict(), path)
            return path
        path = run_dir / "model-sparse.safetensors"
        save_sparse(model, path)
        return path
