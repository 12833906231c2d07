"""The jobs the scripts run, as typed dataclasses: what `core.cli` makes of a command line, and all that
the job modules below it see (never an argparse Namespace). A bake job is also what each worker process
or Ray task is given (pickled), with its device set.

Recipes: a job holds the recipe as the command line chose it (`recipes.RecipeChoice`: a name and the
values given as flags); the job resolves it when it runs, since microwave's default is the path's own.
The render settings and the bake's `stages`/`meta_steps`/`meta_lr` come from the resolved recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.bake_settings import BakeSettings
from core.claims import DEFAULT_TTL
from core.limits import MAX_OUTPUT_PIXELS, MAX_SEED, MAX_STEPS, MAX_UPSCALE
from core.models import MODEL_HELP
from core.recipes import RecipeChoice
from core.store import DEFAULT_STORE


@dataclass
class RunOptions:
    """What every run shares: the model and device, the seed, where outputs and the store are.

    Each field's `help` makes it a flag of the scripts (`core.cli.make_parser`).
    """

    model: str = field(default="auto", metadata={"help": MODEL_HELP})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    seed: int = field(default=0, metadata={"help": "random seed; the same seed gives the same image", "minimum": 0,
                                           "maximum": MAX_SEED})
    out: str = field(default="outputs", metadata={"help": "directory for images"})
    store: str = field(default=str(DEFAULT_STORE), metadata={"help": "directory of baked paths"})
    truncate: bool = field(default=False, metadata={"help": "cut prompts longer than 77 tokens"})
    wandb: bool = field(default=False, metadata={"help": "log losses and images to Weights & Biases"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile image encoding in the inner loop (pays off on GPU for long runs)"})


@dataclass
class ImageOptions:
    """How a script that renders one image saves it (each field a flag of those scripts)."""

    init: str | None = field(default=None, metadata={"help": "start from this image instead of random pixels"})
    save_every: int = field(default=0, metadata={"help": "save a frame every N steps (0 = never)", "minimum": 0,
                                                 "maximum": MAX_STEPS})
    gif: bool = field(default=False, metadata={"help": "also write the frames as an animated GIF"})
    upscale: int = field(default=4, metadata={
        "help": f"nearest-neighbour upscale of saved images (the saved image at most {MAX_OUTPUT_PIXELS // 2**20} "
                f"megapixels)", "minimum": 1, "maximum": MAX_UPSCALE})


@dataclass
class NormalJob:
    """normal.py: optimise straight toward the prompt (the control)."""

    prompt: str
    run: RunOptions = field(default_factory=RunOptions)
    recipe: RecipeChoice = field(default_factory=RecipeChoice)
    image: ImageOptions = field(default_factory=ImageOptions)
    steps: int | None = None  # total steps; None: the recipe's stages x steps_per_stage


@dataclass
class MicrowaveJob:
    """microwave.py: replay a baked path, every stage blended with `prompt` (weight `mix`) if one is given."""

    path: str
    prompt: str | None = None
    mix: float = 0.5
    run: RunOptions = field(default_factory=RunOptions)
    recipe: RecipeChoice = field(default_factory=RecipeChoice)  # no name: the path's own recipe
    image: ImageOptions = field(default_factory=ImageOptions)


@dataclass
class AutoJob:
    """auto_microwave.py: stage targets for a new prompt from the `k` nearest baked paths (`core.auto`)."""

    prompt: str
    k: int = 2
    mode: str | None = None  # None: predict, or transfer when the store has too few paths (`core.auto.choose_mode`)
    path_weight: float | None = None  # None: the mode's default
    leave_out: bool = False  # ignore a path baked for this very prompt
    run: RunOptions = field(default_factory=RunOptions)
    recipe: RecipeChoice = field(default_factory=RecipeChoice)
    image: ImageOptions = field(default_factory=ImageOptions)


@dataclass
class BakeJob:
    """bake.py and batch_bake.py: bake `prompts` (texts, weighted targets or image files) into the store.

    `batch_size`: prompts baked together, or `auto`; `skip_existing`: prompts already baked are skipped
    (batch_bake) rather than refused (bake.py, unless `overwrite`). `gpus` / `ray` choose worker processes
    or Ray tasks instead of this process (`core.bake_jobs`); `claim_ttl` is how long a silent worker's claim
    on a prompt lasts.
    """

    prompts: list[str]
    run: RunOptions = field(default_factory=RunOptions)
    recipe: RecipeChoice = field(default_factory=RecipeChoice)
    bake: BakeSettings = field(default_factory=BakeSettings)
    batch_size: int | str = 1
    report: bool = True  # an HTML report per bake in <out>/reports/
    overwrite: bool = False
    skip_existing: bool = True
    gpus: str | None = None
    ray: str | None = None
    claim_ttl: float = DEFAULT_TTL


@dataclass
class EvaluateJob:
    """evaluate.py: every prompt of `prompts_file` rendered by each of `methods` at equal budget, scored by
    each of `judges` (CLIPs or the classifier judge, `core.judges`); prompts missing from the store (and those
    of `store_prompts`) are baked first with `bake`."""

    prompts_file: str
    judges: list[str] = field(default_factory=lambda: ["scenes-judge-3"])
    seeds: int = 3  # random starts per prompt and method
    methods: list[str] = field(default_factory=lambda: ["normal", "microwave", "auto"])
    k: int = 2
    auto_mode: str | None = None  # None: as auto_microwave's default (`core.auto.choose_mode`)
    path_weight: float | None = None
    store_prompts: str | None = None
    batch_size: int | str = 8  # of the bake first
    report: bool = True  # of the bake first
    run: RunOptions = field(default_factory=RunOptions)
    recipe: RecipeChoice = field(default_factory=RecipeChoice)
    bake: BakeSettings = field(default_factory=BakeSettings)


@dataclass
class BenchJob:
    """bench.py: the benchmark's measurements (see `core.bench`)."""

    model: str
    device: str = "auto"
    prompts: list[int] = field(default_factory=lambda: [1, 8, 64, 256])
    size: int = 128
    cutn: int = 8
    steps: int = 30
    ceiling_batch: int | None = None  # None: 512 on CUDA, 16 on CPU
    repeats: int = 1
    threads: int = 0  # 0: torch's default
    bake_prompts: int | str = "auto"
    stages: int = 10
    steps_per_stage: int = 30
    critic: str = "auto"
    quiet: bool = False
    compile: bool = False
