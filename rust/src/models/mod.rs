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
    /// for a distributed sync and before `end_worker`.
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
    every: u64,
    since: u64,
}

impl Privatized {
    /// Private copies of the hot rows of `input` and `out.beta` (None when
    /// `hot.rows` is 0). Hierarchical softmax's inner nodes stay shared.
    pub fn new(hot: HotSpec, input: &Hogwild<'_>, out: &OutputLayer<'_>) -> Option<Box<Privatized>> {
        (hot.rows > 0).then(|| {
            Box::new(Privatized { input: HotRows::of(input, hot.rows), output: HotRows::of(&out.beta, hot.rows), every: hot.every.max(1), since: 0 })
        })
    }

    /// Merge both matrices' private rows into the shared ones (`HotRows::merge`).
    pub fn merge(&mut self, input: &Hogwild<'_>, out: &OutputLayer<'_>) {
        self.input.merge(input);
        self.output.merge(&out.beta);
        self.since = 0;
    }

    /// After a sentence of `examples` trained examples: merge when due.
    pub fn trained(&mut self, examples: u64, input: &Hogwild<'_>, out: &OutputLayer<'_>) {
        self.since += examples;
        if self.since >= self.every {
            self.merge(input, out);
        }
    }
}

/// `Model::publish` for a model whose scratch holds `hot`.
pub fn publish_rows(hot: &mut Option<Box<Privatized>>, input: &Hogwild<'_>, out: &OutputLayer<'_>) {
    if let Some(h) = hot.as_mut() {
        h.merge(input, out);
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
