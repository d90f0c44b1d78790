"""Reproduce textgen's pretrained default model and install it as package data.

Trains configs/shakespeare-char.yaml into a run directory, then copies the run's model.keras
to textgen/pretrained/shakespeare-char.keras and prints the validation loss for the README.
The training is resumable: run the script again after Ctrl-C or a crash and it continues
from the last checkpoint; run it again after it finished and it only reinstalls the model.

Usage: python scripts/train_pretrained.py [--config configs/shakespeare-char.yaml]
                                          [--output runs/pretrained-shakespeare-char] [--overwrite]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import textgen  # noqa: E402  (its Keras objects are registered by the textgen.generation import below)
from textgen.training.checkpoint import has_checkpoint, read_state  # noqa: E402
from textgen.config import load_config  # noqa: E402
from textgen.errors import TextgenError  # noqa: E402
from textgen.generation.generate import load_keras_model  # noqa: E402
from textgen.models.layers import find_token_embedding  # noqa: E402
from textgen.pretrained import DEFAULT_MODEL  # noqa: E402
from textgen.training.train import MODEL_FILE, train  # noqa: E402

TARGET = ROOT / "textgen" / "pretrained" / DEFAULT_MODEL
MAX_MEGABYTES = 20  # package data must stay small


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "shakespeare-char.yaml"))
    parser.add_argument("--output", default=str(ROOT / "runs" / "pretrained-shakespeare-char"))
    parser.add_argument("--overwrite", action="store_true", help="train from scratch even if a run exists")
    args = parser.parse_args()

    os.chdir(ROOT)  # corpus paths in configs/ are relative to the repository
    config = load_config(args.config, [f"output.dir={args.output}"])
    run_dir = Path(config.output.dir)
    try:
        finished = has_checkpoint(run_dir) and read_state(run_dir).get("finished")
        if args.overwrite or not has_checkpoint(run_dir):
            train(config, overwrite=args.overwrite, echo=print, verbose=2)
        elif not finished:
            print(f"continuing the unfinished run in {run_dir}")
            train(config, resume=True, echo=print, verbose=2)
        else:
            print(f"{run_dir} already holds a finished run; installing it (pass --overwrite to retrain)")
        install(run_dir / MODEL_FILE)
    except TextgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def install(model_path: Path) -> None:
    card = find_token_embedding(load_keras_model(model_path)).model_card
    history = card.get("history", {})
    megabytes = model_path.stat().st_size / 1e6
    if megabytes > MAX_MEGABYTES:
        raise TextgenError(f"{model_path} is {megabytes:.1f} MB, more than the {MAX_MEGABYTES} MB allowed "
                           "for package data; use a smaller model")
    fd, tmp = tempfile.mkstemp(prefix=f".{TARGET.name}.", suffix=".tmp", dir=TARGET.parent)
    os.close(fd)
    try:
        shutil.copyfile(model_path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, TARGET)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    loss = history.get("best_loss")
    print(f"installed {TARGET} ({megabytes:.1f} MB)")
    if loss is not None:
        print(f"validation loss {loss:.4f} nats/char = {loss / math.log(2):.3f} bits/char at epoch "
              f"{history.get('best_epoch')} of {history.get('epochs')} ({history.get('seconds', 0) / 60:.0f} "
              "minutes of training)")


if __name__ == "__main__":
    sys.exit(main())
