"""Shared fixtures for the bidirmoe test suite.

The central fixture is a small synthetic corpus with PLANTED structure:
8 topic groups of 6 words each. Every sentence picks one group and draws
most of its words from it, plus shared filler ("stop") words and a long
Zipf tail of rare words. A working word2vec must put each group's words
next to each other; random vectors cannot.

Everything is deterministic (numpy seed), so the corpus, and the files
written from it, are identical on every run.
"""

from __future__ import annotations

import bz2
import itertools
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest

N_GROUPS = 8
GROUP_SIZE = 6
FILLERS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "with"]
N_RARE = 3000
CORPUS_SEED = 20240601


@dataclass(frozen=True)
class PlantedCorpus:
    """The planted corpus and what is known about it."""

    groups: List[List[str]]
    fillers: List[str]
    sentences: List[List[str]]

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)

    @property
    def group_words(self) -> List[str]:
        return [w for g in self.groups for w in g]

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for s in self.sentences:
            for w in s:
                out[w] = out.get(w, 0) + 1
        return out

    def text(self) -> str:
        return "".join(" ".join(s) + "\n" for s in self.sentences)


def make_planted_corpus(n_sentences: int = 4000, seed: int = CORPUS_SEED, p_group: float = 0.7,
                        p_filler: float = 0.2) -> PlantedCorpus:
    """Sentences of 6..14 tokens: with probability ``p_group`` a word of the
    sentence's topic group, with ``p_filler`` a (Zipf-weighted) filler word,
    otherwise a rare word from a Zipf tail of N_RARE words."""
    rng = np.random.default_rng(seed)
    groups = [[f"t{g}w{i}" for i in range(GROUP_SIZE)] for g in range(N_GROUPS)]
    rare = [f"r{k}" for k in range(N_RARE)]
    fw = 1.0 / np.arange(1, len(FILLERS) + 1)
    fw /= fw.sum()
    rw = 1.0 / np.arange(1, N_RARE + 1) ** 1.1
    rw /= rw.sum()
    lengths = rng.integers(6, 15, size=n_sentences)
    topics = rng.integers(0, N_GROUPS, size=n_sentences)
    total = int(lengths.sum())
    kind = rng.random(total)
    gidx = rng.integers(0, GROUP_SIZE, size=total)
    fidx = rng.choice(len(FILLERS), size=total, p=fw)
    ridx = rng.choice(N_RARE, size=total, p=rw)
    sentences: List[List[str]] = []
    pos = 0
    for length, topic in zip(lengths.tolist(), topics.tolist()):
        grp = groups[topic]
        sent = []
        for j in range(pos, pos + length):
            k = kind[j]
            if k < p_group:
                sent.append(grp[gidx[j]])
            elif k < p_group + p_filler:
                sent.append(FILLERS[fidx[j]])
            else:
                sent.append(rare[ridx[j]])
        sentences.append(sent)
        pos += length
    return PlantedCorpus(groups=groups, fillers=list(FILLERS), sentences=sentences)


def group_precision(wv, groups: Sequence[Sequence[str]], topn: int = 5) -> float:
    """Share of each group word's ``topn`` nearest neighbours (cosine, the word
    itself excluded) that belong to its own group, averaged over all group
    words. Computed directly from ``wv.vectors`` so it does not depend on the
    KeyedVectors query API."""
    vecs = np.asarray(wv.vectors, dtype=np.float64)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.where(norms == 0, 1.0, norms)
    k2i = wv.key_to_index
    hits = total = 0
    for grp in groups:
        members = {k2i[w] for w in grp}
        for w in grp:
            i = k2i[w]
            sims = unit @ unit[i]
            sims[i] = -np.inf
            top = np.argsort(-sims, kind="stable")[:topn]
            hits += sum(int(j) in members for j in top)
            total += topn
    return hits / total


#: Precision that every trained configuration must reach on the planted
#: corpus; random vectors score about topn / V (~3%).
PRECISION_THRESHOLD = 0.7


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def planted() -> PlantedCorpus:
    return make_planted_corpus()


@pytest.fixture(scope="session")
def corpus(planted) -> List[List[str]]:
    """The planted corpus as a list of token lists (do not mutate)."""
    return planted.sentences


