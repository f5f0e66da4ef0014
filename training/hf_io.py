"""Read and write Hugging Face Llama checkpoint directories (config.json + safetensors + tokenizer.json).

Writing uses the LlamaForCausalLM layout so transformers loads our models unchanged; reading
accepts any LlamaForCausalLM checkpoint whose RoPE is the plain (unscaled) kind, and says
clearly what it cannot convert.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model import Llama, LlamaConfig


class CheckpointError(ValueError):
    pass


def save_hf(model: Llama, out_dir: Path, tokenizer_json: Path, bos_id: int, eos_id: int) -> None:
    c = model.config
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    if c.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # transformers re-ties it from embed_tokens
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tokenizer_json, out_dir / "tokenizer.json")


def _require(cfg: dict, key: str, path: Path):
    if key not in cfg:
        raise CheckpointError(f"{path}: config.json has no '{key}'")
    return cfg[key]


def load_hf(ckpt_dir: Path) -> Llama:
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{ckpt_dir}: no config.json (expected a Hugging Face checkpoint directory)")
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    if "LlamaForCausalLM" not in archs:
        raise CheckpointError(f"{cfg_path}: architectures is {archs}; only LlamaForCausalLM is supported")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in (None, "default"):
        raise CheckpointError(f"{cfg_path}: rope type '{rope_type}' is not supported (only unscaled RoPE)")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise CheckpointError(f"{cfg_path}: attention/MLP biases are not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{cfg_path}: hidden_act '{cfg['hidden_act']}' is not supported (silu only)")
    n_heads = _require(cfg, "num_attention_heads", cfg_path)
    hidden = _require(cfg, "hidden_size", cfg_path)
    c = LlamaConfig(
        vocab_size=_require(cfg, "vocab_size", cfg_path),
        hidden_size=hidden,
        intermediate_size=_require(cfg, "intermediate_size", cfg_path),
        n_layers=_require(cfg, "num_hidden_layers", cfg_path),
        n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        head_dim=cfg.get("head_dim") or hidden // n_heads,
        context_length=_require(cfg, "max_position_embeddings", cfg_path),
        rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
    state = {}
    files = sorted(ckpt_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{ckpt_dir}: no *.safetensors weights")
    for f in files:
        state.update(load_file(str(f)))
    model = Llama(c)
    if c.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    state = {k: v.float() for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt_dir}: weights do not match LlamaForCausalLM (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


def special_ids(tokenizer_json: Path, cfg: dict | None = None) -> dict:
    """bos/eos/pad ids from tokenizer.json's added tokens, overridden by config.json where given."""
    tok = json.loads(Path(tokenizer_json).read_text())
    by_name = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    ids = {
        "bos_id": next((by_name[n] for n in ("<|bos|>", "<s>", "<|begin_of_text|>") if n in by_name), None),
        "eos_id": next((by_name[n] for n in ("<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>") if n in by_name), None),
        "pad_id": next((by_name[n] for n in ("<|pad|>", "<pad>") if n in by_name), None),
    }
    if cfg:
        for key, name in (("bos_id", "bos_token_id"), ("eos_id", "eos_token_id"), ("pad_id", "pad_token_id")):
            value = cfg.get(name)
            if isinstance(value, list):
                value = value[0]
            if isinstance(value, int):
                ids[key] = value
    return ids
