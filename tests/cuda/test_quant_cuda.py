"""INT8 layers on CUDA run integer GEMMs (torch._int_mm on the integer tensor cores) with the same
int8 weights and scales as on the CPU, so a quantized model moved to a GPU computes the same
function without falling back to float weights."""

from __future__ import annotations

import torch

import edgegen  # noqa: F401
from edgegen.models.gpt2 import GPT2, GPT2Config
from edgegen.ops._reference import int8_gemm_reference
from edgegen.quant import Int8DynamicConfig, quantize_
from edgegen.quant.modules import Int8Linear

DEV = "cuda"


def test_int8_gemm_on_cuda_is_exact():
    a = torch.randint(0, 256, (33, 72), dtype=torch.uint8)
    w = torch.randint(-127, 128, (40, 72), dtype=torch.int8)
    for zp, seven in ((0, False), (200, False), (64, True)):
        aa = a.clamp(max=127) if seven else a
        got = int8_gemm_reference(aa.to(DEV), zp, w.to(DEV), seven_bit=seven)
        assert got.dtype == torch.int32
        assert torch.equal(got.cpu(), ((aa.long() - zp) @ w.long().t()).int())


def test_int8_linear_on_cuda_matches_cpu():
    lin = torch.nn.Linear(96, 40)
    q = Int8Linear.from_float(lin)
    x = torch.randn(3, 7, 96)
    cpu = q(x)
    gpu = q.to(DEV)(x.to(DEV))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_quantized_gpt2_runs_on_cuda():
    cfg = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2)
    model = GPT2(cfg).eval()
    quantize_(model, Int8DynamicConfig())
    idx = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        cpu = model(idx)
        gpu = model.to(DEV)(idx.to(DEV))
    cpu = cpu[0] if isinstance(cpu, tuple) else cpu
    gpu = gpu[0] if isinstance(gpu, tuple) else gpu
    # Float ops between the integer GEMMs (layer norm, GELU, softmax) round differently on the GPU,
    # which can move an activation across a quantization step: a few hundredths at most.
    torch.testing.assert_close(gpu.float().cpu(), cpu.float(), rtol=2e-2, atol=2e-2)
