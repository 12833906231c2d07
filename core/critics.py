"""Which model scores a bake's final images (the critic, see core.meta_loss.Critic): `--critic auto` pairs each
guide with a model of another make, and never with the guide itself or a member of a mix of guides."""
from __future__ import annotations

import sys

from core import models  # its download checks by module, so tests can stand in for the network
from core.errors import UserError
from core.models import AUTO_NAME, TINY_NAME, Clip, ClipMix, mix_members, model_name
from core.open_clip_models import (OPENAI_ARCHS, is_open_clip_name, open_clip_critic_candidates,
                                   open_clip_weights_available)
from core.scenes_clip import SHIPPED

SCENES_NAME = "scenes"
NO_CRITIC = ("", "none")
SCENES_CRITIC = "scenes-critic"
OPENAI_CRITICS = ("RN50", "ViT-B/16")  # the first that is not the guide itself


def resolve_critic(critic: str, guide: Clip | str) -> str:
    """The model that scores a bake's final images (see core.meta_loss.Critic); "" for the guide alone.

    `auto`: `scenes-critic` for a shipped scenes guide, another OpenAI CLIP (RN50) for an OpenAI guide, a
    model of the other family for an open_clip guide (`open_clip_critic_candidates`), when its weights are
    cached or reachable. A weights file pairs like the named model it was recognised as (`Clip.known_as`,
    so pass the loaded `Clip`). Otherwise none, with a one-line notice. A named shipped scenes model scores
    only the bakes of a scenes guide; for any other guide it gives none, with a notice. A bake scored by the
    guide alone learns to fool the guide (measured; see the README), so `auto` is the default.
    """
    guide_name, known_as = (guide, "") if isinstance(guide, str) else (guide.name, guide.known_as)
    if critic in NO_CRITIC:
        return ""
    if critic != AUTO_NAME:
        # a weights file by its file name, as the guide is named; a mix by its members
        if _models_in(critic) & _models_in(guide_name):
            raise UserError(f"the critic must be another model than the guide ({guide_name})")
        if critic in SHIPPED and not _is_scenes_guide(guide_name, known_as):
            # a recipe tuned on the scenes models (quick) must not score a photo CLIP's images by a 48 px scenes model
            print(f"notice: the critic {critic} knows only drawn scenes and {guide_name} is not a scenes model; "
                  f"baking with the guide alone", file=sys.stderr)
            return ""
        return critic
    if mix_members(guide_name) is not None:
        return _mix_critic(guide)
    if is_open_clip_name(guide_name):
        return _first_available_critic(open_clip_critic_candidates(guide_name), guide_name)
    known = guide_name if guide_name in SHIPPED or guide_name in OPENAI_ARCHS else known_as
    if known in SHIPPED:
        return SCENES_CRITIC if known != SCENES_CRITIC else SCENES_NAME
    if known in OPENAI_ARCHS:
        return _first_available_critic((next(name for name in OPENAI_CRITICS if name != known),), guide_name)
    if guide_name != TINY_NAME:  # the random test model has no natural partner, and needs no notice
        print(f"notice: {guide_name} is not a model --critic auto knows a partner for; baking with the guide "
              f"alone (pass --critic MODEL to score with another model)", file=sys.stderr)
    return ""


def _models_in(name: str) -> set[str]:
    """The models a name stands for: a mix's members, or the one model."""
    members = mix_members(name)
    return {model_name(member) for _, member in members} if members else {model_name(name)}


def _is_scenes_guide(guide_name: str, known_as: str) -> bool:
    """Whether the guide is a shipped scenes model, a weights file recognised as one, or a mix of them."""
    return known_as in SHIPPED or _models_in(guide_name) <= set(SHIPPED)


def _mix_critic(guide: Clip | str) -> str:
    """`--critic auto` for a mix: its first member's critic, unless that is a member too (then none)."""
    guide_name = guide if isinstance(guide, str) else guide.name
    first = guide.members[0] if isinstance(guide, ClipMix) else mix_members(guide)[0][1]  # a Clip keeps known_as
    chosen = resolve_critic(AUTO_NAME, first)
    if chosen and _models_in(chosen) & _models_in(guide_name):
        print(f"notice: no critic for {guide_name} outside the mix; baking with the guide alone", file=sys.stderr)
        return ""
    return chosen


def _first_available_critic(candidates: tuple[str, ...], guide_name: str) -> str:
    """The first of `candidates` whose weights are cached or reachable; "" with a one-line notice if none."""
    for name in candidates:
        available = (open_clip_weights_available(name) if is_open_clip_name(name)
                     else models._openai_cache_file(name).exists() or models._download_reachable(name))
        if available:
            return name
    print(f"notice: no critic for {guide_name} is cached or can be downloaded ({' or '.join(candidates)}); "
          f"baking with the guide alone", file=sys.stderr)
    return ""
