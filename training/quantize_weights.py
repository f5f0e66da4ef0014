"""Weight-only quantization of an exported explorer graph (onnx + numpy only, no torch).

Formats (`--weights` of export.py):
  fp32  the graph as torch.onnx.export wrote it;
  int8  every MatMul weight (q/k/v/o, gate/up/down, lm_head) stored as int8 with one symmetric
        scale per output channel, dequantized by Cast(int8 → float) → Mul(scale [N]) that feeds the
        unchanged MatMul: standard ops only, so every onnxruntime computes the same fp32 product.
        Not DequantizeLinear: onnxruntime's DQMatMulToMatMulNBits rewrite (graph optimization level
        ≥ extended, the default) turns DequantizeLinear → MatMul into MatMulNBits(bits=8) with
        accuracy_level 4, which quantizes the activations to int8 as well (max |Δlogit| 0.38 against
        the same weights in fp32 on the 8L model, CPU EP of onnxruntime 1.30). Constant folding may
        turn Cast → Mul back into an fp32 initializer at load: the file is int8, the arithmetic fp32;
  int4  every MatMul weight replaced by com.microsoft MatMulNBits (bits=4, symmetric blocks of
        `block_size` along the input dimension, fp32 scales, implicit zero point 8), which
        onnxruntime's CPU and wasm builds implement.
In both quantized formats the embedding table (the Gather) becomes int8 with one scale per
token row: Gather(int8 rows) → Cast → Mul(Gather(row scales)), standard ops only. With tied
embeddings the matrix is then stored twice (as the lm_head weight in the chosen format and as the
int8 embedding table), just as the fp32 export stores it twice (torch's constant folding writes
the transposed lm_head copy).

`fake_quantize` gives the dequantized weights the graph computes with (bit for bit the values
Cast → Mul / MatMulNBits produce), so a PyTorch or transformers model carrying them can be
compared with the quantized graph at a tight tolerance.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FORMATS = ("fp32", "int8", "int4")
BLOCK_SIZES = (16, 32, 64, 128)
MS_DOMAIN = "com.microsoft"

# ------------------------------------------------------------------------------------------------
# Numerics, on weights in PyTorch's nn.Linear layout [out N, in K] (the graph's MatMul weight is its
# transpose [K, N]).


def quantize_int8_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: q int8 [N, K] in [-127, 127], scale float32 [N]; w ≈ q * scale."""
    w = np.asarray(w, dtype=np.float32)
    absmax = np.abs(w).max(axis=1)
    scale = np.where(absmax > 0, absmax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None]


