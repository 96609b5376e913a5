"""Quantization: exact affine quantize/dequantize/fake-quantize kernels (per tensor or per channel
on any axis), learnable fake quantization (LSQ), integer Linear layers and ``quantize_``."""

from edgegen.quant.api import LowPrecision, quantize_, register_quantize_handler
from edgegen.quant.config import (
    Bf16Config,
    DynamicPrecisionConfig,
    Fp16Config,
    Int4DynamicConfig,
    Int4WeightOnlyConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    QATConfig,
    QuantConfig,
    config_from_dict,
)
from edgegen.quant.modules import (INTEGER_LAYERS, Int4Embedding, Int4Linear, Int8Conv2d, Int8ConvTranspose2d, Int8Embedding,
                                   Int8Linear)
from edgegen.quant.mixed import (
    SwitchablePrecision,
    enable_precision_switch_,
    layer_sensitivity,
    load_quantized,
    quantize_mixed_,
    save_quantized,
    set_precision_,
)
from edgegen.quant.qat import QATModule, convert_, prepare_qat_
from edgegen.quant.observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    qparams_from_range,
)
from edgegen.quant.functional import (
    dequantize,
    fake_quantize,
    fake_quantize_learnable,
    quantize_per_channel,
    quantize_per_tensor,
)

__all__ = ["quantize_per_tensor", "quantize_per_channel", "dequantize", "fake_quantize", "fake_quantize_learnable",
           "quantize_", "register_quantize_handler", "QuantConfig", "DynamicPrecisionConfig", "Int8DynamicConfig", "Int4WeightOnlyConfig", "Int4DynamicConfig", "Fp16Config", "Bf16Config", "config_from_dict",
           "Int8Linear", "Int4Linear", "LowPrecision", "Int8StaticConfig", "Int8Conv2d", "Int8ConvTranspose2d",
           "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver", "MSEObserver", "qparams_from_range",
           "QATConfig", "QATModule", "prepare_qat_", "convert_", "layer_sensitivity", "quantize_mixed_",
           "SwitchablePrecision", "enable_precision_switch_", "set_precision_", "save_quantized", "load_quantized", "Int8Embedding",
           "Int4Embedding", "INTEGER_LAYERS"]
