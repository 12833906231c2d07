"""The classifier judge: a small convnet (not a CLIP) that names an image's object, for evaluation only.

It was trained on scenes of the second renderer (core/other_scenes.py), never on core/scenes.py, so it
does not share the drawn world of the guide. It never guides, never scores a bake and never chooses a
default; evaluate.py asks it what an image shows.

Five heads, each with a "none" class (no object: a blank background, noise, an empty half):
    colour:          red orange yellow green cyan blue purple pink none
    shape:           circle square triangle star cross diamond hexagon none
    position:        left right top bottom center none
    colour_shape:    'red circle', 'red square', ... (which colour goes with which shape), none
    colour_position: 'red left', 'red right', ... (where each colour is), none
With several things in an image the judge spreads each head over them (it learnt that from scenes of two
objects and from clutter), so the joint heads tell where the red thing is even when a blue one is elsewhere.

    judge = load_classifier_judge("scenes-classifier")
    judge.probabilities(images)                               # {"colour": [N, 9], "shape": [N, 8], ...}
    judge.score(images, "a red circle on the left")           # [N]: mean probability of what the prompt states
    judge.choose(images, "a red circle on the left", "position")  # [N] bool

Images are [N, 3, H, W] in [0, 1], any size (resized to the model's 48 px square). Prompts are scene prompts
(core.scene_prompts); a prompt may be one string for every image or a list of one per image.

The colour names the object; its shape and position are those of the thing of that colour.
One object ("a red circle", "a red circle on the left"): the heads read the whole image. score = the mean of
P(colour = red), P(colour_shape = red circle) and, when the prompt has a position, P(colour_position = red
left). choose(colour) is True when red is the colour head's most probable class (above the other colours and
above "none": an image showing nothing is never right); choose(shape) and choose(position) when red holds at
least PRESENT of the colour head and, in the joint head's red row, the prompt's shape (position) is the most
probable. So a red blob on the right never makes "on the left" right, whatever else is on the left.

Two objects in a relation ("a red circle to the left of a blue square"): each object is looked for in its
own half. The other half is painted over with the image's median colour and the heads read what is left, so
nothing outside the half can count; the judge learnt such half-images. score = the mean of P(colour) and
P(colour_shape) of each object in its half. choose(colour/shape) needs both objects right in their halves.
choose(relation) is True when the stated arrangement is more probable than the swapped one by what tells
the objects apart, their colours: P(red | left half) x P(blue | right half) > P(red | right half) x P(blue |
left half) (with one colour for both: the colour_shape head, 'red circle' and 'red square'), and neither
half is judged empty (P(colour = none) < EMPTY_LIMIT). Shapes of generated images are often no shape at all;
letting their noise into the relation would flip it by chance. Whether the shapes are right is
choose(shape)'s question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from core.errors import UserError
from core.files import write_atomically
from core.scene_prompts import PromptObject, ScenePrompt, attributes, parse_scene_prompt
from core.scenes import COLOURS, POSITIONS, SHAPES

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED = {"scenes-classifier": MODELS_DIR / "scenes-classifier.pt"}
FORMAT = 1

NONE = "none"
VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "position": tuple(POSITIONS)}
HEADS: dict[str, tuple[str, ...]] = {
    "colour": (*COLOURS, NONE),
    "shape": (*SHAPES, NONE),
    "position": (*POSITIONS, NONE),
    # joint heads: which colour goes with which shape, and where each colour is
    "colour_shape": (*(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES), NONE),
    "colour_position": (*(f"{colour} {position}" for colour in COLOURS for position in POSITIONS), NONE),
}
DEFAULT_ARCH = {"widths": [24, 32, 64, 128], "hidden": 256, "resolution": 48}
HALVES = ("left", "right", "top", "bottom")
EMPTY_LIMIT = 0.5  # a half whose P(colour = none) reaches this is judged empty
PRESENT = 0.1  # the share of the colour head a colour needs before its thing's shape or position is judged


class SceneClassifier(nn.Module):
    """Conv stages (3x3 conv, batch norm, ReLU; each stage halves the side), a hidden layer and three heads.

    The last feature map is flattened, not pooled, so the heads know where things are.
    """

    def __init__(self, widths: list[int], hidden: int, resolution: int):
        super().__init__()
        layers, previous = [], 3
        for stage, width in enumerate(widths):
            layers += _conv(previous, width, stride=1 if stage == 0 else 2) + _conv(width, width)
            previous = width
        self.features = nn.Sequential(*layers)
        side = resolution // 2 ** (len(widths) - 1)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, hidden), nn.ReLU(), nn.Dropout(0.2))
        self.heads = nn.ModuleDict({head: nn.Linear(hidden, len(classes)) for head, classes in HEADS.items()})
        self.resolution = resolution

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head for images [N, 3, resolution, resolution] in [0, 1]."""
        hidden = self.hidden(self.features((images - 0.5) / 0.25))
        return {head: layer(hidden) for head, layer in self.heads.items()}


