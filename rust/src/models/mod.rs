//! One file per model. A model owns its input-side parameters and turns one
//! sentence of (subsampled) word ids into training examples for the shared
//! output layer (`objective.rs`); threads, corpus reading, subsampling and the
//! learning-rate schedule live in `trainer.rs`.

use crate::hogwild::Hogwild;
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
