"""What reaches the Rust core from Python is checked: misaligned or aliasing
parameter arrays are clear ValueErrors (never undefined behaviour or a
PanicException), and gensim-style trim rules may return None."""

import numpy as np
import pytest

from bidirmoe import BidirMoE, Word2Vec, _core

CORPUS = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ate", "the", "bone"]] * 40


def misaligned_copy(a):
    """The same values in a float32 array that starts 1 byte past an aligned address."""
    buf = np.zeros(a.nbytes + 4, dtype=np.uint8)
    view = buf[1:1 + a.nbytes].view(np.float32).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


def test_misaligned_arrays_are_refused_by_the_core():
    m = Word2Vec(CORPUS, vector_size=8, min_count=1, epochs=1, workers=1)
    bad = misaligned_copy(m.wv.vectors)
    sched = dict(alpha=0.025, min_alpha=0.0001, total_words=1000, words_before=0, seed=1, epoch=0, workers=1,
                 compute_loss=False, report_delay=1.0, progress_cb=None, max_words=0, lockf=None, resume=None)
    queue = _core.JobQueue(m._vocab, 2)
    queue.close()
    with pytest.raises(ValueError, match="syn0 is not aligned"):
        _core.train_epoch("cbow", m._vocab, bad, m.syn1neg, None, queue, window=2, shrink_windows=True,
                          cbow_mean=True, negative=5, hs=False, schedule=sched)


def test_a_misaligned_vectors_array_is_copied_by_the_model():
    m = Word2Vec(CORPUS, vector_size=8, min_count=1, epochs=1, workers=1)
    m.wv.vectors = misaligned_copy(m.wv.vectors)
    m.train(CORPUS, total_examples=len(CORPUS), epochs=1)
    assert m.wv.vectors.flags.aligned and np.isfinite(m.wv.vectors).all()


def test_aliasing_parameter_arrays_name_both():
    m = Word2Vec(CORPUS, vector_size=8, min_count=1, epochs=1, workers=1)
    m.syn1neg = m.wv.vectors
    with pytest.raises(ValueError, match="syn1neg and syn0 share memory"):
        m.train(CORPUS, total_examples=len(CORPUS), epochs=1)
    moe = BidirMoE(CORPUS, vector_size=8, min_count=1, epochs=1, workers=1)
    moe.train()
    moe.syn1neg = moe.wv.vectors  # beta (output vectors) aliasing alpha (values)
    with pytest.raises(ValueError, match="beta and values share memory"):
        moe.train(CORPUS, total_examples=len(CORPUS), epochs=1)


@pytest.mark.parametrize("rule_value", [None, 0])
def test_trim_rule_returning_default_or_none_during_pruning(rule_value):
    # max_vocab_size=4 forces prunes while counting, where the rule is consulted.
    def rule(word, count, min_count):
        return 2 if word == "the" else rule_value

    m = Word2Vec(vector_size=4, min_count=1, max_vocab_size=4, trim_rule=rule)
    m.build_vocab(CORPUS)
    ref = Word2Vec(vector_size=4, min_count=1, max_vocab_size=4, trim_rule=lambda w, c, mc: 2 if w == "the" else 0)
    ref.build_vocab(CORPUS)
    assert m.wv.index_to_key == ref.wv.index_to_key and "the" in m.wv.key_to_index
