"""Graph rewrites of an exported float32 graph, each done by onnxruntime's own tools.

- :func:`to_fp16`: a float16 graph for GPUs (``onnxruntime.transformers.float16``), float32 inputs and outputs, with
  the operations that overflow or lose accuracy in float16 kept in float32.
- :func:`optimize`: onnxruntime's transformer fusions (``onnxruntime.transformers.optimizer``) on whatever parts of
  the graph they recognise, with the count of each fused operator.
- :func:`quantize_int8`: int8 matrix products for CPUs, block-wise where activations carry outliers
  (``onnxruntime.quantization.matmul_nbits_quantizer``) and dynamic elsewhere (``quantize_dynamic``).

Each reads ``source`` and writes ``target`` (a graph over 2 GB keeps its weights in external data).
"""

from __future__ import annotations

import ast
import logging
import re
from collections import Counter
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
        The count of each operator the fusions produced (only those above zero; operators the exporter already
        wrote, such as opset 23's ``Attention``, are not counted).
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    before = Counter(node.op_type for node in onnx.load(str(source), load_external_data=False).graph.node)
    model = optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    statistics = model.get_fused_operator_statistics()  # counts of the operators in the result, fused or not
    fused = {name: int(count) - before[name] for name, count in statistics.items() if count > before[name]}
    save_graph(model.model, target, external_data=external_data)
    logger.info("onnxruntime's transformer optimizer fused: %s", fused or "nothing")
    return fused


# Matrix products quantised block-wise (module names below a layer index, as the exporter's name scopes give them).
# One int8 scale per 128 inputs of each token (``MatMulNBits``) keeps them faithful where one scale for the whole
# activation tensor (dynamic quantisation, the faster kernel) does not. Measured on the trained default, one kind of
# product at a time dynamic and the rest block-wise (lowest cosine with float32 over 16 BBC articles and the parity
# texts): the LLM's down projections, whose inputs carry a few huge activations, drop it from 0.992 to 0.880, the
# encoder's MLP layers to 0.983 and 0.986; the other kinds cost 0.001 to 0.005 each, which add up. With only the
# MLPs' second halves block-wise the export's parity check gave 0.979 (it needs 0.98); adding the products that form
# the encoder's attention scores (query, key) and the LLM's narrow key and value projections gives 0.984, for a
# tenth of the throughput (11.9 -> 10.7 texts/s at batch 16).
BLOCKWISE_MODULES = frozenset({
    "mlp.down_proj", "mlp.c_proj", "intermediate.dense", "output.dense",  # MLPs' second halves (and the encoder's MLP)
    "attention.self.query", "attention.self.key",  # the encoder's attention scores
    "self_attn.k_proj", "self_attn.v_proj",  # the LLM's key and value projections (a third of q's width here)
})  # fmt: skip
BLOCK_SIZE = 128  # inputs per int8 scale in the block-wise products: 64 was slower, 256 less faithful on the default
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the module path of each node, written by torch's dynamo exporter


def layer_module(node: Any) -> str | None:
    """The module a node was traced from, below its layer index; ``None`` when the graph does not record it.

    ``llm.layers.3.mlp.down_proj`` gives ``mlp.down_proj``, ``encoder.encoder.layer.0.output.dense`` ``output.dense``.
    """
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            scopes = ast.literal_eval(prop.value)  # the enclosing modules, outermost first, then the op's own name
            return re.sub(r"^.*?\.\d+\.", "", scopes[-2]) if len(scopes) > 1 else None
    return None


def int8_plan(path: Path) -> tuple[list[str], list[str]]:
    """Split the MatMuls with a weight into ``(blockwise, dynamic)`` node names (see :data:`BLOCKWISE_MODULES`).

    A MatMul whose module the graph does not record goes block-wise, the more faithful of the two.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer if len(t.dims) == 2}
    blockwise, dynamic = [], []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            module = layer_module(node)
            (dynamic if module is not None and module not in BLOCKWISE_MODULES else blockwise).append(node.name)
    return blockwise, dynamic


def quantize_int8(source: Path, target: Path) -> dict[str, int]:
    """Quantise the matrix products of ``source`` that have a weight to int8, for CPUs, with onnxruntime's tools.

    Both kinds hold int8 weights and multiply in int8 (VNNI where the CPU has it); they differ in how they quantise
    the activations, on the fly:

    - block-wise (``MatMulNBits``, 8 bits, ``accuracy_level`` 4): one scale per :data:`BLOCK_SIZE` inputs of each
      token, for the products in :data:`BLOCKWISE_MODULES`;
    - dynamic (``quantize_dynamic``, weights per output channel): one scale per activation tensor, the faster
      kernel, for the rest.

    Returns:
        How many products each kind got: ``{"blockwise": n, "dynamic": m}``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from export.onnx_export import _quiet_logger

    blockwise, dynamic = int8_plan(source)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=8, block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=4,
        op_types_to_quantize=("MatMul",), nodes_to_exclude=dynamic,
    )  # fmt: skip
    with _quiet_logger("onnxruntime.quantization.matmul_nbits_quantizer"):  # it logs every node it skips
        quantizer.process()
    middle = source.with_name(f"blockwise-{source.name}")
    external = save_graph(quantizer.model.model, middle)
    quantize_dynamic(
        str(middle), str(target), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
        nodes_to_quantize=dynamic, use_external_data_format=external,
    )  # fmt: skip
    counts = {"blockwise": len(blockwise), "dynamic": len(dynamic)}
    logger.info("int8: %d matrix products quantised block-wise, %d dynamically", *counts.values())
    return counts


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
