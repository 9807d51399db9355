"""`python -m tha.train.curve SOURCE OUT.png [TITLE]`: held-out PSNR against wall-clock minutes,
one line per stage. SOURCE is a run's PREFIX (its snapshot.pt) or a saved `tha distill` log
(its "held-out PSNR ... at M min" lines: what comes back from a remote GPU)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from tha.train.snapshot import load_snapshot

LOG_LINE = re.compile(r"(face|body) morpher: (\d+) examples, held-out PSNR ([\d.]+) dB at ([\d.]+) min")


def points_from_snapshot(prefix: Path) -> dict[str, list[tuple[float, float]]]:
    snapshot = load_snapshot(prefix)
    if snapshot is None:
        raise SystemExit(f"error: no snapshot.pt in {prefix}")
    return {stage: [(p[2] / 60, p[1]) for p in snapshot["psnr"].get(stage, []) if len(p) > 2]
            for stage in ("face", "body")}


def points_from_log(text: str) -> dict[str, list[tuple[float, float]]]:
    points: dict[str, list[tuple[float, float]]] = {"face": [], "body": []}
    for stage, _, db, minutes in LOG_LINE.findall(text.replace("\r", "\n")):
        points[stage].append((float(minutes), float(db)))
    return points


def plot_curve(points: dict[str, list[tuple[float, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for stage, xy in points.items():
        if xy:
            ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", label=f"{stage} stage (whole student for body)"
                    if stage == "body" else f"{stage} stage (face patch)")
            ax.annotate(f"{xy[-1][1]:.2f} dB", xy[-1], textcoords="offset points", xytext=(-40, 6))
    ax.set_xlabel("minutes since the run started (wall clock, held-out samples included)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)


def main(argv: list[str]) -> None:
    source, out = Path(argv[0]), Path(argv[1])
    points = points_from_snapshot(source) if source.is_dir() else points_from_log(source.read_text(errors="replace"))
    plot_curve(points, out, argv[2] if len(argv) > 2 else str(source))


if __name__ == "__main__":
    main(sys.argv[1:])
