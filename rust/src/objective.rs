//! The output layer every model shares: given hidden vectors h_1..h_n that
//! all predict one target word, score the target against the output vectors
//! (`beta`, gensim's `syn1neg`; or the inner nodes `syn1` for hierarchical
//! softmax), update the output vectors and accumulate lr * dlogL/dh_i into
//! `grad` for the model to push back into its own parameters.
//!
//! * negative sampling: log σ(beta[t]·h) + Σ_neg log σ(-beta[n]·h); with n > 1
//!   the same negatives serve every h_i (pWord2Vec / HogBatch), so the update
//!   is a small (n x (K+1)) matrix product instead of n separate passes.
//! * full softmax: log p(t | h) with p ∝ exp(beta[k]·h + bias[k]), exact.
//! * hierarchical softmax on the Huffman tree (word2vec's `hs=1`).
//!
//! Negative sampling and hierarchical softmax may be on together, as in word2vec.

use crate::hogwild::{Hogwild, HotRows};
use crate::sampling::Rng;
use crate::simd::{dot, prefetch, register_level, score_rows, SigmoidTable, MAX_EXP};
use crate::vocab::Vocab;
use std::ops::Range;

/// Which output objectives are active.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputSpec {
    /// Number of negative samples (0 = off).
    pub negative: usize,
    pub hs: bool,
    /// Exact softmax over the vocabulary (uses the `beta` matrix).
    pub softmax: bool,
}

pub struct OutputLayer<'a> {
    /// Output word vectors (V x d): `syn1neg` / SPEC's `beta`.
    pub beta: Hogwild<'a>,
    /// Hierarchical-softmax inner-node vectors (V x d, first V-1 rows used).
    pub syn1: Hogwild<'a>,
    /// Optional per-word output bias (softmax only), length V.
    pub bias: Option<Hogwild<'a>>,
    pub spec: OutputSpec,
    pub vocab: &'a Vocab,
    pub sig: SigmoidTable,
}

/// Per-thread scratch space for the output layer (no allocation in the hot loop).
pub struct OutputScratch {
    outs: Vec<u32>,
    /// Negatives drawn one target ahead, so their rows can be prefetched
    /// while the current target trains.
    pending: Vec<u32>,
    /// The output rows of one step: the target, then the negatives that differ from it.
    rows: Vec<u32>,
    g: Vec<f32>,
    probs: Vec<f32>,
    /// When set, every draw of negatives is appended here (tests compare the
    /// update against an independent reference that needs the same draws).
    pub record: Option<Vec<u32>>,
}

impl OutputScratch {
    /// Start a sentence: negatives drawn ahead for a target of the previous
    /// sentence are dropped, so a sentence's draws depend only on the
    /// generator state at its start (what a checkpoint saves).
    #[inline]
    pub fn new_sentence(&mut self) {
        self.pending.clear();
    }

    pub fn new(vocab_len: usize, spec: &OutputSpec, max_rows: usize) -> Self {
        let m = spec.negative + 1;
        OutputScratch {
            outs: Vec::with_capacity(m + 1),
            pending: Vec::with_capacity(m + 1),
            rows: Vec::with_capacity(m + 1),
            g: vec![0.0; m.max(64) * max_rows.max(1)],
            probs: if spec.softmax { vec![0.0; vocab_len] } else { Vec::new() },
            record: None,
        }
    }
}

/// `rows` set to an exact step's output rows: `target`, then the negatives
/// `outs` that differ from it (word2vec and gensim skip those).
fn exact_order<'r>(rows: &'r mut Vec<u32>, target: u32, outs: &[u32]) -> &'r [u32] {
    rows.clear();
    rows.push(target);
    rows.extend(outs.iter().copied().filter(|&w| w != target));
    rows
}