def quantize_int4_blocks(w: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 blocks along K in MatMulNBits' layout: packed uint8 [N, n_blocks, block_size/2]
    (element 2j in the low nibble, 2j+1 in the high one, stored as q + 8), scales float32 [N, n_blocks].
    K is zero-padded up to a whole number of blocks, as MatMulNBits expects."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    n_blocks = -(-k // block_size)
    padded = np.zeros((n, n_blocks * block_size), dtype=np.float32)
    padded[:, :k] = w
    blocks = padded.reshape(n, n_blocks, block_size)
    absmax = np.abs(blocks).max(axis=2)
    scale = np.where(absmax > 0, absmax / np.float32(7), np.float32(1)).astype(np.float32)
    q = (np.clip(np.rint(blocks / scale[..., None]), -8, 7) + 8).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed, scale


def dequantize_int4_blocks(packed: np.ndarray, scale: np.ndarray, k: int) -> np.ndarray:
    n, n_blocks, half = packed.shape
    q = np.empty((n, n_blocks, 2 * half), dtype=np.float32)
    q[..., 0::2] = (packed & 0x0F).astype(np.float32)
    q[..., 1::2] = (packed >> 4).astype(np.float32)
    return ((q - np.float32(8)) * scale[..., None]).reshape(n, -1)[:, :k]


def fake_quantize(w: np.ndarray, fmt: str, block_size: int = 32) -> np.ndarray:
    """The float32 weights [N, K] that the `fmt` graph multiplies with (fp32: unchanged)."""
    w = np.asarray(w, dtype=np.float32)
    if fmt == "fp32":
        return w
    if fmt == "int8":
        return dequantize_int8_rows(*quantize_int8_rows(w))
    if fmt == "int4":
        packed, scale = quantize_int4_blocks(w, block_size)
        return dequantize_int4_blocks(packed, scale, w.shape[1])
    raise ValueError(f"weights format must be one of {FORMATS}, got {fmt!r}")


def fake_quantize_embedding(table: np.ndarray, fmt: str) -> np.ndarray:
    """The embedding rows [V, H] the `fmt` graph looks up (int8 per row in both quantized formats)."""
    return np.asarray(table, dtype=np.float32) if fmt == "fp32" else dequantize_int8_rows(*quantize_int8_rows(table))


# ------------------------------------------------------------------------------------------------
# Graph rewrite


def _weight_sites(graph: onnx.GraphProto):
    """(node index, kind) of every MatMul with a rank-2 float initializer as B ("matmul") and every
    axis-0 Gather from a rank-2 float initializer ("gather"); initializers used by several nodes are
    left alone (none are in our exports, where even the tied lm_head has its own transposed copy)."""
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    sites = []
    for idx, node in enumerate(graph.node):
        if node.op_type == "MatMul" and len(node.input) == 2:
            name, kind = node.input[1], "matmul"
        elif node.op_type == "Gather" and all(a.name != "axis" or a.i == 0 for a in node.attribute):
            name, kind = node.input[0], "gather"
        else:
            continue
        init = inits.get(name)
        if init is not None and init.data_type == TensorProto.FLOAT and len(init.dims) == 2 and uses[name] == 1:
            sites.append((idx, kind))
    return sites


def _rewrite(model: onnx.ModelProto, fmt: str, block_size: int, fake: bool) -> tuple[onnx.ModelProto, dict]:
    if fmt not in FORMATS:
        raise ValueError(f"weights format must be one of {FORMATS}, got {fmt!r}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    info = {"format": fmt, "matmuls": 0, "embedding_tables": 0, "weight_parameters": 0}
    if fmt == "fp32":
        return out, info
    inits = {i.name: i for i in graph.initializer}
    sites = dict(_weight_sites(graph))
    drop: set[str] = set()
    new_inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    for idx, node in enumerate(graph.node):
        kind = sites.get(idx)
        if kind is None:
            nodes.append(node)
            continue
        wname = node.input[1] if kind == "matmul" else node.input[0]
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        info["weight_parameters"] += int(w.size)
        tag = wname.replace(":", "_").replace("/", "_").strip("_")
        if kind == "gather":
            info["embedding_tables"] += 1
            if fake:
                inits[wname].CopyFrom(numpy_helper.from_array(fake_quantize_embedding(w, fmt), wname))
                nodes.append(node)
                continue
            q, scale = quantize_int8_rows(w)
            ids = node.input[1]
            drop.add(wname)
            new_inits += [numpy_helper.from_array(q, f"{tag}_int8"), numpy_helper.from_array(scale, f"{tag}_row_scale"),
                          numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{tag}_last_axis")]
            nodes += [
                helper.make_node("Gather", [f"{tag}_int8", ids], [f"{tag}_rows_q"], name=f"{node.name}_q", axis=0),
                helper.make_node("Cast", [f"{tag}_rows_q"], [f"{tag}_rows_f"], name=f"{node.name}_cast", to=TensorProto.FLOAT),
                helper.make_node("Gather", [f"{tag}_row_scale", ids], [f"{tag}_scales"], name=f"{node.name}_scales", axis=0),
                helper.make_node("Unsqueeze", [f"{tag}_scales", f"{tag}_last_axis"], [f"{tag}_scales_col"], name=f"{node.name}_unsq"),
                helper.make_node("Mul", [f"{tag}_rows_f", f"{tag}_scales_col"], list(node.output), name=f"{node.name}_dq"),
            ]
            continue
        info["matmuls"] += 1
        wt = w.T  # [N, K], the nn.Linear layout the numerics work in
        if fake:
            inits[wname].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(fake_quantize(wt, fmt, block_size).T), wname))
            nodes.append(node)
            continue
        drop.add(wname)
        if fmt == "int8":
            q, scale = quantize_int8_rows(wt)
            new_inits += [numpy_helper.from_array(np.ascontiguousarray(q.T), f"{tag}_int8"),
                          numpy_helper.from_array(scale, f"{tag}_scale")]
            # [K, N] * [N] broadcasts one scale per output channel (column)
            nodes += [
                helper.make_node("Cast", [f"{tag}_int8"], [f"{tag}_f"], name=f"{node.name}_cast", to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"{tag}_f", f"{tag}_scale"], [f"{tag}_dq"], name=f"{node.name}_dq"),
                helper.make_node("MatMul", [node.input[0], f"{tag}_dq"], list(node.output), name=node.name),
            ]
        else:
            packed, scale = quantize_int4_blocks(wt, block_size)
            n, k = wt.shape
            new_inits += [numpy_helper.from_array(packed, f"{tag}_q4"),
                          numpy_helper.from_array(scale.reshape(-1), f"{tag}_q4_scales")]
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{tag}_q4", f"{tag}_q4_scales"], list(node.output),
                                          name=node.name, domain=MS_DOMAIN, K=k, N=n, bits=4, block_size=block_size))
    if not fake:
        kept = [i for i in graph.initializer if i.name not in drop]
        del graph.initializer[:]
        graph.initializer.extend(kept + new_inits)
        graph_inputs = [i for i in graph.input if i.name not in drop]
        del graph.input[:]
        graph.input.extend(graph_inputs)
        del graph.node[:]
        graph.node.extend(nodes)
        if fmt == "int4" and not any(o.domain == MS_DOMAIN for o in out.opset_import):
            out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, info


def quantize_graph(model: onnx.ModelProto, fmt: str, block_size: int = 32) -> tuple[onnx.ModelProto, dict]:
    """A copy of the explorer graph with its weights in `fmt`, and what was rewritten."""
    return _rewrite(model, fmt, block_size, fake=False)


def fake_quantize_graph(model: onnx.ModelProto, fmt: str, block_size: int = 32) -> tuple[onnx.ModelProto, dict]:
    """The fp32 graph unchanged in structure, its weights replaced by the dequantized values of `fmt`
    (the "same weights" reference the quantized graph must reproduce tightly)."""
    return _rewrite(model, fmt, block_size, fake=True)


def describe(fmt: str, block_size: int, info: dict) -> dict:
    """The manifest's informational "weights" field."""
    if fmt == "fp32":
        return {"format": "fp32"}
    linear = ("int8, symmetric, one scale per output channel (Cast → Mul → MatMul)" if fmt == "int8" else
              f"int4, symmetric blocks of {block_size} along the input dimension, fp32 scales (com.microsoft MatMulNBits)")
    return {"format": fmt, "block_size": block_size if fmt == "int4" else None, "linear": linear,
            "embedding": "int8, symmetric, one scale per token row (Gather → Cast → Mul)",
            "lm_head": f"{fmt} like the other linear layers (a tied embedding matrix is stored in both forms)",
            "quantized_matmuls": info["matmuls"], "quantized_embedding_tables": info["embedding_tables"],
            "domains": ["ai.onnx"] + ([MS_DOMAIN] if fmt == "int4" else [])}