def _conv(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images [N, 3, H, W] as float [N, 3, resolution, resolution] in [0, 1] (area-filtered when shrinking)."""
    images = images.float().clamp(0, 1)
    if images.shape[-2:] != (resolution, resolution):
        images = nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear",
                                           antialias=True, align_corners=False)
    return images


def keep_half(images: torch.Tensor, half: str) -> torch.Tensor:
    """A copy of images [N, 3, H, W] with everything outside `half` painted the image's median colour."""
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}; use one of {HALVES}")
    height, width = images.shape[-2:]
    fill = images.flatten(2).median(dim=2).values[:, :, None, None]
    kept = images.clone()
    if half == "left":
        kept[..., :, width // 2:] = fill
    elif half == "right":
        kept[..., :, : width - width // 2] = fill
    elif half == "top":
        kept[..., height // 2:, :] = fill
    else:
        kept[..., : height - height // 2, :] = fill
    return kept


@dataclass
class ClassifierJudge:
    """A loaded classifier judge: the network, its per-head temperatures and how it was trained."""

    model: SceneClassifier
    temperatures: dict[str, float] = field(default_factory=lambda: {head: 1.0 for head in HEADS})
    training: dict = field(default_factory=dict)
    name: str = "scenes-classifier"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, half: str | None = None) -> dict[str, torch.Tensor]:
        """Calibrated class probabilities per head, each [N, classes] (order: HEADS); of one `half` if given."""
        self.model.eval()
        images = resize(images.to(self.device), self.model.resolution)
        if half is not None:
            images = keep_half(images, half)
        logits = self.model(images)
        return {head: torch.softmax(logits[head].float() / self.temperatures[head], dim=-1).cpu() for head in HEADS}

    def score(self, images: torch.Tensor, prompts: str | list[str]) -> torch.Tensor:
        """[N] in [0, 1]: the mean probability of the attributes each image's scene prompt states (see above)."""
        parsed = self.parse(prompts, len(images))
        looks = self._looks(images, parsed)
        scores = []
        for prompt, objects in zip(parsed, looks):
            parts = [evidence(look, obj, attribute) for obj, look in objects
                     for attribute in attributes(prompt) if attribute != "relation"]
            scores.append(sum(parts) / len(parts))
        return torch.tensor(scores)

    def choose(self, images: torch.Tensor, prompts: str | list[str], attribute: str) -> torch.Tensor:
        """[N] bool: whether the judge picks each prompt's value of `attribute` (colour, shape, position,
        relation) over the values that differ in that attribute only, and over "nothing there"."""
        parsed = self.parse(prompts, len(images))
        for prompt in parsed:
            if attribute not in attributes(prompt):
                raise ValueError(f"{prompt.text()!r} does not state a {attribute}")
        chosen = []
        for objects in self._looks(images, parsed):
            if attribute == "relation":
                chosen.append(_relation_holds(objects))
            else:
                chosen.append(all(picks(look, obj, attribute) for obj, look in objects))
        return torch.tensor(chosen, dtype=torch.bool)

    def parse(self, prompts: str | list[str], count: int) -> list[ScenePrompt]:
        """One parsed scene prompt per image; a prompt that is not a scene prompt is a UserError."""
        prompts = [prompts] * count if isinstance(prompts, str) else list(prompts)
        if len(prompts) != count:
            raise ValueError(f"{len(prompts)} prompts for {count} images")
        parsed = [parse_scene_prompt(prompt) for prompt in prompts]
        for prompt, result in zip(prompts, parsed):
            if result is None:
                raise UserError(f"the classifier judge only judges scene prompts ('a red circle on the left', "
                                f"'a red circle above a blue square'), not {prompt!r}")
        return parsed

    def _looks(self, images: torch.Tensor, parsed: list[ScenePrompt]) -> list[list[tuple[PromptObject, dict]]]:
        """Per image, each object of its prompt with the probabilities of where it is looked for: the whole
        image, or for a relation prompt the object's half."""
        halves = sorted({obj.position for prompt in parsed if prompt.relation for obj in prompt.objects})
        views = {None: self.probabilities(images)} | {half: self.probabilities(images, half) for half in halves}
        return [[(obj, {head: values[index] for head, values in views[obj.position if prompt.relation else None].items()})
                 for obj in prompt.objects] for index, prompt in enumerate(parsed)]


def probability(look: dict[str, torch.Tensor], head: str, value: str) -> float:
    """The probability of one class (a joint head's class is 'red circle', 'red left') in one image's look."""
    return float(look[head][HEADS[head].index(value)])


def evidence(look: dict[str, torch.Tensor], obj: PromptObject, attribute: str) -> float:
    """The probability that the image shows the object's colour (colour), a thing of that colour with its
    shape (shape), a thing of that colour at its position (position)."""
    if attribute == "colour":
        return probability(look, "colour", obj.colour)
    return probability(look, f"colour_{attribute}", f"{obj.colour} {getattr(obj, attribute)}")


def picks(look: dict[str, torch.Tensor], obj: PromptObject, attribute: str) -> bool:
    """Whether the judge picks the object's value of `attribute` over every other value and over "none";
    the shape and position asked about are those of the thing of the object's colour, which must be there."""
    if attribute == "colour":
        return HEADS["colour"][int(look["colour"].argmax())] == obj.colour
    if probability(look, "colour", obj.colour) < PRESENT:
        return False
    values = VALUES[attribute]
    row = [probability(look, f"colour_{attribute}", f"{obj.colour} {value}") for value in values]
    return values[row.index(max(row))] == getattr(obj, attribute)


def _relation_holds(objects: list[tuple[PromptObject, dict]]) -> bool:
    """The stated arrangement beats the swapped one, and neither half looks empty (see the module text)."""
    (first, first_half), (second, second_half) = objects
    if any(probability(half, "colour", NONE) >= EMPTY_LIMIT for half in (first_half, second_half)):
        return False
    # What tells the two objects apart: their colours, or (same colour) which colour goes with which shape.
    telling = "colour" if first.colour != second.colour else "shape"

    def log_evidence(obj: PromptObject, half: dict) -> float:
        return math.log(evidence(half, obj, telling) + 1e-6)

    stated = log_evidence(first, first_half) + log_evidence(second, second_half)
    swapped = log_evidence(first, second_half) + log_evidence(second, first_half)
    return stated > swapped


# ----------------------------------------------------------------------------------------------- files


def save_classifier_judge(judge: ClassifierJudge, arch: dict, path: str | Path, overwrite: bool = False) -> Path:
    """Write the judge to `path` atomically (weights in float16); an existing file only with `overwrite`."""
    state = {name: tensor.detach().to("cpu", torch.float16 if tensor.is_floating_point() else tensor.dtype).clone()
             for name, tensor in judge.model.state_dict().items()}
    payload = {"format": FORMAT, "kind": "scenes-classifier", "arch": dict(arch),
               "classes": {head: list(classes) for head, classes in HEADS.items()},
               "temperatures": {head: float(value) for head, value in judge.temperatures.items()},
               "training": _plain(judge.training), "state_dict": state}
    if not all(torch.isfinite(tensor.float()).all() for tensor in state.values()):
        raise ValueError("refusing to save non-finite weights")
    try:
        return write_atomically(path, lambda handle: torch.save(payload, handle), replace=overwrite)
    except FileExistsError:
        raise UserError(f"{path} exists; pass --overwrite to replace it") from None


def is_classifier_judge(name_or_path: str | Path) -> bool:
    """Whether `--judge NAME` means a classifier judge: a shipped name, or a file saved by this module."""
    if str(name_or_path) in SHIPPED:
        return True
    path = Path(name_or_path)
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not readable as a torch file: whichever loader is tried next names the problem
        return False
    return isinstance(payload, dict) and payload.get("kind") == "scenes-classifier"


def _plain(value):
    """`value` with every leaf a plain number, string, bool or None (what weights_only loading accepts)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    return str(value)


def load_classifier_judge(name_or_path: str | Path = "scenes-classifier", device: str | torch.device = "cpu"
                          ) -> ClassifierJudge:
    """Load a shipped name (SHIPPED) or a file; a missing, damaged or foreign file is a one-line UserError."""
    path = Path(SHIPPED.get(str(name_or_path), name_or_path))
    if not path.is_file():
        raise UserError(f"no classifier judge at {path}: the file is missing")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways (pickle, zip, EOF, permission errors)
        raise UserError(f"cannot read the classifier judge {path}: damaged, truncated or not a torch file "
                        f"({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("kind") != "scenes-classifier":
        raise UserError(f"{path} is not a classifier judge file")
    if payload.get("classes") != {head: list(classes) for head, classes in HEADS.items()}:
        raise UserError(f"{path} was trained for another vocabulary of colours, shapes or positions")
    try:
        model = SceneClassifier(**payload["arch"])
        model.load_state_dict({name: tensor.float() if tensor.is_floating_point() else tensor
                               for name, tensor in payload["state_dict"].items()})
    except (KeyError, TypeError, RuntimeError) as error:
        raise UserError(f"{path}: the weights do not fit the classifier judge ({type(error).__name__})") from None
    model.eval().requires_grad_(False)
    name = next((shipped for shipped, file in SHIPPED.items() if file == path), path.stem)
    return ClassifierJudge(model.to(device), dict(payload["temperatures"]), dict(payload.get("training", {})), name)
