//! One file per model. A model owns its input-side parameters and turns one
//! sentence of (subsampled) word ids into training examples for the shared
//! output layer (`objective.rs`); threads, corpus reading, subsampling and the
//! learning-rate schedule live in `trainer.rs`.

use crate::hogwild::{Hogwild, HotRows};
use crate::objective::OutputLayer;
use crate::sampling::Rng;
use crate::simd::prefetch;

pub mod attention;
pub mod cbow;
pub mod moe;
pub mod skipgram;
pub mod tabular;

/// What the trainer needs from a model.
pub trait Model: Sync {
    /// Per-thread scratch buffers, allocated once per worker.
    type Scratch: Send;

    fn scratch(&self) -> Self::Scratch;

    /// The scratch of one worker among several (the trainer's choice for
    /// epochs with 2 or more workers): with `hot.rows > 0`, models that
    /// support it keep private copies of their hottest rows
    /// ([`Privatized`]). The default ignores `hot`.
    fn worker_scratch(&self, _hot: HotSpec) -> Self::Scratch {
        self.scratch()
    }

    /// Make every update this worker holds back (private rows) visible in
    /// the shared parameters. The trainer calls it before the workers park
    /// for a distributed sync, again once the sync is done (to take the
    /// parameters as it left them), and before `end_worker`.
    fn publish(&self, _sc: &mut Self::Scratch) {}

    /// One SGD pass over one sentence. Returns (loss, examples); the loss is 0
    /// unless `want_loss`.
    fn train_sentence(&self, sc: &mut Self::Scratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64);

    /// Called after every sentence a worker reads, trained or not (too short
    /// once subsampled), with the corpus words it stood for (batches.rs
    /// counts them per batch).
    fn sentence_done(&self, _sc: &mut Self::Scratch, _raw_words: u64) {}

    /// Called once when a worker finishes (e.g. to apply buffered updates).
    fn end_worker(&self, _sc: &mut Self::Scratch) {}
}

/// Hot-row privatization for the workers of a multi-worker epoch: each
/// worker trains on private copies of rows `0..rows` (the most frequent
/// words: vocabulary ids are sorted by count) of the input vectors and of
/// negative sampling's output vectors, and merges them into the shared
/// matrices once it has trained `every` examples since its last merge
/// (checked after each sentence), before a distributed sync and at its end.
/// `rows = 0`: plain Hogwild.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HotSpec {
    pub rows: usize,
    pub every: u64,
}

/// A worker's private rows of a model's input matrix and output layer (see
/// [`HotSpec`]), and the examples trained since its last merge.
pub struct Privatized {
    pub input: HotRows,
    pub output: HotRows,
    /// BidirMoE's gate scores of the hot words (columns of `salience`).
    pub gates: HotRows,
    every: u64,
    since: u64,
}

impl Privatized {
    /// Private copies of the hot rows of `input` and `out.beta` (None when
    /// `hot.rows` is 0). Hierarchical softmax's inner nodes stay shared.
    pub fn new(hot: HotSpec, input: &Hogwild<'_>, out: &OutputLayer<'_>) -> Option<Box<Privatized>> {
        (hot.rows > 0).then(|| {
            let (input, output) = (HotRows::of(input, hot.rows), HotRows::of(&out.beta, hot.rows));
            Box::new(Privatized { input, output, gates: HotRows::none(), every: hot.every.max(1), since: 0 })
        })
    }

    /// Merge the private rows into the shared matrices they were taken
    /// from (`HotRows::merge`): `input`, `out.beta` and `gates` (if any).
    pub fn merge(&mut self, input: &Hogwild<'_>, out: &OutputLayer<'_>, gates: Option<&Hogwild<'_>>) {
        self.input.merge(input);
        self.output.merge(&out.beta);
        if let Some(g) = gates {
            self.gates.merge(g);
        }
        self.since = 0;
    }

    /// After a sentence of `examples` trained examples: merge when due.
    pub fn trained(&mut self, examples: u64, input: &Hogwild<'_>, out: &OutputLayer<'_>, gates: Option<&Hogwild<'_>>) {
        self.since += examples;
        if self.since >= self.every {
            self.merge(input, out, gates);
        }
    }
}

/// `Model::publish` for a model whose scratch holds `hot`.
pub fn publish_rows(hot: &mut Option<Box<Privatized>>, input: &Hogwild<'_>, out: &OutputLayer<'_>, gates: Option<&Hogwild<'_>>) {
    if let Some(h) = hot.as_mut() {
        h.merge(input, out, gates);
    }
}

/// The context window of position `pos`: word2vec's reduced window draws the
/// effective size uniformly from 1..=window when `shrink` is set.
#[inline]
pub fn window_bounds(pos: usize, len: usize, window: usize, shrink: bool, rng: &mut Rng) -> (usize, usize) {
    let w = if shrink && window > 1 { window - rng.below(window as u32) as usize } else { window };
    (pos.saturating_sub(w), (pos + w + 1).min(len))
}

