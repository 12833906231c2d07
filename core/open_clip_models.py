"""open_clip models (`--model open_clip:ARCH/PRETRAINED`) and the critic pairing of guides with no fixed partner.

ARCH is an open_clip architecture (`open_clip.list_models()`); PRETRAINED is one of open_clip's tags for it
(`open_clip.list_pretrained()`: taken from the Hugging Face cache, or downloaded when online) or a local
checkpoint file. A model is named in paths by `open_clip:ARCH/TAG` (the tag as open_clip spells it) or, for
a file, `open_clip:ARCH/FILE_NAME`.

This module does not know `core.models.Clip`: `load_open_clip` returns the model with the facts the
wrapper needs (embedding size, image size, the normalisation of its preprocess config, its tokenizer), and
`core.models` wraps them. open_clip itself is imported only when such a model is asked for.

It also recognises what a weights file of the `clip` package holds (`recognise_clip_arch`), so that
`--critic auto` can pair a copied `ViT-B-32.pt` like the named `ViT-B/32`.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from core.errors import UserError

PREFIX = "open_clip:"
EXAMPLE = "open_clip:ViT-B-32/laion2b_s34b_b79k"
REACH_TIMEOUT_S = 3.0
OPENAI_DOWNLOAD_DIR = "~/.cache/clip"  # where open_clip keeps weights it downloads from a URL, not the Hub


def _open_clip_package():
    """Import open_clip lazily: it is slow to import, and only these models need it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import open_clip
    except ImportError:
        raise UserError("open_clip models need the open-clip-torch package: "
                        "pip install -r requirements.txt") from None
    return open_clip


@contextlib.contextmanager
def _quiet():
    """Silence open_clip's warnings and root-logger messages: its failures become one `UserError` line."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _first_line(error: Exception, limit: int = 160) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ----------------------------------------------------------------------------- names


@dataclass(frozen=True)
class OpenClipName:
    """`open_clip:ARCH/PRETRAINED` taken apart; PRETRAINED is a tag or a file path as the user wrote it."""

    arch: str
    pretrained: str

    @property
    def file(self) -> Path | None:
        """The checkpoint file PRETRAINED names, or None for a tag."""
        path = Path(self.pretrained).expanduser()
        return path.resolve() if path.is_file() else None

    @property
    def canonical(self) -> str:
        """The name recorded in paths: the tag as open_clip spells it, or the file's name."""
        file = self.file
        pretrained = file.name if file is not None else self.pretrained.lower().replace("-", "_")
        return f"{PREFIX}{self.arch}/{pretrained}"


