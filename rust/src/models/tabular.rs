//! The tabular extension (SPEC "Tabular extension"): CBOW-MoE in sentence
//! mode over the columns of a table. A row is a "sentence" of one token per
//! column, the token (f, c) of column f with category c; the vocabulary is
//! laid out column by column, so column f owns the ids `starts[f]..starts[f+1]`.
//! Absolute positions are column indices: `pos_key[h, f]` and `pos_value[f]`
//! are the feature encodings (SPEC `feature_gate`, `feature_value`), and the
//! masked column's query `query[h, j]` makes the gate depend on which column
//! is predicted:
//!
//!   l_h(f)   = <query[h, j], key[h, t_f] + pos_key[h, f]> / sqrt(d_k)   (f ≠ j)
//!   z_h      = Σ_f softmax_f(l_h(f)) · (alpha[t_f] + pos_value[f])[head h]
//!   p(c | ·) ∝ exp(beta[(j, c)] · z + bias[(j, c)])     over column j's categories only
//!
//! With a fixed query the gate collapses to SPEC's `salience[h, t_f] +
//! feature_gate[h, f]`. Everything but the output range is `Moe`'s sentence
//! mode; training masks every column of a row in turn (the MLM objective).
//! Values marked `ABSENT` (to impute) are neither experts nor targets.

use super::moe::{Moe, MoeScratch, ABSENT};
use super::Model;
use crate::sampling::Rng;
use std::ops::Range;

pub struct Tabular<'m, 'a> {
    pub moe: &'m Moe<'a>,
    /// Column f owns the token ids `starts[f]..starts[f + 1]` (length F + 1).
    pub starts: &'m [u32],
}

/// How one fit runs.
#[derive(Clone, Copy, Debug)]
pub struct FitSettings {
    pub epochs: usize,
    /// Learning rate, falling linearly to `min_alpha` over the whole fit.
    pub alpha: f32,
    pub min_alpha: f32,
    pub seed: u64,
    pub workers: usize,
}

impl Tabular<'_, '_> {
    pub fn columns(&self) -> usize {
        self.starts.len() - 1
    }

    /// Column j's token ids.
    #[inline]
    pub fn range(&self, j: usize) -> Range<usize> {
        self.starts[j] as usize..self.starts[j + 1] as usize
    }

    /// One SGD pass over a row: every present column is masked in turn and
    /// predicted from the others. Returns the summed loss and the examples.
    pub fn train_row(&self, sc: &mut MoeScratch, row: &[u32], lr: f32) -> (f64, u64) {
        let (mut loss, mut n) = (0.0f64, 0u64);
        for (j, &t) in row.iter().enumerate() {
            if t != ABSENT {
                loss += self.step(sc, row, j, lr) as f64;
                n += 1;
            }
        }
        (loss, n)
    }

    /// One example: column j of `row` masked and predicted from the others
    /// (forward, softmax over column j's categories, backward). Returns the loss.
    pub fn step(&self, sc: &mut MoeScratch, row: &[u32], j: usize, lr: f32) -> f32 {
        sc.load_masked(row, j);
        let range = self.range(j);
        self.moe.step_with(sc, |z, grad, out| self.moe.out.softmax_over(z, row[j], range, lr, grad, out))
    }

    /// p(column j = c | the row's other present columns) for c in column j's
    /// range, into `probs`; the gates θ_h of the experts (head-major, H x n,
    /// the mask expert last) into `gates` when given.
    pub fn predict(&self, sc: &mut MoeScratch, row: &[u32], j: usize, probs: &mut [f32], gates: Option<&mut [f32]>) {
        sc.load_masked(row, j);
        self.moe.forward(sc);
        self.moe.out.probabilities(&sc.z()[..self.moe.out.dim()], self.range(j), probs);
        if let Some(g) = gates {
            let n = sc.theta(0).len();
            for h in 0..self.moe.heads {
                g[h * n..(h + 1) * n].copy_from_slice(sc.theta(h));
            }
        }
    }

