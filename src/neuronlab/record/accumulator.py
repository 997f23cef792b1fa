"""What `record` keeps while a batch runs: per-layer Moments on the activations' own device, each neuron's running
top contexts, and the per-text pooled rows; flushed into Stats on the CPU at text boundaries."""

from __future__ import annotations

import torch
from torch import Tensor

from neuronlab.data.batching import Batch
from neuronlab.models.sites import Site
from neuronlab.record.stats import Moments, Stats
from neuronlab.record.topk import offer


class Accumulator:
    """Per-layer Moments for one group on the activations' own device; flushed into Stats on the CPU."""

    def __init__(self, pooled_texts: int, contexts):
        self.layers: dict[int, Moments] = {}
        self.contexts = contexts  # TopContexts or None; its layers run on the device as `self.top`
        self.top: dict[int, list[Tensor]] = {}
        self.keys: Tensor | None = None  # int64 [batch, pos]: the batch's context keys (NONE: not counted)
        self.pooled_texts = pooled_texts
        self.pooled: dict[int, list] = {}  # text index -> [count, sum [L, W], max [L, W]]
        self.batch: Batch | None = None  # the batch being run, and its bool [batch, pos] counted positions
        self.count: Tensor | None = None
        self.counted = self.whole = False  # any / every position counted
        self.on_device: dict = {}  # device -> count there

    def start(self, batch: Batch, keys: Tensor | None = None) -> None:
        """Take the next batch's counted positions (decided on the CPU: no device sync per layer)."""
        self.batch, self.count, self.keys = batch, batch.count, keys
        self.counted, self.whole = bool(batch.count.any()), bool(batch.count.all())
        self.on_device = {}

    def add(self, site: Site, h: Tensor) -> None:  # h: [batch, pos, width]; trace's reduce: keeps nothing
        if not self.counted:
            return
        if h.device not in self.on_device:
            assert self.batch is not None  # start() ran
            moved = (self.count, self.keys, self.batch.input_ids, self.batch.attention_mask.bool())
            self.on_device[h.device] = [None if t is None else t.to(h.device, non_blocking=True) for t in moved]
        count, keys, ids, real = self.on_device[h.device]
        if keys is not None:
            if site.layer not in self.top:
                self.top[site.layer] = [t.to(h.device) for t in self.contexts.layer(site.layer)]
            self.top[site.layer] = offer(self.top[site.layer], h, keys, ids, real)
        if site.layer not in self.layers:
            self.layers[site.layer] = Moments.zeros(h.shape[-1], h.device if h.device.type != "mps" else "cpu")
        # no boolean gather (a host sync on GPUs): uncounted rows are masked inside the reductions
        self.layers[site.layer].add(h.reshape(-1, h.shape[-1]), None if self.whole else count.reshape(-1))
        if self.pooled_texts:
            self._pool(site.layer, h, count)

    def _pool(self, layer: int, h: Tensor, count: Tensor) -> None:
        assert self.batch is not None
        for r, t in enumerate(self.batch.text):
            if t >= self.pooled_texts or not bool(count[r].any()):
                continue
            x = h[r][count[r]].double().cpu()  # [tokens, width]
            entry = self.pooled.setdefault(t, [0, {}, {}])
            if layer == 0:  # count each row's tokens once
                entry[0] += x.shape[0]
            s, m = entry[1], entry[2]
            s[layer] = s[layer] + x.sum(0) if layer in s else x.sum(0)
            m[layer] = torch.maximum(m[layer], x.amax(0)) if layer in m else x.amax(0)

    def flush(self, stats: Stats, g: int) -> None:
        for layer, moments in self.layers.items():
            moments.merge_into(stats, g, layer)
        self.layers.clear()
        for layer, top in self.top.items():  # the running top stays on the device; Stats gets a copy
            assert stats.contexts is not None  # keys (and so self.top) only where contexts are kept
            stats.contexts.set_layer(layer, top)

    def flush_pooled(self, stats: Stats, g: int, layers: list[int], texts_done: int) -> None:
        """Move pooled rows of texts that are complete into Stats (in text order)."""
        mean, top, filled = stats.pooled_mean, stats.pooled_max, stats.pooled_n
        if mean is None or top is None or filled is None:
            return  # no per-text rows kept
        for t in sorted(k for k in self.pooled if k < texts_done):
            n, s, m = self.pooled.pop(t)
            row = int(filled[g])
            if n == 0 or row >= mean.shape[1]:
                continue
            for li, layer in enumerate(layers):
                mean[g, row, li] = (s[layer] / n).float()
                top[g, row, li] = m[layer].float()
            filled[g] += 1
