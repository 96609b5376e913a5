"""edgegen.memory: the buffer cache behind the KD loss's gradient and the fused-linear chunks.

A reused buffer must never show its previous contents or be handed out while a tensor still
owns it; the cache's counters and switches must say what it does."""

import os
import subprocess
import sys

import pytest
import torch

import edgegen
from edgegen.distill import fused_linear_kd_loss, kd_loss
from edgegen.ops import kd_loss_reference

V = 50257  # [48, V] fp32 = 9.2 MiB: above the 8 MiB from which outputs come from the cache


@pytest.fixture(autouse=True)
def fresh_cache():
    edgegen.memory.set_buffer_cache_enabled(True)
    edgegen.memory.empty_cache()
    yield
    edgegen.memory.set_buffer_cache_enabled(True)
    edgegen.memory.empty_cache()


def problem(seed):
    """Student and teacher logits [48, V] and targets."""
    torch.manual_seed(seed)
    return torch.randn(48, V), torch.randn(48, V), torch.randint(0, V, (48,))


def grad_of(s, t, y):
    s = s.detach().clone().requires_grad_()
    kd_loss(s, t, y).backward()
    return s.grad


def reference_grad(s, t, y):
    s64 = s.detach().double().requires_grad_()
    kd_loss_reference(s64, t.double(), y).backward()
    return s64.grad


def test_reused_gradient_buffer_holds_only_the_new_gradient():
    torch.manual_seed(0)
    s1, t1 = torch.randn(48, V) * 3, torch.randn(48, V) * 3
    s2, t2 = torch.randn(48, V) * 3, torch.randn(48, V) * 3
    y1 = torch.randint(0, V, (48,))
    y2 = y1.clone()
    y2[::3] = -100  # ignored rows: the kernel must zero them, not leave the last step's values
    g1 = grad_of(s1, t1, y1)
    ptr = g1.data_ptr()
    del g1
    assert edgegen.memory.cache_info()["held_blocks"] == 1
    g2 = grad_of(s2, t2, y2)
    assert g2.data_ptr() == ptr  # the freed buffer came back
    info = edgegen.memory.cache_info()
    assert info["hits"] >= 1 and info["held_blocks"] == 0
    assert torch.equal(g2[::3], torch.zeros_like(g2[::3]))
    torch.testing.assert_close(g2.double(), reference_grad(s2, t2, y2), rtol=0, atol=1e-8)


def test_a_buffer_in_use_is_never_handed_out_again():
    s, t, y = problem(1)
    kept = grad_of(s, t, y)
    snapshot = kept.clone()
    other = grad_of(s * 2, t, y)
    assert other.data_ptr() != kept.data_ptr()
    assert torch.equal(kept, snapshot)


def test_empty_cache_and_disabling_free_what_is_held():
    s, t, y = problem(5)
    grad_of(s, t, y)
    held = edgegen.memory.cache_info()["held_bytes"]
    assert held >= s.numel() * 4
    assert edgegen.memory.empty_cache() == held
    assert edgegen.memory.cache_info()["held_bytes"] == 0
    edgegen.memory.set_buffer_cache_enabled(False)
    grad_of(s, t, y)
    info = edgegen.memory.cache_info()
    assert info["enabled"] is False and info["held_blocks"] == 0


def test_small_outputs_bypass_the_cache():
    s, t = torch.randn(8, V), torch.randn(8, V)  # 1.6 MB
    before = edgegen.memory.cache_info()
    grad_of(s, t, torch.randint(0, V, (8,)))
    after = edgegen.memory.cache_info()
    assert (after["hits"], after["misses"], after["held_blocks"]) == (before["hits"], before["misses"], 0)


def test_fused_linear_chunks_are_reused_across_steps():
    torch.manual_seed(2)
    hs, ws = torch.randn(64, 32, requires_grad=True), torch.randn(V, 32) * 0.2
    ht, wt = torch.randn(64, 48), torch.randn(V, 48) * 0.2
    y = torch.randint(0, V, (64,))
    grads = []
    for _ in range(2):
        hs.grad = None
        fused_linear_kd_loss(hs, ws, ht, wt, y, chunk_size=64).backward()
        grads.append(hs.grad.clone())
    assert edgegen.memory.cache_info()["hits"] >= 2  # the student and teacher chunks
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
    h64 = hs.detach().double().requires_grad_()
    kd_loss_reference(h64 @ ws.double().T, ht.double() @ wt.double().T, y).backward()
    torch.testing.assert_close(grads[1].double(), h64.grad, rtol=1e-4, atol=1e-6)


def test_bad_switch_value_is_refused():
    with pytest.raises(TypeError, match="enabled: expected a bool"):
        edgegen.memory.set_buffer_cache_enabled(1)


def test_environment_turns_the_cache_off():
    code = "import edgegen; print(edgegen.memory.cache_info()['enabled'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "EDGEGEN_BUFFER_CACHE": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_a_reused_gradient_can_be_resized_like_any_tensor():
    s, t, y = problem(4)
    g = grad_of(s, t, y)
    before = g.clone()
    assert edgegen.memory.cache_info()["held_blocks"] == 0  # g owns the buffer
    g.resize_(49, V)  # grows the storage: the data moves, the buffer goes back to the cache
    assert edgegen.memory.cache_info()["held_blocks"] == 1
    assert torch.equal(g[:48], before)
    g.resize_(10, V)  # shrinking keeps the storage
    assert torch.equal(g, before[:10])
