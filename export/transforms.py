"""Graph rewrites of an exported float32 graph, each done by onnxruntime's own tools.

- :func:`to_fp16`: a float16 graph for GPUs (``onnxruntime.transformers.float16``), float32 inputs and outputs, with
  the operations that overflow or lose accuracy in float16 kept in float32.
- :func:`optimize`: onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer``) on whatever parts of
  the graph they recognise, with the count of each fused operator.
- :func:`quantize_int8`: dynamic int8 quantisation of the matrix products for CPUs
  (``onnxruntime.quantization.quantize_dynamic``).

Each reads ``source`` and writes ``target`` (a graph over 2 GB keeps its weights in external data).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TWO_GB = 2**31  # protobuf's limit on one ONNX file: larger graphs keep their weights in external data

# Kept in float32 by the fp16 graph, besides onnxruntime's default block list:
# - the RMS / layer norms: the Contextual token is scaled far above the LLM's own states (mean |C| in the tens of
#   thousands for the default), so x² overflows float16's 65504 inside the norm;
# - softmax, and the reductions and divisions of the encoder's mean pooling.
FP32_OPS = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "RMSNormalization",
    "Pow",
    "ReduceMean",
    "ReduceSum",
    "Sqrt",
    "Reciprocal",
    "Div",
    "Softmax",
)


def graph_bytes(model: Any) -> int:
    """The serialised size of an in-memory ONNX model, weights included."""
    return model.ByteSize()


def save_graph(model: Any, target: Path, *, external_data: bool | None = None) -> bool:
    """Save ``model`` to ``target``; weights go to ``target.name + '.data'`` when forced or over 2 GB.

    Returns:
        Whether the weights were written as external data.
    """
    import onnx

    external = graph_bytes(model) >= TWO_GB if external_data is None else external_data
    target.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(
            model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
            location=f"{target.name}.data", size_threshold=0,
        )  # fmt: skip
    else:
        onnx.save_model(model, str(target))
    return external


def to_fp16(source: Path, target: Path, *, external_data: bool | None = None) -> bool:
    """Write a float16 copy of ``source`` with float32 inputs and outputs and :data:`FP32_OPS` kept in float32.

    Returns:
        Whether the weights were written as external data.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    blocked = sorted({*DEFAULT_OP_BLOCK_LIST, *FP32_OPS})
    # Shape inference runs through protobuf, which refuses graphs over 2 GB; the exporter's graph has its shapes.
    fp16 = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=blocked, disable_shape_infer=graph_bytes(model) >= TWO_GB
    )
    return save_graph(fp16, target, external_data=external_data)


def optimize(source: Path, target: Path, *, external_data: bool | None = None) -> dict[str, int]:
    """Apply onnxruntime's transformer fusions (attention, layer norm, GELU, ...) where they match.

    The graph holds two transformers (the encoder and the LLM) and the glue between them; the optimizer fuses the
    patterns it recognises and leaves the rest as it was.

    Returns:
        The count of each operator the fusions produced (only those above zero).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    fused = {name: int(count) for name, count in model.get_fused_operator_statistics().items() if count}
    save_graph(model.model, target, external_data=external_data)
    logger.info("onnxruntime's transformer optimizer fused: %s", fused or "nothing")
    return fused


def mlp_down_projections(path: Path) -> list[str]:
    """The MatMul nodes that narrow ``k -> n`` where another MatMul widens ``n -> k``: the MLPs' down projections.

    Their inputs (the MLP's inner activations) carry the few huge outliers that per-tensor dynamic quantisation of
    activations cannot represent. On the trained default, keeping them in float32 (a seventh of the LLM's matrix
    products) raised ``h_EOS``'s lowest cosine with float32 over 12 BBC articles from 0.86 to 0.98.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer if len(t.dims) == 2}
    weights = {n.name: shapes[i] for n in model.graph.node if n.op_type == "MatMul" for i in n.input if i in shapes}
    widening = {w for w in weights.values() if w[1] > w[0]}
    return [name for name, w in weights.items() if (w[1], w[0]) in widening]


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamically quantise the matrix products of ``source`` to int8 weights (per channel), for CPUs.

    The MLPs' down projections stay in float32 (:func:`mlp_down_projections`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    large = source.stat().st_size + sum(p.stat().st_size for p in source.parent.glob(f"{source.name}.data"))
    kept = mlp_down_projections(source)
    logger.info("int8: %d MLP down projections stay in float32", len(kept))
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
        nodes_to_exclude=kept, use_external_data_format=large >= TWO_GB,
    )  # fmt: skip


def stamp(path: Path, metadata: dict[str, str]) -> None:
    """Write ``metadata`` into the graph's own metadata (read back by onnxruntime), leaving external data as is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))
