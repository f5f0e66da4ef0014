"""Check the exporter on a Hugging Face checkpoint: transformers' LlamaForCausalLM logits vs the
exported explorer graph run by onnxruntime, on the reference prompts.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--graph", required=True)
    args = ap.parse_args()
    graph = Path(args.graph)
    manifest = json.loads((graph / "manifest.json").read_text())
    blob = b"".join((graph / p).read_bytes() for p in manifest["graph"]["parts"])
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    a = manifest["architecture"]
    hf = LlamaForCausalLM.from_pretrained(args.hf, torch_dtype=torch.float32).eval()
    worst = 0.0
    reference = json.loads((graph / "reference.json").read_text())
    for prompt in reference["prompts"]:
        ids = prompt["ids"]
        with torch.no_grad():
            expected = hf(torch.tensor([ids])).logits[0].numpy()
        feeds = {"input_ids": np.array([ids], dtype=np.int64), "position_ids": np.arange(len(ids))[None].astype(np.int64)}
        for l in range(a["n_layers"]):
            empty = np.zeros((1, a["n_kv_heads"], 0, a["head_dim"]), dtype=np.float32)
            feeds[f"past_key_{l}"] = empty
            feeds[f"past_value_{l}"] = empty
            feeds[f"attn_bias_{l}"] = causal_bias(a["n_heads"], 0, len(ids))
        logits = sess.run(["logits"], feeds)[0][0]
        worst = max(worst, float(np.abs(logits - expected).max()))
    print(json.dumps({"checkpoint": args.hf, "graph": str(graph), "transformers_vs_onnx_max_abs_diff": worst}))
    if worst > 1e-3:
        raise SystemExit("exported graph does not match transformers' LlamaForCausalLM")


if __name__ == "__main__":
    main()
