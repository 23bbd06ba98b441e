"""TabularMoE under covariate shift vs scikit-learn baselines, one run.

1. The paper's simulation (Wibisono & Wang, UAI 2023, tabular experiment), all
   12 settings: N = 2000 training and 2000 test rows, D = 5 Gaussian features
   (our own generator from the published description: equicorrelated features
   with correlation ``corr`` in training and ``1 - corr`` in test, the first
   half of the columns sign-flipped, outcome linear in the first ``core``
   true features with coefficients uniform on [0, 10) plus noise of sd 2,
   features observed with noise ``x_noise`` (x 0.4 for core, x 0.3 for other
   features), every column and the outcome cut into 10 quantile categories
   over train and test together, as the paper did). Out-of-distribution
   accuracy and MSE (in category units) of the 10-class outcome for
   TabularMoE, logistic regression (one-hot), random forest (100 trees),
   histogram gradient boosting and an MLP (one hidden layer of 64, one-hot,
   early stopping), all fitted here with scikit-learn defaults otherwise, and the paper's own means
   over its 20 seeds (``../shared/data/paper-tabular/summary.csv``).
2. auto-mpg: every column cut into 3 quantile categories, trained on cars of
   origin 1 (US), tested on origins 2 and 3; besides TabularMoE with its
   defaults, "moe_cv": its epochs and learning rate chosen by 5-fold
   cross-validation on the training rows (CV_GRID).
3. adult: trained on one sex, tested on the other (income > 50K); numeric
   columns in 3 quantile categories.
4. car evaluation (trained on cars with 2 or 3 doors, tested on 4 or more)
   and nursery (trained on convenient finance, tested on inconvenient); the
   column that splits is left out, as ``origin`` is for auto-mpg.

Also: TabularMoE's fit time on the paper's simulation size (2000 x 5, 10
categories, 200 epochs, one thread) beside the baselines' fit times.
TabularMoE's defaults come from benches/tune_tabular.py (in-distribution
validation on other simulation seeds' training rows).

    python benches/bench_tabular.py                # everything (several minutes)
    python benches/bench_tabular.py --seeds 2 --skip-real
    python benches/bench_tabular.py --speed-only
    python benches/bench_tabular.py --transformer --skip-speed   # + a standard tabular transformer (torch)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

# Every model on one thread: a fair comparison, and OpenMP's spinning threads
# (histogram gradient boosting) slow to a crawl on a shared 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _data import SHARED  # noqa: E402

TABULAR = os.path.join(SHARED, "tabular")
PAPER = os.path.join(SHARED, "paper-tabular", "summary.csv")
SETTINGS = [(core, corr, xn) for core in (1, 5) for corr in (0.1, 0.9) for xn in (0.0, 0.5, 1.5)]
METHODS = ["lr", "rf", "gb", "mlp", "moe"]


def quantile_codes(values: np.ndarray, n: int) -> np.ndarray:
    """Quantile category (0..n-1) of each value, cut at the empirical quantiles of `values`."""
    edges = np.quantile(values, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def simulate(core: int, corr: float, x_noise: float, seed: int, n: int = 2000, d: int = 5, y_noise: float = 2.0,
             n_cat: int = 10):
    """One covariate-shift data set: (X_train, y_train, X_test, y_test), all integer categories."""
    rng = np.random.default_rng(seed)

    def equicorrelated(c):
        cov = np.full((d, d), c) + np.eye(d) * (1 - c)
        return rng.multivariate_normal(np.zeros(d), cov, size=n)

    sign = np.where(np.arange(d) < d // 2, -1.0, 1.0)
    z_train, z_test = equicorrelated(corr) * sign, equicorrelated(1 - corr) * sign
    noise_sd = x_noise * np.where(np.arange(d) < core, 0.4, 0.3)
    x_train = z_train + noise_sd * rng.standard_normal((n, d))
    x_test = z_test + noise_sd * rng.standard_normal((n, d))
    coef = rng.uniform(0, 10, size=core)
    y_train = z_train[:, :core] @ coef + y_noise * rng.standard_normal(n)
    y_test = z_test[:, :core] @ coef + y_noise * rng.standard_normal(n)
    xs = np.vstack([x_train, x_test])
    codes = np.column_stack([quantile_codes(xs[:, j], n_cat) for j in range(d)])
    yc = quantile_codes(np.concatenate([y_train, y_test]), n_cat)
    return codes[:n], yc[:n], codes[n:], yc[n:]


def baselines(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    def onehot():
        return OneHotEncoder(handle_unknown="ignore")

    return {
        "lr": make_pipeline(onehot(), LogisticRegression(max_iter=2000)),
        "rf": RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
        "gb": HistGradientBoostingClassifier(random_state=seed),
        "mlp": make_pipeline(onehot(), MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, early_stopping=True,
                                                     random_state=seed)),
    }


# TabularMoE with its epochs and learning rate chosen by 5-fold cross-validation
# on the training rows only (in-distribution), the "moe (cv)" column.
CV_GRID = {"epochs": [20, 50, 200], "learning_rate": [0.01, 0.02, 0.05, 0.2]}
# The same for the simulation (--cv-sim): a smaller grid and 3 folds, to keep the run short.
CV_GRID_SIM = {"epochs": [20, 200], "learning_rate": [0.01, 0.05, 0.2]}


def fit_all(x_tr, y_tr, x_te, y_te, seed: int, moe_kwargs: dict, ordinal: bool = True, cv=None,
            transformer: bool = False):
    """Fit every method; returns {method: (accuracy, mse in class-index units, fit seconds)}.

    x_* are integer category codes (RF and GB take them as ordinal numbers when
    `ordinal`; LR and the MLP one-hot them; TabularMoE takes them as categories).
    With `cv` = (grid, folds), also "moe_cv": TabularMoE tuned over the grid by
    cross-validation on the training rows. With `transformer`, also "tf": a
    standard tabular transformer block (benches/_tabular_transformer.py, torch).
    """
    from bidirmoe import TabularMoE

    out = {}
    models = baselines(seed)
    models["moe"] = TabularMoE(random_state=seed, **moe_kwargs)
    if transformer:
        import torch

        from _tabular_transformer import TabularTransformer

        torch.set_num_threads(1)
        models["tf"] = TabularTransformer(random_state=seed)
    if cv:
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        grid, k = cv
        folds = StratifiedKFold(k, shuffle=True, random_state=seed)
        models["moe_cv"] = GridSearchCV(TabularMoE(random_state=seed, **moe_kwargs), grid, cv=folds)
    classes = np.unique(y_tr)
    for name, m in models.items():
        xa, xb = x_tr, x_te
        if name in ("moe", "moe_cv"):
            xa, xb = x_tr.astype(str).astype(object), x_te.astype(str).astype(object)
        elif not ordinal and name in ("rf", "gb"):
            from sklearn.preprocessing import OrdinalEncoder

            enc = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(x_tr)
            xa, xb = enc.transform(x_tr), enc.transform(x_te)
        t = time.perf_counter()
        m.fit(xa, y_tr)
        secs = time.perf_counter() - t
        pred = m.predict(xb)
        idx = {c: i for i, c in enumerate(classes)}
        mse = float(np.mean([(idx.get(a, 0) - idx.get(b, 0)) ** 2 for a, b in zip(pred, y_te)]))
        out[name] = (float(np.mean(pred == y_te)), mse, secs)
        if name == "moe_cv":
            out["moe_cv_params"] = m.best_params_
    return out


def paper_summary():
    rows = {}
    with open(PAPER) as f:
        for r in csv.DictReader(f):
            key = (int(r["corefea"]), float(r["corr"]), float(r["x_noise"]))
            rows[key] = {m: (float(r[f"acc_{p}"]), float(r[f"mse_{p}"])) for m, p in
                         [("lr", "lr"), ("rf", "rf"), ("gb", "gb"), ("mlp", "mlp"), ("moe", "at")]}
    return rows


def simulation(seeds, moe_kwargs, cv=False, transformer=False):
    paper = paper_summary()
    print(f"\n## Simulation: OOD accuracy / MSE, mean over {len(seeds)} seeds (ours) and 20 (paper)\n")
    head = " | ".join(f"{m}" for m in METHODS)
    extra = (" moe_cv | moe_cv best? |" if cv else "") + (" transformer | moe > transformer? |" if transformer else "")
    print(f"| core | corr | x_noise | {head} | paper: {head} | ours best? | paper's attention best? |{extra}")
    print("|" + "---|" * (3 + 2 * len(METHODS) + 2 + 2 * cv + 2 * transformer))
    wins, paper_wins, acc_ours, acc_paper = 0, 0, [], []
    mse_tables, per_seed = [], []
    cv_wins, cv_acc, cv_params = 0, [], []
    tf_acc, tf_losses = [], 0
    for core, corr, xn in SETTINGS:
        res = [fit_all(*simulate(core, corr, xn, 1000 * s + 7), seed=s, moe_kwargs=moe_kwargs,
                       cv=(CV_GRID_SIM, 3) if cv else None, transformer=transformer) for s in seeds]
        per_seed.append([r["moe"][0] for r in res])
        acc = {m: float(np.mean([r[m][0] for r in res])) for m in METHODS}
        mse = {m: float(np.mean([r[m][1] for r in res])) for m in METHODS}
        p = paper[(core, corr, xn)]
        best_base = max(acc[m] for m in METHODS if m != "moe")
        pbest_base = max(p[m][0] for m in METHODS if m != "moe")
        wins += acc["moe"] > best_base
        paper_wins += p["moe"][0] > pbest_base
        acc_ours.append(acc["moe"])
        acc_paper.append(p["moe"][0])
        cells = " | ".join(f"{acc[m]:.3f}" for m in METHODS)
        pcells = " | ".join(f"{p[m][0]:.3f}" for m in METHODS)
        line = (f"| {core} | {corr} | {xn} | {cells} | {pcells} | {'yes' if acc['moe'] > best_base else 'no'} | "
                f"{'yes' if p['moe'][0] > pbest_base else 'no'} |")
        if cv:
            a_cv = float(np.mean([r["moe_cv"][0] for r in res]))
            cv_wins += a_cv > best_base
            cv_acc.append(a_cv)
            cv_params.append([tuple(r["moe_cv_params"].values()) for r in res])
            line += f" {a_cv:.3f} | {'yes' if a_cv > best_base else 'no'} |"
        if transformer:
            a_tf = float(np.mean([r["tf"][0] for r in res]))
            tf_acc.append(a_tf)
            tf_losses += acc["moe"] <= a_tf
            line += f" {a_tf:.3f} | {'yes' if acc['moe'] > a_tf else 'no'} |"
        print(line)
        mse_tables.append((core, corr, xn, mse, p))
    seed_means = np.mean(per_seed, axis=0)  # one mean over the 12 settings per seed
    print(f"\nTabularMoE mean OOD accuracy over the 12 settings: {np.mean(acc_ours):.4f} "
          f"(per seed: {', '.join(f'{m:.4f}' for m in seed_means)}; sd {np.std(seed_means, ddof=1) if len(seeds) > 1 else 0:.4f}) "
          f"(paper's attention: {np.mean(acc_paper):.4f}); beats every baseline in {wins}/12 settings "
          f"(paper's attention: {paper_wins}/12)")
    if transformer:
        print(f"\nStandard tabular transformer block (torch, benches/_tabular_transformer.py): mean OOD accuracy "
              f"{np.mean(tf_acc):.4f}; TabularMoE beats it in {12 - tf_losses}/12 settings (the win counts "
              "above are against lr, rf, gb and mlp, as the paper's are)")
    if cv:
        print(f"\nTabularMoE tuned by 3-fold CV on the training rows over {CV_GRID_SIM}: mean OOD accuracy "
              f"{np.mean(cv_acc):.4f}, beats every baseline in {cv_wins}/12 settings; chosen (epochs, "
              f"learning_rate) per setting and seed: {cv_params}")
    print("\n| core | corr | x_noise | MSE " + " | ".join(METHODS) + " | paper MSE " + " | ".join(METHODS) + " |")
    print("|" + "---|" * (3 + 2 * len(METHODS)))
    for core, corr, xn, mse, p in mse_tables:
        print(f"| {core} | {corr} | {xn} | " + " | ".join(f"{mse[m]:.2f}" for m in METHODS) + " | "
              + " | ".join(f"{p[m][1]:.2f}" for m in METHODS) + " |")


def real_table(title, splits, moe_kwargs, seeds, paper=None, cv=None, transformer=False):
    methods = METHODS + (["moe_cv"] if cv else []) + (["tf"] if transformer else [])
    print(f"\n## {title}\n")
    print(f"mean ± sd over seeds {seeds} (model seeds; the split is fixed)\n")
    print("| shift | train rows | test rows | " + " | ".join(methods) + " |")
    print("|" + "---|" * (3 + len(methods)))
    for name, (xa, ya, xb, yb) in splits.items():
        res = [fit_all(xa, ya, xb, yb, seed=s, moe_kwargs=moe_kwargs, ordinal=False, cv=cv, transformer=transformer)
               for s in seeds]
        acc = {m: [r[m][0] for r in res] for m in methods}
        cells = [f"{np.mean(acc[m]):.3f} ± {np.std(acc[m], ddof=1) if len(seeds) > 1 else 0:.3f}" for m in methods]
        print(f"| {name} | {len(ya)} | {len(yb)} | " + " | ".join(cells) + " |")
        if cv:
            print(f"\n(moe_cv: {cv[0]} by {cv[1]}-fold CV on the training rows; chosen per seed: "
                  f"{[r['moe_cv_params'] for r in res]})\n")
    if paper:
        print(f"\n(paper: {paper})")


def read_csv_rows(path, sep=","):
    with open(path) as f:
        lines = [line for line in f if line.strip() and not line.startswith("|")]  # adult.test opens with "|1x3 ..."
    return [[c.strip() for c in line.rstrip("\n").split(sep)] for line in lines]


def auto_mpg():
    rows = read_csv_rows(os.path.join(TABULAR, "auto-mpg.csv"))
    header, body = rows[0], rows[1:]
    col = {h: i for i, h in enumerate(header)}
    feats = ["cylinders", "displacement", "horsepower", "weight", "acceleration", "model year"]

    def num(name):
        return np.array([float(r[col[name]]) if r[col[name]] != "?" else np.nan for r in body])

    def cut3(v):
        codes = np.full(len(v), -1)
        ok = ~np.isnan(v)
        codes[ok] = quantile_codes(v[ok], 3)
        return codes  # -1: missing horsepower, a category of its own

    x = np.column_stack([cut3(num(f)) for f in feats])
    y = cut3(num("mpg"))
    us = num("origin") == 1
    return {"origin 1 -> 2, 3": (x[us], y[us], x[~us], y[~us])}


def adult():
    cols = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
            "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]
    rows = read_csv_rows(os.path.join(TABULAR, "adult.data")) + read_csv_rows(os.path.join(TABULAR, "adult.test"))
    rows = [r for r in rows if len(r) == len(cols)]
    table = {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(cols)}
    y = np.array([s.startswith(">50K") for s in table["income"]]).astype(int)
    numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    feats = [c for c in cols if c not in ("income", "sex", "fnlwgt")]
    enc = []
    for c in feats:
        v = table[c]
        if c in numeric:
            x = v.astype(float)
            edges = np.unique(np.quantile(x, [1 / 3, 2 / 3]))
            enc.append(np.searchsorted(edges, x, side="right"))
        else:
            _, codes = np.unique(v, return_inverse=True)
            enc.append(codes)
    x = np.column_stack(enc)
    male = table["sex"] == "Male"
    return {"male -> female": (x[male], y[male], x[~male], y[~male]),
            "female -> male": (x[~male], y[~male], x[male], y[male])}


def split_by(path, cols, target, column, train_values):
    """Categorical UCI table: train on rows whose `column` is in `train_values`, test on the rest; `column` left out."""
    rows = [r for r in read_csv_rows(os.path.join(TABULAR, path)) if len(r) == len(cols)]
    t = {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(cols)}
    feats = [c for c in cols if c not in (target, column)]
    x = np.column_stack([np.unique(t[c], return_inverse=True)[1] for c in feats])
    y = np.unique(t[target], return_inverse=True)[1]
    tr = np.isin(t[column], train_values)
    return x[tr], y[tr], x[~tr], y[~tr]


def car_nursery():
    car = ["buying", "maint", "doors", "persons", "lug_boot", "safety", "class"]
    nursery = ["parents", "has_nurs", "form", "children", "housing", "finance", "social", "health", "class"]
    return {"car: doors 2, 3 -> 4, 5more": split_by("car.data", car, "class", "doors", ["2", "3"]),
            "nursery: finance convenient -> inconv": split_by("nursery.data", nursery, "class", "finance",
                                                              ["convenient"])}


def speed(moe_kwargs, repeats=3):
    """Fit times on the paper's simulation size, TabularMoE beside the baselines (best of `repeats`)."""
    from bidirmoe import TabularMoE

    x_tr, y_tr, _, _ = simulate(1, 0.9, 0.5, 0)
    xs = x_tr.astype(str).astype(object)

    def best_time(make, xa):
        times = []
        for _ in range(repeats):
            m = make()
            t = time.perf_counter()
            m.fit(xa, y_tr)
            times.append(time.perf_counter() - t)
        return min(times)

    print(f"\n## Fit time, {len(y_tr)} rows x 5 columns (10 categories each) + target, one thread, best of {repeats}\n")
    def paper_size(heads_step=False):
        m = TabularMoE(random_state=0, **dict(moe_kwargs, epochs=200, vector_size=20, heads=5))
        m._heads_step = heads_step
        return m

    rows = [("TabularMoE (epochs=200, vector_size=20, heads=5)", best_time(paper_size, xs)),
            ("TabularMoE, same, head-by-head row step (the step before the lane-block one)",
             best_time(lambda: paper_size(heads_step=True), xs))]
    if moe_kwargs.get("epochs", 200) != 200 or "vector_size" in moe_kwargs:
        rows.append((f"TabularMoE ({moe_kwargs})", best_time(lambda: TabularMoE(random_state=0, **moe_kwargs), xs)))
    else:
        rows.append(("TabularMoE (defaults)", best_time(lambda: TabularMoE(random_state=0), xs)))
    names = {"lr": "logistic regression (one-hot)", "rf": "random forest (100 trees)",
             "gb": "histogram gradient boosting", "mlp": "MLP (64, one-hot, early stopping)"}
    for name, m in baselines(0).items():
        rows.append((names[name], best_time(lambda m=m: clone_of(m), x_tr)))
    ref = rows[0][1]
    print("| model | fit seconds | TabularMoE (200 epochs) / this |")
    print("|---|---|---|")
    for label, t in rows:
        print(f"| {label} | {t:.3f} | {ref / t:.2f} |")
    print(f"\nTabularMoE, 200 epochs: {1e6 * ref / (200 * len(y_tr)):.2f} µs per row "
          f"({1e6 * ref / (200 * len(y_tr) * 6):.2f} µs per masked cell)")


