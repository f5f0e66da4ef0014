"""Train a Llama-style model on the prepared corpus and save it as a Hugging Face checkpoint.

Presets (see MODEL_CARD.md of each shipped model):
  target  d 256, 8 layers, 8 query / 2 KV heads, head dim 32, SwiGLU 768, context 1024, tied embeddings
  draft   d 128, 2 layers, 4 query / 1 KV head, head dim 32, SwiGLU 320 (≤ 1/8 of the target's MACs/token)
  tiny    test fixture only: random seeded weights, no training (d 32, 2 layers)

Batches: windows of context+1 tokens that open with BOS (so attention sinks form on position 0,
TRAINING_NOTES.md), plus rows built fresh every step: repeated random-token sequences (induction),
passkeys in the engine's needle wording, and open-vocabulary associative recall (retrieval.py).
The draft preset can learn from the target's distribution (--teacher): greedy acceptance is
agreement with the target, so that is what it is trained for.
Usage: python training/train.py --preset target --steps 5000 --out runs/target
"""
from __future__ import annotations

import argparse
import json
import math
import queue
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpus import BOS_ID, EOS_ID, load_or_tokenize
from hf_io import load_hf, save_hf
from model import Llama, LlamaConfig
from needle_family import check_disjoint
from retrieval import RetrievalRows

PRESETS = {
    "target": dict(config=LlamaConfig(), lr=2e-3, batch=128),
    "draft": dict(config=LlamaConfig(hidden_size=128, intermediate_size=320, n_layers=2, n_heads=4, n_kv_heads=1,
                                     head_dim=32), lr=3e-3, batch=128),
    "tiny": dict(config=LlamaConfig(hidden_size=32, intermediate_size=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                    head_dim=8, context_length=256), lr=0.0, batch=1),
}


def repeated_random_rows(n: int, width: int, vocab: int, device: str, gen: torch.Generator) -> torch.Tensor:
    """Fresh every step (a fixed pool gets memorised): BOS + a random sequence of 8..128 tokens
    repeated to fill the row, so the only way to predict is to copy (induction heads)."""
    seqs = torch.randint(3, vocab, (n, 128), device=device, generator=gen)
    period = torch.randint(8, 129, (n, 1), device=device, generator=gen)
    rows = seqs.gather(1, torch.arange(width, device=device)[None] % period)
    rows[:, 0] = BOS_ID
    return rows


