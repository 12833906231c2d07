"""The shipped scenes CLIP: small `clip.model.CLIP`s trained on drawn scenes (core/scenes.py).

Five models ship in `models/`:
- `scenes`: the guide model (`--model scenes`);
- `scenes-shapes`: its partner in the shipped mix `scenes-mix` (`scenes+0.3*scenes-shapes`), trained to tell
  shapes apart, then gently adversarially;
- `scenes-judge`: a held-out judge with another architecture and another training seed. It never guides;
  it only scores, so an image that fools the guide does not automatically fool the judge;
- `scenes-judge-3`: the judge's architecture trained on a third renderer (core/third_scenes.py); it chooses defaults;
- `scenes-critic`: a smaller model that a bake may use to score candidate paths (`--critic`).

All take CLIP-normalised images (`core.models.normalise_images`) at `model.visual.input_resolution` pixels and text from
`clip.tokenize` (context length 77); all embed into 512 dimensions.

A file holds a dict (loadable with `torch.load(..., weights_only=True)`):
    arch: the `clip.model.CLIP` constructor arguments
    training: how it was trained (seed, steps, batch size, ...; plain numbers and strings)
    token_ids: the rows of the text token-embedding table that are stored
    state_dict: the weights in float16; `token_embedding.weight` holds only the rows `token_ids`
The 49408-row token table would dominate the file, but captions use only a few dozen tokens; the other rows
are rebuilt as zeros on load (the model never saw those tokens, so they carry no information anyway).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from core.errors import UserError
from core.files import write_atomically

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

SHIPPED: dict[str, Path] = {
    "scenes": MODELS_DIR / "scenes.pt",
    "scenes-judge": MODELS_DIR / "scenes-judge.pt",
    "scenes-critic": MODELS_DIR / "scenes-critic.pt",
    "scenes-shapes": MODELS_DIR / "scenes-shapes.pt",
    "scenes-judge-3": MODELS_DIR / "scenes-judge-3.pt",
}

# Constructor arguments of `clip.model.CLIP`. A tuple `vision_layers` makes the image tower the clip
# package's ModifiedResNet (the RN50 family); an int makes it a ViT. Text heads are width // 64.
# All three shipped models use ResNet image towers: in equal CPU time (10 min, batch 128) a ResNet learned shape
# to 80 % held-out accuracy where the ViT of the first shipped models stayed at 22 % (README).
ARCHS: dict[str, dict] = {
    "scenes": dict(
        embed_dim=512, image_resolution=48, vision_layers=(1, 1, 1, 1), vision_width=24, vision_patch_size=None,
        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=3,
    ),
    # Twice the depth of both towers and another training seed, so the judge does not share the guide's
    # blind spots.
    "scenes-judge": dict(
        embed_dim=512, image_resolution=48, vision_layers=(2, 2, 2, 2), vision_width=24, vision_patch_size=None,
        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=4,
    ),
    # A third, smaller model that neither guides nor judges: bakes score their candidate paths with it
    # (`--critic scenes-critic`), so a path is rewarded for images another model also recognises.
    "scenes-critic": dict(
        embed_dim=512, image_resolution=48, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None,
        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=2,
    ),
    # The first shipped guide's ViT, kept for comparison runs of the training script.
    "scenes-vit": dict(
        embed_dim=512, image_resolution=48, vision_layers=4, vision_width=128, vision_patch_size=8,
        context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=3,
    ),
}

# The guide's architecture, trained from scratch with half of the twins differing in shape, then attacked at half
# the guide's radius (which keeps most hexagons): it tells shapes apart, and guides only beside the guide
# (`scenes-mix`).
ARCHS["scenes-shapes"] = dict(ARCHS["scenes"])
# The judge's architecture trained from scratch on a third renderer (core/third_scenes.py): it chooses defaults
# without having seen the guide's drawings (README, "A judge from a third renderer").
ARCHS["scenes-judge-3"] = dict(ARCHS["scenes-judge"])


def resolve_arch(arch_name_or_dict: str | dict) -> dict[str, int]:
    """The constructor arguments for an architecture name in ARCHS, or a copy of the dict given."""
    if isinstance(arch_name_or_dict, dict):
        return dict(arch_name_or_dict)
    if arch_name_or_dict not in ARCHS:
        raise ValueError(f"unknown scenes CLIP architecture {arch_name_or_dict!r}; known: {sorted(ARCHS)}")
    return dict(ARCHS[arch_name_or_dict])


def build_scenes_clip(arch_name_or_dict: str | dict) -> nn.Module:
    """A freshly initialised float32 `clip.model.CLIP` of the given architecture."""
    return _clip_class()(**resolve_arch(arch_name_or_dict)).float()


def _clip_class() -> type:
    """`clip.model.CLIP`, imported when first needed: the clip package takes seconds to import (torchvision)
    and warns about pkg_resources, so a script's --help or a bake on another model does not pay for it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clip.model import CLIP
    return CLIP


