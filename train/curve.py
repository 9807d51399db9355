"""`python -m tha.train.curve SOURCE OUT.png [TITLE]`: held-out PSNR against wall-clock minutes,
one line per stage. SOURCE is a run's PREFIX (its snapshot.pt) or a saved `tha distill` log
(its "held-out PSNR ... at M min" lines: what comes back from a remote GPU)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from tha.models.errors import ThaError
from tha.models.files import atomic_path, check_png_output
from tha.train.snapshot import load_snapshot

LOG_LINE = re.compile(r"(face|body) morpher: (\d+) examples, held-out PSNR ([\d.]+) dB at ([\d.]+) min")


def points_from_snapshot(prefix: Path) -> dict[str, list[tuple[float, float]]]:
    snapshot = load_snapshot(prefix)
    if snapshot is None:
        raise ThaError(f"no snapshot.pt in {prefix}; give a run's prefix folder or a saved `tha distill` log")
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
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")


def read_points(source: Path) -> dict[str, list[tuple[float, float]]]:
    if source.is_dir():
        return points_from_snapshot(source)
    try:
        points = points_from_log(source.read_text(errors="replace"))
    except OSError as err:
        raise ThaError(f"cannot read {source} ({err.strerror}); give a run's prefix folder or a saved "
                       "`tha distill` log") from None
    if not any(points.values()):
        raise ThaError(f"{source} has no held-out PSNR lines; give a run's prefix folder or a saved `tha distill` log")
    return points


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tha.train.curve", description="Draw a distill run's held-out "
                                     "PSNR against wall-clock minutes, one line per stage.")
    parser.add_argument("source", type=Path, help="a run's PREFIX folder (its snapshot.pt) or a saved log")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("title", nargs="?", help="the chart's title (default: SOURCE)")
    args = parser.parse_args(argv)
    try:
        check_png_output(args.out, "OUT.png")
        plot_curve(read_points(args.source), args.out, args.title or str(args.source))
    except ThaError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
