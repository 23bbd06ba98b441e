"""TabularMoE: the model against an independent numpy reference, and the scikit-learn estimator."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

from bidirmoe import TabularMoE, TabularMoERegressor, _core  # noqa: E402

ABSENT = np.uint32(0xFFFFFFFF)


# ---------------------------------------------------------------- numpy reference of the SPEC equations

def random_model(rng, sizes=(3, 2, 4), d=6, h=3, dk=2, mask=True):
    """Random parameters of a table with columns of `sizes` tokens; (arrays, settings, starts)."""
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.uint32)
    v, f = int(starts[-1]), len(sizes)

    def r(*shape):
        return rng.normal(0, 0.5, size=shape).astype(np.float32)

    arrays = {"values": r(v, d), "beta": r(v, d), "bias": r(v, 1), "offset_value": r(f, d), "query": r(h * f, dk),
              "key": r(h * v, dk), "pos_key": r(h * f, dk), "syn1": None, "salience": None, "offset_gate": None,
              "mask_gate": r(1, h * dk) if mask else None, "mask_value": r(1, d) if mask else None}
    settings = {"heads": h, "full": False, "window": 1, "shrink_windows": False, "negative": 0, "hs": False,
                "softmax": True, "vector_size": d, "absolute": True, "max_len": f, "key_size": dk}
    return arrays, settings, starts


def ref_probs(a, st, starts, row, j):
    """p(column j = c | other present columns), float64, straight from SPEC's tabular equations."""
    p = {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}
    h, dk, d, f = st["heads"], st["key_size"], st["vector_size"], len(starts) - 1
    v, s = int(starts[-1]), d // h
    experts = [m for m in range(f) if m != j and row[m] != ABSENT]
    z = np.zeros(d)
    for hh in range(h):
        q = p["query"][hh * f + j]
        logits = [q @ (p["key"][hh * v + row[m]] + p["pos_key"][hh * f + m]) / np.sqrt(dk) for m in experts]
        xs = [p["values"][row[m]] + p["offset_value"][m] for m in experts]
        if p["mask_gate"] is not None:  # the masked column's own expert
            logits.append(q @ (p["mask_gate"][0, hh * dk:(hh + 1) * dk] + p["pos_key"][hh * f + j]) / np.sqrt(dk))
            xs.append(p["mask_value"][0] + p["offset_value"][j])
        theta = np.exp(np.array(logits) - max(logits))
        theta /= theta.sum()
        z[hh * s:(hh + 1) * s] = sum(t * x[hh * s:(hh + 1) * s] for t, x in zip(theta, xs))
    lo, hi = int(starts[j]), int(starts[j + 1])
    scores = p["beta"][lo:hi] @ z + p["bias"][lo:hi, 0]
    e = np.exp(scores - scores.max())
    return e / e.sum()


def ref_loss(a, st, starts, row, j):
    return -np.log(ref_probs(a, st, starts, row, j)[row[j] - starts[j]])


TRAINED = ["values", "beta", "bias", "offset_value", "query", "key", "pos_key", "mask_gate", "mask_value"]


@pytest.mark.parametrize("mask", [True, False])
def test_forward_matches_numpy(mask):
    rng = np.random.default_rng(0)
    a, st, starts = random_model(rng, mask=mask)
    data = np.array([[0, 4, 5], [2, 3, 8], [1, ABSENT, 6]], dtype=np.uint32)
    for j in range(3):
        probs, gates = _core.tabular_predict(a, st, data, starts.tolist(), j, gates=True)
        for r in range(3):
            np.testing.assert_allclose(probs[r], ref_probs(a, st, starts, data[r], j), rtol=2e-5, atol=1e-6)
        # per head the gates of the present columns and the mask expert sum to 1, the masked column's is 0
        np.testing.assert_allclose(gates.sum(axis=2), 1.0, rtol=1e-5)
        assert np.all(gates[:, :, j] == 0)
    assert np.all(gates[2, :, 1] == 0)  # an absent value is no expert