@pytest.fixture(scope="session")
def groups(planted) -> List[List[str]]:
    return planted.groups


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="session")
def corpus_file(planted, corpus_dir) -> Path:
    """Plain text: one sentence per line."""
    path = corpus_dir / "planted.txt"
    path.write_text(planted.text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus_file_gz(planted, corpus_dir) -> Path:
    """The same text, gzip-compressed."""
    path = corpus_dir / "planted.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(planted.text())
    return path


@pytest.fixture(scope="session")
def corpus_file_bz2(planted, corpus_dir) -> Path:
    path = corpus_dir / "planted.txt.bz2"
    with bz2.open(path, "wt", encoding="utf-8") as f:
        f.write(planted.text())
    return path


@pytest.fixture(scope="session")
def corpus_file_oneline(planted, corpus_dir) -> Path:
    """All the corpus's tokens, in order, on one single huge line (text8-style)."""
    path = corpus_dir / "planted_oneline.txt"
    path.write_text(" ".join(w for s in planted.sentences for w in s) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def precision():
    """``precision(wv, groups, topn=5)``: see :func:`group_precision`."""
    return group_precision


@pytest.fixture(scope="session")
def precision_threshold() -> float:
    return PRECISION_THRESHOLD


# ------------------------------------------------- a corpus that needs the gates

PAIRS, NOISE, PAIR_LEN, PAIR_AT = 20, 40, 6, 2


def make_pair_corpus(n_sentences: int, seed: int) -> List[List[str]]:
    """Sentences of PAIR_LEN tokens: uniform noise words ``n*`` everywhere except
    positions PAIR_AT and PAIR_AT + 1, which hold a planted pair ``k{i} p{i}``.
    Each pair word is fully determined by its neighbour and nothing else, so a
    masked-word model must learn to put its gate weight on that one context
    word (an average over the context, as at initialisation, mostly sees noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sentences):
        s = [f"n{j}" for j in rng.integers(0, NOISE, PAIR_LEN)]
        i = int(rng.integers(PAIRS))
        s[PAIR_AT], s[PAIR_AT + 1] = f"k{i}", f"p{i}"
        out.append(s)
    return out


def pair_skill(model, seed: int = 5):
    """How well ``model`` has learnt the pair corpus: the share of the pairs
    whose ``p{i}`` it predicts first from a context holding ``k{i}`` (and noise),
    and the mean over pairs of the largest gate weight (over heads) that the
    ``k{i}`` expert gets. Untrained: (0, ~1/6, the uniform weight)."""
    rng = np.random.default_rng(seed)
    hits, weights = 0, []
    for i in range(PAIRS):
        noise = [f"n{j}" for j in rng.integers(0, NOISE, PAIR_LEN - 2)]
        left, right = noise[:PAIR_AT] + [f"k{i}"], noise[PAIR_AT:]
        hits += model.predict_masked(left, right, topn=1)[0][0] == f"p{i}"
        g = model.gates(left, right)
        j = [w for w, _ in g["experts"]].index(f"k{i}")
        weights.append(float(g["weights"][:, j].max()))
    return hits / PAIRS, float(np.mean(weights))


@pytest.fixture(scope="session")
def pair_corpus():
    """(train, held-out) sentences of :func:`make_pair_corpus`."""
    return make_pair_corpus(3000, seed=1), make_pair_corpus(300, seed=2)


def _assert_learns_pairs(model, pair_corpus, margin: float = 1.0):
    """Train ``model`` (constructed on the pair corpus, not yet trained) and
    check it beats its untrained self on held-out text by ``margin`` nats of
    mean log-likelihood, predicts every planted pair's partner, and gates on it.
    A wrong gradient for the output layer, the values or the gates fails this."""
    train, held = pair_corpus
    model.build_vocab(train)
    before = model.evaluate_masked(held, max_targets=1500, seed=0)
    hits0, gate0 = pair_skill(model)
    assert hits0 <= 0.2 and gate0 < 0.3, (hits0, gate0)  # the check is not passed for free
    model.train()
    after = model.evaluate_masked(held, max_targets=1500, seed=0)
    hits, gate = pair_skill(model)
    assert after["log_likelihood"] > before["log_likelihood"] + margin, (before, after)
    assert hits >= 0.9, hits
    assert gate > 0.5, gate
    return model


@pytest.fixture(scope="session")
def assert_learns_pairs(pair_corpus):
    """``check(model)``: see :func:`_assert_learns_pairs`; returns the trained model."""
    return lambda model, **kw: _assert_learns_pairs(model, pair_corpus, **kw)


@pytest.fixture(scope="session", autouse=True)
def _sigint_raises_keyboardinterrupt():
    """The Ctrl-C tests need Python's SIGINT handler. A process started from a
    background job inherits SIGINT ignored and Python then installs none;
    restore it for the test session (as an interactive terminal would have)."""
    import signal

    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, old)


def _assert_step_is_lr_times_gradient(P, arrays, before, lr, log_prob, **tol):
    """Every parameter moved by lr x d log p / d param (central finite differences of ``log_prob``)."""
    eps, checked = 1e-6, 0
    for name, arr in P.items():
        if arr is None or not isinstance(arr, np.ndarray):
            continue
        delta = arrays[name].astype(np.float64) - before[name]
        for idx in itertools.product(*map(range, arr.shape)):
            orig = arr[idx]
            arr[idx] = orig + eps
            up = log_prob()
            arr[idx] = orig - eps
            down = log_prob()
            arr[idx] = orig
            assert delta[idx] == pytest.approx(lr * (up - down) / (2 * eps), **tol), (name, idx)
            checked += 1
    return checked


def _step_with_distinct_negatives(step, arrays0, output, target, k, seeds=range(200)):
    """Run ``step(arrays, seed)`` (one SGD step with negative sampling on a
    copy of ``arrays0``) for successive seeds until one draws ``k`` distinct
    negatives that all differ from the target; the negatives are read off the
    rows of ``arrays[output]`` (the output vectors) that the step moved. For
    such a step, one step is exactly lr x the gradient of word2vec's objective
    with those negatives (a repeated negative would see its own first update).
    Returns (arrays after the step, the step's return value, negatives)."""
    for seed in seeds:
        arrays = {name: (None if a is None else a.copy()) for name, a in arrays0.items()}
        result = step(arrays, seed)
        moved = set(np.flatnonzero(np.any(arrays[output] != arrays0[output], axis=1)).tolist())
        assert target in moved, "the target's output vector did not move"
        negatives = sorted(moved - {target})
        if len(negatives) == k:
            return arrays, result, negatives
    pytest.fail(f"no seed in {seeds} drew {k} distinct negatives")


@pytest.fixture(scope="session")
def step_with_distinct_negatives():
    """``run(step, arrays0, output, target, k)``: see :func:`_step_with_distinct_negatives`."""
    return _step_with_distinct_negatives


@pytest.fixture(scope="session")
def assert_step_is_lr_times_gradient():
    """``check(P, arrays, before, lr, log_prob, **tol)``: after one SGD step, every
    parameter in P moved by lr x the finite-difference gradient of ``log_prob``
    (P holds the float64 parameters ``log_prob`` reads; returns how many were checked)."""
    return _assert_step_is_lr_times_gradient