def save_scenes_clip(model: nn.Module, arch: str | dict, path: str | Path, token_ids: list[int],
                     training: dict | None = None) -> None:
    """Save `model` compactly (float16, only the `token_ids` rows of the token table) to `path`, atomically.

    `training` records how the model was made (plain numbers and strings only).
    """
    token_ids = sorted(set(int(token) for token in token_ids))
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "token_embedding.weight":
            tensor = tensor[token_ids]
        state[name] = tensor.detach().to("cpu", torch.float16).clone()
    payload = {
        "arch": resolve_arch(arch),
        "training": dict(training or {}),
        "token_ids": torch.tensor(token_ids, dtype=torch.long),
        "state_dict": state,
    }
    write_atomically(path, lambda handle: torch.save(payload, handle))  # readers never see a half-written file


# What a file checked out without `git lfs pull` holds instead of the weights.
LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"
SAVED_KEYS = ("arch", "token_ids", "state_dict")


def _weights_path(name_or_path: str | Path) -> Path:
    """The file of a shipped name, or the path given."""
    return Path(SHIPPED.get(str(name_or_path), name_or_path))


def check_weights_file(path: Path) -> None:
    """Raise a `UserError` naming `path` if it is missing, or a Git LFS pointer in place of the weights."""
    if not path.is_file():
        raise UserError(f"no model weights at {path}: the file is missing")
    try:
        with open(path, "rb") as file:
            is_lfs_pointer = file.read(len(LFS_POINTER_START)) == LFS_POINTER_START
    except OSError:
        return  # the loader reports the unreadable file
    if is_lfs_pointer:
        raise UserError(f"{path} is a Git LFS pointer, not the weights: fetch them with `git lfs pull`")


def read_scenes_clip_file(name_or_path: str | Path) -> dict:
    """The raw saved dict (arch, training, token_ids, state_dict) of a shipped name or a file path.

    A missing, unreadable or damaged file, a Git LFS pointer, or a torch file of something else is a
    `UserError` that names the file.
    """
    path = _weights_path(name_or_path)
    check_weights_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file fails in many ways (pickle, zip, EOF, permission errors)
        raise UserError(f"cannot read model weights {path}: damaged, truncated or not a scenes CLIP "
                        f"({type(error).__name__})") from None
    if not isinstance(payload, dict) or not all(key in payload for key in SAVED_KEYS):
        raise UserError(f"{path} is not a scenes CLIP file (it lacks {', '.join(SAVED_KEYS)})")
    return payload


def load_scenes_clip(name_or_path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a shipped scenes CLIP (a name in SHIPPED) or a saved file, float32, eval, frozen.

    A file that cannot be read, or whose weights do not fit its architecture, is a `UserError`.
    """
    payload = read_scenes_clip_file(name_or_path)
    try:
        model = _model_from_payload(payload)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise UserError(f"{_weights_path(name_or_path)}: the stored weights do not fit their architecture "
                        f"({type(error).__name__})") from None
    return model.to(device)


def _model_from_payload(payload: dict) -> nn.Module:
    """The frozen float32 CLIP that a saved dict describes."""
    arch = payload["arch"]
    model = build_scenes_clip(arch)
    state = {name: tensor.float() for name, tensor in payload["state_dict"].items()}
    # Rebuild the full token table: stored rows where they belong, zeros elsewhere.
    stored_rows = state["token_embedding.weight"]
    full_table = torch.zeros(arch["vocab_size"], stored_rows.shape[1])
    full_table[payload["token_ids"]] = stored_rows
    state["token_embedding.weight"] = full_table
    # A model trained with a shorter context stores fewer position rows; with the causal mask, positions
    # after the end-of-text token never influence the text embedding, so zero rows there change nothing.
    positions = state["positional_embedding"]
    if positions.shape[0] < arch["context_length"]:
        padded = torch.zeros(arch["context_length"], positions.shape[1])
        padded[: positions.shape[0]] = positions
        state["positional_embedding"] = padded
    model.load_state_dict(state)
    model.eval().requires_grad_(False)
    return model
