"""Choosing where a model trains (`device`, `backend`) and the guarantees
around it that hold without torch: clear errors, and no torch import on
the Rust path."""

import subprocess
import sys

import pytest

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec
from bidirmoe.training import resolve_backend

CLASSES = [Word2Vec, BidirMoE, BidirectionalAttention]


def run_py(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_rust_path_never_imports_torch():
    r = run_py(
        "import sys\n"
        "from bidirmoe import Word2Vec, BidirMoE, BidirectionalAttention\n"
        "c = [['a', 'b', 'c', 'd']] * 30\n"
        "Word2Vec(c, min_count=1, vector_size=4, epochs=1, workers=1)\n"
        "BidirMoE(c, min_count=1, vector_size=4, epochs=1, workers=1).train()\n"
        "BidirectionalAttention(c, min_count=1, vector_size=4, epochs=1, workers=1).train()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("cls", CLASSES)
def test_without_torch_asking_for_it_is_one_import_error(cls):
    r = run_py(
        "import sys\n"
        f"from bidirmoe import {cls.__name__}\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        f"    {cls.__name__}(vector_size=4, device='cuda')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    assert r.returncode == 0, r.stderr
    assert 'pip install "bidirmoe[torch]"' in r.stdout


def test_backend_and_device_are_checked():
    assert resolve_backend(None, None) == ("cpu", "rust")
    assert resolve_backend("cpu", "rust") == ("cpu", "rust")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cpu", "jax")
    with pytest.raises(ValueError, match="Rust backend runs on the CPU"):
        Word2Vec(vector_size=4, device="cuda:1", backend="rust")


def test_a_missing_gpu_is_named():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(RuntimeError, match="device='cuda:0'.*no CUDA GPU"):
        BidirMoE(vector_size=4, device="cuda:0")
    with pytest.raises(ValueError, match="not a torch device"):
        BidirMoE(vector_size=4, device="gpu-please", backend="torch")


def test_cli_device_without_a_gpu_is_one_line(tmp_path):
    try:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    except ImportError:
        pass  # then the one line says to install torch
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d e\n" * 50)
    r = subprocess.run([sys.executable, "-m", "bidirmoe", "train", str(corpus), "-o", str(tmp_path / "v.bin"),
                        "--min-count", "1", "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bidirmoe: error:") and "cuda" in lines[0], r.stderr