/// The window of position `pos` (see `window_bounds`), and a prefetch of what
/// the next positions need: the input row of the word entering the window and
/// the output row of the next target.
#[inline]
pub fn window_and_prefetch(
    sent: &[u32],
    pos: usize,
    window: usize,
    shrink: bool,
    rng: &mut Rng,
    input: &Hogwild<'_>,
    out: &OutputLayer<'_>,
) -> (usize, usize) {
    if let Some(&w) = sent.get(pos + window + 1) {
        prefetch(input.row(w as usize));
    }
    if let Some(&w) = sent.get(pos + 1) {
        out.prefetch_target(w);
    }
    window_bounds(pos, sent.len(), window, shrink, rng)
}

#[cfg(test)]
mod tests {
    use super::cbow::Cbow;
    use super::moe::{Gates, Moe};
    use super::skipgram::SkipGram;
    use super::*;
    use crate::objective::OutputSpec;
    use crate::simd::SigmoidTable;
    use crate::vocab::{Vocab, VocabSettings};

    /// One worker training with private hot rows, merged now and then and
    /// published at its end, leaves the same parameters as training the
    /// shared rows (up to the rounding of shared + (private − snapshot)):
    /// no update lost, none applied twice, every row resolved to the right
    /// copy. CBOW, skip-gram and BidirMoE (window and sentence mode), per
    /// target and mini-batched, with (d = 32) and without (d = 12) the
    /// register kernels, some rows private or all.
    #[test]
    fn private_rows_lose_no_update() {
        let v = 9;
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (format!("w{i}"), 40 - 3 * i as u64)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let mut r = Rng::new(5);
        let sents: Vec<Vec<u32>> = (0..12).map(|k| (0..8 + k).map(|_| r.below(v as u32)).collect()).collect();
        let spec = OutputSpec { negative: 3, hs: false, softmax: false };
        fn run<M: Model>(m: &M, sents: &[Vec<u32>], hot: HotSpec) {
            let mut sc = if hot.rows > 0 { m.worker_scratch(hot) } else { m.scratch() };
            let mut rng = Rng::new(7);
            for s in sents {
                m.train_sentence(&mut sc, s, 0.05, &mut rng, false);
            }
            m.publish(&mut sc);
            m.end_worker(&mut sc);
        }
        for d in [12, 32] {
            for batch in [1, 3] {
                for model in ["cbow", "sg", "moe1", "moe4s"] {
                    let (h, window, max_len) = (if model == "moe4s" { 4 } else { 1 }, 2, 5);
                    let mut r = Rng::new(9);
                    let mut init = |len: usize| (0..len).map(|_| r.unit_f32() - 0.5).collect::<Vec<f32>>();
                    let start = [init(v * d), init(v * d), init(h * v), init(h * 2 * window), init(max_len * d), init(h), init(d), init(h * max_len * 4), init(h * v * 4), init(h * 2)];
                    let mut ends = Vec::new();
                    for hot in [HotSpec::default(), HotSpec { rows: 3, every: 10 }, HotSpec { rows: v, every: u64::MAX }] {
                        let mut p = start.clone();
                        let [alpha, beta, sal, og, ov, mg, mv, q, key, mk] = &mut p;
                        let out = OutputLayer { beta: Hogwild::new(beta, d), syn1: Hogwild::empty(), bias: None, spec, vocab: &voc, sig: SigmoidTable::new() };
                        let syn0 = Hogwild::new(alpha, d);
                        match model {
                            "cbow" => run(&Cbow { syn0, out, window, shrink: true, cbow_mean: true, batch }, &sents, hot),
                            "sg" => run(&SkipGram { syn0, out, window, shrink: true, batch }, &sents, hot),
                            _ => {
                                let gates = if model == "moe1" {
                                    Gates::Window { salience: Hogwild::new(sal, v), offset_gate: Hogwild::new(og, 2 * window) }
                                } else {
                                    let (q, pk) = q.split_at_mut(h * max_len * 2);
                                    Gates::Absolute { query: Hogwild::new(q, 2), key: Hogwild::new(&mut key[..h * v * 2], 2), pos_key: Hogwild::new(pk, 2), max_len }
                                };
                                let ov = if model == "moe1" { &mut ov[..2 * window * d] } else { &mut ov[..] };
                                let mg = if model == "moe1" { mg } else { mk };
                                let m = Moe { alpha: syn0, gates, offset_value: Hogwild::new(ov, d), mask_gate: Hogwild::new(mg, if model == "moe1" { h } else { h * 2 }), mask_value: Hogwild::new(mv, d), out, heads: h, full: false, window, shrink: true, batch };
                                run(&m, &sents, hot)
                            }
                        }
                        ends.push(p);
                    }
                    assert!(ends[0] != start, "{model}: nothing trained");
                    for (k, e) in ends.iter().enumerate().skip(1) {
                        for (a, b) in e.iter().flatten().zip(ends[0].iter().flatten()) {
                            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{model} d={d} batch={batch} hot #{k}: {a} vs {b}");
                        }
                    }
                }
            }
        }
    }
}
