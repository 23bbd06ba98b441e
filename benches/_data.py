"""Data preparation and memory measurement shared by the benchmark scripts."""

from __future__ import annotations

import gzip
import os
import resource
import sys
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
#: The shared data folder beside the project, and the default benchmark corpus.
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))
DEFAULT_CORPUS = os.path.join(SHARED, "text8", "text8_prefix.gz")


def peak_rss_bytes() -> int:
    """This process's own peak resident set size, in bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: the high-water mark
    of the process's own address space, which starts afresh at ``exec``.
    ``getrusage().ru_maxrss`` is not: Linux carries the parent's high-water
    mark over into a child across fork + exec, so a child started by a
    parent that once held a large corpus reports the parent's peak, whatever
    the child itself does. Elsewhere (no /proc) ``ru_maxrss`` is the best
    there is; call it from a process started by a small parent."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# Runs ``python -m MODULE ARGS...`` in this fresh process and, on the way out
# (whatever the exit status), writes the process's own peak RSS to OUT.
# Usage: python -c MEASURED_MODULE BENCHES_DIR OUT MODULE ARGS...
MEASURED_MODULE = r"""
import atexit, runpy, sys
sys.path.insert(0, sys.argv[1])
from _data import peak_rss_bytes
out = sys.argv[2]
sys.path.pop(0)
def report():
    with open(out, "w") as f:
        f.write(str(peak_rss_bytes()))
atexit.register(report)
sys.argv = [sys.argv[3]] + sys.argv[4:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def measured_module_command(module: str, args: List[str], rss_file: str) -> List[str]:
    """The command line that runs ``python -m module args`` and writes its peak RSS to ``rss_file``."""
    return [sys.executable, "-c", MEASURED_MODULE, HERE, rss_file, module, *args]


def heldout_split(corpus: str, directory: str, train_share: float = 0.9) -> Tuple[str, List[List[str]], int, int]:
    """Split a (gzip) text corpus by position: the first ``train_share`` of its
    words written to ``directory/train.txt`` as 1000-word lines, the rest
    returned as held-out 1000-word sentences. Returns (train path, held-out
    sentences, train words, total words)."""
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as f:
        words = f.read().split()
    cut = int(len(words) * train_share)
    path = os.path.join(directory, "train.txt")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(0, cut, 1000):
            f.write(" ".join(words[i:min(i + 1000, cut)]) + "\n")
    return path, [words[i:i + 1000] for i in range(cut, len(words), 1000)], cut, len(words)


#: A cache-line round trip between two threads (``_core._line_round_trip_ns``)
#: under this many ns: the two threads ran on cores that share a cache (same
#: die). A shared VM's host may at times place them farther apart (several
#: hundred ns), where every row the other worker wrote costs that much and
#: Hogwild workers lose most of the second core (docs/speed.md, twelfth round).
NEAR_NS = 200


def line_round_trip():
    """The cache-line round trip between two threads now, in ns (None if it stalled)."""
    from bidirmoe import _core
    return _core._line_round_trip_ns()


def placement(trips) -> Tuple[bool, str]:
    """Whether a run's round trips (before, after) both said near, and how to print them."""
    near = None not in trips and max(trips) < NEAR_NS
    return near, " / ".join(f"{t:.0f}" if t is not None else "-" for t in trips)

