"""Input builders and tolerances shared by the tests."""

from __future__ import annotations

import torch

# Max |grad - ref| relative to max |ref|: the gradient is stored in the input dtype.
GRAD_RTOL = {
    torch.float32: 2e-5,
    torch.float64: 1e-11,
    torch.bfloat16: 1e-2,
    torch.float16: 2e-3,
}
# The loss is accumulated in fp32 (fp64 for fp64 inputs) from the inputs as given.
LOSS_RTOL = {torch.float32: 2e-5, torch.float64: 1e-11, torch.bfloat16: 2e-5, torch.float16: 2e-5}


def make_target(lead, vocab, pattern: str, ignore_index: int = -100, generator=None):
    y = torch.randint(0, vocab, lead, generator=generator)
    if pattern == "some":
        flat = y.view(-1)
        flat[::3] = ignore_index
    elif pattern == "all":
        y.fill_(ignore_index)
    elif pattern != "none":
        raise ValueError(pattern)
    return y


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, dtype) -> None:
    actual = actual.double()
    expected = expected.double()
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= GRAD_RTOL[dtype] * scale + 1e-30, f"max grad error {err:.3e} vs scale {scale:.3e}"


def assert_loss_close(actual: torch.Tensor, expected: torch.Tensor, dtype) -> None:
    actual = actual.double()
    expected = expected.double()
    assert actual.shape == expected.shape
    tol = LOSS_RTOL[dtype] * (1.0 + expected.abs())
    err = (actual - expected).abs()
    assert bool((err <= tol).all()), f"max loss error {err.max().item():.3e}"


def opcheck_ids(cases) -> list[str]:
    """Deterministic test ids for (op, args) cases: the op's name and the case's position (the
    args hold random tensors, whose text changes between collections)."""
    return [f"{str(op).rsplit('.', 1)[-1]}-{i}" for i, (op, _) in enumerate(cases)]


def seeded_gpt2(config, seed: int = 0):
    """An edgegen GPT2 of ``config`` with weights drawn after ``torch.manual_seed(seed)``, in eval mode."""
    from edgegen.models import GPT2

    torch.manual_seed(seed)
    return GPT2(config).eval()


def figure_texts(monkeypatch) -> dict:
    """{file name: [title, x label, y label of each axis]} of every figure edgegen.analysis.plots
    saves from now on in this test (the figures are still written)."""
    from edgegen.analysis import plots

    texts: dict = {}
    real_save = plots._save

    def spy(fig, path):
        texts[path.name] = [t for ax in fig.axes for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return texts


def record_tracker_finishes(monkeypatch) -> list:
    """Replace ``edgegen.tracking.make_tracker`` by trackers that do nothing but record ``(run
    name, status)`` when finished; returns that list."""
    import edgegen.tracking as tracking

    finished: list[tuple[str, str]] = []

    class Recording(tracking.NullTracker):
        def __init__(self, name):
            self.name = name

        def finish(self, status="FINISHED"):
            finished.append((self.name, status))

    monkeypatch.setattr(tracking, "make_tracker", lambda cfg, name, run_dir, **kw: Recording(name))
    return finished
