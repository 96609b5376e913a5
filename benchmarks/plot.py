"""Plot a benchmark CSV (the harness's fixed schema) as one bar chart per (op, dtype, mode).

    python benchmarks/plot.py benchmarks/results/kd_loss.csv -o benchmarks/results/kd_loss.png

Each panel holds one row per (provider, shape); a CSV with two such rows in one panel (say, two
runs appended to one file) is refused rather than plotted with one of them hidden. Needs
matplotlib (pip install matplotlib); nothing else in edgegen imports it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def load(path: Path) -> list[dict]:
    """The timed rows of the CSV (rows that failed to run have no p50_ms)."""
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("p50_ms")]


def panels(rows: list[dict]) -> dict[tuple[str, str, str], dict[tuple[str, str], dict]]:
    """The rows by panel, (op, dtype, mode), and within each by (provider, shape), in CSV order.
    Raises ValueError naming the panel and the key when a (provider, shape) appears twice."""
    out: dict[tuple[str, str, str], dict[tuple[str, str], dict]] = {}
    for r in rows:
        panel = (r["op"], r["dtype"], r["mode"])
        key = (r["provider"], r["shape"])
        cells = out.setdefault(panel, {})
        if key in cells:
            raise ValueError(f"two rows for provider {key[0]!r}, shape {key[1]!r} in the panel op {panel[0]!r}, "
                             f"dtype {panel[1]!r}, mode {panel[2]!r}: one CSV per run, please")
        cells[key] = r
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", type=Path)
    ap.add_argument("-o", "--out", type=Path, help="PNG path (default: beside the CSV)")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        ap.error(f"csv: no such file: {args.csv}")
    rows = load(args.csv)
    if not rows:
        ap.error(f"csv: {args.csv} has no timed rows")
    try:
        groups = panels(rows)
    except ValueError as exc:
        ap.error(f"csv: {args.csv}: {exc}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    for (op, dtype, mode), (ax_t, ax_m) in zip(groups, axes):
        cells = groups[(op, dtype, mode)]
        shapes = list(dict.fromkeys(shape for _, shape in cells))
        providers = list(dict.fromkeys(prov for prov, _ in cells))
        width = 0.8 / len(providers)
        for k, prov in enumerate(providers):
            xs = [i + k * width for i in range(len(shapes))]
            ax_t.bar(xs, [float(cells[(prov, s)]["p50_ms"]) if (prov, s) in cells else 0 for s in shapes],
                     width, label=prov)
            ax_m.bar(xs, [float(cells[(prov, s)]["peak_mb"] or 0) if (prov, s) in cells else 0 for s in shapes],
                     width, label=prov)
        for ax, label in ((ax_t, "median time, ms (log)"), (ax_m, "peak extra memory, MB (log)")):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
            ax.set_xticklabels([s.split(" Hs=")[0] for s in shapes], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(f"{op}, {dtype}, {mode}")
            ax.legend(fontsize=8)
    fig.suptitle(f"{rows[0]['machine']} | {rows[0]['versions']}", fontsize=9)
    fig.tight_layout()
    out = args.out or args.csv.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
