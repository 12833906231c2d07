"""What a batch bake did (`BatchSummary`): prompts baked, skipped and failed, its batches and their rates;
the lines printed after each batch and at the end; the summaries of several workers merged into one."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import one_line, quote


@dataclass
class BatchSummary:
    """What a batch bake did: prompts baked, skipped (already in the store) and failed, and its batches.

    `batches` holds one (prompts, seconds, prompt-steps) triple per batched bake; `workers` is how many
    processes or Ray task slots shared the run (`merge` combines their summaries into one); `reports`
    maps each baked prompt to its HTML report, where one was written; `lost_workers` says which workers died.
    """

    baked: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]
    seconds: float
    prompt_steps: int
    batches: tuple[tuple[int, float, int], ...] = ()
    workers: int = 1
    reports: dict[str, str] = field(default_factory=dict)
    lost_workers: tuple[str, ...] = ()  # a line for each worker process that died (killed, crashed)

    @staticmethod
    def batch_line(number: int, prompts: int, seconds: float, prompt_steps: int) -> str:
        """The line printed after each batched bake."""
        rate = prompt_steps / seconds if seconds else 0.0
        noun = "prompt" if prompts == 1 else "prompts"
        return f"batch {number}: {prompts} {noun}, {seconds:.1f} s, {rate:.1f} prompt-steps/s"

    def text(self) -> str:
        """The summary printed at the end: counts, wall time and overall rate, the batches, failures."""
        rate = self.prompt_steps / self.seconds if self.seconds else 0.0
        lines = [f"baked {len(self.baked)}, skipped {len(self.skipped)} (already in the store), "
                 f"failed {len(self.failed)}; {self.seconds:.1f} s, {rate:.1f} prompt-steps/s overall"]
        if self.batches:
            sizes = [prompts for prompts, _, _ in self.batches]
            rates = [steps / seconds for _, seconds, steps in self.batches if seconds > 0] or [0.0]
            busy = sum(seconds for _, seconds, _ in self.batches)
            size_range = f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
            noun = "prompt" if max(sizes) == 1 else "prompts"
            lines.append(f"  {len(self.batches)} batches of {size_range} {noun} on {self.workers} worker(s), "
                         f"{busy:.1f} s baking; per batch {min(rates):.1f} to {max(rates):.1f} prompt-steps/s")
        lines += [f"  failed: {quote(prompt)}: {one_line(reason)}" for prompt, reason in self.failed]
        return "\n".join(lines)

    @classmethod
    def merge(cls, summaries: list["BatchSummary"], prompts: list[str], seconds: float, workers: int,
              unfinished_reason: str = "not baked") -> "BatchSummary":
        """One summary of several workers' runs over the same `prompts`, taking `seconds` of wall time.

        A prompt baked by one worker counts as baked even if another saw it already baked or failed on it;
        a prompt that no worker accounted for (its worker died) is failed with `unfinished_reason`.
        """
        baked = list(dict.fromkeys(prompt for summary in summaries for prompt in summary.baked))
        done = set(baked)
        failed: dict[str, str] = {}
        for summary in summaries:
            for prompt, reason in summary.failed:
                if prompt not in done:
                    failed.setdefault(prompt, reason)
        skipped = [prompt for prompt in dict.fromkeys(p for summary in summaries for p in summary.skipped)
                   if prompt not in done and prompt not in failed]
        accounted = done | set(failed) | set(skipped)
        for prompt in prompts:
            if prompt not in accounted:
                failed[prompt] = unfinished_reason
        return cls(baked, skipped, list(failed.items()), seconds,
                   sum(summary.prompt_steps for summary in summaries),
                   tuple(batch for summary in summaries for batch in summary.batches), workers,
                   {prompt: report for summary in summaries for prompt, report in summary.reports.items()})
