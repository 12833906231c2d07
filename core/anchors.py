"""A compact parametrisation of a path: per-stage blend weights over a few anchor embeddings.

A free path has S x D numbers (10 x 512 for ViT-B/32); a meta-gradient or a search over all of them
finds directions that lower the guide's own loss but mean nothing to another model. An *anchored* path
has S x K numbers: stage s aims at

    unit(prompt + sum_k coefficients[s, k] * anchors[k])

where the anchors are text embeddings the prompt already implies: the embedding of the empty text (the
"any caption" direction; a negative weight sharpens what is specific to the prompt) and the embeddings
of the prompt's content words one by one ("red", "circle", "left"), so a stage can stress colour early and
shape late. Every stage target stays in the span of real text embeddings. All coefficients zero is the
normal run.

The path file stores the resulting stage targets ([S, D]), so microwave and auto_microwave need nothing new.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.models import Clip
from core.prompts import names_image_file

# Words that carry no content of their own; every other word of a prompt becomes an anchor.
STOP_WORDS = frozenset("a an the of on in at to and with is are its it this that".split())
MAX_WORD_ANCHORS = 6
GENERIC_TEXT = ""  # the empty caption: what every caption has in common


@dataclass
class Anchors:
    """Anchor embeddings per prompt: `embeddings` [P, K, D] (unit), `mask` [P, K] (1 where real)."""

    embeddings: torch.Tensor
    mask: torch.Tensor

    @property
    def count(self) -> int:
        """K: anchors per prompt (padded)."""
        return self.embeddings.shape[1]


def content_words(prompt: str, limit: int = MAX_WORD_ANCHORS) -> list[str]:
    """The prompt's distinct content words in order, at most `limit` ('a red circle on the left' -> red, circle, left).

    Weighted-target syntax (`a | b:0.5`) and image files give only the words of plain text parts.
    """
    words = []
    for part in prompt.split("|"):
        part = re.sub(r":\s*[+-]?[\d.]+\s*$", "", part)  # a trailing weight is not a word
        if names_image_file(part.strip()):
            continue
        for word in re.findall(r"[a-z]+", part.lower()):
            if word not in STOP_WORDS and word not in words:
                words.append(word)
    return words[:limit]


def prompt_anchors(clip: Clip, prompts: list[str], max_words: int = MAX_WORD_ANCHORS) -> Anchors:
    """Anchors for each prompt: the generic (empty) caption, then its content words (padded, masked)."""
    word_lists = [content_words(prompt, max_words) for prompt in prompts]
    count = 1 + max((len(words) for words in word_lists), default=0)
    texts = sorted({GENERIC_TEXT, *(word for words in word_lists for word in words)})
    with torch.no_grad():
        encoded = clip.encode_text(texts, truncate=True, allow_empty=True)
    row_of = {text: row for row, text in enumerate(texts)}
    embeddings = torch.zeros(len(prompts), count, encoded.shape[1], device=encoded.device)
    mask = torch.zeros(len(prompts), count, device=encoded.device)
    for index, words in enumerate(word_lists):
        for slot, text in enumerate([GENERIC_TEXT, *words]):
            embeddings[index, slot] = encoded[row_of[text]]
            mask[index, slot] = 1.0
    return Anchors(embeddings, mask)


def anchored_guides(prompt_embeddings: torch.Tensor, anchors: Anchors, coefficients: torch.Tensor) -> torch.Tensor:
    """Stage targets [P, S, D] from coefficients [P, S, K]: unit(prompt + sum_k c[s, k] * anchor_k).

    Padded anchors (mask 0) contribute nothing whatever their coefficient.
    """
    weights = coefficients * anchors.mask[:, None, :]
    offsets = torch.einsum("psk,pkd->psd", weights, anchors.embeddings.to(prompt_embeddings.dtype))
    return F.normalize(F.normalize(prompt_embeddings, dim=-1)[:, None, :] + offsets, dim=-1)
