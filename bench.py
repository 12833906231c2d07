#!/usr/bin/env python3
"""Benchmark baking's inner loop against the hardware's ceiling and the original tool's loop shape.

Measures, in one run: CLIP image forward+backward w.r.t. the input at a large batch (the ceiling,
images/s), the inner loop `core.render.replay` on P prompts at once (prompt-steps/s, for every P of
--prompts that fits in memory) and the original loop shape (batch 1, fp32, a new AdamW each stage, one
cutout) and, on a GPU, a bake at the default recipe with its meta-gradient and critic (a random-init
RN50 for the ViT-B/32 guide), in prompts an hour; prints a markdown table of the figures and their ratios.

  python bench.py                                          # ViT-B/32 (random init) on the GPU
  python bench.py --compile                                # the same with the encoder compiled
  python bench.py --device cpu --prompts 1,8 --cutn 2 --steps 4 --threads 2
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import bench, cli  # noqa: E402
from core.bake_settings import BakeSettings  # noqa: E402
from core.limits import MAX_BATCH, MAX_CUTN, MAX_SIZE, MAX_STAGES, MAX_STEPS_PER_STAGE  # noqa: E402
from core.render import RenderSettings  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__, recipe=False, outputs=False)
    parser.set_defaults(model=bench.VIT_B_32)
    parser.add_argument("--prompts", type=cli.counts_arg, default=[1, 8, 64, 256],
                        help="numbers of prompts P baked at once to measure (as memory allows)")
    parser.add_argument("--size", type=cli.int_in_range(8, MAX_SIZE), default=128,
                        help=f"image side in pixels (at most {MAX_SIZE})")
    parser.add_argument("--cutn", type=cli.int_in_range(1, MAX_CUTN), default=8,
                        help=f"augmented views per image per step (at most {MAX_CUTN})")
    parser.add_argument("--steps", type=cli.int_in_range(1, MAX_STEPS_PER_STAGE), default=30,
                        help="inner steps in each timed run")
    parser.add_argument("--ceiling-batch", type=cli.int_in_range(1, MAX_BATCH),
                        help="batch of the ceiling measurement (default 512 on CUDA, 16 on CPU)")
    parser.add_argument("--repeats", type=cli.int_in_range(1, 100), default=1,
                        help="timed runs of each measurement; the best counts")
    parser.add_argument("--threads", type=cli.int_in_range(0, 1024), default=0,
                        help="CPU threads for torch (0 = torch's default)")
    defaults = BakeSettings()
    group = parser.add_argument_group("the bake measurement (default recipe, meta-gradient included)")
    group.add_argument("--bake-prompts", type=cli.bake_prompts_arg, default="auto",
                       help=f"prompts baked at once: auto (what fits on CUDA, at most {bench.BAKE_AUTO_LIMIT}; "
                            "skipped on CPU), a number, or 0 to skip")
    group.add_argument("--stages", type=cli.int_in_range(1, MAX_STAGES), default=defaults.stages,
                       help="guides in the baked path")
    group.add_argument("--steps-per-stage", type=cli.int_in_range(1, MAX_STEPS_PER_STAGE),
                       default=RenderSettings().steps_per_stage,
                       help="inner steps per stage of the bake")
    group.add_argument("--critic", default=defaults.critic,
                       help="the bake's critic: auto (random-init RN50 for vit-b-32), a model name, or none")
    args = parser.parse_args()
    cli.run(lambda: bench.bench_job(cli.bench_job(args)))


if __name__ == "__main__":
    main()
