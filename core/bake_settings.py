"""How a path is baked: `BakeSettings`, declared once for the meta-optimisers, `--help` and recipes.

Each field's metadata declares it as an option: `help` makes it a command-line flag of the scripts that
bake (`--meta-lr` from `meta_lr`, `core.cli`), `minimum` and `maximum` bound it (numbers must be finite;
maxima from `core.limits`), and `recipe` makes it a recipe key as well (`core.recipes`; the flag then
overrides the recipe's value). A field without `help` is not an option.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from core.anchors import MAX_WORD_ANCHORS
from core.limits import MAX_META_STEPS, MAX_POPULATION, MAX_STAGES, MAX_STARTS, MAX_UNROLL


@dataclass
class BakeSettings:
    """How a path is baked (the meta part of a run; `stages` and `meta_steps` also in recipes)."""

    stages: int = field(default=10, metadata={
        "help": "number of stages: guides in a path, one target each", "minimum": 1, "maximum": MAX_STAGES,
        "recipe": True})
    # measured on the scenes models: 100 at meta-lr 1e-3 over-fits the critic (README)
    meta_steps: int = field(default=30, metadata={
        "help": "meta-optimisation steps (or generations) of a bake", "minimum": 1, "maximum": MAX_META_STEPS,
        "recipe": True})
    meta: str = field(default="unrolled", metadata={"help": "meta-optimiser"})  # choices: meta_optimisers
    # measured on the scenes models (README): 5e-4 lifts the judge most; 1e-3 and more overfit the critic
    # (the quick recipe halves it for the scenes-mix guide)
    meta_lr: float = field(default=0.0005, metadata={"help": "learning rate of the guides (unrolled)", "minimum": 0,
                                                      "recipe": True})
    unroll: int = field(default=1, metadata={
        "help": "K: inner steps differentiated at the end of each stage (unrolled)", "minimum": 1,
        "maximum": MAX_UNROLL})
    # 2 starts measured no better, at twice the cost
    starts: int = field(default=1, metadata={"help": "random starts per meta-step", "minimum": 1,
                                             "maximum": MAX_STARTS})
    clip_grad: float = 1.0  # per-prompt meta-gradient norm limit
    prompt_pull: float = field(default=0.0, metadata={
        "help": "weight of a decaying pull of the guides toward the prompt (the original's regulariser)", "minimum": 0})
    eval_starts: int = field(default=4, metadata={
        "help": "held-out random starts for the baked-vs-normal comparison", "minimum": 1, "maximum": MAX_STARTS})
    population: int = field(default=8, metadata={
        "help": "candidates a generation (cma, ga, anchored-cma, anchored-es)", "minimum": 2,
        "maximum": MAX_POPULATION})
    sigma: float = field(default=0.02, metadata={
        "help": "search step (cma, anchored-cma) / mutation strength (ga, anchored-es)", "minimum": 0})
    trust_angle: float = field(default=0.5, metadata={
        "help": "radians a guide may turn away from the prompt (cma, ga)", "minimum": 0, "maximum": math.pi})
    meta_views: int = field(default=0, metadata={
        "help": "score the final image on this many augmented views while baking (0 = the image itself)",
        "minimum": 0, "maximum": MAX_STARTS})
    anchor_lr: float = field(default=0.05, metadata={
        "help": "learning rate of the anchored blend weights (anchored)", "minimum": 0})
    anchor_limit: float = field(default=2.0, metadata={
        "help": "bound on every anchored blend weight (anchored, anchored-cma)", "minimum": 0})
    anchor_words: int = MAX_WORD_ANCHORS  # content words of the prompt used as anchors (0: the generic anchor alone)
    critic: str = field(default="auto", metadata={  # see meta_loss.Critic and models.resolve_critic
        "help": "the model that scores the final images while baking, so paths are rewarded for images another "
                "model recognises too: auto (scenes-critic for the scenes models, RN50 for OpenAI ones), a model "
                "name, or none (the guide alone); never the judge of evaluate.py",
        "recipe": True})
    critic_weight: float = field(default=1.0, metadata={
        "help": "the critic's share of the meta-loss (1 = the critic alone)", "minimum": 0, "maximum": 1,
        "recipe": True})
    # measured on the 70 tuning scene prompts (README): the critic telling the prompt from its one-attribute
    # twins carries over to the judges better than its distance alone
    critic_contrast: float = field(default=0.1, metadata={
        "help": "weight of the critic's caption contrast: for a scene prompt, the cross-entropy of the prompt "
                "among the captions that differ from it in one stated attribute (0 = distance alone)",
        "minimum": 0, "maximum": 10})

    def with_recipe(self, recipe: dict) -> "BakeSettings":
        """These settings with the recipe keys among them (fields marked `recipe`) taken from a resolved recipe."""
        return replace(self, **{item.name: recipe[item.name] for item in fields(self)
                                if item.metadata.get("recipe") and item.name in recipe})
