"""Export the whole UMT + ToMe clip encoder to ONNX with a dynamic batch axis.

The graph maps `pixels` (batch, T, 3, S, S) float32 to `tokens` (batch, 64, C) float32. It is the
input for the onnxruntime backend and for the TensorRT engine builder, so it has to be exact:
ToMe's weighted mean is scatter-add + count (see `encoder_trt.tome`), and callers keep an
onnxruntime-vs-torch parity test because an exporter can emit wrong math silently.

Both exporters give correct numbers for this model (torch 2.13: max abs diff ~1e-6 on a tiny
random model). We default to the dynamo exporter: its graph is a plain static op list (Conv,
MatMul, Softmax, LayerNormalization, TopK, GatherElements, ScatterElements(add), ...) whereas the
TorchScript exporter (`dynamo=False`, ~10x faster to export) adds `If`/`Where` nodes and
mis-declared intermediate shapes that onnxruntime warns about and TensorRT handles worse.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from encoder_trt.modeling_umt import UMTClipEncoder

INPUT_NAME = "pixels"
OUTPUT_NAME = "tokens"
METADATA_KEY = "flashwatch.umt_config"


def export_onnx(
    model: UMTClipEncoder,
    path: str | Path,
    image_size: int | None = None,
    opset: int = 18,
    max_batch: int = 8,
    *,
    dynamo: bool = True,
) -> Path:
    """Trace `model` (fp32, CPU) and write an ONNX file with batch axis 1..max_batch.

    `model` is cast to fp32 and moved to the CPU in place before tracing.

    The model config is stored as JSON in the ONNX metadata (key `flashwatch.umt_config`) so an
    engine builder or runtime can check it serves the checkpoint it was asked for.
    """
    import onnx

    config = model.config
    if image_size is not None and image_size != config.image_size:
        raise ValueError(f"image_size {image_size} != model config image_size {config.image_size}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = config.image_size
    # Trace with batch 2: torch.export specialises size-1 dims, so batch 1 would freeze the axis.
    example = torch.randn(2, config.num_frames, 3, s, s)  # (B, T, 3, S, S)
    model = model.float().eval().cpu()

    kwargs: dict[str, Any]
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
        kwargs = {"dynamo": True, "dynamic_shapes": {"pixels": {0: batch}}, "verbose": False}
    else:
        kwargs = {
            "dynamo": False,
            "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation / tracer chatter
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            **kwargs,
        )

    # Large models may be written with external data; keep those references as they are.
    proto = onnx.load(str(path), load_external_data=False)
    meta = proto.metadata_props.add()
    meta.key = METADATA_KEY
    meta.value = json.dumps({**config_dict(model), "max_batch": max_batch})
    onnx.save(proto, str(path))
    return path


def config_dict(model: UMTClipEncoder) -> dict[str, Any]:
    """The config as a JSON-able dict plus the merge schedule (part of the graph's identity)."""
    import dataclasses

    return {**dataclasses.asdict(model.config), "schedule": list(model.schedule)}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The `flashwatch.umt_config` metadata of an exported file ({} when absent)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            value: dict[str, Any] = json.loads(prop.value)
            return value
    return {}
