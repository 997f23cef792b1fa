"""Top activating contexts: for every neuron, the k tokens of a corpus where its value is highest, each with the
tokens around it and the neuron's value on them (what `neuronlab view` shows).

    stats = nl.record(model, tok, texts, contexts=True, top_k=20)
    top = stats.contexts                   # TopContexts
    top.value[layer, :, neuron]            # float32 [k], highest first (-inf: fewer than k tokens counted)
    top.where(layer, neuron)               # [(value, group, text, position), ...]
    top.tokens[layer, :, neuron]           # int32 [k, CONTEXT]: ids around each peak (-1: outside the window)

Kept while recording, on the device of the activations: memory is k x neurons x CONTEXT, never the corpus.
The order is value descending, ties by (group, text index, position in the text) ascending, so the result is
the same whatever the batch order (length buckets), the number of ranks, or where a run was resumed. Only
counted tokens compete (no padding, no special tokens unless counted); the context shows any token of the
window. Group, text and position are packed in one int64 key (`pack`); `pieces` keeps each token's bytes.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError

BEFORE, AFTER = 8, 3  # context tokens kept before and after the peak
CONTEXT = BEFORE + 1 + AFTER
NONE = torch.iinfo(torch.int64).max  # the key of an empty slot (and of tokens that are not counted)
_POS_BITS, _TEXT_BITS, _GROUP_BITS = 20, 32, 11


def pack(group: int | Tensor, text: Tensor, position: Tensor) -> Tensor:
    """The int64 key of tokens: group, text index and position in the text, ordered in that priority."""
    group = torch.as_tensor(group, dtype=torch.long)
    if (
        int(group.max()) >= 1 << _GROUP_BITS
        or int(text.max()) >= 1 << _TEXT_BITS
        or int(position.max()) >= 1 << _POS_BITS
    ):
        raise NeuronlabError(
            f"top contexts address at most {1 << _GROUP_BITS} groups, 2^{_TEXT_BITS} texts a group "
            f"and 2^{_POS_BITS} tokens a text: split the corpus, or record without contexts"
        )
    return (group << (_TEXT_BITS + _POS_BITS)) | (text.long() << _POS_BITS) | position.long()


def unpack(key: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(group, text, position) of keys (meaningless where key is NONE)."""
    return key >> (_TEXT_BITS + _POS_BITS), (key >> _POS_BITS) & ((1 << _TEXT_BITS) - 1), key & ((1 << _POS_BITS) - 1)