impl<'a> OutputLayer<'a> {
    /// A worker's view of this layer whose output vectors (`beta`) keep
    /// rows `0..hot.rows()` in `hot`'s private copies (`Hogwild::with_hot`).
    pub fn with_hot<'b>(&'b self, hot: &'b mut HotRows) -> OutputLayer<'b> {
        OutputLayer { beta: self.beta.with_hot(hot), syn1: self.syn1.alias(), bias: self.bias.as_ref().map(Hogwild::alias), spec: self.spec, vocab: self.vocab, sig: self.sig }
    }

    pub fn dim(&self) -> usize {
        if self.beta.cols() > 0 {
            self.beta.cols()
        } else {
            self.syn1.cols()
        }
    }

    /// One target, `n` hidden rows in `h` (n x d, row-major). Adds the scaled
    /// gradient into `grad` (n x d) and returns the loss (0 unless `want_loss`).
    pub fn step(
        &self,
        h: &[f32],
        n: usize,
        target: u32,
        lr: f32,
        grad: &mut [f32],
        s: &mut OutputScratch,
        rng: &mut Rng,
        want_loss: bool,
    ) -> f32 {
        let mut loss = 0.0;
        if self.spec.hs {
            loss += self.hs(h, n, target, lr, grad, want_loss);
        }
        if self.spec.negative > 0 {
            loss += self.negative(h, n, target, lr, grad, s, rng, want_loss);
        }
        if self.spec.softmax {
            loss += self.softmax(h, n, target, lr, grad, s);
        }
        loss
    }

    #[allow(clippy::too_many_arguments)]
    fn negative(
        &self,
        h: &[f32],
        n: usize,
        target: u32,
        lr: f32,
        grad: &mut [f32],
        s: &mut OutputScratch,
        rng: &mut Rng,
        want_loss: bool,
    ) -> f32 {
        self.take_negatives(s, rng);
        let sig = &self.sig;
        let mut loss = 0.0;
        // The target, then the negatives; word2vec and gensim skip a
        // negative that equals the target.
        let rows = std::iter::once(target).chain(s.outs.iter().copied().filter(|&w| w != target));
        if n > 1 {
            // One kernel for the whole window where there is one (registers).
            let d = self.dim();
            let order = exact_order(&mut s.rows, target, &s.outs);
            if self.beta.window_target(&h[..n * d], &mut grad[..n * d], order, self.coefficients(lr, want_loss, &mut loss)) {
                return loss;
            }
        }
        if n == 1 {
            // CBOW: word2vec's exact update order (each row updated right after its score).
            for (j, o) in rows.enumerate() {
                let label = if j == 0 { 1.0 } else { 0.0 };
                self.beta.score_exchange(o as usize, h, grad, |f| sig.coefficient(label, f, lr, want_loss, &mut loss));
            }
            return loss;
        }
        // Batched: scores and the hidden rows' gradients with the old output
        // vectors (one call per output row), then the output updates.
        let d = self.dim();
        let (h, grad) = (&h[..n * d], &mut grad[..n * d]);
        let m = s.outs.len() + 1;
        if s.g.len() < n * m {
            s.g.resize(n * m, 0.0);
        }
        for (j, o) in rows.enumerate() {
            let label = if j == 0 { 1.0 } else { 0.0 };
            let gs = &mut s.g[j * n..(j + 1) * n];
            score_rows(self.beta.row(o as usize), h, grad, gs, |_, f| sig.coefficient(label, f, lr, want_loss, &mut loss));
        }
        let rows = std::iter::once(target).chain(s.outs.iter().copied().filter(|&w| w != target));
        for (j, o) in rows.enumerate() {
            self.beta.add_rows(o as usize, h, &s.g[j * n..(j + 1) * n]);
        }
        loss
    }

    /// Whether `cbow_target` can serve `input`: negative sampling alone and a
    /// register-resident kernel for the vector size (`simd::register_level`).
    pub fn has_cbow_kernel(&self, input: &Hogwild<'_>) -> bool {
        self.batchable() && self.beta.cols() == input.cols() && register_level(input.cols()).is_some()
    }

