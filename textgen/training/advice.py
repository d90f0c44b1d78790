"""What training tells a user to do next, each piece of advice worded in one place.

Training's errors and notices end with how to go on: start again, resume, train elsewhere,
or change a setting. The modules that detect a problem (the run directory, the checkpoint,
resuming, the fit loop) say what is wrong and take the way forward from here, so one
situation is always answered with the same words.
"""

from __future__ import annotations

START_AGAIN = "start again with --overwrite"
RESUME = "add --resume to the same command to continue"
START_OVER = "run the same command again to start over"
SAME_CORPUS = "resume with the same files or start again with --overwrite"
OTHER_OUTPUT = "choose another with --output"
TRAIN_ELSEWHERE = "--output to train into another directory"


def interrupted(what: str, resumable: bool) -> str:
    """`what` training kept when a signal stopped it, then how to go on."""
    return f"{what}; {RESUME if resumable else START_OVER}"


def start_again_or_resume(resumable: bool) -> str:
    return f"{START_AGAIN}, or continue from the last checkpoint with --resume" if resumable else START_AGAIN


def steadier_training(training) -> str:
    """What to change when the loss diverged: the learning rate, or gradient clipping."""
    lr = training.learning_rate
    clip = (f"lower training.clipnorm (now {training.clipnorm:g})" if training.clipnorm
            else "set training.clipnorm (e.g. 1.0)")
    return f"lower training.learning_rate (now {lr:g}, try {lr / 4:g}) or {clip}"


def budget_spent(where: str, kept: str, minutes: float) -> str:
    return (f"stopped at {where} after the {minutes:g}-minute budget (training.max_minutes); {kept}; add --resume "
            "to continue (the budget starts again; change it with --set training.max_minutes=...)")
