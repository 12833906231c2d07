"""Loading CLIP models: OpenAI's by name, local weight files, the shipped scenes models, `tiny`, and
open_clip's (`open_clip:ARCH/PRETRAINED`, see core.open_clip_models).

Every model comes back frozen (eval mode, no parameter gradients) inside a small `Clip` dataclass that
knows how to encode text (once, without gradients) and images (pixels in [0, 1], gradients flow).
"""
from __future__ import annotations

import os
import sys
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import UserError
from core.losses import spherical_distance
from core.open_clip_models import (OPENAI_ARCHS, is_open_clip_name, load_open_clip, open_clip_model_name,
                                   recognise_clip_arch)
from core.scenes_clip import ARCHS, SHIPPED, check_weights_file, load_scenes_clip

# CLIP's input normalisation (the original tool skipped it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalise_images(images: torch.Tensor, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD) -> torch.Tensor:
    """CLIP-normalise images [B, 3, H, W] in [0, 1] (differentiable): OpenAI's mean/std unless a model has its own."""
    mean = images.new_tensor(mean).view(1, 3, 1, 1)
    std = images.new_tensor(std).view(1, 3, 1, 1)
    return (images - mean) / std

TINY_NAME = "tiny"
AUTO_NAME = "auto"
AUTO_PREFERRED = "ViT-B/32"
# Guides of several models (`--model A+0.3*B`): shipped mixes by name. The offline default adds to the
# adversarially trained guide 0.3 of the pull of a model of its size trained to tell shapes apart (README,
# "Two guides"): on the 70 tuning prompts scenes-judge scored `normal` 62.90 against 62.46 with `scenes` alone.
SHIPPED_MIXES = {"scenes-mix": "scenes+0.3*scenes-shapes"}
MAX_MIX_WEIGHT = 100.0
OFFLINE_GUIDE = "scenes-mix"
MODEL_HELP = ("CLIP model: auto (ViT-B/32 if available, else the shipped 'scenes-mix'), tiny, scenes, scenes-mix, "
              "scenes-judge, scenes-judge-3, any clip.available_models() name, open_clip:ARCH/PRETRAINED (a tag of "
              "open_clip.list_pretrained() or a checkpoint file), a local weights file, or several guiding at once "
              "with weights, e.g. 'ViT-B/32+0.5*RN50'")


def _clip_package():
    """Import `clip` lazily: it is slow to import and warns about pkg_resources."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip
    return clip


@dataclass
class Clip:
    """A frozen CLIP model with the facts the renderer needs."""

    model: nn.Module
    name: str
    embed_dim: int
    image_size: int
    device: torch.device
    compiled: bool = False  # encode_images_fast is torch.compile'd (see `compile_encoder`)
    _fast_encoder: Callable | None = field(default=None, repr=False, compare=False)
    mean: tuple = CLIP_MEAN  # the input normalisation the model was trained with
    std: tuple = CLIP_STD
    # (prompts, truncate) -> tokens with the length check, for open_clip models; None: the clip package's
    text_tokenizer: Callable | None = field(default=None, repr=False, compare=False)
    known_as: str = ""  # the named model a weights file was recognised as (pairs a critic); "" if none

    def tokenize(self, prompts: list[str], truncate: bool = False, allow_empty: bool = False) -> torch.Tensor:
        """Tokens for `prompts`; an over-long prompt, or an empty one unless `allow_empty`, is a `UserError`."""
        clip = _clip_package()
        for prompt in prompts:
            if not allow_empty and (not prompt or not prompt.strip()):
                raise UserError("empty prompt")
        if self.text_tokenizer is not None:
            return self.text_tokenizer(prompts, truncate)
        try:
            return clip.tokenize(prompts, truncate=truncate)
        except RuntimeError:
            longest = max(prompts, key=len)
            shown = longest if len(longest) <= 60 else longest[:57] + "..."
            raise UserError(f"prompt longer than CLIP's 77 tokens (use --truncate): '{shown}'") from None

    def encode_text(self, prompts: list[str], truncate: bool = False, allow_empty: bool = False) -> torch.Tensor:
        """Unit-norm float32 embeddings [N, D] of `prompts`, computed once and without gradients."""
        tokens = self.tokenize(prompts, truncate, allow_empty).to(self.device)
        with torch.no_grad():
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 embeddings [B, D] (not normalised) of images [B, 3, H, W] in [0, 1]; differentiable."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        return self.model.encode_image(normalise_images(images, self.mean, self.std)).float()

    def compile_encoder(self) -> None:
        """Use `torch.compile` for image encoding in steps that need no double backward."""
        self._fast_encoder = torch.compile(self.encode_images, dynamic=False)
        self.compiled = True

    def encode_images_fast(self, images: torch.Tensor) -> torch.Tensor:
        """`encode_images`, compiled when `compile_encoder` was called (not twice differentiable then)."""
        return (self._fast_encoder or self.encode_images)(images)

    def distance(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The guide's loss between image embeddings and targets (broadcast): their spherical distance."""
        return spherical_distance(embeddings, targets)


