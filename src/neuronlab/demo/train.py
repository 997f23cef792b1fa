"""Train tiny multilingual models from scratch on the CPU (the demo model, test fixtures).

    tok = train_tokenizer(all_lines, vocab_size=2048)
    model = tiny_llama(tok, hidden=128, layers=4, d_ff=384)          # gated FFN (SiLU gate x up)
    model = tiny_gpt2(tok, hidden=64, layers=4, d_ff=512)            # plain FFN (ReLU), no dropout
    train(model, tok, {"en": en_lines, "fr": fr_lines}, steps=1500)

Each training sequence is a window of one language's text stream (texts joined with BOS between them),
like the monolingual documents of real pretraining; languages are sampled uniformly.
"""

from __future__ import annotations

import math
import random

import torch

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer (every script encodes, nothing is unknown) that adds BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def tiny_llama(tokenizer, hidden: int = 128, layers: int = 4, d_ff: int = 384, heads: int = 4, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=d_ff,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def tiny_gpt2(
    tokenizer,
    hidden: int = 64,
    layers: int = 4,
    d_ff: int = 512,
    heads: int = 4,
    activation: str = "relu",
    seed: int = 0,
):
    """GPT-2 architecture with a plain (ungated) FFN: setting a neuron's activation to a value adds a fixed
    multiple of its down-projection row, whatever the input (in a gated FFN the up projection decides the sign)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=d_ff,
        n_positions=512,
        activation_function=activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def train(
    model,
    tokenizer,
    texts: dict[str, list[str]],
    steps: int = 1500,
    batch_size: int = 32,
    seq_len: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """AdamW with warm-up and cosine decay; returns the loss of every step. Leaves the model in eval mode."""
    from tqdm.auto import tqdm

    streams = {}
    for lang, lines in texts.items():
        ids = [i for ids in tokenizer(lines)["input_ids"] for i in ids]
        if len(ids) <= seq_len:
            raise ValueError(f"{lang}: {len(ids)} tokens is too little text for sequences of {seq_len}")
        streams[lang] = torch.tensor(ids)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    langs = list(streams)
    losses = []
    model.train()
    bar = tqdm(range(steps), disable=not progress, desc="train")
    for _ in bar:
        rows = []
        for _ in range(batch_size):
            stream = streams[rng.choice(langs)]
            start = rng.randrange(0, len(stream) - seq_len)
            rows.append(stream[start : start + seq_len])
        batch = torch.stack(rows)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
