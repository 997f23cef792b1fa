"""The `neuronlab` command: one module per command group, each a thin layer over one Python function; every
subcommand has --help, and bad input prints one `error:` line (exit 2).

    neuronlab record --model M --text en=en.txt --text fr=fr.txt --out stats.safetensors
    neuronlab find lape --stats stats.safetensors --out neurons.json
    neuronlab inspect neurons.json
"""

from __future__ import annotations

from neuronlab.cli import analyze, demo, evaluate, experts, find, models, moe, record, scale, study, tune
from neuronlab.cli.common import group

app = group("Find, steer and tune the neurons of transformer language models.")
for _module in (record, find, evaluate, demo, analyze, scale, tune, experts, moe, models, study):
    _module.register(app)


def main() -> None:
    app()
