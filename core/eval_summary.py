"""The evaluation's summary: per judge and method, the mean score, the paired difference to normal, the
prompts won, the attribute accuracies and the pixel checks; as numbers, as a markdown table, as table rows.

A row is one image: {"prompt", "seed", "method", "pixel": bool | None, "file",
"judges": {judge name: {"score": float, "colour": bool | None, "shape": ..., "position": ..., "relation": ...}}}
(an attribute None: the prompt does not state it).

- d: the mean over (prompt, seed) pairs of the method's score minus normal's on the same start, with its
  standard error (sample standard deviation / sqrt(pairs));
- wins over normal: the share of prompts whose mean score over the seeds beats normal's;
- an attribute's accuracy: the share of the images whose prompt states it that the judge got right; a prompt
  is got right when more than half of its images are;
- by named value (`by_value`, `by_value_markdown`): the same accuracy split by what a one-object prompt names
  ("circle", "red", "left"), so a weak shape or place shows itself; two-object prompts state two values of an
  attribute at once and are counted apart, under TWO_OBJECTS.
"""
from __future__ import annotations

import math

from core.scene_prompts import parse_scene_prompt
from core.scenes import COLOURS, POSITIONS, SHAPES

ATTRIBUTES = ("colour", "shape", "position", "relation")
VALUE_ATTRIBUTES = ("colour", "shape", "position")  # what one object of a prompt names
TWO_OBJECTS = "(two objects)"


LEGEND = ("d: mean score difference to normal over (prompt, seed) pairs, ± standard error; colour, shape, "
          "position, relation: images whose stated attribute the judge picks over captions differing in it "
          "(prompts with most of their images right / prompts stating it)")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def paired_difference(rows: list[dict], method: str, judge: str) -> tuple[float, float | None, int] | None:
    """(d, its standard error or None for a single pair, pairs): `method` minus normal over shared starts."""
    normal = {(row["prompt"], row["seed"]): row["judges"][judge]["score"] for row in rows if row["method"] == "normal"}
    differences = [row["judges"][judge]["score"] - normal[(row["prompt"], row["seed"])] for row in rows
                   if row["method"] == method and (row["prompt"], row["seed"]) in normal]
    if not differences:
        return None
    mean = _mean(differences)
    if len(differences) < 2:
        return mean, None, 1
    variance = sum((value - mean) ** 2 for value in differences) / (len(differences) - 1)
    return mean, math.sqrt(variance / len(differences)), len(differences)


def _prompt_means(rows: list[dict], method: str, judge: str) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for row in rows:
        if row["method"] == method:
            scores.setdefault(row["prompt"], []).append(row["judges"][judge]["score"])
    return {prompt: _mean(values) for prompt, values in scores.items()}


def attribute_accuracy(rows: list[dict], method: str, judge: str, attribute: str) -> dict | None:
    """{"accuracy": share of images right, "prompts_right": prompts with most images right, "prompts": prompts
    stating the attribute} for one method, judge and attribute; None when no prompt states it."""
    by_prompt: dict[str, list[bool]] = {}
    for row in rows:
        right = row["judges"][judge].get(attribute)
        if row["method"] == method and right is not None:
            by_prompt.setdefault(row["prompt"], []).append(bool(right))
    if not by_prompt:
        return None
    images = [right for values in by_prompt.values() for right in values]
    return {"accuracy": sum(images) / len(images), "prompts": len(by_prompt),
            "prompts_right": sum(sum(values) * 2 > len(values) for values in by_prompt.values())}


def summarise(rows: list[dict], methods: list[str], judges: list[str]) -> list[dict]:
    """One entry per judge and method: judge, method, judge_mean, prompts, pixel_pass_rate; against normal
    (None for normal itself) d, d_se, prompts_won of prompts_compared, win_rate; and per attribute that some
    prompt states, `<attribute>`: attribute_accuracy's dict."""
    summary = []
    for judge in judges:
        for method in methods:
            scores = [row["judges"][judge]["score"] for row in rows if row["method"] == method]
            checks = [row["pixel"] for row in rows if row["method"] == method and row["pixel"] is not None]
            entry = {"judge": judge, "method": method, "judge_mean": _mean(scores),
                     "prompts": len(_prompt_means(rows, method, judge)),
                     "pixel_pass_rate": (sum(checks) / len(checks)) if checks else None,
                     **_against_normal(rows, method, judge)}
            for attribute in ATTRIBUTES:
                accuracy = attribute_accuracy(rows, method, judge, attribute)
                if accuracy is not None:
                    entry[attribute] = accuracy
            summary.append(entry)
    return summary