@dataclass
class TopContexts:
    value: Tensor  # float32 [layers, k, width], highest first; -inf in empty slots
    key: Tensor  # int64 [layers, k, width]: packed (group, text, position); NONE in empty slots
    tokens: Tensor  # int32 [layers, k, width, CONTEXT]: ids from BEFORE tokens before the peak to AFTER after; -1: none
    acts: Tensor  # bfloat16 [layers, k, width, CONTEXT]: the neuron's value on those tokens (0 where none)

    @classmethod
    def empty(cls, n_layers: int, k: int, width: int) -> TopContexts:
        shape = (n_layers, k, width)
        return cls(
            torch.full(shape, float("-inf")),
            torch.full(shape, NONE),
            torch.full((*shape, CONTEXT), -1, dtype=torch.int32),
            torch.zeros((*shape, CONTEXT), dtype=torch.bfloat16),
        )

    @property
    def k(self) -> int:
        return self.value.shape[1]

    def tensors(self) -> list[Tensor]:
        return [self.value, self.key, self.tokens, self.acts]

    def layer(self, i: int) -> list[Tensor]:
        return [t[i] for t in self.tensors()]

    def set_layer(self, i: int, parts: list[Tensor]) -> None:
        for name, part in zip(("value", "key", "tokens", "acts"), parts, strict=True):
            getattr(self, name)[i] = part.cpu()

    def where(self, layer: int, neuron: int) -> list[tuple[float, int, int, int]]:
        """(value, group index, text index, position) of the neuron's top contexts, highest first."""
        key = self.key[layer, :, neuron]
        g, t, p = unpack(key)
        keep = key != NONE
        return list(
            zip(
                self.value[layer, :, neuron][keep].tolist(),
                g[keep].tolist(),
                t[keep].tolist(),
                p[keep].tolist(),
                strict=True,
            )
        )

    def merged(self, others: list[TopContexts]) -> TopContexts:
        """The top k of these and `others` together (same shapes)."""
        out = TopContexts.empty(self.value.shape[0], self.k, self.value.shape[2])
        for i in range(self.value.shape[0]):
            parts = [torch.cat(p) for p in zip(*(t.layer(i) for t in [self, *others]), strict=True)]
            out.set_layer(i, _best(parts, self.k))
        return out

    def regroup(self, new: list[int]) -> TopContexts:
        """Group indices renumbered (old group i becomes new[i]; -1 drops its contexts), re-sorted."""
        g, t, p = unpack(self.key)
        full = self.key != NONE
        to = torch.tensor([*new, -1], dtype=torch.long)[torch.where(full, g, len(new))]
        drop = to < 0
        key = torch.where(drop, NONE, pack(to.clamp(min=0), t, p))
        out = TopContexts(
            self.value.masked_fill(drop, float("-inf")),
            key,
            self.tokens.masked_fill(drop[..., None], -1),
            self.acts.masked_fill(drop[..., None], 0),
        )
        return out.merged([])

    def state_dict(self, prefix: str = "top_") -> dict[str, Tensor]:
        return {prefix + n: getattr(self, n) for n in ("value", "key", "tokens", "acts")}

    @classmethod
    def from_state(cls, state: dict, prefix: str = "top_") -> TopContexts | None:
        if prefix + "value" not in state:
            return None
        return cls(*(state[prefix + n] for n in ("value", "key", "tokens", "acts")))


def pieces(tokenizer, tokens: Tensor) -> dict[str, str]:
    """The bytes of each token id in `tokens` (-1 skipped), as hex, for showing contexts without the tokenizer:
    {id: hex}. Bytes, not text, so tokens that hold part of a character (byte-level BPE, byte fallback) join up
    when a context is decoded (`texts`)."""
    ids = torch.unique(tokens[tokens >= 0]).tolist()
    out = {}
    for i, raw, text in zip(
        ids, tokenizer.convert_ids_to_tokens(ids), tokenizer.batch_decode([[i] for i in ids]), strict=True
    ):
        out[str(i)] = _token_bytes(raw or "", text).hex()
    return out


def texts(hexes: list[str]) -> list[str]:
    """Text of each token of a run (from `pieces`), decoded as one UTF-8 stream: a token that completes a character
    shows it, a token holding only its first bytes shows nothing; bytes left incomplete at the end show U+FFFD."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out = [decoder.decode(bytes.fromhex(h)) for h in hexes]
    if out:
        out[-1] += decoder.decode(b"", final=True)
    return out


def _token_bytes(raw: str, text: str) -> bytes:
    if "\ufffd" not in text:
        if raw[:1] in ("\u2581", "\u0120") and not text.startswith(" "):  # a word start the decoder strips alone
            text = " " + text
        return text.encode("utf-8")
    if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", raw):  # sentencepiece byte fallback
        return bytes([int(raw[3:5], 16)])
    table = _byte_level()
    if raw and all(c in table for c in raw):  # byte-level BPE (GPT-2): one character a byte
        return bytes(table[c] for c in raw)
    return text.encode("utf-8")


@functools.cache
def _byte_level() -> dict[str, int]:
    """Byte-level BPE's alphabet (GPT-2): printable bytes stand for themselves, the others for chr(256 + n)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