def clone_of(m):
    from sklearn.base import clone

    return clone(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="simulation seeds per setting")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--speed-only", action="store_true", help="only the fit-time table")
    ap.add_argument("--skip-speed", action="store_true", help="no fit-time table (accuracy only: needs no quiet machine)")
    ap.add_argument("--cv-sim", action="store_true", help="also TabularMoE tuned by CV on the training rows (slow)")
    ap.add_argument("--real", nargs="+", default=["auto-mpg", "adult", "car-nursery"],
                    choices=["auto-mpg", "adult", "car-nursery"], help="which real-data tables to run")
    ap.add_argument("--epochs", type=int, help="TabularMoE epochs (default: its own default)")
    ap.add_argument("--learning-rate", type=float, help="TabularMoE learning_rate (default: its own default)")
    ap.add_argument("--transformer", action="store_true",
                    help="also a standard tabular transformer block (needs torch; about 15 s per fit)")
    args = ap.parse_args()
    moe_kwargs: dict = {}
    if args.epochs is not None:
        moe_kwargs["epochs"] = args.epochs
    if args.learning_rate is not None:
        moe_kwargs["learning_rate"] = args.learning_rate
    print("# TabularMoE benchmark (bidirmoe)")
    print(f"(TabularMoE settings beyond its defaults: {moe_kwargs or 'none'})")
    if not args.skip_speed:
        speed(moe_kwargs)
    if args.speed_only:
        return
    if not args.skip_sim:
        simulation(list(range(args.seeds)), moe_kwargs, cv=args.cv_sim, transformer=args.transformer)
    if not args.skip_real:
        real_seeds = list(range(args.seeds))
        if "auto-mpg" in args.real:
            real_table("auto-mpg: OOD accuracy (mpg in 3 categories)", auto_mpg(), moe_kwargs, real_seeds,
                       paper="attention 0.793, random forest 0.721, MLP 0.700, logistic regression 0.657, "
                             "gradient boosting 0.657", cv=(CV_GRID, 5), transformer=args.transformer)
        if "adult" in args.real:
            real_table("adult: OOD accuracy (income > 50K), trained on one sex", adult(), moe_kwargs, real_seeds,
                       transformer=args.transformer)
        if "car-nursery" in args.real:
            real_table("car evaluation and nursery: OOD accuracy", car_nursery(), moe_kwargs, real_seeds,
                       transformer=args.transformer)


if __name__ == "__main__":
    main()
