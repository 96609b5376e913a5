"""The training-curve figure a run leaves in its folder."""

from __future__ import annotations

from pathlib import Path


def plot_curves(curve: list, history: list[dict], steps_per_epoch: int, title: str, path: Path) -> Path | None:
    """Training loss per step (``curve``: [step, loss] pairs) and validation loss at each
    validation (``history``: per epoch, and where max_steps stopped inside one) as a PNG at
    ``path``; None, with nothing lost, if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        steps, losses = zip(*curve)
        ax.plot(steps, losses, lw=0.8, label="train loss")
    if history:
        ends = [h.get("step", (h["epoch"] + 1) * steps_per_epoch) for h in history]
        ax.plot(ends, [h["val_loss"] for h in history], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
