"""Plot a benchmark CSV (the harness's fixed schema) as one bar chart per (op, dtype).

    python benchmarks/plot.py benchmarks/results/kd_loss.csv -o benchmarks/results/kd_loss.png

Needs matplotlib (pip install matplotlib); nothing else in edgegen imports it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("p50_ms")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", type=Path)
    ap.add_argument("-o", "--out", type=Path, help="PNG path (default: beside the CSV)")
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    rows = load(args.csv)
    if not rows:
        print(f"{args.csv}: no timed rows", file=sys.stderr)
        return 1
    groups = defaultdict(list)
    for r in rows:
        groups[(r["op"], r["dtype"])].append(r)
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    for (op, dtype), (ax_t, ax_m) in zip(groups, axes):
        rs = groups[(op, dtype)]
        shapes = list(dict.fromkeys(r["shape"] for r in rs))
        providers = list(dict.fromkeys(r["provider"] for r in rs))
        width = 0.8 / len(providers)
        for k, prov in enumerate(providers):
            by_shape = {r["shape"]: r for r in rs if r["provider"] == prov}
            xs = [i + k * width for i in range(len(shapes))]
            ax_t.bar(xs, [float(by_shape[s]["p50_ms"]) if s in by_shape else 0 for s in shapes],
                     width, label=prov)
            ax_m.bar(xs, [float(by_shape[s]["peak_mb"] or 0) if s in by_shape else 0 for s in shapes],
                     width, label=prov)
        for ax, label in ((ax_t, "median time, ms (log)"), (ax_m, "peak extra memory, MB (log)")):
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
            ax.set_xticklabels([s.split(" Hs=")[0] for s in shapes], fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            ax.set_title(f"{op}, {dtype}, {rs[0]['mode']}")
            ax.legend(fontsize=8)
    fig.suptitle(f"{rows[0]['machine']} | {rows[0]['versions']}", fontsize=9)
    fig.tight_layout()
    out = args.out or args.csv.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