def is_open_clip_name(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_open_clip_name(name: str) -> OpenClipName:
    """Split `open_clip:ARCH/PRETRAINED` (a file path may hold more slashes); malformed is a `UserError`."""
    arch, _, pretrained = name[len(PREFIX):].partition("/")
    if not arch.strip() or not pretrained.strip():
        raise UserError(f"open_clip models are named open_clip:ARCH/PRETRAINED (a tag of "
                        f"open_clip.list_pretrained() or a checkpoint file, e.g. {EXAMPLE}), got '{name}'")
    return OpenClipName(arch.strip(), pretrained.strip())


def open_clip_model_name(name: str) -> str:
    """The name `load_open_clip(name)` gives its model, without loading (a malformed name is returned as is)."""
    try:
        return parse_open_clip_name(name).canonical
    except UserError:
        return name


# ----------------------------------------------------------------------------- tokenizer


@dataclass
class OpenClipTokenizer:
    """A model's own open_clip tokenizer, with the length check it lacks (it truncates silently)."""

    tokenize: Callable  # open_clip's tokenizer: (texts, context_length=...) -> tokens [N, context_length]
    context_length: int
    model_name: str

    def __call__(self, prompts: list[str], truncate: bool = False) -> torch.Tensor:
        """Tokens [N, context_length]; a prompt that does not fit is a `UserError` unless `truncate`."""
        tokens = self.tokenize(prompts, context_length=self.context_length)
        if truncate:
            return tokens
        # A prompt fits if one more position changes nothing in the first ones: a truncated prompt ends in
        # the end-of-text token where the longer tokenization still holds a word.
        longer = self.tokenize(prompts, context_length=self.context_length + 1)
        for prompt, short, long in zip(prompts, tokens, longer):
            if not torch.equal(short, long[: self.context_length]):
                shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
                raise UserError(f"prompt longer than {self.model_name}'s {self.context_length} tokens "
                                f"(use --truncate): '{shown}'")
        return tokens


# ----------------------------------------------------------------------------- weights of a tag


def _hub_repo_and_files(hf_hub: str) -> tuple[str, list[str]]:
    """The Hub repository of a pretrained config's `hf_hub` entry and the file names open_clip tries, in order.

    open_clip writes `org/repo/` (its default file) or `org/repo/file`, and prefers a safetensors twin.
    """
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _cached_checkpoint(pretrained_cfg: dict) -> str | None:
    """The local file of a pretrained config's weights when already downloaded, without any network."""
    if pretrained_cfg.get("file"):
        return pretrained_cfg["file"] if Path(pretrained_cfg["file"]).is_file() else None
    if pretrained_cfg.get("hf_hub"):  # open_clip prefers the Hub whenever a config names it
        from huggingface_hub import try_to_load_from_cache

        repo, files = _hub_repo_and_files(pretrained_cfg["hf_hub"])
        for filename in files:
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return found
        return None
    if pretrained_cfg.get("url"):
        file = Path(OPENAI_DOWNLOAD_DIR).expanduser() / os.path.basename(pretrained_cfg["url"])
        return str(file) if file.is_file() else None
    return None


def _url_reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=REACH_TIMEOUT_S):
            return True
    except Exception:  # any network failure means "not reachable"
        return False


def _download_reachable(pretrained_cfg: dict) -> bool:
    """True when the weights can be downloaded now: one short request, no retries (HF_HUB_OFFLINE: never)."""
    if pretrained_cfg.get("hf_hub"):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
        repo, files = _hub_repo_and_files(pretrained_cfg["hf_hub"])
        return any(_url_reachable(f"{constants.ENDPOINT}/{repo}/resolve/main/{filename}") for filename in files)
    return bool(pretrained_cfg.get("url")) and _url_reachable(pretrained_cfg["url"])


def _pretrained_cfg(open_clip, name: OpenClipName) -> dict:
    """open_clip's config of the tag (where its weights live, its mean/std); an unknown tag is a `UserError`."""
    cfg = open_clip.get_pretrained_cfg(name.arch, name.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name.arch)
        shown = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "none"
        raise UserError(f"'{name.pretrained}' is neither a pretrained tag of open_clip's {name.arch} nor a file "
                        f"(its tags: {shown}; all pairs: open_clip.list_pretrained())")
    return cfg


def _tag_checkpoint(open_clip, name: OpenClipName, pretrained_cfg: dict) -> str:
    """The weights file of a tag: from the cache, else downloaded; offline and not cached is a `UserError`."""
    cached = _cached_checkpoint(pretrained_cfg)
    if cached:
        return cached
    if not _download_reachable(pretrained_cfg):
        raise UserError(f"open_clip weights {name.canonical} are not cached and cannot be downloaded (offline?): "
                        f"go online once, or give a local checkpoint as open_clip:{name.arch}/FILE")
    try:
        with _quiet():
            return open_clip.download_pretrained(pretrained_cfg)
    except Exception as error:  # network and disk errors of a download
        raise UserError(f"could not download open_clip weights {name.canonical}: {_first_line(error)}") from None


