"""Training curves: RUN_DIR/history.csv -> RUN_DIR/loss.png (needs matplotlib: textgen[plot])."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from textgen.errors import TextgenError, UsageError
from textgen.files import write_file_atomic

HISTORY_FILE = "history.csv"
PLOT_FILE = "loss.png"


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def read_history(run_dir: str | Path) -> list[dict]:
    """history.csv as a list of rows with numbers parsed (empty cells become None)."""
    path = Path(run_dir) / HISTORY_FILE
    if Path(run_dir).is_file():
        raise UsageError(f"{run_dir} is a file; give the run directory that holds {HISTORY_FILE}")
    if not path.exists():
        raise UsageError(f"{run_dir} has no {HISTORY_FILE}; give a run directory written by `textgen train` "
                         "after at least one epoch")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    if not rows:
        raise TextgenError(f"{path} holds no epochs yet")
    missing = [column for column in ("epoch", "loss") if column not in rows[0]]
    numbers = all(isinstance(row.get(column), (int, float)) for row in rows for column in ("epoch", "loss"))
    if missing or not numbers:
        what = f"has no {' or '.join(missing)} column" if missing else "has an epoch or loss that is not a number"
        raise TextgenError(f"{path} {what}; it is not a history written by `textgen train`")
    return rows


def plot_history(run_dir: str | Path) -> Path:
    """Draw training and validation loss per epoch, mark the best epoch, write loss.png atomically."""
    rows = read_history(run_dir)  # a wrong directory is reported before a missing extra
    if not matplotlib_available():
        raise TextgenError("plotting needs matplotlib; install it with pip install 'textgen[plot]'")
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure  # a Figure of its own: no pyplot global state

    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    axes.plot(epochs, [r["loss"] for r in rows], marker="o", label="training loss")
    if any(r.get("val_loss") is not None for r in rows):
        axes.plot(epochs, [r.get("val_loss") for r in rows], marker="o", label="validation loss")
    best = [r for r in rows if r.get("best") == 1]
    if best:
        value = best[0].get("val_loss") if best[0].get("val_loss") is not None else best[0]["loss"]
        axes.axvline(best[0]["epoch"], color="grey", linestyle=":", label=f"best: epoch {best[0]['epoch']}")
        axes.annotate(f"{value:.4f}", (best[0]["epoch"], value), textcoords="offset points", xytext=(4, 6))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(f"{Path(run_dir).resolve().name}: {len(rows)} epoch{'s' if len(rows) != 1 else ''}")
    axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(run_dir) / PLOT_FILE
    write_file_atomic(path, lambda tmp: figure.savefig(tmp, format="png"), suffix=".tmp.png")
    return path


def _number(text: str | None):
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value
