"""One progress bar for every long loop: tqdm with the unit of work (tokens, lines, rows, prompts) and its
estimate of the time left, shown on rank 0 only (under torchrun) and not at all when `enabled` is False.

    bar = progress_bar(total=len(lines) * runs, desc="perplexity", unit="line")
    bar.update(len(lines)); bar.close()
"""

from __future__ import annotations


def progress_bar(total: int | None = None, desc: str | None = None, unit: str = "it", enabled: bool = True, **kwargs):
    from tqdm.auto import tqdm

    from neuronlab.dist import world

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or world()[0] != 0, dynamic_ncols=True, **kwargs)
