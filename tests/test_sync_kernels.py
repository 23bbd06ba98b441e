"""The fused kernels of a distributed sync round (``rust/src/sync.rs``) and the
round bookkeeping built on them (``bidirmoe.torch.distributed._Buffers``),
against numpy / torch references, without launching any process."""

import numpy as np
import pytest

from bidirmoe import _core

torch = pytest.importorskip("torch")


def _bufs(rng, n=1000):
    return [rng.standard_normal(n).astype(np.float32) for _ in range(4)]


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 with torch (the reference), as uint16 bits."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def _bf16_value(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("recv", [True, False])
@pytest.mark.parametrize("send", [True, False])
def test_exchange_matches_numpy(recv, send):
    p, c, o, w = _bufs(np.random.default_rng(1))
    scale = np.float32(0.5)
    new = p - c - o
    c_ref = c + scale * w if recv else c.copy()
    p_ref = c_ref + new
    o_ref = new if send else np.zeros_like(o)
    w_ref = new if send else w.copy()
    _core.sync_exchange(p, c, o, w, 0.5, recv, send)
    for got, want in [(p, p_ref), (c, c_ref), (o, o_ref), (w, w_ref)]:
        np.testing.assert_array_equal(got, want)


def test_exchange_with_a_bfloat16_wire_matches_torch_rounding():
    rng = np.random.default_rng(2)
    p, c, o, w32 = _bufs(rng)
    p[:3] = c[:3] + o[:3] + np.array([1 + 1 / 512, 1 + 3 / 512, -1e-30], dtype=np.float32)  # ties and a tiny value
    w = _bf16_bits(w32)
    new = p - c - o
    c_ref = c + np.float32(2.0) * _bf16_value(w)
    p_ref = c_ref + new
    sent = _bf16_bits(new)
    _core.sync_exchange(p, c, o, w, 2.0, True, True)
    np.testing.assert_array_equal(w, sent)
    np.testing.assert_array_equal(o, _bf16_value(sent))
    np.testing.assert_array_equal(c, c_ref)
    np.testing.assert_array_equal(p, p_ref)


def test_adopt_matches_numpy():
    p, c, o, w = _bufs(np.random.default_rng(3))
    c_ref = c + np.float32(0.25) * w
    _core.sync_adopt(p, c, o, w, 0.25)
    np.testing.assert_array_equal(c, c_ref)
    np.testing.assert_array_equal(p, c_ref)
    assert not o.any()


def test_kernels_refuse_bad_buffers():
    p, c, o, w = _bufs(np.random.default_rng(4))
    with pytest.raises(ValueError, match="differ in size"):
        _core.sync_exchange(p, c, o[:10], w, 1.0, True, True)
    with pytest.raises(ValueError, match="shares memory"):
        _core.sync_exchange(p, p, o, w, 1.0, True, True)
    with pytest.raises(ValueError, match="contiguous"):
        _core.sync_exchange(p[::2], c[::2], o[::2], w[::2], 1.0, True, True)
    with pytest.raises(ValueError, match="wire must be"):
        _core.sync_adopt(p, c, o, w.astype(np.float64), 1.0)
    with pytest.raises((ValueError, TypeError)):
        _core.sync_adopt(p.astype(np.float64), c, o, w, 1.0)


def _two_ranks(wire_dtype, hot_rows, kernels, rounds=5, vocab=30, seed=0):
    """Simulate two ranks' rounds (the all-reduce summed here) over a per-word
    table and a shared array; returns (rank params, start, every change)."""
    from bidirmoe.torch.distributed import _Buffers

    rng = np.random.default_rng(seed)
    start = [rng.standard_normal((vocab, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    params = [[torch.from_numpy(a.copy()) for a in start] for _ in range(2)]
    bufs = []
    for r in range(2):
        b = _Buffers(params[r], getattr(torch, wire_dtype))
        b.use_kernels = kernels
        b.layout(vocab, 2, "mixed", hot_rows)
        bufs.append(b)
    changes = [np.zeros_like(a, dtype=np.float64) for a in start]
    for k in range(rounds + 1):
        last = k == rounds
        if not last:
            for r in range(2):  # training between rounds
                for i, t in enumerate(params[r]):
                    d = (0.01 * rng.standard_normal(t.shape)).astype(np.float32)
                    t += torch.from_numpy(d)
                    changes[i] += d * (1.0 if i == 0 else 0.5)  # per-word: sum; shared: mean
        hot_only = hot_rows is not None and not last and (k + 1) % hot_rows[1] != 0
        sent = [b.exchange(params[r], hot_only) for r, b in enumerate(bufs)]
        wires = [b.wire_to_send(hot_only) for b in bufs]
        total = wires[0].float() + wires[1].float()
        for r, b in enumerate(bufs):
            wires[r].copy_(total)
            if last:
                b.adopt(params[r])
            else:
                b.arrived(sent[r])
    return params, start, changes


@pytest.mark.parametrize("wire_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("hot_rows", [None, (10, 3)])
def test_rounds_add_every_change_once_and_end_identical(wire_dtype, hot_rows):
    params, start, changes = _two_ranks(wire_dtype, hot_rows, kernels=True)
    for i in range(2):
        np.testing.assert_array_equal(params[0][i].numpy(), params[1][i].numpy())
        # bfloat16: the last round drops what rounding took off the last changes (< 1 %).
        tol = 1e-5 if wire_dtype == "float32" else 2e-3
        np.testing.assert_allclose(params[0][i].numpy(), start[i] + changes[i], atol=tol, rtol=0)


@pytest.mark.parametrize("wire_dtype", ["float32", "bfloat16"])
def test_torch_ops_match_the_kernels(wire_dtype):
    fast, _, _ = _two_ranks(wire_dtype, (10, 3), kernels=True)
    slow, _, _ = _two_ranks(wire_dtype, (10, 3), kernels=False)
    for a, b in zip(fast[0], slow[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, rtol=0)
