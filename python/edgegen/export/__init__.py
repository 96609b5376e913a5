"""ONNX export of edgegen's models, checked in ONNX Runtime, and INT8 through ONNX Runtime's own
quantizer (``edgegen.export.onnx``); onnx and onnxruntime are an optional extra
(``pip install edgegen[export]``), imported only by the functions that need them."""

from edgegen.export.onnx import (
    OnnxExport,
    export_onnx,
    onnx_latency,
    onnx_target,
    quantize_onnx,
    quantized_weights,
    run_onnx,
)

__all__ = ["OnnxExport", "export_onnx", "onnx_target", "quantize_onnx", "onnx_latency", "run_onnx",
           "quantized_weights"]
