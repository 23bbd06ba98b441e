"""Hot-row privatization (``hot_rows``): with 2 workers each keeps private
copies of the most frequent words' rows and merges them into the shared
arrays; with 1 worker the option changes nothing.

A merge that never happened shows directly: the output vectors start at
zero, so with every row private and no merge before a worker's end,
``syn1neg`` would still be zero after training.
"""

from __future__ import annotations

import numpy as np
import pytest

import bidirmoe.training as training
from bidirmoe import BidirMoE, Word2Vec


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Zipf-like corpus of 300 words in 200-word lines (60k words)."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 301)
    words = rng.choice(300, size=60_000, p=p / p.sum())
    path = tmp_path_factory.mktemp("hot") / "c.txt"
    path.write_text("\n".join(" ".join(f"w{i}" for i in words[k:k + 200]) for k in range(0, len(words), 200)) + "\n")
    return str(path)


MAKERS = dict(cbow=lambda c, **k: _w2v(c, sg=0, **k), skipgram=lambda c, **k: _w2v(c, sg=1, **k),
              bidirmoe=lambda c, **k: _moe(c, **k))


def _w2v(corpus, **kw):
    args = dict(corpus_file=corpus, vector_size=32, window=3, min_count=1, epochs=2, seed=3, negative=5)
    args.update(kw)
    return Word2Vec(**args)


def _moe(corpus, **kw):
    args = dict(corpus_file=corpus, vector_size=32, window=3, min_count=1, epochs=2, seed=3, heads=2)
    args.update(kw)
    m = BidirMoE(**args)
    return m.train() if corpus is not None else m  # BidirMoE's constructor builds the vocabulary only


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_one_worker_ignores_hot_rows(corpus, name):
    make = MAKERS[name]
    a, b = make(corpus, workers=1, hot_rows=0), make(corpus, workers=1, hot_rows=100)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)
    assert np.array_equal(a.syn1neg, b.syn1neg)


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("every", [10**15, 500], ids=["merge-at-end-only", "merge-every-500"])
def test_two_workers_merge_every_private_row(corpus, name, every, monkeypatch):
    """Every row private: what the workers learned reaches the shared arrays
    (by the merges, the last one at each worker's end). A lost merge leaves
    rows unchanged (syn1neg at zero); merged, every one of the 50 most
    frequent words' rows changes, in the median about as much as with plain
    Hogwild. Merged only at the
    end of one epoch, the workers' changes (two halves trained from the same
    start) add up to about twice a plain epoch's; over several epochs such
    rare merges overshoot, which is why HOT_EVERY is small."""
    make = MAKERS[name]
    epochs = 1 if every > 10**9 else 2
    start = make(None, workers=2)
    start.build_vocab(corpus_file=corpus)
    plain = make(corpus, workers=2, hot_rows=0, epochs=epochs)
    monkeypatch.setattr(training, "HOT_EVERY", every)
    hot = make(corpus, workers=2, hot_rows=10_000, epochs=epochs)
    lo, hi = (0.5, 4.0) if every > 10**9 else (0.6, 1.6)
    for what, a, b, s in [("syn1neg", plain.syn1neg, hot.syn1neg, 0.0),
                          ("vectors", plain.wv.vectors, hot.wv.vectors, start.wv.vectors)]:
        ratio = np.linalg.norm((b - s)[:50], axis=1) / np.linalg.norm((a - s)[:50], axis=1)
        # every row changed (a row whose merge was lost keeps its start exactly);
        # a single row's ratio varies with the two workers' timing, the median does not
        assert ratio.min() > 0 and lo < np.median(ratio) < hi, (what, ratio)


@pytest.mark.parametrize("bad", [-1, 1.5, "many", True])
def test_bad_hot_rows_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="hot_rows"):
        Word2Vec(hot_rows=bad)
    with pytest.raises(ValueError, match="hot_rows"):
        BidirMoE(hot_rows=bad)


def test_hot_rows_is_saved(corpus, tmp_path):
    m = _w2v(corpus, workers=2, hot_rows=7, epochs=1)
    m.save(str(tmp_path / "m.npz"))
    assert Word2Vec.load(str(tmp_path / "m.npz")).hot_rows == 7


def test_defaults_on_for_word2vec_off_for_bidirmoe():
    assert training._hot_rows_of(Word2Vec()) == training.HOT_ROWS > 0
    assert training._hot_rows_of(BidirMoE()) == 0
    assert training._hot_rows_of(BidirMoE(hot_rows=64)) == 64