class PasskeyRows:
    """Passkey documents built in token space with fresh random keys every step, in the wording of
    prepare_corpus.py (and of the engine's needle evaluation), over filler drawn from the corpus.
    Static passkey documents alone get memorised over the epochs instead of teaching retrieval."""

    def __init__(self, tok, tokens: np.ndarray, width: int, rng: np.random.Generator):
        from prepare_corpus import PASSKEY_INTRO, PASSKEY_NEEDLE, PASSKEY_QUESTION
        enc = lambda text: np.array(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        self.digits = np.array([enc(str(d))[0] for d in range(10)])
        assert all(len(enc(str(d))) == 1 for d in range(10)), "digits must be single tokens"
        self.intro = enc(PASSKEY_INTRO)
        self.needle = enc(PASSKEY_NEEDLE.format(key="00000"))
        self.answer = np.concatenate([enc(PASSKEY_QUESTION), enc(" 00000.")])
        self.newline = enc("\n")[0]
        self.tokens, self.width, self.rng = tokens, width, rng

    def _with_key(self, template: np.ndarray, key: np.ndarray) -> np.ndarray:
        out = template.copy()
        slots = np.flatnonzero(out == self.digits[0])
        out[slots] = np.tile(key, len(slots) // 5)
        return out

    def rows(self, n: int) -> np.ndarray:
        out = np.empty((n, self.width + 1), dtype=np.int64)
        fixed = 1 + len(self.intro) + len(self.needle) + len(self.answer) + 1
        for r in range(n):
            key = self.digits[self.rng.integers(0, 10, size=5)]
            key[0] = self.digits[self.rng.integers(1, 10)]
            total = int(self.rng.integers(fixed + 64, self.width + 1))
            n_fill = total - fixed
            at = int(self.rng.integers(0, len(self.tokens) - n_fill - self.width - 2))
            filler = self.tokens[at:at + n_fill].astype(np.int64)
            filler = np.where(filler < 3, self.newline, filler)  # no BOS/EOS inside the filler
            depth = int(self.rng.integers(0, n_fill + 1))
            doc = np.concatenate([[BOS_ID], self.intro, filler[:depth], self._with_key(self.needle, key), filler[depth:],
                                  self._with_key(self.answer, key), [EOS_ID]])
            tail = self.tokens[at + n_fill:at + n_fill + self.width + 1 - len(doc)].astype(np.int64)
            out[r] = np.concatenate([doc, tail])[: self.width + 1]
        return out


@torch.no_grad()
def heldout_loss(model: Llama, tokens: torch.Tensor, starts: torch.Tensor, width: int, n_windows: int = 64) -> float:
    model.eval()
    idx = starts[torch.linspace(0, len(starts) - 1, n_windows, device=starts.device).long()]
    idx = idx.clamp(max=len(tokens) - width - 1)
    windows = tokens[idx[:, None] + torch.arange(width + 1, device=tokens.device)].long()
    losses = []
    for chunk in windows.split(16):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model.forward_train(chunk[:, :-1])
        losses.append(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="none"))
    model.train()
    return torch.cat(losses).mean().item()


class RowFeeder:
    """Builds the CPU-made rows (passkeys, associative recall) on a thread, a few batches ahead of
    the GPU, so the training step never waits for Python."""

    def __init__(self, make, depth: int = 4):
        self.make, self.queue = make, queue.Queue(maxsize=depth)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            self.queue.put(torch.from_numpy(self.make()).pin_memory())

    def next(self) -> torch.Tensor:
        return self.queue.get()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=PRESETS, required=True)
    ap.add_argument("--corpus", default="corpus")
    ap.add_argument("--tokenizer", default="runs/tokenizer.json")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seconds", type=float, help="train for this long instead: --steps is set from the speed of steps 10-60")
    ap.add_argument("--repeat-rows", type=float, default=0.08, help="share of rows of repeated random tokens")
    ap.add_argument("--passkey-rows", type=float, default=0.06, help="share of rows of fresh passkey documents")
    ap.add_argument("--retrieval-rows", type=float, default=0.14, help="share of rows of open-vocabulary associative recall")
    ap.add_argument("--recall-variety", type=int, default=1, choices=(1, 2), help="associative-recall generator version (retrieval.py)")
    ap.add_argument("--init", help="start from this checkpoint's weights (a second training stage)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    ap.add_argument("--teacher", help="checkpoint whose distribution the model learns (knowledge distillation; draft preset)")
    ap.add_argument("--teacher-weight", type=float, default=0.9, help="share of the loss that is KL to the teacher")
    ap.add_argument("--dropout", type=float, default=0.1, help="residual dropout (the corpus is seen ~25 times)")
    ap.add_argument("--doc-start-share", type=float, default=0.3, help="share of windows that start at a document's BOS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    preset = PRESETS[args.preset]
    config: LlamaConfig = preset["config"]
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = Llama(config)
    model.init_gpt2_style(gen)
    if args.init:
        model.load_state_dict(load_hf(Path(args.init)).state_dict())
    if args.lr is not None:
        preset = {**preset, "lr": args.lr}
    out = Path(args.out)
    log: dict = {"preset": args.preset, "config": config.to_dict(), "parameters": model.parameter_count(),
                 "macs_per_token": model.macs_per_token(), "seed": args.seed}

    if args.preset == "tiny":
        with torch.no_grad():  # larger weights than GPT-2 init, so attention and logits are far from uniform
            for p in model.parameters():
                if p.dim() >= 2:
                    p.mul_(10.0)
        if config.vocab_size != 4096:
            raise SystemExit("tiny preset expects the 4096-token tokenizer")
        save_hf(model, out, Path(args.tokenizer), BOS_ID, EOS_ID)
        (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
        return

    device = "cuda"
    t_start = time.time()
    tokens_np, starts_np = load_or_tokenize(Path(args.tokenizer), Path(args.corpus), "train", Path(args.cache))
    held_np, held_starts_np = load_or_tokenize(Path(args.tokenizer), Path(args.corpus), "heldout", Path(args.cache))
    width = config.context_length
    tokens = torch.from_numpy(tokens_np.astype(np.int32)).to(device)
    starts = torch.from_numpy(starts_np[starts_np < len(tokens_np) - width - 1]).to(device)
    held = torch.from_numpy(held_np.astype(np.int32)).to(device)
    held_starts = torch.from_numpy(held_starts_np[held_starts_np < len(held_np) - width - 1]).to(device)
    rng = np.random.default_rng(args.seed)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(args.tokenizer))
    passkeys = PasskeyRows(tok, tokens_np, width, rng)
    recall = RetrievalRows(tok, tokens_np, width, np.random.default_rng(args.seed + 1), variety=args.recall_variety)
    check_disjoint(*recall.examples())
    print(f"corpus: {len(tokens_np) / 1e6:.1f}M train tokens, {len(held_np) / 1e6:.2f}M held-out; "
          f"tokenized in {time.time() - t_start:.0f}s", flush=True)

    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=preset["lr"], betas=(0.9, 0.95), fused=True)
    forward = model.forward_train if args.no_compile else torch.compile(model.forward_train)
    batch = preset["batch"]
    n_repeat = int(round(batch * args.repeat_rows))
    n_passkey = int(round(batch * args.passkey_rows))
    n_recall = int(round(batch * args.retrieval_rows))
    feeder = RowFeeder(lambda: np.concatenate([passkeys.rows(n_passkey), recall.rows(n_recall)]))
    teacher = None
    if args.teacher:
        teacher = load_hf(Path(args.teacher)).to(device).eval()
        teacher_forward = torch.compile(teacher.forward_train) if not args.no_compile else teacher.forward_train
    offsets = torch.arange(width + 1, device=device)
    tgen = torch.Generator(device=device).manual_seed(args.seed)

    n_text_tokens = len(tokens) - width - 1

    def sample_windows(n: int) -> torch.Tensor:
        """A share of windows start at a document's BOS; the rest start anywhere, with a BOS put in
        front. Every window thus opens with BOS (where attention sinks form) while the whole corpus
        is covered, not just the first `width` tokens of each document."""
        n_doc = int(n * args.doc_start_share)
        doc = starts[torch.randint(len(starts), (n_doc,), device=device, generator=tgen)]
        doc_rows = tokens[doc[:, None] + offsets]
        anywhere = torch.randint(n_text_tokens, (n - n_doc,), device=device, generator=tgen)
        mid_rows = tokens[anywhere[:, None] + offsets[:-1]]
        mid_rows = torch.cat([torch.full_like(mid_rows[:, :1], BOS_ID), mid_rows], dim=1)
        return torch.cat([doc_rows, mid_rows]).long()

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return preset["lr"] * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return preset["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    t_train = time.time()
    history = []
    step = 0
    while step < args.steps:
        if args.seconds and step == 10:
            t_mark = time.time()
        if args.seconds and step == 60:
            per_step = (time.time() - t_mark) / 50
            args.steps = 60 + int((args.seconds - (time.time() - t_train)) / per_step)
            print(f"{per_step * 1000:.1f} ms/step: {args.steps} steps fit in {args.seconds:.0f}s", flush=True)
        rows = torch.cat([sample_windows(batch - n_repeat - n_passkey - n_recall),
                          repeated_random_rows(n_repeat, width + 1, config.vocab_size, device, tgen),
                          feeder.next().to(device, non_blocking=True)])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward(rows[:, :-1], args.dropout)
        flat = logits.float().reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, rows[:, 1:].reshape(-1))
        if teacher is not None:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                teacher_logp = F.log_softmax(teacher_forward(rows[:, :-1]).float(), dim=-1).reshape(flat.shape)
            kl = F.kl_div(F.log_softmax(flat, dim=-1), teacher_logp, log_target=True, reduction="batchmean")
            loss = (1 - args.teacher_weight) * loss + args.teacher_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == args.steps - 1:
            elapsed = time.time() - t_train
            tok_s = (step + 1) * batch * width / max(elapsed, 1e-9)
            history.append({"step": step, "loss": round(loss.item(), 4), "seconds": round(elapsed, 1)})
            entry = history[-1]
            if step % 1000 == 0 or step == args.steps - 1:
                entry["heldout_loss"] = round(heldout_loss(model, held, held_starts, width), 4)
            print(f"step {step:5d}  loss {loss.item():.3f}  held-out {entry.get('heldout_loss', float('nan')):.3f}  "
                  f"lr {lr_at(step):.2e}  {tok_s / 1e6:.2f}M tok/s  {elapsed:.0f}s", flush=True)
        step += 1
    train_seconds = time.time() - t_train
    hl = heldout_loss(model, held, held_starts, width)
    log.update({"steps": args.steps, "batch": batch, "window": width, "repeat_row_share": n_repeat / batch,
                "passkey_row_share": n_passkey / batch, "retrieval_row_share": n_recall / batch,
                "init": args.init, "lr": preset["lr"], "recall_variety": args.recall_variety, "teacher": args.teacher, "teacher_weight": args.teacher_weight if args.teacher else None,
                "dropout": args.dropout,
                "doc_start_share": args.doc_start_share,
                "training_tokens": args.steps * batch * width, "train_seconds": round(train_seconds, 1),
                "heldout_loss": round(hl, 4), "heldout_ppl": round(math.exp(hl), 3), "history": history,
                "gpu": torch.cuda.get_device_name(), "torch": torch.__version__})
    print(f"held-out loss {hl:.3f} ppl {math.exp(hl):.2f}; {train_seconds:.0f}s", flush=True)
    save_hf(model.float().cpu(), out, Path(args.tokenizer), BOS_ID, EOS_ID)
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")


if __name__ == "__main__":
    main()
