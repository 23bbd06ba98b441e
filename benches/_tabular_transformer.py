"""A standard tabular transformer for benches/bench_tabular.py (torch, CPU).

The comparison the paper's claim names besides the classical baselines: an
ordinary transformer encoder block over the row's cells, trained with the
same masked-cell objective as TabularMoE, so the table can show what the
block's extra parts (residual connections, layer norm, feed-forward layer,
dropout, Adam) buy over SPEC's exact MoE on the same data.

Each cell is a token (column, category), embedded and added to a learned
column embedding; one ``torch.nn.TransformerEncoderLayer`` mixes the cells;
the masked cell's output is scored against its own column's categories only
(a softmax over them, as TabularMoE does). Every epoch masks every cell
once (the target column's included), in shuffled mini-batches of cells, with
Adam; ``predict`` masks the target. Categories unseen in training map to a per-column
"unknown" token. A scikit-learn style ``fit`` / ``predict`` on integer
category codes, which is what the bench hands every method.
"""

from __future__ import annotations

import numpy as np


class TabularTransformer:
    """``fit(X, y)`` / ``predict(X)`` on integer category codes (see the module doc)."""

    def __init__(self, d_model: int = 20, heads: int = 5, ffn: int = 40, dropout: float = 0.1, epochs: int = 50,
                 batch_size: int = 512, lr: float = 3e-3, random_state: int = 0):
        self.d_model, self.heads, self.ffn, self.dropout = d_model, heads, ffn, dropout
        self.epochs, self.batch_size, self.lr, self.random_state = epochs, batch_size, lr, random_state

    def _tokens(self, cols: np.ndarray) -> np.ndarray:
        """Codes (rows x columns, target last) -> token ids; unseen categories -> the column's unknown token."""
        out = np.empty(cols.shape, dtype=np.int64)
        for j, (cats, start) in enumerate(zip(self.cats_, self.starts_)):
            pos = np.searchsorted(cats, cols[:, j])
            pos = np.minimum(pos, len(cats) - 1)
            known = cats[pos] == cols[:, j]
            out[:, j] = np.where(known, start + pos, start + len(cats))  # len(cats): the unknown token
        return out

    def fit(self, X, y):
        import torch

        X, y = np.asarray(X), np.asarray(y)
        cols = np.column_stack([X, y])
        self.cats_ = [np.unique(cols[:, j]) for j in range(cols.shape[1])]
        sizes = [len(c) + 1 for c in self.cats_]  # + unknown
        self.starts_ = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.classes_ = self.cats_[-1]
        n_cols, vocab = cols.shape[1], int(sum(sizes))
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        d = self.d_model
        self.net_ = net = torch.nn.ModuleDict({
            "token": torch.nn.Embedding(vocab + 1, d),  # + the mask token
            "column": torch.nn.Embedding(n_cols, d),
            "block": torch.nn.TransformerEncoderLayer(d, self.heads, self.ffn, self.dropout, batch_first=True),
            "out": torch.nn.Linear(d, vocab),
        })
        # Logits outside the masked column's own categories are dropped.
        allowed = torch.full((n_cols, vocab), float("-inf"))
        for j, (s, k) in enumerate(zip(self.starts_, sizes)):
            allowed[j, s:s + k - 1] = 0.0  # the column's categories (not its unknown token)
        self.allowed_, self.mask_id_ = allowed, vocab
        tokens = torch.as_tensor(self._tokens(cols))
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        net.train()
        # Every epoch masks every cell once: all (row, column) pairs, shuffled.
        pairs = np.stack(np.meshgrid(np.arange(len(tokens)), np.arange(n_cols), indexing="ij"), -1).reshape(-1, 2)
        for _ in range(self.epochs):
            order = torch.as_tensor(pairs[rng.permutation(len(pairs))])
            for b in range(0, len(order), self.batch_size):
                batch, masked = tokens[order[b:b + self.batch_size, 0]], order[b:b + self.batch_size, 1]
                logits = self._logits(batch, masked)
                loss = torch.nn.functional.cross_entropy(logits, batch[torch.arange(len(batch)), masked])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    def _logits(self, batch, masked):
        import torch

        net = self.net_
        rows = torch.arange(len(batch))
        inp = batch.clone()
        inp[rows, masked] = self.mask_id_
        h = net["token"](inp) + net["column"].weight[None, :, :]
        h = net["block"](h)
        return net["out"](h[rows, masked]) + self.allowed_[masked]

    def predict(self, X):
        import torch

        X = np.asarray(X)
        cols = np.column_stack([X, np.full(len(X), self.classes_[0])])  # the target cell is masked anyway
        self.net_.eval()
        with torch.no_grad():
            batch = torch.as_tensor(self._tokens(cols))
            target = torch.full((len(batch),), cols.shape[1] - 1)
            best = self._logits(batch, target).argmax(1).numpy()
        return self.classes_[best - self.starts_[-1]]