    /// CBOW's exact per-target step (what `step` does for one hidden row,
    /// with the hidden vector's sum and its push-back into the context) in
    /// one register-resident kernel (`Hogwild::cbow_target`): the hidden
    /// vector from `input`'s rows `ctx` except `ctx[skip]` (their mean when
    /// `mean`), scored against `target` and this step's negatives. Only
    /// where `has_cbow_kernel(input)`. Returns the loss (0 unless `want_loss`).
    #[allow(clippy::too_many_arguments)]
    pub fn cbow_target(&self, input: &Hogwild<'_>, ctx: &[u32], skip: usize, mean: bool, target: u32, lr: f32, s: &mut OutputScratch, rng: &mut Rng, want_loss: bool) -> f32 {
        let mut loss = 0.0;
        let rows = self.exact_rows(target, s, rng);
        assert!(input.cbow_target(ctx, skip, &self.beta, rows, mean, self.coefficients(lr, want_loss, &mut loss)), "cbow_target without a kernel (check has_cbow_kernel)");
        loss
    }

    /// The output rows of negative sampling's exact per-target step (the
    /// target, then this step's negatives that differ from it), for a
    /// register-resident kernel (with `coefficients`).
    pub fn exact_rows<'s>(&self, target: u32, s: &'s mut OutputScratch, rng: &mut Rng) -> &'s [u32] {
        self.take_negatives(s, rng);
        exact_order(&mut s.rows, target, &s.outs)
    }

    /// g = coef(j, score) for row j of `exact_rows` (row 0 the target), the
    /// loss added to `loss` when `want_loss`.
    pub fn coefficients<'l>(&'l self, lr: f32, want_loss: bool, loss: &'l mut f32) -> impl FnMut(usize, f32) -> f32 + 'l {
        move |j: usize, f: f32| self.sig.coefficient(if j == 0 { 1.0 } else { 0.0 }, f, lr, want_loss, loss)
    }

    /// Whether `negative_batch` can serve this layer: negative sampling alone
    /// (hierarchical and full softmax train one target at a time).
    pub fn batchable(&self) -> bool {
        self.spec.negative > 0 && !self.spec.hs && !self.spec.softmax
    }

    /// Negative sampling for B targets at once (HogBatch, Ji et al. 2016):
    /// row b of `h` (B x d) predicts `targets[b]`, and all rows share ONE draw
    /// of K negatives. With g_bt = lr (1 - σ(h_b·β_t_b)) and
    /// g_bk = -lr σ(h_b·β_n_k) (0 where n_k is b's own target, as word2vec
    /// skips such a negative), every score is taken with the output vectors
    /// as they were before the batch, then
    ///
    ///   grad_b  += g_bt β_t_b + Σ_k g_bk β_n_k
    ///   β_t_b   += g_bt h_b,      β_n_k += Σ_b g_bk h_b
    ///
    /// so each negative row is loaded once per batch, not once per target:
    /// the B x K block is a small dense product (B x d)·(d x K). Returns the
    /// loss (0 unless `want_loss`). Models call it for B > 1 only: B = 1
    /// keeps `step`, word2vec's exact per-target update (which also sees a
    /// repeated negative after its first update).
    #[allow(clippy::too_many_arguments)]
    pub fn negative_batch(
        &self,
        h: &[f32],
        targets: &[u32],
        lr: f32,
        grad: &mut [f32],
        s: &mut OutputScratch,
        rng: &mut Rng,
        want_loss: bool,
    ) -> f32 {
        let (d, b, k) = (self.dim(), targets.len(), self.spec.negative);
        debug_assert!(h.len() >= b * d && grad.len() >= b * d);
        let (h, grad) = (&h[..b * d], &mut grad[..b * d]);
        self.take_negatives(s, rng);
        let m = k + 1;
        if s.g.len() < b * m {
            s.g.resize(b * m, 0.0);
        }
        // tg[i]: row i's coefficient for its own target; ng[j·B + i]: for negative j.
        let (tg, ng) = s.g[..b * m].split_at_mut(b);
        let (sig, outs) = (&self.sig, &s.outs);
        let mut loss = 0.0;
        // Scores and the hidden rows' gradients, from the output vectors as
        // they were before the batch: first each row's own target...
        for (i, &t) in targets.iter().enumerate() {
            let r = i * d..(i + 1) * d;
            score_rows(self.beta.row(t as usize), &h[r.clone()], &mut grad[r], &mut tg[i..i + 1], |_, f| {
                sig.coefficient(1.0, f, lr, want_loss, &mut loss)
            });
        }
        // ...then each shared negative against all B rows (a row skips a
        // negative that is its own target).
        for (j, &o) in outs.iter().enumerate() {
            score_rows(self.beta.row(o as usize), h, grad, &mut ng[j * b..(j + 1) * b], |i, f| {
                if o == targets[i] {
                    0.0
                } else {
                    sig.coefficient(0.0, f, lr, want_loss, &mut loss)
                }
            });
        }
        // Output updates: each negative row takes its B contributions in one call.
        for (i, &t) in targets.iter().enumerate() {
            self.beta.add_rows(t as usize, &h[i * d..(i + 1) * d], &tg[i..i + 1]);
        }
        for (j, &o) in outs.iter().enumerate() {
            self.beta.add_rows(o as usize, h, &ng[j * b..(j + 1) * b]);
        }
        loss
    }

    /// This step's negatives into `s.outs` (drawn one step ahead, so their
    /// rows are already on their way), and the next step's draw.
    fn take_negatives(&self, s: &mut OutputScratch, rng: &mut Rng) {
        if s.pending.is_empty() {
            self.draw_negatives(s, rng);
        }
        if let Some(r) = s.record.as_mut() {
            r.extend_from_slice(&s.pending);
        }
        std::mem::swap(&mut s.outs, &mut s.pending);
        self.draw_negatives(s, rng);
    }

    /// Draw the next target's negatives now and start loading their rows.
    fn draw_negatives(&self, s: &mut OutputScratch, rng: &mut Rng) {
        s.pending.clear();
        for _ in 0..self.spec.negative {
            let w = self.vocab.negatives.sample(rng);
            prefetch(self.beta.row(w as usize));
            s.pending.push(w);
        }
    }

    /// Hint that `target` will be scored soon (starts loading its output row).
    #[inline]
    pub fn prefetch_target(&self, target: u32) {
        if self.beta.rows() > 0 {
            prefetch(self.beta.row(target as usize));
        }
    }

    fn hs(&self, h: &[f32], n: usize, target: u32, lr: f32, grad: &mut [f32], want_loss: bool) -> f32 {
        let d = self.dim();
        let huff = self.vocab.huffman.as_ref().expect("hierarchical softmax needs a Huffman tree");
        let (codes, points) = (&huff.codes[target as usize], &huff.points[target as usize]);
        let mut loss = 0.0;
        for i in 0..n {
            let hi = &h[i * d..(i + 1) * d];
            let gi = &mut grad[i * d..(i + 1) * d];
            for (&code, &p) in codes.iter().zip(points) {
                let f = dot(hi, self.syn1.row(p as usize));
                if want_loss {
                    let sgn = if code == 0 { 1.0 } else { -1.0 };
                    loss -= self.sig.log_sigmoid(sgn * f);
                }
                // word2vec skips saturated nodes.
                if f <= -MAX_EXP || f >= MAX_EXP {
                    continue;
                }
                let g = (1.0 - code as f32 - self.sig.sigmoid(f)) * lr;
                self.syn1.exchange(p as usize, g, hi, gi);
            }
        }
        loss
    }

    fn softmax(&self, h: &[f32], n: usize, target: u32, lr: f32, grad: &mut [f32], s: &mut OutputScratch) -> f32 {
        let d = self.dim();
        let v = self.beta.rows();
        let mut loss = 0.0;
        for i in 0..n {
            let (hi, gi) = (&h[i * d..(i + 1) * d], &mut grad[i * d..(i + 1) * d]);
            loss += self.softmax_over(hi, target, 0..v, lr, gi, s);
        }
        loss
    }

    /// Full softmax of one hidden vector over the output rows `range` only
    /// (all words, or a tabular column's categories): p(k) ∝ exp(beta[k]·h +
    /// bias[k]), k in range; `target` must lie in it. Updates beta (and bias),
    /// adds lr·∂log p(target)/∂h to `grad` and returns −log p(target).
    pub fn softmax_over(&self, h: &[f32], target: u32, range: Range<usize>, lr: f32, grad: &mut [f32], s: &mut OutputScratch) -> f32 {
        let lo = range.start;
        let probs = &mut s.probs[..range.len()];
        self.probabilities(h, range, probs);
        let t = target as usize - lo;
        for (i, &p) in probs.iter().enumerate() {
            let label = if i == t { 1.0 } else { 0.0 };
            let g = (label - p) * lr;
            self.beta.exchange(lo + i, g, h, grad);
            if let Some(b) = &self.bias {
                b.add_at(lo + i, 0, g);
            }
        }
        -probs[t].max(f32::MIN_POSITIVE).ln()
    }

    /// p(k | h) ∝ exp(beta[k]·h + bias[k]) for k in `range`, into `probs`.
    pub fn probabilities(&self, h: &[f32], range: Range<usize>, probs: &mut [f32]) {
        let lo = range.start;
        let mut mx = f32::NEG_INFINITY;
        for (i, p) in probs.iter_mut().enumerate() {
            let b = self.bias.as_ref().map_or(0.0, |b| b.row(lo + i)[0]);
            *p = dot(h, self.beta.row(lo + i)) + b;
            mx = mx.max(*p);
        }
        let mut z = 0.0f64;
        for p in probs.iter_mut() {
            *p = (*p - mx).exp();
            z += *p as f64;
        }
        let inv = (1.0 / z) as f32;
        for p in probs.iter_mut() {
            *p *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Vocab, VocabSettings};

    fn vocab(v: usize, hs: bool) -> Vocab {
        let wc = (0..v).map(|i| (format!("w{i}"), (100 - i) as u64)).collect();
        Vocab::from_sorted(wc, &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs })
    }

    fn det_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.unit_f32() - 0.5).collect()
    }

    /// The softmax step's gradient w.r.t. h equals a finite-difference
    /// derivative of log p(t|h), computed independently in f64.
    #[test]
    fn softmax_gradient_matches_finite_differences() {
        let (v, d) = (7, 5);
        let voc = vocab(v, false);
        let mut beta = det_vec(v * d, 1);
        let beta0 = beta.clone();
        let h = det_vec(d, 2);
        let logp = |h: &[f64]| -> f64 {
            let logits: Vec<f64> =
                (0..v).map(|k| (0..d).map(|j| beta0[k * d + j] as f64 * h[j]).sum::<f64>()).collect();
            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
            logits[3] - mx - z.ln()
        };
        let spec = OutputSpec { negative: 0, hs: false, softmax: true };
        let layer = OutputLayer {
            beta: Hogwild::new(&mut beta, d),
            syn1: Hogwild::empty(),
            bias: None,
            spec,
            vocab: &voc,
            sig: SigmoidTable::new(),
        };
        let mut s = OutputScratch::new(v, &spec, 1);
        let mut grad = vec![0f32; d];
        let lr = 0.5f32;
        let loss = layer.step(&h, 1, 3, lr, &mut grad, &mut s, &mut Rng::new(0), true);
        let h64: Vec<f64> = h.iter().map(|&x| x as f64).collect();
        assert!((loss as f64 + logp(&h64)).abs() < 1e-5);
        for j in 0..d {
            let mut hp = h64.clone();
            let mut hm = h64.clone();
            hp[j] += 1e-5;
            hm[j] -= 1e-5;
            let fd = (logp(&hp) - logp(&hm)) / 2e-5;
            let want = lr as f64 * fd;
            assert!((grad[j] as f64 - want).abs() < 1e-4, "dim {j}: {} vs {want}", grad[j]);
        }
    }

    /// Batched negative sampling with n rows gives each row the gradient it
    /// would get alone against the same (old) output vectors.
    #[test]
    fn batched_negative_sampling_equals_per_row_gradients() {
        let (v, d, n) = (50, 8, 3);
        let voc = vocab(v, false);
        let beta0 = det_vec(v * d, 5);
        let h = det_vec(n * d, 6);
        let spec = OutputSpec { negative: 4, hs: false, softmax: false };
        let run = |rows: usize, h: &[f32]| -> (Vec<f32>, Vec<f32>) {
            let mut beta = beta0.clone();
            let mut grad = vec![0f32; rows * d];
            {
                let layer = OutputLayer {
                    beta: Hogwild::new(&mut beta, d),
                    syn1: Hogwild::empty(),
                    bias: None,
                    spec,
                    vocab: &voc,
                    sig: SigmoidTable::new(),
                };
                let mut s = OutputScratch::new(v, &spec, rows);
                layer.step(h, rows, 2, 0.1, &mut grad, &mut s, &mut Rng::new(9), false);
            }
            (grad, beta)
        };
        let (gb, beta_b) = run(n, &h);
        let mut beta_sum = vec![0f32; v * d];
        for i in 0..n {
            // Same RNG seed: same negatives for each single-row run.
            let (g1, b1) = run(1, &h[i * d..(i + 1) * d]);
            for j in 0..d {
                assert!((gb[i * d + j] - g1[j]).abs() < 1e-6);
            }
            for k in 0..v * d {
                beta_sum[k] += b1[k] - beta0[k];
            }
        }
        for k in 0..v * d {
            assert!((beta_b[k] - beta0[k] - beta_sum[k]).abs() < 1e-6);
        }
    }

    /// Hierarchical softmax: the probabilities over all words sum to one, and
    /// the gradient step raises the target's probability.
    #[test]
    fn hierarchical_softmax_is_a_distribution_and_learns() {
        let (v, d) = (9, 4);
        let voc = vocab(v, true);
        let mut syn1 = det_vec(v * d, 3);
        let h = det_vec(d, 4);
        let huff = voc.huffman.as_ref().unwrap();
        let prob = |syn1: &[f32], h: &[f32], w: usize| -> f64 {
            let mut p = 1.0;
            for (&c, &n) in huff.codes[w].iter().zip(&huff.points[w]) {
                let f: f64 = (0..d).map(|j| syn1[n as usize * d + j] as f64 * h[j] as f64).sum();
                let s = 1.0 / (1.0 + (-f).exp());
                p *= if c == 0 { s } else { 1.0 - s };
            }
            p
        };
        let total: f64 = (0..v).map(|w| prob(&syn1, &h, w)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let before = prob(&syn1, &h, 5);
        let spec = OutputSpec { negative: 0, hs: true, softmax: false };
        {
            let layer = OutputLayer {
                beta: Hogwild::empty(),
                syn1: Hogwild::new(&mut syn1, d),
                bias: None,
                spec,
                vocab: &voc,
                sig: SigmoidTable::new(),
            };
            let mut s = OutputScratch::new(v, &spec, 1);
            let mut grad = vec![0f32; d];
            layer.step(&h, 1, 5, 0.5, &mut grad, &mut s, &mut Rng::new(0), false);
        }
        assert!(prob(&syn1, &h, 5) > before);
    }
}