def fd_grads(a, st, starts, loss):
    """Central finite differences of loss(params) for every trained array (float64)."""
    base = {k: (None if v is None else v.astype(np.float64)) for k, v in a.items()}
    grads, eps = {}, 1e-5
    for name in [n for n in TRAINED if a[n] is not None]:
        g = np.zeros(a[name].shape)
        for idx in np.ndindex(*a[name].shape):
            plus = dict(base, **{name: base[name].copy()})
            minus = dict(base, **{name: base[name].copy()})
            plus[name][idx] += eps
            minus[name][idx] -= eps
            g[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("j", [0, 2])
def test_sgd_step_is_the_finite_difference_gradient(j):
    rng = np.random.default_rng(1)
    a, st, starts = random_model(rng)
    row = np.array([[1, 3, 7]], dtype=np.uint32)
    lr = 0.05
    grads = fd_grads(a, st, starts, lambda p: ref_loss(p, st, starts, row[0], j))
    before = {k: v.copy() for k, v in a.items() if v is not None}
    loss = _core.tabular_step(a, st, row, starts.tolist(), j, lr)
    assert loss == pytest.approx(ref_loss(before, st, starts, row[0], j), rel=1e-5)
    for name in TRAINED:
        np.testing.assert_allclose(a[name] - before[name], -lr * grads[name], rtol=1e-3, atol=2e-6, err_msg=name)
    assert np.abs(grads["values"][row[0, j]]).max() == 0  # the masked token's value is not an input


# (vector_size, heads, key_size): d_k = d/heads takes the lane-block step
# (8-lane blocks, one or three per vector), d_k != d/heads the head-by-head one.
ROW_STEP_DIMS = [(6, 3, 2), (20, 5, 4), (6, 3, 3)]


@pytest.mark.parametrize("dims", ROW_STEP_DIMS)
@pytest.mark.parametrize("mask", [True, False])
def test_row_step_is_the_gradient_of_the_summed_row_loss(mask, dims):
    """Training's row-at-once step: every present column masked in turn, the
    gradient of the weighted sum of their losses applied once (an absent value
    is neither an expert nor a target)."""
    rng = np.random.default_rng(5)
    d, h, dk = dims
    a, st, starts = random_model(rng, sizes=(3, 2, 4, 3), d=d, h=h, dk=dk, mask=mask)
    row = np.array([[1, 4, ABSENT, 10]], dtype=np.uint32)
    weights = [1.0, 0.5, 1.0, 3.0]
    present = [0, 1, 3]

    def loss(p):
        return sum(weights[j] * ref_loss(p, st, starts, row[0], j) for j in present)

    grads = fd_grads(a, st, starts, loss)
    before = {k: (None if v is None else v.copy()) for k, v in a.items()}
    lr = 0.05
    got = _core.tabular_step(a, st, row, starts.tolist(), None, lr, weights)
    assert got == pytest.approx(sum(ref_loss(before, st, starts, row[0], j) for j in present), rel=1e-5)
    for name in grads:
        np.testing.assert_allclose(a[name] - before[name], -lr * grads[name], rtol=1e-3, atol=2e-6, err_msg=name)
    # the absent column's tokens and query are untouched
    np.testing.assert_array_equal(a["values"][5:9], before["values"][5:9])


def test_core_refuses_bad_tables():
    a, st, starts = random_model(np.random.default_rng(2))
    with pytest.raises(ValueError, match="outside the column"):
        _core.tabular_predict(a, st, np.array([[0, 1, 5]], dtype=np.uint32), starts.tolist(), 0)
    with pytest.raises(ValueError, match="columns"):
        _core.tabular_predict(a, st, np.zeros((1, 2), dtype=np.uint32), starts.tolist(), 0)
    with pytest.raises(ValueError, match="present column"):
        _core.tabular_step(a, st, np.array([[0, ABSENT, 5]], dtype=np.uint32), starts.tolist(), 1, 0.1)


# ---------------------------------------------------------------- the estimator

def two_signals(n=240, seed=0):
    """Two informative categorical columns (the class is a threshold of their sum of scores), one noise column."""
    rng = np.random.default_rng(seed)
    a = rng.choice(["red", "green", "blue"], n)
    b = rng.integers(0, 2, n)
    score = np.select([a == "red", a == "green"], [2, 1], 0) + 2 * b
    y = np.where(score >= 2, "yes", "no")
    X = pd.DataFrame({"color": a, "flag": b.astype(bool), "noise": rng.normal(size=n)})
    return X, y


def test_fit_predict_dataframe_and_attributes():
    X, y = two_signals()
    clf = TabularMoE(epochs=60, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert list(clf.classes_) == ["no", "yes"]
    assert clf.n_features_in_ == 3 and list(clf.feature_names_in_) == ["color", "flag", "noise"]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1)
    assert clf.feature_gates_.shape == (clf.heads, 3)
    np.testing.assert_allclose(clf.feature_gates_.sum(axis=1) + clf.mask_gates_, 1.0, rtol=1e-5)
    # the noise column gets less weight than the informative ones, on average over heads
    g = clf.feature_gates_.mean(axis=0)
    assert g[2] < min(g[0], g[1])


def test_reproducible_with_random_state():
    X, y = two_signals(120)
    p1 = TabularMoE(epochs=10, random_state=3).fit(X, y).predict_proba(X)
    p2 = TabularMoE(epochs=10, random_state=3).fit(X, y).predict_proba(X)
    p3 = TabularMoE(epochs=10, random_state=4).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_early_stopping_keeps_the_best_held_out_epoch():
    X, y = two_signals(300)
    clf = TabularMoE(epochs=200, learning_rate=0.2, early_stopping=True, n_iter_no_change=5, random_state=0).fit(X, y)
    # it stopped before the epoch budget, kept an earlier epoch, and that epoch is a good model
    assert clf.n_iter_ < 200 and 1 <= clf.best_iteration_ <= clf.n_iter_ == len(clf.validation_scores_)
    assert clf.validation_scores_.max() > 0.9 and clf.score(X, y) > 0.9
    again = TabularMoE(epochs=200, learning_rate=0.2, early_stopping=True, n_iter_no_change=5, random_state=0)
    np.testing.assert_array_equal(again.fit(X, y).predict_proba(X), clf.predict_proba(X))
    with pytest.raises(ValueError, match="validation_fraction"):
        TabularMoE(early_stopping=True, validation_fraction=1.5).fit(X, y)
    with pytest.raises(ValueError, match="validation row"):
        TabularMoE(early_stopping=True, validation_fraction=0.001).fit(X.iloc[:20], y[:20])


def test_threads():
    X, y = two_signals(400)
    clf = TabularMoE(epochs=30, n_jobs=2, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95


def test_sklearn_composition():
    X, y = two_signals(150)
    est = TabularMoE(epochs=15, random_state=0)
    assert clone(est).get_params() == est.get_params()
    assert est.set_params(heads=2, vector_size=8).heads == 2
    pipe = make_pipeline(FunctionTransformer(lambda d: d.drop(columns="noise")), TabularMoE(epochs=30, random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.9
    scores = cross_val_score(TabularMoE(epochs=30, learning_rate=0.05, random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    gs = GridSearchCV(TabularMoE(epochs=10, random_state=0), {"vector_size": [10, 20]}, cv=2).fit(X, y)
    assert gs.best_params_["vector_size"] in (10, 20)


def test_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    # small data: a larger step than the default so the few epochs fit it (check_regressors_train wants R² > 0.5)
    for est in (TabularMoE(epochs=30, learning_rate=0.2, random_state=0),
                TabularMoERegressor(epochs=60, learning_rate=0.2, random_state=0)):
        failed = [r for r in check_estimator(est, on_fail=None) if r["status"] == "failed"]
        assert not failed, [(r["check_name"], repr(r["exception"])[:200]) for r in failed]


def test_auto_epochs_scale_with_the_rows():
    # epochs="auto" (the default): about 100,000 row steps, between 50 and 200 passes
    from bidirmoe.tabular import AUTO_EPOCHS, AUTO_ROW_STEPS

    assert TabularMoE().epochs == "auto" and AUTO_EPOCHS == (50, 200) and AUTO_ROW_STEPS == 100_000
    for rows, passes in ((60, 200), (499, 200), (800, 125), (2000, 50), (5000, 50)):
        X, y = two_signals(rows)
        assert TabularMoE()._epochs_for(rows) == passes
        if rows <= 800:
            assert TabularMoE(random_state=0).fit(X, y).n_iter_ == passes
    # with early stopping the budget follows the rows actually trained on (the rest are held out)
    X, y = two_signals(800)
    clf = TabularMoE(early_stopping=True, n_iter_no_change=1000, random_state=0).fit(X, y)
    assert clf.n_iter_ == -(-100_000 // 720) == 139
    assert TabularMoE(epochs=7, random_state=0).fit(X, y).n_iter_ == 7


def test_clear_errors():
    X, y = two_signals(60)
    with pytest.raises(ValueError, match="2 classes"):
        TabularMoE(epochs=2).fit(X, np.zeros(60))
    with pytest.raises(ValueError, match="infinity"):
        TabularMoE(epochs=2).fit(X.assign(noise=np.inf), y)
    with pytest.raises(ValueError, match="0 sample"):
        TabularMoE(epochs=2).fit(X.iloc[:0], y[:0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        TabularMoE(epochs=2).fit(X, y[:-1])
    with pytest.raises(ValueError, match="multiple of heads"):
        TabularMoE(vector_size=10, heads=3).fit(X, y)
    for bad in (0, "many", 2.5, True):
        with pytest.raises(ValueError, match="epochs must be 'auto' or an int"):
            TabularMoE(epochs=bad).fit(X, y)
    clf = TabularMoE(epochs=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X.to_numpy()[:, :2])
    with pytest.raises(ValueError, match="infinity"):
        clf.predict(X.assign(noise=-np.inf))
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TabularMoE().predict(X)


def test_unknown_and_missing_categories():
    X, y = two_signals(200)
    clf = TabularMoE(epochs=40, random_state=0).fit(X, y)
    # an unseen colour maps to the column's unknown token, whose vectors stay at zero
    unk = clf._starts_[0] + clf._columns_[0].unknown_token
    assert not clf.arrays_["values"][unk].any() and not clf.arrays_["key"][unk::clf._starts_[-1]].any()
    Xu = X.assign(color="purple")
    proba = clf.predict_proba(Xu)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1)
    # missing values seen in training are a category of their own
    Xm = X.copy()
    Xm.loc[::4, "color"] = None
    clf_m = TabularMoE(epochs=40, random_state=0).fit(Xm, y)
    assert clf_m._columns_[0].has_missing
    assert clf_m.predict(Xm).shape == (200,)
    # min_frequency sends rare categories to the unknown token, which then learns
    Xr = X.copy()
    Xr.loc[:2, "color"] = "rare"
    clf_r = TabularMoE(epochs=5, min_frequency=5, random_state=0).fit(Xr, y)
    assert "rare" not in list(clf_r._columns_[0].values)
    unk = clf_r._starts_[0] + clf_r._columns_[0].unknown_token
    assert clf_r.arrays_["values"][unk].any()


def test_impute_predicts_masked_columns():
    rng = np.random.default_rng(0)
    a = rng.choice(list("abcd"), 300)
    partner = {"a": "w", "b": "x", "c": "y", "d": "z"}
    X = pd.DataFrame({"left": a, "right": [partner[c] for c in a], "num": rng.normal(size=300)})
    y = (a < "c").astype(int)
    clf = TabularMoE(epochs=40, random_state=0).fit(X, y)
    holes = X.copy()
    holes.loc[:49, "right"] = None
    holes.loc[50:99, "left"] = np.nan
    filled = clf.impute(holes)
    assert filled.loc[:49, "right"].tolist() == X.loc[:49, "right"].tolist()
    assert filled.loc[50:99, "left"].tolist() == X.loc[50:99, "left"].tolist()
    assert filled.loc[100:].equals(X.loc[100:])
    # a numeric column is filled with the training mean of its most probable bin
    holes = X.copy()
    holes.loc[:9, "num"] = np.nan
    assert set(clf.impute(holes).loc[:9, "num"]) <= set(clf._columns_[2].values)
    assert holes.loc[:9, "num"].isna().all()  # the input is not modified


def test_regressor_returns_bin_means():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(300, 3))
    y = 3.0 * X[:, 0] + rng.normal(0, 0.2, 300)
    reg = TabularMoERegressor(n_bins=4, epochs=40, random_state=0).fit(X, y)
    pred = reg.predict(X)
    assert set(np.unique(pred)) <= set(reg.bin_means_)
    bins = np.digitize(y, reg.bin_edges_)
    np.testing.assert_allclose(reg.bin_means_, [y[bins == k].mean() for k in range(len(reg.bin_means_))], rtol=1e-9)
    assert reg.score(X, y) > 0.95
    assert reg.predict_bin_proba(X).shape == (300, 4)


def test_library_imports_without_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None; import bidirmoe; "
            "assert 'TabularMoE' in bidirmoe.__all__\n"
            "try:\n    bidirmoe.TabularMoE\nexcept ImportError as e:\n    assert 'scikit-learn' in str(e)\n"
            "else:\n    raise SystemExit('no ImportError')")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    import doctest

    import bidirmoe.tabular

    result = doctest.testmod(bidirmoe.tabular, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
