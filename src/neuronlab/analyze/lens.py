"""Logit lens (early decoding): read the residual stream after every layer through the model's own final
norm and unembedding (Merullo et al. 2024 use it to see where a relation's answer appears).

    lens = logit_lens(model, tok, ["The capital of Poland is"], targets=[" Warsaw"], k=5)
    lens["layers"][7]["top"][0]          # [(" Warsaw", 0.41), ...] after layer 7, prompt 0
    lens["layers"][7]["target_rank"][0]  # rank of the target's first token (0 = top-1)

Only the last position of each prompt is decoded. At the last layer the result equals the model's own
next-token distribution (final logit soft-capping, as in Gemma 2, is applied too). `site="ffn_out"`
decodes each FFN output alone instead (the "o-vector" as an additive update).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from neuronlab.data.batching import left_padded
from neuronlab.data.scoring import continuation_ids
from neuronlab.errors import NeuronlabError
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import Site, decoder_layers, get_module, trace


def decode(model, h: Tensor) -> Tensor:
    """Logits of residual-stream vectors h [..., d_model] through the final norm and the unembedding."""
    spec = arch_spec(model)
    if not spec.lens:
        raise NeuronlabError(
            f"the logit lens is not served on this {model.config.model_type} model: its head does more than a final "
            "norm and the unembedding (a scale, or residual streams merged), so decoding a layer's output would not "
            "be the model's own reading. The other sites are served"
        )
    h = get_module(model, spec.final_norm)(h) if spec.final_norm else h
    return spec.logits(model.config, get_module(model, spec.unembed)(h))


def logit_lens(
    model,
    tokenizer,
    prompts: Sequence[str],
    targets: Sequence[str] | None = None,
    k: int = 5,
    site: str = "resid",
    batch_size: int = 8,
) -> dict:
    """{"layers": {layer: {"top": [[(token, prob)] per prompt], "target_prob": [...], "target_rank": [...]}}}."""
    if site not in ("resid", "ffn_out", "attn_out"):
        raise NeuronlabError(f"the lens decodes resid, ffn_out or attn_out, not {site!r}")
    if site != "resid" and arch_spec(model).attn_out is None:
        raise NeuronlabError(
            f"the lens decodes {site} as a vector added to the residual stream, and this model's layers are not "
            "h + attn + ffn: decode resid"
        )
    if targets is not None and len(targets) != len(prompts):
        raise NeuronlabError("give one target per prompt")
    n_layers = len(decoder_layers(model))
    first = None
    if targets is not None:
        first = [continuation_ids(tokenizer, p, t)[1][:1] for p, t in zip(prompts, targets, strict=True)]
        if any(not f for f in first):
            raise NeuronlabError("a target has no tokens")
    out: dict[int, dict] = {layer: {"top": [], "target_prob": [], "target_rank": []} for layer in range(n_layers)}
    for start, enc in left_padded(model, tokenizer, prompts, batch_size, positions=True):  # last = prompt's end
        sites = [Site(layer, site) for layer in range(n_layers)]
        last = lambda _site, h: h[:, -1].detach()  # noqa: E731  (keep only the last position)
        with torch.no_grad(), trace(model, sites, stop=True, reduce=last) as seen:
            model(**enc, use_cache=False)
        for layer in range(n_layers):
            with torch.no_grad():
                probs = decode(model, seen[sites[layer]]).float().softmax(-1)  # [batch, vocab]
            top = probs.topk(k, dim=-1)
            entry = out[layer]
            for row in range(probs.shape[0]):
                ids = top.indices[row].tolist()
                entry["top"].append(
                    list(zip(tokenizer.convert_ids_to_tokens(ids), top.values[row].tolist(), strict=True))
                )
                if first is not None:
                    t = first[start + row][0]
                    entry["target_prob"].append(float(probs[row, t]))
                    entry["target_rank"].append(int((probs[row] > probs[row, t]).sum()))
    return {"site": site, "prompts": list(prompts), "targets": list(targets or []), "layers": out}