def _best(parts: list[Tensor], k: int) -> list[Tensor]:
    """The first k entries of (value [n, W], key [n, W], tokens, acts) by value descending, then key ascending."""
    value, key = parts[0], parts[1]
    by_key = key.argsort(dim=0, stable=True)
    by_value = value.gather(0, by_key).argsort(dim=0, descending=True, stable=True)
    order = by_key.gather(0, by_value)[:k]
    out = [value.gather(0, order), key.gather(0, order)]
    for ctx in parts[2:]:
        out.append(ctx.gather(0, order[..., None].expand(-1, -1, ctx.shape[-1])))
    return out


def offer(top: list[Tensor], h: Tensor, key: Tensor, ids: Tensor, real: Tensor) -> list[Tensor]:
    """`top` (one layer's value, key, tokens, acts) updated with a batch: h [batch, pos, width] the values, key int64
    [batch, pos] (NONE where not counted), ids [batch, pos] the tokens, real bool [batch, pos] (not padding)."""
    b, p, width = h.shape
    k = top[0].shape[0]
    x = h.reshape(b * p, width).float()
    key = key.reshape(-1)
    xs = x.masked_fill((key == NONE)[:, None], float("-inf"))
    # the neurons this batch can change (a tie may still win on its key): later in a run few, and topk runs on those
    live = xs.amax(0) >= top[0][-1]
    if not bool(live.any()):
        return top
    cols = None if bool(live.all()) else live.nonzero().squeeze(1)
    if cols is not None:
        xs = xs[:, cols]
    n = min(k, b * p)
    value, index = xs.topk(min(k + 1, b * p), dim=0)  # ties in no particular order; one more to see them
    tied = value[n] == value[n - 1] if n < b * p else torch.zeros(xs.shape[1], dtype=torch.bool, device=h.device)
    value, index = value[:n], index[:n]  # [n, cols]; where `tied`, equal values straddle the n-th place
    index = _break_ties(xs, key, value, index, tied)
    cand_key = torch.where(value > float("-inf"), key[index], NONE)
    offsets = torch.arange(-BEFORE, AFTER + 1, device=h.device)
    at = (index % p)[..., None] + offsets  # [n, cols, CONTEXT] positions in the row
    flat = (index[..., None] + offsets).clamp(0, b * p - 1)
    ok = (at >= 0) & (at < p) & real.reshape(-1)[flat] & (cand_key != NONE)[..., None]
    tokens = torch.where(ok, ids.reshape(-1)[flat].int(), -1)
    source = x if cols is None else x[:, cols]
    acts = source.gather(0, flat.permute(0, 2, 1).reshape(n * CONTEXT, -1)).reshape(n, CONTEXT, -1).permute(0, 2, 1)
    acts = torch.where(ok, acts, 0.0).to(top[3].dtype)
    if cols is None:
        return _best(
            [torch.cat([a, c.to(a.device)]) for a, c in zip(top, [value, cand_key, tokens, acts], strict=True)], k
        )
    best = _best([torch.cat([a[:, cols], c]) for a, c in zip(top, [value, cand_key, tokens, acts], strict=True)], k)
    out = [t.clone() for t in top]
    for o, new in zip(out, best, strict=True):
        o[:, cols] = new
    return out


def _break_ties(xs: Tensor, key: Tensor, value: Tensor, index: Tensor, tied: Tensor) -> Tensor:
    """Where equal values straddle the n-th place (`tied`), fill the places of that value with the smallest keys."""
    n = value.shape[0]
    cols = tied.nonzero().squeeze(1)
    if len(cols) == 0:
        return index
    t = value[-1]  # [width]: the lowest value taken
    above = (value > t).sum(0)
    sub = torch.where(xs[:, cols] == t[cols], key[:, None], NONE)  # [rows, cols]
    smallest = sub.topk(n, dim=0, largest=False).indices  # [n, cols]
    slot = torch.arange(n, device=xs.device)[:, None]
    fill = smallest.gather(0, (slot - above[cols]).clamp(min=0))
    index = index.clone()
    index[:, cols] = torch.where(slot >= above[cols], fill, index[:, cols])
    return index
