"""Export a Hugging Face Llama checkpoint directory to the kvscope explorer graph.

Writes into --out: model.onnx (or model.onnx.partN byte parts ≤ 16 MiB), tokenizer.json,
manifest.json (docs/model-format.md) and reference.json (PyTorch logits on fixed prompts, which
the engine's tests compare against). Checks before writing the manifest:
  - onnxruntime logits == PyTorch logits on the reference prompts (max abs diff reported);
  - token-by-token cached decoding through the graph == one-shot prefill.
--weights int8|int4 quantizes the weight matrices (training/quantize_weights.py); the graph is then
checked against the PyTorch model carrying the same dequantized weights (the tolerance of
TOLERANCES, written into reference.json, whose logits are that model's), and its deviation from the
unquantized model is measured and recorded, not judged.
Usage: python training/export.py --hf runs/target --out static/models/kvscope-llama-8l \
          --id kvscope-llama-8l --name "kvscope Llama 8L" --role target --draft kvscope-draft-2l
"""
from __future__ import annotations

import argparse
import base64
import copy
import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import onnx
from tokenizers import Tokenizer

from hf_io import load_hf, special_ids
from model import Llama, StepModule, io_names
from quantize_weights import BLOCK_SIZES, FORMATS, describe, fake_quantize, fake_quantize_embedding, quantize_graph

