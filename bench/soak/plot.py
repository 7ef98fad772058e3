"""Draws a soak's resource curves (``samples.csv`` of ``bench/soak/soak.py``) as one SVG.

    python bench/soak/plot.py target/soak/samples.csv docs/soak.svg

One panel per resource, one line per sampled process (the parent, the lane, their
forkservers), time in minutes on the x axis; the title carries the run's totals from the
``summary.json`` beside the CSV, when there is one.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: draw to a file
import matplotlib.pyplot as plt

PANELS = [
    ("fds", "open file descriptors"),
    ("threads", "threads"),
    ("children", "child processes"),
    ("maps", "memory mappings"),
    ("memfd_fds", "shared-memory segments open (memfd fds)"),
    ("rss_kb", "resident memory (MiB)"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path)
    p.add_argument("svg", type=Path)
    args = p.parse_args()
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with args.csv.open() as f:
        for row in csv.DictReader(f):
            s = series[row["proc"]]
            s["t"].append(float(row["t"]) / 60)
            for field, _ in PANELS:
                v = float(row[field])
                s[field].append(v / 1024 if field == "rss_kb" else v)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 2.1 * len(PANELS)), sharex=True)
    for ax, (field, label) in zip(axes, PANELS, strict=True):
        for proc in sorted(series):
            s = series[proc]
            ax.plot(s["t"], s[field], label=proc, linewidth=1, drawstyle="steps-post")
        ax.set_ylabel(label, fontsize=8)
        top = max((max(series[p][field]) for p in series), default=0.0)
        ax.set_ylim(0, max(1.0, top * 1.15))  # from zero: a leak shows as a slope
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=4, loc="lower right")
    axes[-1].set_xlabel("minutes")
    summary = args.csv.with_name("summary.json")
    title = "ferrocsp soak: resource counts between rounds"
    if summary.exists():
        s = json.loads(summary.read_text())
        v = s["values"]
        title += (
            f"\n{s['date']}, {s['duration_s'] / 60:.0f} min, {s['rounds']} rounds, "
            f"{v['committed']} values, {s['kills']} SIGKILLs, {s['ctrl_c']} Ctrl-Cs"
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.svg, format="svg", metadata={"Date": None})
    print(f"wrote {args.svg}")
    if summary.exists():
        print_table(json.loads(summary.read_text()))


def print_table(s: dict[str, object]) -> None:
    """The curves' values after the warm-up and at the end, as a Markdown table (docs/soak.md)."""
    curves = s["curves"]
    assert isinstance(curves, dict)
    print("\n| process | resource | after warm-up | last | max | flat |")
    print("|---|---|---:|---:|---:|---|")
    for key, c in curves.items():
        proc, field = key.rsplit(".", 1)
        print(
            f"| {proc} | {field} | {c['after_warmup']:g} | {c['last']:g} | {c['max']:g} "
            f"| {'yes' if c['flat'] else 'NO'} |"
        )


if __name__ == "__main__":
    main()
