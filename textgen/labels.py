"""Label groups of a conditioned model, and the `--label` specs that choose them at generation.

A conditioned model is trained on text whose documents carry labels (textgen.data.labels
reads them): one or more groups, such as `author` and `genre`, each with its own labels.
Every group's first label is `any`, the label of text that has none in that group, so a
conditioned model also writes without being told a label. The groups live in the model
card as `[{"name": "author", "labels": ["any", "austen", ...]}, ...]`.

At generation each row gets a weight per label of every group (a group's weights sum to
1): one label is weight 1, a blend `austen:0.7,melville:0.3` mixes the labels' learned
vectors, and a group left out is `any`. `LabelSpace.mix` turns specs into those weights,
flat in the order of `LabelSpace.flat` (the rows of the model's label embedding).

Pure Python, no TensorFlow: the command line checks specs before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from textgen.errors import UsageError

ANY = "any"
DEFAULT_GROUP = "label"


@dataclass(frozen=True)
class LabelGroup:
    name: str
    labels: tuple[str, ...]  # labels[0] is ANY

    def __post_init__(self):
        if not self.labels or self.labels[0] != ANY:
            raise ValueError(f"label group {self.name!r} must start with {ANY!r}, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"label group {self.name!r} names a label twice: {self.labels!r}")


@dataclass(frozen=True)
class LabelSpace:
    groups: tuple[LabelGroup, ...]

    @classmethod
    def from_card(cls, entries) -> "LabelSpace | None":
        """The space a model card's `labels` entry describes; None for an unconditioned model."""
        if not entries:
            return None
        return cls(tuple(LabelGroup(entry["name"], tuple(entry["labels"])) for entry in entries))

    def to_card(self) -> list[dict]:
        return [{"name": group.name, "labels": list(group.labels)} for group in self.groups]

    @property
    def size(self) -> int:
        """Labels of every group together: the rows of the label embedding."""
        return sum(len(group.labels) for group in self.groups)

    def offsets(self) -> list[int]:
        """Where each group's labels start among all labels."""
        out, start = [], 0
        for group in self.groups:
            out.append(start)
            start += len(group.labels)
        return out

    def describe(self) -> str:
        """One line per group, for `textgen info`: "author: austen, melville (and any)"."""
        return "\n".join(f"{group.name}: {', '.join(group.labels[1:])} (and {ANY})" for group in self.groups)

    def mix(self, specs: tuple[str, ...] | list[str], num_samples: int) -> tuple[list[list[float]], int]:
        """(one flat weight row per sample, num_samples) for `--label` specs (see `parse_specs`)."""
        per_group = self.parse_specs(specs)
        rows = max((len(found) for found in per_group.values()), default=1)
        if rows > 1 and num_samples not in (1, rows):
            raise UsageError(f"{rows} labels were given for one group, one per sample, but --num-samples is "
                             f"{num_samples}; give as many samples as labels, or one label per group")
        rows = max(rows, num_samples)
        out = []
        for row in range(rows):
            weights = []
            for group in self.groups:
                found = per_group.get(group.name)
                chosen = found[row % len(found)] if found else {ANY: 1.0}
                weights += [chosen.get(label, 0.0) for label in group.labels]
            out.append(weights)
        return out, rows

    def parse_specs(self, specs) -> dict[str, list[dict[str, float]]]:
        """Each group's blends, in the order given: {group: [{label: weight}, ...]}.

        A spec is `NAME`, `GROUP=NAME`, or a blend `NAME:W,NAME:W` (with or without
        `GROUP=`); weights are positive and scaled to sum to 1. A bare name is looked up
        in every group and must belong to exactly one.
        """
        out: dict[str, list[dict[str, float]]] = {}
        for spec in specs:
            group, blend = self._parse_one(spec)
            out.setdefault(group.name, []).append(blend)
        return out

    def _parse_one(self, spec: str) -> tuple[LabelGroup, dict[str, float]]:
        text = spec.strip()
        group = None
        if "=" in text:
            name, text = (part.strip() for part in text.split("=", 1))
            group = next((g for g in self.groups if g.name == name), None)
            if group is None:
                raise UsageError(f"label group {name!r} is not one of this model's: "
                                 f"{', '.join(g.name for g in self.groups)}")
        parts = [part.strip() for part in text.split(",")]
        if not text or not all(parts):
            raise UsageError(f"--label {spec!r} names no label; give NAME, GROUP=NAME or NAME:WEIGHT,NAME:WEIGHT")
        blend: dict[str, float] = {}
        for part in parts:
            name, _, weight_text = part.partition(":")
            name = name.strip()
            weight = _weight(weight_text, spec) if weight_text else 1.0
            group = group or self._group_of(name)
            if name not in group.labels:
                raise UsageError(f"unknown label {name!r} in group {group.name}; "
                                 f"valid: {', '.join(group.labels)}")
            blend[name] = blend.get(name, 0.0) + weight
        total = sum(blend.values())
        return group, {name: weight / total for name, weight in blend.items()}

    def _group_of(self, name: str) -> LabelGroup:
        holding = [group for group in self.groups if name in group.labels and name != ANY]
        if len(holding) == 1:
            return holding[0]
        if name == ANY and len(self.groups) == 1:
            return self.groups[0]
        if not holding and name != ANY:
            valid = "; ".join(f"{g.name}: {', '.join(g.labels)}" for g in self.groups)
            raise UsageError(f"unknown label {name!r}; valid labels are {valid}")
        raise UsageError(f"label {name!r} belongs to several groups ({', '.join(g.name for g in self.groups)}); "
                         f"write GROUP={name}")


def labels_problem(entries) -> str | None:
    """What is wrong with a model card's `labels` entry, or None (checked when a file loads)."""
    if not isinstance(entries, list) or not entries:
        return f"labels is {entries!r}, not a list of label groups"
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("labels"), list) or not all(isinstance(x, str) for x in entry["labels"]):
            return f"labels holds {entry!r}, not a group {{\"name\": ..., \"labels\": [...]}}"
        try:
            LabelGroup(entry["name"], tuple(entry["labels"]))
        except ValueError as exc:
            return f"labels: {exc}"
    return None


def _weight(text: str, spec: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise UsageError(f"--label {spec!r}: the weight {text!r} is not a number") from None
    if not weight > 0 or weight == float("inf"):
        raise UsageError(f"--label {spec!r}: a blend weight must be a positive number, got {text}")
    return weight
