"""Export a Hugging Face Llama checkpoint directory to the kvscope explorer graph.

Writes into --out: model.onnx (or model.onnx.partN byte parts ≤ 16 MiB), tokenizer.json,
manifest.json (docs/model-format.md) and reference.json (PyTorch logits on fixed prompts, which
the engine's tests compare against). Checks before writing the manifest:
  - onnxruntime logits == PyTorch logits on the reference prompts (max abs diff reported);
  - token-by-token cached decoding through the graph == one-shot prefill.
Usage: python training/export.py --hf runs/target --out static/models/kvscope-llama-8l \
          --id kvscope-llama-8l --name "kvscope Llama 8L" --role target --draft kvscope-draft-2l
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from hf_io import load_hf, special_ids
from model import Llama, StepModule, io_names

PART_BYTES = 16 * 1024 * 1024 - 4096
NEG = -1e9
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


def verify(model: Llama, onnx_path: Path, prompts: list[list[int]]) -> dict:
    c = model.config
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    worst_torch = worst_cached = worst_rowsum = 0.0
    references = []
    for ids in prompts:
        with torch.no_grad():
            torch_logits = model.forward_train(torch.tensor([ids])).float().numpy()[0]
        out = dict(zip(names, sess.run(None, feeds_for(model, ids, list(range(len(ids))), empty_past(model)))))
        worst_torch = max(worst_torch, float(np.abs(out["logits"][0] - torch_logits).max()))
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
    return {"max_abs_diff_onnx_vs_torch": worst_torch, "max_abs_diff_cached_vs_prefill": worst_cached,
            "max_attention_row_sum_error": worst_rowsum, "references": references}


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
    args = ap.parse_args()
    hf = Path(args.hf)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("model.onnx*")):
        old.unlink()

    model = load_hf(hf).eval()
    c = model.config
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
    export_onnx(model, onnx_path)
    checks = verify(model, onnx_path, prompts)
    print(f"{args.id}: onnx vs torch max |Δlogit| {checks['max_abs_diff_onnx_vs_torch']:.2e}; "
          f"cached vs prefill {checks['max_abs_diff_cached_vs_prefill']:.2e}; "
          f"attention row sums within {checks['max_attention_row_sum_error']:.1e}", flush=True)
    if checks["max_abs_diff_onnx_vs_torch"] > 1e-3 or checks["max_abs_diff_cached_vs_prefill"] > 1e-4:
        raise SystemExit("exported graph does not reproduce the PyTorch model")

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
    (out / "reference.json").write_text(json.dumps({
        "about": "PyTorch logits of this model at a few positions of fixed prompts (float32, base64, row-major [positions, vocab])",
        "vocab_size": c.vocab_size, "prompts": checks.pop("references")}) + "\n")

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
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{args.id}: wrote {out} ({', '.join(f['path'] + ' ' + str(f['bytes'] // 1024) + ' KiB' for f in files)})")


if __name__ == "__main__":
    main()
