"""Quick PyTorch-side checks of a trained checkpoint, run right after training on the GPU.

The shipped figures come from `kvscope inspect` (the engine, through the exported graph); this
script is the trainer's fast feedback: held-out perplexity, passkey retrieval (greedy, full
cache, ~1k tokens over depths), induction/echo scores on a repeated random sequence, attention
mass on the first token per layer, and draft top-1 agreement with the target.
Usage: python training/evaluate.py --hf runs/target [--draft runs/draft] --corpus corpus --out runs/eval.json
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from corpus import BOS_ID, read_docs
from hf_io import load_hf
from model import StepModule
from prepare_corpus import PASSKEY_INTRO, PASSKEY_NEEDLE, PASSKEY_QUESTION


def attention_maps(model, ids: list[int]) -> list[torch.Tensor]:
    """Per-layer attention probabilities [H, n, n] of a causal forward (through the step graph code)."""
    c = model.config
    n = len(ids)
    bias = torch.triu(torch.full((n, n), -1e9), 1)[None, None].expand(1, c.n_heads, n, n).to(model.lm_head.weight.device)
    empty = torch.zeros(1, c.n_kv_heads, 0, c.head_dim, device=bias.device)
    inputs = []
    for _ in range(c.n_layers):
        inputs += [empty, empty, bias]
    dev = bias.device
    with torch.no_grad():
        outs = StepModule(model)(torch.tensor([ids], device=dev), torch.arange(n, device=dev)[None], *inputs)
    return [outs[1 + 4 * l + 2][0] for l in range(c.n_layers)]


def passkey_prompt(tok: Tokenizer, sentences: list[str], rng: random.Random, depth: float, target_tokens: int):
    key = str(rng.randint(10000, 99999))
    filler: list[str] = []
    while len(tok.encode(" ".join(filler)).ids) < target_tokens - 60:
        filler.append(rng.choice(sentences))
    at = round(depth * len(filler))
    body = " ".join(filler[:at]) + ("\n" if at else "") + PASSKEY_NEEDLE.format(key=key) + " ".join(filler[at:])
    return PASSKEY_INTRO + body + PASSKEY_QUESTION, key


@torch.no_grad()
def greedy(model, ids: list[int], n: int) -> list[int]:
    dev = model.lm_head.weight.device
    out = list(ids)
    for _ in range(n):
        logits = model.forward_train(torch.tensor([out], device=dev))
        out.append(int(logits[0, -1].argmax()))
    return out[len(ids):]


def family_accuracy(model, tok: Tokenizer, family: dict, context: int, per_cell: int = 6) -> dict:
    """The held-out needle family (needle_family.py), greedy and full cache, per wording: a quick
    look on the GPU; `kvscope inspect` measures it through the engine."""
    rng = random.Random(7)
    out = {}
    for w in family["wordings"]:
        hits = total = 0
        for src in family["filler"]:
            sentences = [s for d in src["documents"] for s in re.split(r"(?<=[.!?])\s+", d.replace("\n", " ")) if 20 <= len(s) <= 200]
            for trial in range(per_cell):
                key = "".join(str(rng.randint(0, 9)) if ch == "D" else chr(65 + rng.randint(0, 25)) if ch == "L" else ch
                              for ch in w["key"])
                target = rng.choice([256, 512, min(1000, context - 24)])
                filler: list[str] = []
                while len(tok.encode(" ".join(filler)).ids) < target - 40:
                    filler.append(rng.choice(sentences))
                at = round(trial / max(1, per_cell - 1) * len(filler))
                text = " ".join(filler[:at]) + "\n" + w["needle"].replace("{key}", key) + "\n" + " ".join(filler[at:]) + "\n" + w["question"]
                ids = [BOS_ID] + tok.encode(text).ids
                gen = greedy(model, ids, len(tok.encode(" " + key).ids) + 2)
                hits += tok.decode(gen).strip().startswith(key)
                total += 1
        out[w["id"]] = round(hits / total, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--draft")
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--out")
    ap.add_argument("--family", default="static/data/needle-family.json", help="held-out needle family (needle_family.py)")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_hf(Path(args.hf)).to(dev).eval()
    tok = Tokenizer.from_file(str(Path(args.hf) / "tokenizer.json"))
    c = model.config
    held = [d["text"] for d in read_docs(Path(args.corpus), "heldout") if d["src"] != "synthetic"]
    report: dict = {}

    # held-out perplexity over windows starting at document starts
    losses = []
    for text in held[:200]:
        ids = [BOS_ID] + tok.encode(text).ids[: c.context_length - 1]
        if len(ids) < 16:
            continue
        with torch.no_grad():
            logits = model.forward_train(torch.tensor([ids], device=dev))
        losses.append(F.cross_entropy(logits[0, :-1], torch.tensor(ids[1:], device=dev), reduction="sum").item() / (len(ids) - 1))
    report["heldout_ppl"] = math.exp(float(np.mean(losses)))

    # attention mass on the first token, per layer (held-out windows of >= 256 tokens, queries past 16)
    sink = np.zeros(c.n_layers)
    windows = [t for t in held if len(t) > 1500][:16]
    for text in windows:
        ids = [BOS_ID] + tok.encode(text).ids[:511]
        maps = attention_maps(model, ids)
        sink += np.array([m[:, 16:, 0].mean().item() for m in maps])
    report["sink_mass_per_layer"] = (sink / max(1, len(windows))).round(4).tolist()

    # echo / induction scores on BOS + random sequence repeated 4x (RazorAttention's probe)
    g = np.random.default_rng(0)
    length = 50
    seq = g.integers(3, c.vocab_size, size=length).tolist()
    ids = [BOS_ID] + seq * 4
    maps = attention_maps(model, ids)
    induction = np.zeros((c.n_layers, c.n_heads))
    echo = np.zeros((c.n_layers, c.n_heads))
    qs = np.arange(1 + length, len(ids))
    for l, m in enumerate(maps):
        m = m.cpu().numpy()
        induction[l] = m[:, qs, qs - length + 1].mean(-1)
        echo[l] = m[:, qs, qs - length].mean(-1)
    report["induction_top"] = sorted(((float(induction[l, h]), l, h) for l in range(c.n_layers) for h in range(c.n_heads)), reverse=True)[:5]
    report["echo_top"] = sorted(((float(echo[l, h]), l, h) for l in range(c.n_layers) for h in range(c.n_heads)), reverse=True)[:5]

    # passkey retrieval, greedy, full cache, ~1k-token prompts over depths; plus Wu et al. retrieval scores
    sentences = [s for t in held for s in re.split(r"(?<=[.!?])\s+", t.replace("\n", " ")) if 20 <= len(s) <= 200 and not re.search(r"\d", s)]
    rng = random.Random(0)
    hits = 0
    retrieval = np.zeros((c.n_layers, c.n_heads))
    for trial in range(args.trials):
        depth = trial / max(1, args.trials - 1)
        prompt, key = passkey_prompt(tok, sentences, rng, depth, c.context_length - 24)
        encoding = tok.encode(prompt)
        ids = [BOS_ID] + encoding.ids
        gen = greedy(model, ids, 7)
        text = tok.decode(gen)
        ok = text.strip().startswith(key)
        hits += ok
        if ok:  # retrieval score: top-1 attention lands on the needle token that is being copied
            # the needle = the key's tokens (both mentions); Wu et al. normalise by the answer's length
            lo = prompt.index(PASSKEY_NEEDLE.format(key=key))
            key_chars = [(m.start(), m.end()) for m in re.finditer(key, prompt[lo:lo + 80])]
            span = {i + 1 for i, (s, e) in enumerate(encoding.offsets)
                    if any(lo + a <= s and e <= lo + b for a, b in key_chars)}
            needle_len = len(key)
            full = ids + gen
            maps = attention_maps(model, full)
            for step in range(len(gen)):
                qpos = len(ids) - 1 + step
                for l, m in enumerate(maps):
                    top = m[:, qpos, :].argmax(-1).cpu().numpy()
                    for h in range(c.n_heads):
                        if top[h] in span and full[top[h]] == gen[step]:
                            retrieval[l, h] += 1 / needle_len
    report["passkey_accuracy"] = hits / args.trials
    if hits:
        retrieval /= hits
    report["retrieval_heads_over_0.1"] = int((retrieval > 0.1).sum())
    report["retrieval_top"] = sorted(((float(retrieval[l, h]), l, h) for l in range(c.n_layers) for h in range(c.n_heads)), reverse=True)[:6]

    if args.family and Path(args.family).exists():
        report["needle_family"] = family_accuracy(model, tok, json.loads(Path(args.family).read_text()), c.context_length)

    if args.draft:
        draft = load_hf(Path(args.draft)).to(dev).eval()
        agree = total = 0
        for text in held[:60]:
            ids = [BOS_ID] + tok.encode(text).ids[:255]
            with torch.no_grad():
                a = model.forward_train(torch.tensor([ids], device=dev))[0].argmax(-1)
                b = draft.forward_train(torch.tensor([ids], device=dev))[0].argmax(-1)
            agree += int((a == b).sum())
            total += len(ids)
        report["draft_top1_agreement"] = agree / total
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