def open_clip_weights_available(model: str) -> bool:
    """True when the weights of an open_clip model name are cached or can be downloaded now."""
    name = parse_open_clip_name(model)
    if name.file is not None:
        return True
    open_clip = _open_clip_package()
    cfg = open_clip.get_pretrained_cfg(name.arch, name.pretrained)
    return bool(cfg) and (_cached_checkpoint(cfg) is not None or _download_reachable(cfg))


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadedOpenClip:
    """An open_clip model (float32, on the CPU) and what `core.models.Clip` needs to know about it."""

    model: nn.Module
    name: str
    embed_dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tokenizer: OpenClipTokenizer


def _check_arch(open_clip, arch: str) -> None:
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown open_clip architecture '{arch}'{hint}: names are in open_clip.list_models(), "
                        f"pairs with pretrained tags in open_clip.list_pretrained()")


def _create_model(open_clip, name: OpenClipName, checkpoint: str, pretrained_cfg: dict) -> nn.Module:
    """open_clip's `create_model` with a local checkpoint, and the tag's preprocessing and activation if any.

    Tag weights are passed as their (cached) file so that nothing touches the network here; the tag's
    mean/std and QuickGELU, which open_clip would take from its config, are passed along explicitly.
    """
    preprocess = {key: pretrained_cfg[key] for key in ("mean", "std", "interpolation", "resize_mode")
                  if key in pretrained_cfg}
    try:
        with _quiet():
            return open_clip.create_model(name.arch, pretrained=checkpoint, precision="fp32", device="cpu",
                                          force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)),
                                          force_preprocess_cfg=preprocess, weights_only=True)
    except Exception as error:  # a damaged file, or weights of another architecture, fail in many ways
        raise UserError(f"cannot load {checkpoint} as open_clip's {name.arch}: {_first_line(error)}") from None


def _square_size(model: nn.Module, name: str) -> int:
    size = getattr(model.visual, "image_size", None)
    if size is None:
        raise UserError(f"{name}: its image tower does not say what image size it takes")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise UserError(f"{name} takes {height}x{width} images; only square image towers are supported")
    return int(height)


def load_open_clip(model: str) -> LoadedOpenClip:
    """Load `open_clip:ARCH/PRETRAINED` on the CPU (float32); every user mistake is a one-line `UserError`."""
    name = parse_open_clip_name(model)
    open_clip = _open_clip_package()
    _check_arch(open_clip, name.arch)
    file = name.file
    pretrained_cfg = {} if file is not None else _pretrained_cfg(open_clip, name)
    try:  # before the weights, which may be large
        with _quiet():
            tokenize = open_clip.get_tokenizer(name.arch)
    except Exception as error:  # e.g. a Hugging Face tokenizer that is not installed or not cached
        raise UserError(f"cannot build the tokenizer of open_clip's {name.arch}: {_first_line(error)}") from None
    checkpoint = str(file) if file is not None else _tag_checkpoint(open_clip, name, pretrained_cfg)
    network = _create_model(open_clip, name, checkpoint, pretrained_cfg)
    preprocess = open_clip.get_model_preprocess_cfg(network)
    return LoadedOpenClip(
        model=network, name=name.canonical, embed_dim=int(open_clip.get_model_config(name.arch)["embed_dim"]),
        image_size=_square_size(network, name.canonical),
        mean=tuple(float(value) for value in preprocess["mean"]),
        std=tuple(float(value) for value in preprocess["std"]),
        tokenizer=OpenClipTokenizer(tokenize, int(tokenize.context_length), name.canonical),
    )


# ----------------------------------------------------------------------------- critic pairing

# `--critic auto` for an open_clip guide: a model of the other family (convolutional vs transformer image
# tower) and other training data, in order of preference; the first whose weights are cached or
# reachable scores the bake. The clip package's copy of the same kind of model is the fallback.
CONVOLUTIONAL_CRITICS = ("open_clip:ViT-B-16/laion2b_s34b_b88k", "ViT-B/16")
TRANSFORMER_CRITICS = ("open_clip:RN50/openai", "RN50")


