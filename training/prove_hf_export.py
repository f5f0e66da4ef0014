"""Prove `export.py --hf` on a LlamaForCausalLM of SmolLM2-135M's shape, without downloading it.

Builds transformers' LlamaForCausalLM from a LlamaConfig with SmolLM2-135M's shape (hidden 576,
30 layers, 9 heads / 3 KV heads, intermediate 1536, vocab 49152, rope_theta 1e5, tied embeddings,
rms_norm_eps 1e-5, max_position_embeddings 8192) and a seeded random init, saves it as a Hugging
Face directory, runs `training/export.py --hf` for each weight format (in parallel), then checks
every graph with onnxruntime (CPU) against transformers' own forward: prefill logits on the
reference prompts plus a prompt of random ids over the whole vocabulary, and token-by-token cached
decoding through the graph. Prints a JSON report and writes it to --out; a format that fails is
reported there and the others still run. Exit status 1 if any format failed.

Tokenizer: the checkpoint gets kvscope's own byte-level BPE (4,096 tokens, tests/fixtures/
tiny-model/tokenizer.json) while the model keeps SmolLM2's 49,152-row embedding, as a checkpoint
with a padded vocabulary would: the shapes (and so the sizes) are SmolLM2's, text encodes to ids
< 4096, and the random-id prompt exercises the rows above.

Usage (repo root, no network): python3 training/prove_hf_export.py --out $OUT/hf-proof.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from check_hf import dequantize_hf, graph_cached, graph_prefill, graph_session  # noqa: E402

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                    rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", attention_bias=False,
                    mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
ROPE_THETA = 100000.0


def build_checkpoint(out: Path, tokenizer: Path, layers: int, seed: int) -> LlamaForCausalLM:
    shape = dict(SMOLLM2_135M, num_hidden_layers=layers)
    if int(transformers.__version__.split(".")[0]) >= 5:
        config = LlamaConfig(**shape, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    else:
        config = LlamaConfig(**shape, rope_theta=ROPE_THETA)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    model.save_pretrained(out)
    shutil.copy(tokenizer, out / "tokenizer.json")
    saved = json.loads((out / "config.json").read_text())
    theta = (saved.get("rope_parameters") or {}).get("rope_theta", saved.get("rope_theta"))
    if theta != ROPE_THETA:
        raise SystemExit(f"{out}/config.json: rope_theta is {theta}, expected {ROPE_THETA}")
    return model


def run_exports(ckpt: Path, work: Path, formats: list[str], block_size: int, context: int, timeout: float) -> dict:
    threads = max(1, (os.cpu_count() or 3) // len(formats))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    procs = {}
    for fmt in formats:
        cmd = [sys.executable, str(HERE / "export.py"), "--hf", str(ckpt), "--out", str(work / fmt),
               "--id", f"smollm2-shape-random-{fmt}", "--name", f"SmolLM2-135M shape, random weights ({fmt})",
               "--weights", fmt, "--block-size", str(block_size), "--context-length", str(context)]
        log = open(work / f"export-{fmt}.log", "w")
        procs[fmt] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent), time.time(), log)
    results = {}
    deadline = time.time() + timeout
    for fmt, (proc, start, log) in procs.items():
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        log.close()
        tail = (work / f"export-{fmt}.log").read_text()[-1500:]
        results[fmt] = {"export_rc": rc, "export_seconds": round(time.time() - start, 1), "export_log_tail": tail}
    return results


def check_graph(graph: Path, original: LlamaForCausalLM, prompts: list[list[int]]) -> dict:
    manifest, sess = graph_session(graph)
    arch = manifest["architecture"]
    reference = json.loads((graph / "reference.json").read_text())
    tolerance = float(reference.get("tolerance", 1e-3))
    weights = manifest.get("weights")
    same = dequantize_hf(copy.deepcopy(original), weights) if weights and weights.get("format") != "fp32" else original
    worst_same = worst_cached = worst_original = 0.0
    agree = positions = 0
    for ids in prompts:
        with torch.no_grad():
            expected = same(torch.tensor([ids])).logits[0].float().numpy()
            base = original(torch.tensor([ids])).logits[0].float().numpy() if same is not original else expected
        logits = graph_prefill(sess, arch, ids)
        worst_same = max(worst_same, float(np.abs(logits - expected).max()))
        worst_cached = max(worst_cached, float(np.abs(graph_cached(sess, arch, ids) - expected).max()))
        worst_original = max(worst_original, float(np.abs(logits - base).max()))
        agree += int((logits.argmax(-1) == base.argmax(-1)).sum())
        positions += len(ids)
    files = {f["path"]: f["bytes"] for f in manifest["files"]}
    graph_bytes = sum(files[p] for p in manifest["graph"]["parts"])
    return {
        "weights": weights or {"format": "fp32"},
        "tolerance": tolerance,
        "max_abs_logit_vs_transformers_same_weights": worst_same,
        "max_abs_logit_cached_decoding_vs_transformers_same_weights": worst_cached,
        "max_abs_logit_vs_transformers_fp32": worst_original,
        "top1_agreement_vs_transformers_fp32": agree / positions,
        "positions_checked": positions,
        "graph_mib": round(graph_bytes / 2**20, 1),
        "graph_parts": len(manifest["graph"]["parts"]),
        "export_own_checks": {k: v for k, v in manifest["provenance"]["checks"].items()},
        "passed": worst_same <= tolerance and worst_cached <= tolerance,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="where to write the JSON report")
    ap.add_argument("--formats", default="fp32,int8,int4")
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--layers", type=int, default=30, help="decoder layers (30 = SmolLM2-135M; fewer for a quick try)")
    ap.add_argument("--context-length", type=int, default=2048, help="context the manifests declare (see README)")
    ap.add_argument("--tokenizer", default=str(HERE.parent / "tests/fixtures/tiny-model/tokenizer.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-timeout", type=float, default=180.0, help="seconds for all exports together")
    ap.add_argument("--keep", help="keep the checkpoint and graphs in this directory (default: a temporary one, removed)")
    args = ap.parse_args()
    started = time.time()
    formats = [f for f in args.formats.split(",") if f]
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kvscope-hf-proof-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"what": "export.py --hf on a random-weight LlamaForCausalLM of SmolLM2-135M's shape, checked against transformers",
                    "shape": dict(SMOLLM2_135M, num_hidden_layers=args.layers, rope_theta=ROPE_THETA),
                    "tokenizer": os.path.relpath(args.tokenizer, HERE.parent), "seed": args.seed,
                    "context_length_exported": args.context_length, "block_size": args.block_size,
                    "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                                 "transformers": transformers.__version__, "onnxruntime": ort.__version__},
                    "cpu_count": os.cpu_count(), "formats": {}}
    try:
        t = time.time()
        ckpt = work / "checkpoint"
        original = build_checkpoint(ckpt, Path(args.tokenizer), args.layers, args.seed)
        report["parameters"] = sum(p.numel() for p in original.parameters())
        report["checkpoint_seconds"] = round(time.time() - t, 1)
        report["formats"] = run_exports(ckpt, work, formats, args.block_size, args.context_length, args.export_timeout)
        rng = np.random.default_rng(args.seed)
        random_ids = [1] + rng.integers(3, SMOLLM2_135M["vocab_size"], size=23).tolist()
        for fmt in formats:
            entry = report["formats"][fmt]
            if entry["export_rc"] != 0:
                entry.update(passed=False, error=f"export.py exited with {entry['export_rc']} (see export_log_tail)")
                continue
            try:
                t = time.time()
                prompts = [p["ids"] for p in json.loads((work / fmt / "reference.json").read_text())["prompts"]] + [random_ids]
                entry.update(check_graph(work / fmt, original, prompts))
                entry["check_seconds"] = round(time.time() - t, 1)
                del entry["export_log_tail"]
            except Exception:
                entry.update(passed=False, error=traceback.format_exc()[-1500:])
    except Exception:
        report["error"] = traceback.format_exc()[-2000:]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["passed"] = "error" not in report and bool(formats) and all(report["formats"].get(f, {}).get("passed") for f in formats)
    report["seconds_total"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
