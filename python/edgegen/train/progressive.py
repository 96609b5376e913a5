"""Progressive distillation: teacher -> stage 0 -> stage 1 -> ... -> the final student, each
stage distilled from the previous one's last checkpoint (``<run_dir>/stage<i>``), each a nested
tracking run (a resumed chain logs into the stages' runs again). Only the final stage gets the
experiment's compress section."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from edgegen.train.config import ExperimentConfig


def train_progressive(cfg: ExperimentConfig, run_dir: str | os.PathLike, tracker=None, resume: bool = False,
                      progress: bool | None = None, callbacks: tuple[Callable, ...] = ()) -> dict:
    """The results of the final stage, with every stage's under ``stages``."""
    from dataclasses import replace

    from edgegen.tracking import NullTracker
    from edgegen.train.loop import Trainer

    run_dir = Path(run_dir)
    tracker = tracker or NullTracker()
    dc = cfg.distill
    teacher = dc.teachers[0]
    chain = list(dc.stages) + [cfg.model]
    stages = []
    for i, student in enumerate(chain):
        final = i == len(chain) - 1
        stage_cfg = replace(cfg, name=f"{cfg.name}-stage{i}", model=student,
                            distill=replace(dc, teachers=[teacher], teacher_weights=[], stages=[]),
                            compress=cfg.compress if final else None)
        stage_dir = run_dir / f"stage{i}"
        # Resumed: the stage's own run again where its folder names one (a new one where not).
        child = tracker.child(f"stage{i}-{student.n_layer}L", stage_dir, resume=resume)
        status = "FAILED"
        try:
            trainer = Trainer(stage_cfg, stage_dir, child, callbacks=callbacks, progress=progress)
            res = trainer.fit(resume=resume)
            status = "FINISHED"
        finally:
            child.finish(status)
        arch = trainer.task.main_model().config  # a stage from init_from has its checkpoint's sizes
        stages.append({"stage": i, "n_layer": arch.n_layer, "n_embd": arch.n_embd, **res})
        teacher = replace(student, init_from=res["checkpoint"])
    out = dict(stages[-1])
    out["stages"] = stages
    return out