def _against_normal(rows: list[dict], method: str, judge: str) -> dict:
    """d, d_se, prompts_won, prompts_compared and win_rate of `method` against normal (None without normal)."""
    found = dict.fromkeys(("d", "d_se", "prompts_won", "prompts_compared", "win_rate"))
    normal = _prompt_means(rows, "normal", judge)
    if method == "normal" or not normal:
        return found
    difference = paired_difference(rows, method, judge)
    if difference is not None:
        found["d"], found["d_se"] = difference[0], difference[1]
    means = _prompt_means(rows, method, judge)
    shared = [prompt for prompt in means if prompt in normal]
    if shared:
        found["prompts_won"] = sum(means[prompt] > normal[prompt] for prompt in shared)
        found["prompts_compared"] = len(shared)
        found["win_rate"] = found["prompts_won"] / len(shared)
    return found


def table_rows(summary: list[dict], judge: str | None = None) -> list[dict[str, str]]:
    """The summary as table rows of text, header -> cell (of one judge, or of all with a judge column)."""
    attributes = [attribute for attribute in ATTRIBUTES if any(attribute in entry for entry in summary)]
    rows = []
    for entry in summary:
        if judge is not None and entry["judge"] != judge:
            continue
        row = {} if judge is not None else {"judge": entry["judge"]}
        row["method"] = entry["method"]
        row["mean judge score"] = f"{entry['judge_mean']:.2f}"
        row["d vs normal (± SE)"] = _difference_text(entry["d"], entry["d_se"])
        row["wins over normal (prompts)"] = ("—" if entry["win_rate"] is None else
                                             f"{_percent(entry['win_rate'])} ({entry['prompts_won']}/"
                                             f"{entry['prompts_compared']})")
        for attribute in attributes:
            row[attribute] = _accuracy_text(entry.get(attribute))
        row["pixel checks passed"] = "—" if entry["pixel_pass_rate"] is None else _percent(entry["pixel_pass_rate"])
        rows.append(row)
    return rows


def _percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def _difference_text(d: float | None, se: float | None) -> str:
    if d is None:
        return "—"
    return f"{d:+.2f}" + ("" if se is None else f" ± {se:.2f}")


def _accuracy_text(accuracy: dict | None) -> str:
    """'85 % (17/20)': the share of images right, and prompts got right of those stating the attribute."""
    if accuracy is None:
        return "—"
    return f"{_percent(accuracy['accuracy'])} ({accuracy['prompts_right']}/{accuracy['prompts']})"


def markdown(summary: list[dict]) -> str:
    """A markdown table per judge (the one the README pastes), each under the judge's name."""
    judges = list(dict.fromkeys(entry["judge"] for entry in summary))
    parts = []
    for judge in judges:
        rows = table_rows(summary, judge)
        headers = list(rows[0])
        lines = [f"judge: {judge}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row[header] for header in headers) + " |" for row in rows]
        parts.append("\n".join(lines))
    parts.append(LEGEND)
    return "\n\n".join(parts)


def by_value(rows: list[dict], method: str, judge: str, attribute: str) -> dict[str, tuple[int, int]]:
    """{named value: (images right, images)} of one method, judge and attribute, in the vocabulary's order:
    one-object prompts by the value they name, then two-object prompts together under TWO_OBJECTS."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        right = row["judges"][judge].get(attribute)
        scene = parse_scene_prompt(row["prompt"])
        if row["method"] != method or right is None or scene is None:
            continue
        value = getattr(scene.objects[0], attribute) if len(scene.objects) == 1 else TWO_OBJECTS
        count = counts.setdefault(value, [0, 0])
        count[0] += bool(right)
        count[1] += 1
    order = [*{"colour": COLOURS, "shape": SHAPES, "position": POSITIONS}[attribute], TWO_OBJECTS]
    return {value: tuple(counts[value]) for value in sorted(counts, key=order.index)}


def by_value_markdown(rows: list[dict], methods: list[str], judges: list[str]) -> str:
    """A markdown table per judge: per attribute and named value, the images and each method's accuracy on them."""
    parts = []
    for judge in judges:
        lines = [f"judge: {judge}", "", "| attribute | named | images | " + " | ".join(methods) + " |",
                 "|" + "---|" * (3 + len(methods))]
        for attribute in VALUE_ATTRIBUTES:
            tables = [by_value(rows, method, judge, attribute) for method in methods]
            for value in dict.fromkeys(value for table in tables for value in table):
                images = max(table.get(value, (0, 0))[1] for table in tables)
                cells = [_percent(table[value][0] / table[value][1]) if value in table else "—" for table in tables]
                lines.append(f"| {attribute} | {value} | {images} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    parts.append("Images whose stated attribute the judge picks over captions differing in it, by what a "
                 f"one-object prompt names; {TWO_OBJECTS}: prompts naming two objects.")
    return "\n\n".join(parts)
