"""`hidden(left, right)`: the vector each masked model's output layer scores,
checked against the model's own distribution through an independent numpy
softmax."""

import numpy as np
import pytest

from bidirmoe import BidirectionalAttention, BidirMoE, Word2Vec

C = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "ate", "the", "bone", "today"]] * 40


@pytest.mark.parametrize("make", [
    lambda: Word2Vec(C, vector_size=8, min_count=1, epochs=2, workers=1),
    lambda: BidirMoE(C, vector_size=8, heads=2, min_count=1, epochs=2, workers=1, loss="softmax").train(),
    lambda: BidirMoE(C, vector_size=8, heads=2, min_count=1, epochs=2, workers=1, head_values="full").train(),
    lambda: BidirMoE(C, vector_size=8, heads=2, min_count=1, epochs=2, workers=1, positions="absolute",
                     max_len=6, key_size=4).train(),
    lambda: BidirectionalAttention(C, vector_size=8, heads=2, key_size=4, min_count=1, epochs=2, workers=1,
                                   loss="softmax").train(),
], ids=["cbow", "moe-softmax", "moe-full", "moe-sentence", "attention-softmax"])
def test_hidden_is_what_the_output_layer_scores(make):
    m = make()
    left, right = ["the", "cat"], ["on", "the"]
    h = m.hidden(left, right).astype(np.float64)
    assert m.hidden(left, right).shape == (m.vector_size,)
    logits = h @ m.syn1neg.astype(np.float64).T
    bias = getattr(m, "output_bias", None)
    if bias is not None:
        logits = logits + np.asarray(bias, dtype=np.float64).reshape(-1)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    got = dict(m.predict_masked(left, right, topn=None))
    want = dict(zip(m.wv.index_to_key, p))
    assert max(abs(got[w] - want[w]) for w in want) < 1e-5
    # A different context gives a different vector.
    assert not np.allclose(h, m.hidden(["a"], ["ate"]))


def test_hidden_needs_a_known_word():
    m = Word2Vec(C, vector_size=8, min_count=1, epochs=1, workers=1)
    with pytest.raises(KeyError, match="none of the context words"):
        m.hidden(["zzz"], ["qqq"])