@dataclass
class ClipMix(Clip):
    """Several models guiding at once. Embeddings are the members' unit embeddings side by side (each scaled
    by the square root of its share of the weights, so their cosine is the weighted mean of the members'
    cosines), and the guide's loss is the members' spherical distances times their weights."""

    members: tuple = ()
    weights: tuple = ()

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        total = sum(self.weights)
        return torch.cat([F.normalize(part, dim=-1) * (weight / total) ** 0.5
                          for part, weight in zip(parts, self.weights)], dim=-1)

    def tokenize(self, prompts: list[str], truncate: bool = False, allow_empty: bool = False) -> torch.Tensor:
        """The first member's tokens, once every member has checked the prompts against its own limits."""
        return [member.tokenize(prompts, truncate, allow_empty) for member in self.members][0]

    def encode_text(self, prompts: list[str], truncate: bool = False, allow_empty: bool = False) -> torch.Tensor:
        return self._join([member.encode_text(prompts, truncate, allow_empty) for member in self.members])

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._join([member.encode_images(images) for member in self.members])

    def compile_encoder(self) -> None:
        for member in self.members:
            member.compile_encoder()
        self.compiled = True

    def encode_images_fast(self, images: torch.Tensor) -> torch.Tensor:
        return self._join([member.encode_images_fast(images) for member in self.members])

    def distance(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each member's spherical distance on its own block of the embedding, times its weight."""
        blocks = [member.embed_dim for member in self.members]
        return sum(weight * spherical_distance(part, target) for weight, part, target in
                   zip(self.weights, embeddings.split(blocks, dim=-1), targets.split(blocks, dim=-1)))


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present; `cpu`, `cuda`, `cuda:N` are checked against the machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' asked for, but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise UserError(f"unsupported device '{name}' (use auto, cpu, cuda or cuda:N)")
    return device


def build_tiny_clip(seed: int = 0) -> nn.Module:
    """A small random-init CLIP (ViT, 32 px, embed dim 512) for tests and demos; same seed, same weights."""
    clip = _clip_package()
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        torch.manual_seed(seed)
        return clip.model.CLIP(
            embed_dim=512, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
            transformer_layers=2,
        )


def _freeze(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.float().to(device).eval()
    model.requires_grad_(False)
    return model


def _wrap(model: nn.Module, name: str, device: torch.device) -> Clip:
    model = _freeze(model, device)
    return Clip(model=model, name=name, embed_dim=int(model.text_projection.shape[1]),
                image_size=int(model.visual.input_resolution), device=device)


def _openai_cache_file(name: str) -> Path:
    clip = _clip_package()
    url = clip.clip._MODELS[name]
    return Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)


def _download_reachable(name: str, timeout: float = 3.0) -> bool:
    clip = _clip_package()
    try:
        urllib.request.urlopen(urllib.request.Request(clip.clip._MODELS[name], method="HEAD"), timeout=timeout)
        return True
    except Exception:  # any network failure means "not reachable"
        return False


def _is_scenes_file(path: Path) -> bool:
    """True for a file saved by `core.scenes_clip` (checked without loading the weights)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            return bool(pickles) and b"token_ids" in archive.read(pickles[0])
    except zipfile.BadZipFile as error:  # e.g. a CRC mismatch: the file was damaged after saving
        raise UserError(f"cannot read model weights {path}: damaged file ({error})") from None


def _load_openai(name_or_file: str) -> nn.Module:
    """An OpenAI CLIP by name or from a weights file, on the CPU (`_wrap` moves it to the device)."""
    clip = _clip_package()
    try:
        with warnings.catch_warnings():
            # clip.load tries torch.jit.load first, which warns that it is deprecated; users cannot act on it
            warnings.simplefilter("ignore", FutureWarning)
            model, _ = clip.load(name_or_file, device="cpu", jit=False)
    except Exception as error:  # network errors while downloading; a damaged or foreign file fails in many ways
        if name_or_file not in clip.available_models():
            raise UserError(f"cannot read model weights {name_or_file}: damaged, truncated or not a CLIP model "
                            f"({type(error).__name__})") from None
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserError(f"could not load CLIP model '{name_or_file}': {first_line}"
                        " (offline? try --model scenes or a local weights file)") from None
    return model


def available_model_names() -> list[str]:
    """Every name `--model` accepts besides a file path."""
    return [AUTO_NAME, TINY_NAME, *SHIPPED, *SHIPPED_MIXES, *_clip_package().available_models()]


def resolve_auto() -> str:
    """ViT-B/32 when its weights are cached or can be downloaded, else the shipped scenes model."""
    if _openai_cache_file(AUTO_PREFERRED).exists() or _download_reachable(AUTO_PREFERRED):
        return AUTO_PREFERRED
    print(f"notice: {AUTO_PREFERRED} weights are not cached and cannot be downloaded; using the shipped "
          f"'{OFFLINE_GUIDE}' models (go online once, or pass --model FILE, to use {AUTO_PREFERRED})",
          file=sys.stderr)
    return OFFLINE_GUIDE


def mix_members(name: str) -> list[tuple[float, str]] | None:
    """The (weight, model) terms of a mix of guides (`A+0.3*B`, or a name in SHIPPED_MIXES); None for one model."""
    spec = SHIPPED_MIXES.get(name, name)
    if "+" not in spec or Path(name).is_file():
        return None
    terms = []
    for term in spec.split("+"):
        text, _, member = term.strip().rpartition("*")
        try:
            weight = float(text) if text else 1.0
        except ValueError:
            raise UserError(f"bad weight '{text}' in the mix '{name}' (write A+0.3*B)") from None
        if not 0 < weight <= MAX_MIX_WEIGHT:  # also refuses nan
            raise UserError(f"a weight in the mix '{name}' must be above 0 and at most {MAX_MIX_WEIGHT:g}")
        member = member.strip()
        if not member or member in SHIPPED_MIXES or member == AUTO_NAME:
            raise UserError(f"the mix '{name}' needs a named model in every term (not auto, nor a mix itself)")
        terms.append((weight, member))
    if len({model_name(member) for _, member in terms}) < len(terms):
        raise UserError(f"the mix '{name}' names a model twice")
    return terms


def load_clip(name: str = AUTO_NAME, device: str | torch.device = "auto", compile: bool = False) -> Clip:
    """Load a frozen CLIP by name (`auto`, `tiny`, shipped, OpenAI names, `open_clip:ARCH/PRETRAINED`) or from a
    local weights file.

    `compile=True` compiles image encoding for the inner steps that need no double backward.
    """
    clip = _load(name, device)
    if compile:
        clip.compile_encoder()
    return clip


def model_name(name: str) -> str:
    """The name `load_clip(name)` gives its model, without loading it: a weights file by its file name
    (`auto` stays `auto`: what it stands for is only known once loaded)."""
    members = mix_members(name)
    if members is not None:
        return name if name in SHIPPED_MIXES else "+".join(
            model_name(member) if weight == 1 else f"{weight:g}*{model_name(member)}" for weight, member in members)
    if is_open_clip_name(name):
        return open_clip_model_name(name)
    if name in (AUTO_NAME, TINY_NAME, *SHIPPED) or name in _clip_package().available_models():
        return name
    path = Path(name)
    return path.name if path.is_file() else name


def _load(name: str, device: str | torch.device) -> Clip:
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if name == AUTO_NAME:
        name = resolve_auto()
    members = mix_members(name)
    if members is not None:
        clips = tuple(_load(member, device) for _, member in members)
        return ClipMix(model=nn.ModuleList([clip.model for clip in clips]), name=model_name(name),
                       embed_dim=sum(clip.embed_dim for clip in clips),
                       image_size=max(clip.image_size for clip in clips), device=device, members=clips,
                       weights=tuple(weight for weight, _ in members))
    if name == TINY_NAME:
        return _wrap(build_tiny_clip(), name, device)
    if name in SHIPPED:
        return _wrap(load_scenes_clip(name, "cpu"), name, device)
    if name in _clip_package().available_models():
        return _wrap(_load_openai(name), name, device)
    if is_open_clip_name(name):
        return _wrap_open_clip(name, device)
    path = Path(name)
    if path.is_file():
        check_weights_file(path)
        model = load_scenes_clip(str(path), "cpu") if _is_scenes_file(path) else _load_openai(str(path))
        clip = _wrap(model, model_name(name), device)
        # what the file holds, by its layers' shapes: a copied ViT-B-32.pt pairs a critic like ViT-B/32
        clip.known_as = recognise_clip_arch(clip.model, {**OPENAI_ARCHS, **{shipped: ARCHS[shipped]
                                                                            for shipped in SHIPPED}})
        return clip
    raise UserError(f"unknown model '{name}': use a file path, open_clip:ARCH/PRETRAINED or one of "
                    f"{', '.join(available_model_names())}")


def _wrap_open_clip(name: str, device: torch.device) -> Clip:
    """An open_clip model with its own normalisation, image size and tokenizer (core.open_clip_models)."""
    loaded = load_open_clip(name)
    return Clip(model=_freeze(loaded.model, device), name=loaded.name, embed_dim=loaded.embed_dim,
                image_size=loaded.image_size, device=device, mean=loaded.mean, std=loaded.std,
                text_tokenizer=loaded.tokenizer)