    /// Train on `data` (rows x F token ids, row-major) for `s.epochs` epochs,
    /// rows shuffled every epoch, Hogwild over `s.workers` threads (one
    /// thread: reproducible for a seed). `stop(epoch)` is asked after every
    /// epoch and ends the fit early when it returns false. Returns the mean
    /// loss per example of each epoch run.
    pub fn fit(&self, data: &[u32], s: &FitSettings, mut stop: impl FnMut(usize) -> bool) -> Vec<f64> {
        let f = self.columns();
        let rows = if f == 0 { 0 } else { data.len() / f };
        let mut order: Vec<u32> = (0..rows as u32).collect();
        let mut rng = Rng::new(s.seed);
        let workers = s.workers.clamp(1, rows.max(1));
        let total = (s.epochs * rows).max(1) as f32;
        let lr_at = |done: usize| (s.alpha - (s.alpha - s.min_alpha) * done as f32 / total).max(s.min_alpha);
        let mut scratches: Vec<MoeScratch> = (0..workers).map(|_| self.moe.scratch()).collect();
        let mut losses = Vec::with_capacity(s.epochs);
        for epoch in 0..s.epochs {
            for i in (1..rows).rev() {
                order.swap(i, rng.below(i as u32 + 1) as usize);
            }
            let base = epoch * rows;
            let run = |sc: &mut MoeScratch, part: &[u32], first: usize| -> (f64, u64) {
                let (mut loss, mut n) = (0.0, 0);
                for (i, &r) in part.iter().enumerate() {
                    let r = r as usize;
                    let (l, k) = self.train_row(sc, &data[r * f..(r + 1) * f], lr_at(base + first + i));
                    loss += l;
                    n += k;
                }
                self.moe.finish(sc);
                (loss, n)
            };
            let (loss, n) = if workers == 1 {
                run(&mut scratches[0], &order, 0)
            } else {
                let per = rows.div_ceil(workers);
                std::thread::scope(|scope| {
                    let handles: Vec<_> = scratches
                        .iter_mut()
                        .zip(order.chunks(per).enumerate())
                        .map(|(sc, (w, part))| scope.spawn(move || run(sc, part, w * per)))
                        .collect();
                    handles.into_iter().fold((0.0, 0), |(l, n), h| {
                        let (a, b) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                        (l + a, n + b)
                    })
                })
            };
            losses.push(if n > 0 { loss / n as f64 } else { 0.0 });
            if !stop(epoch) {
                break;
            }
        }
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hogwild::Hogwild;
    use crate::models::moe::Gates;
    use crate::objective::{OutputLayer, OutputSpec};
    use crate::simd::SigmoidTable;
    use crate::vocab::{Vocab, VocabSettings};

    /// Two perfectly dependent columns (category i of column 0 always with
    /// category i of column 1): training must learn to predict each from the other.
    #[test]
    fn learns_a_dependent_column() {
        let (k, d, h, dk) = (4usize, 8usize, 2usize, 4usize);
        let (f, v) = (2usize, 2 * k);
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (i.to_string(), 1)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let mut rng = Rng::new(3);
        let mut small = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.unit_f32() - 0.5) * 0.2).collect() };
        let (mut alpha, mut beta, mut pv) = (small(v * d), small(v * d), small(f * d));
        let (mut q, mut key, mut pk) = (small(h * f * dk), small(h * v * dk), small(h * f * dk));
        let mut bias = vec![0f32; v];
        let moe = Moe {
            alpha: Hogwild::new(&mut alpha, d),
            gates: Gates::Absolute {
                query: Hogwild::new(&mut q, dk),
                key: Hogwild::new(&mut key, dk),
                pos_key: Hogwild::new(&mut pk, dk),
                max_len: f,
            },
            offset_value: Hogwild::new(&mut pv, d),
            mask_gate: Hogwild::empty(),
            mask_value: Hogwild::empty(),
            out: OutputLayer {
                beta: Hogwild::new(&mut beta, d),
                syn1: Hogwild::empty(),
                bias: Some(Hogwild::new(&mut bias, 1)),
                spec: OutputSpec { negative: 0, hs: false, softmax: true },
                vocab: &voc,
                sig: SigmoidTable::new(),
            },
            heads: h,
            full: false,
            window: 1,
            shrink: false,
            batch: 1,
        };
        let starts = [0u32, k as u32, v as u32];
        let t = Tabular { moe: &moe, starts: &starts };
        let data: Vec<u32> = (0..200).flat_map(|i| [(i % k) as u32, (k + i % k) as u32]).collect();
        let s = FitSettings { epochs: 30, alpha: 0.1, min_alpha: 0.001, seed: 1, workers: 1 };
        let losses = t.fit(&data, &s, |_| true);
        assert!(losses[losses.len() - 1] < 0.1 * losses[0], "{losses:?}");
        let mut sc = moe.scratch();
        let mut p = vec![0f32; k];
        for c in 0..k {
            t.predict(&mut sc, &[c as u32, ABSENT], 1, &mut p, None);
            let best = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, c);
        }
    }
}
