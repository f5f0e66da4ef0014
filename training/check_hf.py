"""Check the exporter on a Hugging Face checkpoint: transformers' LlamaForCausalLM logits vs the
exported explorer graph run by onnxruntime, on the reference prompts.

A quantized graph (manifest "weights".format int8/int4) is compared with the checkpoint carrying
the same dequantized weights (training/quantize_weights.py), at the tolerance its reference.json
states; its distance to the unquantized checkpoint is printed too, as a measurement.
Usage: python training/check_hf.py --hf runs/target --graph static/models/kvscope-llama-8l
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import LlamaForCausalLM

from export import causal_bias
from quantize_weights import fake_quantize, fake_quantize_embedding


def graph_session(graph: Path) -> tuple[dict, ort.InferenceSession]:
    manifest = json.loads((graph / "manifest.json").read_text())
    blob = b"".join((graph / p).read_bytes() for p in manifest["graph"]["parts"])
    return manifest, ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def graph_feeds(arch: dict, ids: list[int], start: int, past: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    past = past or [(np.zeros((1, arch["n_kv_heads"], 0, arch["head_dim"]), dtype=np.float32),) * 2
                    for _ in range(arch["n_layers"])]
    feeds = {"input_ids": np.array([ids], dtype=np.int64),
             "position_ids": np.arange(start, start + len(ids))[None].astype(np.int64)}
    for l, (k, v) in enumerate(past):
        feeds[f"past_key_{l}"] = k
        feeds[f"past_value_{l}"] = v
        feeds[f"attn_bias_{l}"] = causal_bias(arch["n_heads"], k.shape[2], len(ids))
    return feeds


def graph_prefill(sess: ort.InferenceSession, arch: dict, ids: list[int]) -> np.ndarray:
    return sess.run(["logits"], graph_feeds(arch, ids, 0))[0][0]


def graph_cached(sess: ort.InferenceSession, arch: dict, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), V] of token-by-token decoding through the graph's own K/V outputs."""
    names = [o.name for o in sess.get_outputs()]
    past = None
    rows = []
    for i, tok in enumerate(ids):
        out = dict(zip(names, sess.run(None, graph_feeds(arch, [tok], i, past))))
        new = [(out[f"key_{l}"], out[f"value_{l}"]) for l in range(arch["n_layers"])]
        past = new if past is None else [(np.concatenate([p[0], n[0]], 2), np.concatenate([p[1], n[1]], 2)) for p, n in zip(past, new)]
        rows.append(out["logits"][0, 0])
    return np.stack(rows)


def dequantize_hf(hf: LlamaForCausalLM, weights: dict | None) -> LlamaForCausalLM:
    """Gives `hf` (in place) the dequantized weights a graph of manifest "weights" computes with:
    every nn.Linear (lm_head included) in its format, the embedding table int8 per row. A tied
    lm_head is untied first, since the two get different formats."""
    fmt = (weights or {}).get("format", "fp32")
    if fmt == "fp32":
        return hf
    block = (weights or {}).get("block_size") or 32
    with torch.no_grad():
        table = hf.model.embed_tokens.weight.detach().float().numpy()
        for name, module in hf.named_modules():
            if isinstance(module, torch.nn.Linear) and module is not hf.lm_head:
                module.weight.copy_(torch.from_numpy(fake_quantize(module.weight.detach().float().numpy(), fmt, block)))
        head = fake_quantize(hf.lm_head.weight.detach().float().numpy(), fmt, block)
        hf.lm_head.weight = torch.nn.Parameter(torch.from_numpy(head))
        hf.model.embed_tokens.weight = torch.nn.Parameter(torch.from_numpy(fake_quantize_embedding(table, fmt)))
    return hf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--graph", required=True)
    args = ap.parse_args()
    graph = Path(args.graph)
    manifest, sess = graph_session(graph)
    a = manifest["architecture"]
    reference = json.loads((graph / "reference.json").read_text())
    tolerance = float(reference.get("tolerance", 1e-3))
    original = LlamaForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval()
    quantized = manifest.get("weights", {}).get("format", "fp32") != "fp32"
    same = dequantize_hf(LlamaForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval(), manifest.get("weights")) if quantized else original
    worst = worst_original = 0.0
    for prompt in reference["prompts"]:
        ids = prompt["ids"]
        logits = graph_prefill(sess, a, ids)
        with torch.no_grad():
            worst = max(worst, float(np.abs(logits - same(torch.tensor([ids])).logits[0].numpy()).max()))
            if quantized:
                worst_original = max(worst_original, float(np.abs(logits - original(torch.tensor([ids])).logits[0].numpy()).max()))
    result = {"checkpoint": args.hf, "graph": str(graph), "weights": manifest.get("weights", {}).get("format", "fp32"),
              "transformers_vs_onnx_max_abs_diff": worst, "tolerance": tolerance}
    if quantized:
        result["unquantized_transformers_vs_onnx_max_abs_diff"] = worst_original
    print(json.dumps(result))
    if worst > tolerance:
        raise SystemExit("exported graph does not match transformers' LlamaForCausalLM")


if __name__ == "__main__":
    main()
