"""textgen from Python, as docs/python.md shows it: train, resume, generate and evaluate with
the same config objects the command line builds."""

from __future__ import annotations

import math


import textgen
from textgen.evaluation.evaluate import evaluate_file
from textgen.training.fit import TrainResult

from conftest import tiny_overrides

STEPS = 5


def test_train_resume_generate_and_evaluate_from_python(small_corpus, tmp_path, capsys):
    overrides = tiny_overrides(small_corpus, tmp_path / "run", **{"training.epochs": 1,
                                                                   "training.steps_per_epoch": STEPS})
    config = textgen.load_config(None, overrides)  # the package's own names, as docs/python.md uses them
    result = textgen.train(config, echo=None, verbose=0, progress=None)
    assert capsys.readouterr().out == ""  # echo=None, verbose=0: nothing printed

    assert isinstance(result, TrainResult)
    assert result.run_dir == tmp_path / "run" and result.model_path == result.run_dir / "model.keras"
    assert result.model_path.is_file()
    assert [row["epoch"] for row in result.history] == [1]
    assert (result.stopped, result.global_step, result.best_epoch) == ("completed", STEPS, 1)
    assert result.final_loss == result.history[0]["loss"]
    assert result.final_val_loss == result.best_loss == result.history[0]["val_loss"]

    more = textgen.load_config(None, [*overrides, "training.epochs=2"])
    lines: list[str] = []
    resumed = textgen.train(more, resume=True, echo=lines.append, verbose=0, progress=None)
    assert any(line.startswith("resuming ") for line in lines)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[0] == result.history[0]  # the first session's epoch, as it was recorded
    assert resumed.global_step == 2 * STEPS
    assert resumed.best_loss == min(row["val_loss"] for row in resumed.history)

    generator = textgen.load(resumed.model_path)
    first, second = generator.generate("ROMEO:", length=30, temperature=0.8, num_samples=2, random_seed=3)
    assert len(first) == len(second) == 30 and first != second
    assert generator.generate("ROMEO:", length=30, temperature=0.8, num_samples=2, random_seed=3) == [first, second]
    assert generator.model_card["history"]["epochs"] == 2

    scores = evaluate_file(generator.model, small_corpus)
    assert scores.level == "char" and scores.tokens > 20_000
    assert math.isfinite(scores.loss) and math.isclose(scores.bits_per_char, scores.bits_per_token)
    assert scores.bits_per_char < math.log2(generator.tokenizer.vocab_size)  # better than guessing uniformly