PART_BYTES = 16 * 1024 * 1024 - 4096
NEG = -1e9
# max |Δlogit| of the graph against PyTorch with the same (dequantized) weights, and of cached
# decoding against one-shot prefill. The quantized graphs compute in fp32 from dequantized weights,
# so they are held to the fp32 bounds; int4 gets a little room for MatMulNBits' own summation order.
TOLERANCES = {"fp32": (1e-3, 1e-4), "int8": (1e-3, 1e-4), "int4": (2e-3, 2e-4)}
REFERENCE_PROMPTS = [
    "In the beginning God created the heaven and the earth.",
    "The pass key is 71432. Remember it. 71432 is the pass key.\nWhat is the pass key? The pass key is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]


def causal_bias(n_heads: int, past: int, q: int) -> np.ndarray:
    bias = np.zeros((1, n_heads, q, past + q), dtype=np.float32)
    bias[..., past:] = np.triu(np.full((q, q), NEG, dtype=np.float32), k=1)
    return bias


def feeds_for(model: Llama, ids: list[int], positions: list[int], past: list[tuple[np.ndarray, np.ndarray]]):
    c = model.config
    q = len(ids)
    feeds = {"input_ids": np.array([ids], dtype=np.int64), "position_ids": np.array([positions], dtype=np.int64)}
    for l in range(c.n_layers):
        k, v = past[l]
        feeds[f"past_key_{l}"] = k
        feeds[f"past_value_{l}"] = v
        feeds[f"attn_bias_{l}"] = causal_bias(c.n_heads, k.shape[2], q)
    return feeds


def empty_past(model: Llama):
    c = model.config
    z = np.zeros((1, c.n_kv_heads, 0, c.head_dim), dtype=np.float32)
    return [(z, z) for _ in range(c.n_layers)]


def export_onnx(model: Llama, path: Path) -> None:
    c = model.config
    inputs, outputs = io_names(c.n_layers)
    q, t = 3, 5
    dummy = [torch.zeros(1, q, dtype=torch.long), torch.arange(t, t + q)[None]]
    dynamic = {"input_ids": {1: "q"}, "position_ids": {1: "q"}, "logits": {1: "q"}}
    for l in range(c.n_layers):
        dummy += [torch.randn(1, c.n_kv_heads, t, c.head_dim), torch.randn(1, c.n_kv_heads, t, c.head_dim),
                  torch.zeros(1, c.n_heads, q, t + q)]
        dynamic[f"past_key_{l}"] = {2: f"past_{l}"}
        dynamic[f"past_value_{l}"] = {2: f"past_{l}"}
        dynamic[f"attn_bias_{l}"] = {2: "q", 3: f"total_{l}"}
        dynamic[f"key_{l}"] = {2: "q"}
        dynamic[f"value_{l}"] = {2: "q"}
        dynamic[f"attn_{l}"] = {2: "q", 3: f"total_{l}"}
        dynamic[f"query_{l}"] = {2: "q"}
    torch.onnx.export(StepModule(model).eval(), tuple(dummy), str(path), input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, opset_version=17, dynamo=False, do_constant_folding=True)


def verify(model: Llama, onnx_path: Path, prompts: list[list[int]], baseline: Llama | None = None) -> dict:
    """`model` carries the weights the graph computes with; `baseline` (quantized exports) the
    original ones, whose distance to the graph is measured (max |Δlogit|, top-1 agreement)."""
    c = model.config
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    worst_torch = worst_cached = worst_rowsum = worst_base = 0.0
    agree = positions_seen = 0
    references = []
    for ids in prompts:
        with torch.no_grad():
            torch_logits = model.forward_train(torch.tensor([ids])).float().numpy()[0]
        out = dict(zip(names, sess.run(None, feeds_for(model, ids, list(range(len(ids))), empty_past(model)))))
        worst_torch = max(worst_torch, float(np.abs(out["logits"][0] - torch_logits).max()))
        if baseline is not None:
            with torch.no_grad():
                base_logits = baseline.forward_train(torch.tensor([ids])).float().numpy()[0]
            worst_base = max(worst_base, float(np.abs(out["logits"][0] - base_logits).max()))
            agree += int((out["logits"][0].argmax(-1) == base_logits.argmax(-1)).sum())
            positions_seen += len(ids)
        worst_rowsum = max(worst_rowsum, float(np.abs(out["attn_0"].sum(-1) - 1).max()))
        # token by token through the cache
        past = empty_past(model)
        for i, tok in enumerate(ids):
            step = dict(zip(names, sess.run(None, feeds_for(model, [tok], [i], past))))
            past = [(np.concatenate([past[l][0], step[f"key_{l}"]], 2), np.concatenate([past[l][1], step[f"value_{l}"]], 2))
                    for l in range(c.n_layers)]
            worst_cached = max(worst_cached, float(np.abs(step["logits"][0, 0] - out["logits"][0, i]).max()))
        positions = sorted(set(np.linspace(0, len(ids) - 1, min(6, len(ids))).round().astype(int).tolist()))
        rows = torch_logits[positions].astype("<f4")
        references.append({"ids": ids, "positions": positions, "logits_b64": base64.b64encode(rows.tobytes()).decode()})
    checks = {"max_abs_diff_onnx_vs_torch": worst_torch, "max_abs_diff_cached_vs_prefill": worst_cached,
              "max_attention_row_sum_error": worst_rowsum, "references": references}
    if baseline is not None:
        checks["max_abs_diff_vs_unquantized_torch"] = worst_base
        checks["top1_agreement_vs_unquantized_torch"] = agree / max(positions_seen, 1)
    return checks


def dequantized_copy(model: Llama, fmt: str, block_size: int) -> Llama:
    """A copy of `model` whose weight matrices are those the `fmt` graph computes with
    (quantize_weights.fake_quantize); a tied lm_head is untied, since the graph quantizes the
    lm_head in `fmt` and the embedding table in int8."""
    deq = copy.deepcopy(model)
    with torch.no_grad():
        for module in deq.modules():
            if isinstance(module, torch.nn.Linear) and module is not deq.lm_head:
                module.weight.copy_(torch.from_numpy(fake_quantize(module.weight.detach().numpy(), fmt, block_size)))
        head = fake_quantize(model.lm_head.weight.detach().numpy(), fmt, block_size)
        table = fake_quantize_embedding(model.model.embed_tokens.weight.detach().numpy(), fmt)
        deq.lm_head.weight = torch.nn.Parameter(torch.from_numpy(head))
        deq.model.embed_tokens.weight = torch.nn.Parameter(torch.from_numpy(table))
    return deq


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip() or None
    except Exception:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="Hugging Face LlamaForCausalLM checkpoint directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--role", choices=["target", "draft"], default="target")
    ap.add_argument("--draft", help="id of the draft model paired with this target")
    ap.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--weights", choices=FORMATS, default="fp32",
                    help="weight format of the graph: fp32 (as exported), int8 (per-channel, Cast → Mul → MatMul) or "
                         "int4 (blockwise, com.microsoft MatMulNBits); see training/quantize_weights.py")
    ap.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=32, help="int4 block size along the input dimension")
    ap.add_argument("--context-length", type=int,
                    help="context length the manifest declares (default: the checkpoint's max_position_embeddings); "
                         "the graph itself has no fixed length, this bounds what the engine will allocate")
    args = ap.parse_args()
    hf = Path(args.hf)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model.onnx*")):
        old.unlink()

    model = load_hf(hf).eval()
    c = model.config
    if args.context_length is not None:
        if not 1 <= args.context_length <= c.context_length:
            raise SystemExit(f"--context-length must be in 1..{c.context_length} (the checkpoint's max_position_embeddings)")
        c.context_length = args.context_length
    cfg = json.loads((hf / "config.json").read_text())
    specials = special_ids(hf / "tokenizer.json", cfg)
    if specials["bos_id"] is None and args.add_bos:
        raise SystemExit(f"{hf}: no BOS token found; pass --no-add-bos")
    tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    if tok.get_vocab_size() > c.vocab_size:
        raise SystemExit(f"{hf}: tokenizer has {tok.get_vocab_size()} tokens but the model only {c.vocab_size}")
    bos = [specials["bos_id"]] if args.add_bos else []
    prompts = [bos + tok.encode(p, add_special_tokens=False).ids for p in REFERENCE_PROMPTS]

    onnx_path = out / "model.onnx"
    tol_logits, tol_cached = TOLERANCES[args.weights]
    weights = None
    if args.weights == "fp32":
        export_onnx(model, onnx_path)
        checks = verify(model, onnx_path, prompts)
    else:
        fp32_path = out / "model.fp32.onnx.tmp"
        export_onnx(model, fp32_path)
        quantized, info = quantize_graph(onnx.load(str(fp32_path)), args.weights, args.block_size)
        fp32_path.unlink()
        if info["matmuls"] != 7 * c.n_layers + 1 or info["embedding_tables"] != 1:
            raise SystemExit(f"quantizing found {info['matmuls']} weight MatMuls and {info['embedding_tables']} embedding "
                             f"tables; expected {7 * c.n_layers + 1} and 1 (q/k/v/o, gate/up/down per layer, lm_head)")
        onnx.save(quantized, str(onnx_path))
        del quantized
        weights = describe(args.weights, args.block_size, info)
        checks = verify(dequantized_copy(model, args.weights, args.block_size), onnx_path, prompts, baseline=model)
        print(f"{args.id}: {args.weights} graph vs the unquantized model: max |Δlogit| "
              f"{checks['max_abs_diff_vs_unquantized_torch']:.3g}, top-1 agreement "
              f"{checks['top1_agreement_vs_unquantized_torch']:.1%} (measured, not judged)", flush=True)
    print(f"{args.id}: onnx vs torch max |Δlogit| {checks['max_abs_diff_onnx_vs_torch']:.2e}; "
          f"cached vs prefill {checks['max_abs_diff_cached_vs_prefill']:.2e}; "
          f"attention row sums within {checks['max_attention_row_sum_error']:.1e}", flush=True)
    if checks["max_abs_diff_onnx_vs_torch"] > tol_logits or checks["max_abs_diff_cached_vs_prefill"] > tol_cached:
        raise SystemExit(f"exported graph does not reproduce the PyTorch model (tolerances {tol_logits:g}, {tol_cached:g})")

    size = onnx_path.stat().st_size
    if size > PART_BYTES:
        data = onnx_path.read_bytes()
        parts = []
        for i, start in enumerate(range(0, len(data), PART_BYTES)):
            part = out / f"model.onnx.part{i}"
            part.write_bytes(data[start:start + PART_BYTES])
            parts.append(part.name)
        onnx_path.unlink()
    else:
        parts = [onnx_path.name]
    (out / "tokenizer.json").write_bytes((hf / "tokenizer.json").read_bytes())
    reference = {
        "about": "PyTorch logits of this model at a few positions of fixed prompts (float32, base64, row-major [positions, vocab])",
        "vocab_size": c.vocab_size, "prompts": checks.pop("references")}
    if weights is not None:
        reference["about"] = (f"PyTorch logits of this model with the graph's dequantized {args.weights} weights at a few "
                              "positions of fixed prompts (float32, base64, row-major [positions, vocab])")
        reference["weights"] = args.weights
        reference["tolerance"] = tol_logits
    (out / "reference.json").write_text(json.dumps(reference) + "\n")

    inputs, outputs = io_names(c.n_layers)
    train_log = hf / "train_log.json"
    files = [{"path": name, "sha256": sha256(out / name), "bytes": (out / name).stat().st_size}
             for name in parts + ["tokenizer.json", "reference.json"]]
    manifest = {
        "format": "kvscope-explorer-graph",
        "format_version": 1,
        "id": args.id,
        "name": args.name,
        "role": args.role,
        "architecture": {
            "family": "llama", "n_layers": c.n_layers, "n_heads": c.n_heads, "n_kv_heads": c.n_kv_heads,
            "head_dim": c.head_dim, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
            "vocab_size": c.vocab_size, "context_length": c.context_length, "rms_norm_eps": c.rms_norm_eps,
            "tie_word_embeddings": c.tie_word_embeddings, "parameters": model.parameter_count(),
            "macs_per_token": model.macs_per_token(),
        },
        "rope": {"theta": c.rope_theta, "dim": c.head_dim, "style": "half", "scaling": None},
        "tokenizer": {"file": "tokenizer.json", "bos_id": specials["bos_id"], "eos_id": specials["eos_id"],
                      "pad_id": specials["pad_id"], "add_bos": args.add_bos},
        "graph": {"parts": parts, "opset": 17, "inputs": inputs, "outputs": outputs},
        "reference": "reference.json",
        "files": files,
        "provenance": {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "exporter": "training/export.py",
            "source_checkpoint": os.path.basename(os.path.abspath(hf)),
            "git_commit": git_commit(),
            "torch": torch.__version__, "onnxruntime": ort.__version__,
            "checks": checks,
            "training": json.loads(train_log.read_text()) if train_log.exists() else None,
        },
    }
    if args.draft:
        manifest["draft"] = args.draft
    if weights is not None:
        manifest["weights"] = weights
        manifest["provenance"]["onnx"] = onnx.__version__
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{args.id}: wrote {out} ({', '.join(f['path'] + ' ' + str(f['bytes'] // 1024) + ' KiB' for f in files)})")


if __name__ == "__main__":
    main()
