"""Expert neurons across training: alignment with SimLex-999 at checkpoints of a tiny model trained here.

A 4-layer GPT-2-architecture model (d 128, ReLU FFN of 512) is trained on the English FLORES-200 devtest lines;
the state is kept at steps 0, 200, 600 and 1500. Concepts are the SimLex-999 words that occur in at least 5
FLORES lines, with those real lines as their sentences (at most 10). At each checkpoint: responses, expertise,
Spearman of expert Jaccard (and AP cosine) against SimLex over the covered pairs. Run from the checkout:

    python examples/experts_checkpoints.py            # prints one line per checkpoint and writes experts-trend.json
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

import neuronlab as nl
from neuronlab.analyze.alignment import align, read_ratings
from neuronlab.data.concepts import add_negatives, sentence_list
from neuronlab.data.corpora import read_lines
from neuronlab.demo.train import tiny_gpt2, train, train_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
STEPS = (0, 200, 600, 1500)


def main() -> None:
    torch.set_num_threads(2)
    lines = read_lines(SHARED / "flores200_devtest" / "eng_Latn.devtest")
    ratings = read_ratings(SHARED / "word_similarity" / "EN-SIMLEX-999.txt")
    rated = {w for a, b, _ in ratings for w in (a, b)}
    found: dict[str, list[str]] = {}
    for line in lines:
        for w in set(re.findall(r"[a-z]+", line.lower())) & rated:
            found.setdefault(w, []).append(line)
    concepts = add_negatives({w: {"positive": s[:10]} for w, s in sorted(found.items()) if len(s) >= 5})
    sentences, index = sentence_list(concepts)
    tok = train_tokenizer(lines, 2048)
    model = tiny_gpt2(tok, hidden=128, layers=4, d_ff=512)
    states, done = {0: copy.deepcopy(model.state_dict())}, 0
    for step in STEPS[1:]:  # one cosine schedule per stretch: a simple stand-in for checkpoints of one run
        train(
            model, tok, {"en": lines}, steps=step - done, batch_size=16, seq_len=64, lr=2e-3, seed=step, progress=False
        )
        states[step], done = copy.deepcopy(model.state_dict()), step
    trend = {}
    for step, state in states.items():
        model.load_state_dict(state)
        model.eval()
        resp = nl.responses(model, tok, sentences, progress=False)
        ex = nl.expertise(resp, concepts, index, {"site": "act", "model": nl.model_info(model)})
        result = align(ex, ratings)
        trend[step] = {k: result[k] for k in ("spearman", "pairs", "ap_cosine")} | {"experts": result["experts"]["0.5"]}
        print(
            f"step {step:5d}: Spearman (Jaccard, tau 0.5) {result['spearman']:+.3f}  AP cosine "
            f"{result['ap_cosine']:+.3f}  over {result['pairs']} pairs, {result['experts']['0.5']} experts"
        )
    Path("experts-trend.json").write_text(json.dumps({"concepts": len(concepts), "trend": trend}, indent=1))


if __name__ == "__main__":
    main()