def is_convolutional(arch: str) -> bool:
    """open_clip's ResNet (RN50, RN101, RN50x4, ...) and ConvNeXt image towers."""
    return arch.startswith("RN") or "convnext" in arch.lower()


def open_clip_critic_candidates(guide: str) -> tuple[str, ...]:
    """The critics `--critic auto` tries for an open_clip guide, best first (never the guide itself)."""
    name = parse_open_clip_name(guide)
    candidates = CONVOLUTIONAL_CRITICS if is_convolutional(name.arch) else TRANSFORMER_CRITICS
    return tuple(candidate for candidate in candidates if open_clip_model_name(candidate) != name.canonical)


# ----------------------------------------------------------------------------- recognising clip-package files


def _openai(embed_dim: int, image_resolution: int, vision_layers, vision_width: int, vision_patch_size,
            transformer_width: int) -> dict:
    """Constructor arguments of one of OpenAI's CLIPs (all share the text tower's depth, context and vocabulary)."""
    return dict(embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
                vision_width=vision_width, vision_patch_size=vision_patch_size, context_length=77,
                vocab_size=49408, transformer_width=transformer_width, transformer_heads=transformer_width // 64,
                transformer_layers=12)


# `clip.model.CLIP` constructor arguments of OpenAI's released models, by their `clip.available_models()`
# names (the same numbers as open_clip's configs of those names; tests/test_open_clip.py checks).
OPENAI_ARCHS: dict[str, dict] = {
    "RN50": _openai(1024, 224, (3, 4, 6, 3), 64, None, 512),
    "RN101": _openai(512, 224, (3, 4, 23, 3), 64, None, 512),
    "RN50x4": _openai(640, 288, (4, 6, 10, 6), 80, None, 640),
    "RN50x16": _openai(768, 384, (6, 8, 18, 8), 96, None, 768),
    "RN50x64": _openai(1024, 448, (3, 15, 36, 10), 128, None, 1024),
    "ViT-B/32": _openai(512, 224, 12, 768, 32, 512),
    "ViT-B/16": _openai(512, 224, 12, 768, 16, 512),
    "ViT-L/14": _openai(768, 224, 24, 1024, 14, 768),
    "ViT-L/14@336px": _openai(768, 336, 24, 1024, 14, 768),
}


def clip_constructor_args(model: nn.Module) -> dict:
    """The `clip.model.CLIP` constructor arguments that built `model` (read from its layers, like the clip
    package's `build_model` reads them from a state dict)."""
    visual = model.visual
    if hasattr(visual, "layer1"):  # ModifiedResNet: four stages of bottlenecks
        layers = tuple(len(getattr(visual, f"layer{index}")) for index in range(1, 5))
        width, patch = visual.layer1[0].conv1.in_channels, None
    else:  # VisionTransformer: a patch-embedding convolution, then the transformer
        layers = len(visual.transformer.resblocks)
        width, patch = visual.conv1.out_channels, visual.conv1.kernel_size[0]
    return dict(embed_dim=int(model.text_projection.shape[1]), image_resolution=int(visual.input_resolution),
                vision_layers=layers, vision_width=int(width), vision_patch_size=patch,
                context_length=int(model.context_length), vocab_size=int(model.vocab_size),
                transformer_width=int(model.ln_final.weight.shape[0]),
                transformer_heads=int(model.transformer.resblocks[0].attn.num_heads),
                transformer_layers=len(model.transformer.resblocks))


def recognise_clip_arch(model: nn.Module, known: dict[str, dict]) -> str:
    """The name in `known` (name -> constructor arguments) whose architecture `model` has; "" if none."""
    try:
        args = clip_constructor_args(model)
    except (AttributeError, IndexError, TypeError):  # not a clip.model.CLIP
        return ""
    return next((name for name, arch in known.items() if arch == args), "")
