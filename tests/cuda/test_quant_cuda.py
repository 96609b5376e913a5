"""INT8 layers on CUDA run integer GEMMs (torch._int_mm on the integer tensor cores) with the same
int8 weights and scales as on the CPU, so a quantized model moved to a GPU computes the same
function without falling back to float weights."""

from __future__ import annotations

import json

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


def test_every_quantized_layer_and_pruning_op_on_cuda_matches_cpu():
    """The dispatcher gives CUDA the PyTorch kernels (no Python device branch anywhere): INT8
    convolutions (direct, phases, col2im), INT4, observers and the pruning ops give the CPU's
    results on the GPU."""
    from torch import nn

    from edgegen.ops import prune as P
    from edgegen.quant import Int4Linear, Int8Conv2d, Int8ConvTranspose2d
    from edgegen.quant.observers import MinMaxObserver, PercentileObserver

    torch.manual_seed(0)
    layers = [(Int8Conv2d.from_float(nn.Conv2d(3, 16, 4, 2, 1)), torch.randn(2, 3, 9, 8)),
              (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 16, 4, 2, 1)), torch.randn(2, 8, 5, 6)),
              (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 3, 4, 2, 1)), torch.randn(2, 8, 5, 6)),
              (Int8ConvTranspose2d.from_float(nn.ConvTranspose2d(8, 5, 3, 2, 1, dilation=2)), torch.randn(2, 8, 5, 6)),
              (Int4Linear.from_float(nn.Linear(128, 24), group_size=32), torch.randn(3, 128))]
    for layer, x in layers:
        cpu = layer(x)
        torch.testing.assert_close(layer.to(DEV)(x.to(DEV)).cpu(), cpu, rtol=1e-5, atol=1e-5)
    x = torch.randn(64, 16)
    for make in (lambda: MinMaxObserver(axis=1), lambda: PercentileObserver(bins=128)):
        a, b = make(), make().to(DEV)
        a(x)
        b(x.to(DEV))
        for u, v in zip(a.calculate_qparams(), b.calculate_qparams()):
            torch.testing.assert_close(v.cpu(), u)
    w = torch.randn(30, 20)
    assert torch.equal(P.magnitude_mask([w.to(DEV)], 100)[0].cpu(), P.magnitude_mask([w], 100)[0])
    assert torch.equal(P.nm_mask(w.to(DEV), 2, 4, 1).cpu(), P.nm_mask(w, 2, 4, 1))


def test_observers_and_scalar_qparams_on_cuda():
    """A PercentileObserver (created on the CPU, as calibration does) fed CUDA batches that widen
    its range; fake quantization with Python-number parameters of CUDA data."""
    from edgegen.quant.functional import fake_quantize
    from edgegen.quant.observers import PercentileObserver

    x = torch.randn(64, 16)
    a, b = PercentileObserver(bins=128), PercentileObserver(bins=128)
    for batch in (x, x * 3):
        a(batch)
        b(batch.to(DEV))
    for u, v in zip(a.calculate_qparams(), b.calculate_qparams()):
        torch.testing.assert_close(v.cpu(), u)
    torch.testing.assert_close(fake_quantize(x.to(DEV), 0.05, 3, -128, 127).cpu(), fake_quantize(x, 0.05, 3, -128, 127))


def test_a_gpu_models_tied_weights_are_stored_once(tmp_path):
    """GPT-2's head shares the embedding table: found on the GPU, before the copy to the CPU."""
    from edgegen.prune.export import save_sparse
    from edgegen.tensor_files import read_safetensors_metadata, write_safetensors

    model = GPT2(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16))
    cpu_size = write_safetensors(model.state_dict(), tmp_path / "cpu.safetensors")
    model = model.to(DEV)
    assert write_safetensors(model.state_dict(), tmp_path / "gpu.safetensors") == cpu_size
    save_sparse(model, tmp_path / "sparse.safetensors")
    for name in ("gpu", "sparse"):
        aliases = read_safetensors_metadata(tmp_path / f"{name}.safetensors")["edgegen_aliases"]
        assert json.loads(aliases) == {"lm_head.weight": "wte.weight"}, name
