//! Training examples as arrays, for the torch backend (issue 10, item 3).
//!
//! The trainer's threads read, subsample and window the corpus exactly as
//! they do for the Rust models; `Emitter` is the `Model` that, instead of
//! updating parameters, writes each sentence's examples into per-thread
//! batches and hands finished batches to a bounded channel (a full channel
//! blocks the worker: backpressure). `BatchStream` runs such an epoch on a
//! background thread and lets one consumer take the batches.
//!
//! Two layouts:
//! * window: one row per target that has at least one context word: the
//!   target id and `2·window` context ids in offset order (−window..−1,
//!   1..window: column `offset_index(r)`, as the MoE model's offset rows),
//!   −1 where the (possibly shrunk) window or the sentence has no word.
//! * sentence: one row per chunk of at most `max_len` words (the MoE and
//!   attention sentence mode's chunks; chunks of fewer than 2 words are
//!   dropped), padded with −1; every word of a chunk is a target.
//!
//! Randomness follows the Rust models draw for draw: per position the
//! window size (`window_bounds`), and per target its `negative` draws from
//! the unigram^power table, taken one target ahead as the output layer does
//! (`objective.rs`: a sentence's first target draws two sets). So with one
//! worker and the same seed, a stream sees the windows and negatives that
//! CBOW, skip-gram and CBOW-MoE would train on. Negatives equal to their
//! target are kept: the consumer masks them, as the Rust output layer skips them.
//!
//! Exact resume: a stopped run (cancel, Ctrl-C, `max_words`) ends every
//! worker after its current sentence and sends its partial batch, so the
//! batches a consumer takes until the end of the stream are exactly the
//! sentences before the resume position. Workers keep waiting to deliver
//! after a cancel; only an abandoned stream (dropped, finished early, or
//! failed) discards batches, and then refuses to give a resume state.

use crate::corpus::{FileSplit, SplitState};
use crate::models::moe::offset_index;
use crate::models::{window_bounds, Model};
use crate::sampling::Rng;
use crate::trainer::{run_epoch, Job, Progress, Source, TrainConfig, WorkerState};
use crate::vocab::{Huffman, Vocab};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How examples are laid out in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Target and its window (word2vec's reduced window when `shrink`).
    Window { window: usize, shrink: bool },
    /// Chunks of at most `max_len` words, absolute positions.
    Sentence { max_len: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    pub layout: Layout,
    /// Negatives per target (0: none drawn).
    pub negative: usize,
    /// Targets per batch (sentence layout: at most this many words, unless
    /// one chunk alone is longer).
    pub batch_targets: usize,
    /// Finished batches the channel holds before workers wait.
    pub prefetch: usize,
}

impl BatchSettings {
    /// The settings are usable with this vocabulary.
    pub fn check(&self, vocab: &Vocab) -> Result<(), String> {
        match self.layout {
            Layout::Window { window: 0, .. } => return Err("window must be >= 1".into()),
            Layout::Sentence { max_len } if max_len < 2 => return Err("max_len must be >= 2".into()),
            _ => {}
        }
        if self.batch_targets == 0 {
            return Err("batch_targets must be >= 1".into());
        }
        if self.prefetch == 0 {
            return Err("prefetch must be >= 1".into());
        }
        if self.negative > 0 && vocab.negatives.is_empty() {
            return Err("negative sampling needs a non-empty vocabulary".into());
        }
        Ok(())
    }

    /// Ids per row: context width (window) or chunk width (sentence).
    pub fn width(&self) -> usize {
        match self.layout {
            Layout::Window { window, .. } => 2 * window,
            Layout::Sentence { max_len } => max_len,
        }
    }
}

/// One batch of examples (row-major arrays; ids as i64, −1 = none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Rows: targets (window layout) or chunks (sentence layout).
    pub rows: usize,
    /// Window layout: the target of each row (rows).
    pub targets: Vec<i64>,
    /// Window layout: context ids (rows x 2·window), column = offset index.
    /// Sentence layout: chunk ids (rows x max_len), −1 padded.
    pub ids: Vec<i64>,
    /// Negatives per target: rows x K (window) or rows x max_len x K
    /// (sentence, −1 at padding). Empty when K = 0.
    pub negatives: Vec<i64>,
    /// Targets in the batch (window: rows; sentence: words of its chunks).
    pub n_targets: usize,
    /// The worker's learning rate for the sentence of the batch's first target.
    pub lr: f32,
    /// Corpus words (out-of-vocabulary and subsampled words included) of the
    /// sentences whose reading ended in this batch; they sum to the epoch's words.
    pub raw_words: u64,
}

/// The example writer: a `Model` for `run_epoch`.
pub struct Emitter<'a> {
    vocab: &'a Vocab,
    settings: BatchSettings,
    tx: Sender<Batch>,
    /// Set when nobody will take further batches: senders stop waiting.
    abandoned: &'a AtomicBool,
    /// Batches dropped because the stream was abandoned.
    discarded: &'a AtomicU64,
}

/// A worker's batch being filled.
pub struct EmitterScratch {
    batch: Batch,
    /// Negatives drawn one target ahead (as `OutputScratch::pending`).
    pending: Vec<u32>,
    /// Learning rate of the sentence being emitted.
    lr: f32,
}

impl<'a> Emitter<'a> {
    pub fn new(vocab: &'a Vocab, settings: BatchSettings, tx: Sender<Batch>, abandoned: &'a AtomicBool, discarded: &'a AtomicU64) -> Self {
        Emitter { vocab, settings, tx, abandoned, discarded }
    }

    fn empty_batch(&self) -> Batch {
        let (b, w, k) = (self.settings.batch_targets, self.settings.width(), self.settings.negative);
        let rows = match self.settings.layout {
            Layout::Window { .. } => b,
            Layout::Sentence { max_len } => b.div_ceil(max_len).max(1),
        };
        let neg_per_row = match self.settings.layout {
            Layout::Window { .. } => k,
            Layout::Sentence { max_len } => max_len * k,
        };
        Batch {
            targets: if matches!(self.settings.layout, Layout::Window { .. }) { Vec::with_capacity(b) } else { Vec::new() },
            ids: Vec::with_capacity(rows * w),
            negatives: Vec::with_capacity(rows * neg_per_row),
            ..Batch::default()
        }
    }

    /// Append this target's negatives: the set drawn ahead (or a fresh one
    /// at a sentence's first target), then draw the next target's set.
    #[inline]
    fn negatives(&self, sc: &mut EmitterScratch, rng: &mut Rng) {
        let k = self.settings.negative;
        if k == 0 {
            return;
        }
        if sc.pending.is_empty() {
            sc.pending.extend((0..k).map(|_| self.vocab.negatives.sample(rng)));
        }
        sc.batch.negatives.extend(sc.pending.iter().map(|&w| w as i64));
        sc.pending.clear();
        sc.pending.extend((0..k).map(|_| self.vocab.negatives.sample(rng)));
    }

    /// A row is about to be added: an empty batch takes the sentence's rate.
    #[inline]
    fn begin_row(&self, sc: &mut EmitterScratch) {
        if sc.batch.rows == 0 {
            sc.batch.lr = sc.lr;
        }
    }

    /// Hand the batch to the consumer, waiting while the channel is full
    /// unless the stream is abandoned.
    fn send(&self, sc: &mut EmitterScratch) {
        let mut batch = std::mem::replace(&mut sc.batch, self.empty_batch());
        loop {
            if self.abandoned.load(Ordering::Relaxed) {
                self.discarded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match self.tx.send_timeout(batch, Duration::from_millis(20)) {
                Ok(()) => return,
                Err(SendTimeoutError::Timeout(b)) => batch = b,
                Err(SendTimeoutError::Disconnected(_)) => {
                    self.discarded.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn window_rows(&self, sc: &mut EmitterScratch, sent: &[u32], window: usize, shrink: bool, rng: &mut Rng) -> u64 {
        let mut examples = 0;
        for pos in 0..sent.len() {
            let (lo, hi) = window_bounds(pos, sent.len(), window, shrink, rng);
            if hi - lo < 2 {
                continue; // no context word: the Rust models skip it too (and draw no negatives)
            }
            self.begin_row(sc);
            let b = &mut sc.batch;
            b.targets.push(sent[pos] as i64);
            let base = b.ids.len();
            b.ids.resize(base + 2 * window, -1);
            for (i, &w) in sent[lo..hi].iter().enumerate() {
                let r = (lo + i) as isize - pos as isize;
                if r != 0 {
                    b.ids[base + offset_index(r, window)] = w as i64;
                }
            }
            b.rows += 1;
            b.n_targets += 1;
            self.negatives(sc, rng);
            examples += 1;
            if sc.batch.n_targets >= self.settings.batch_targets {
                self.send(sc);
            }
        }
        examples
    }

    fn sentence_rows(&self, sc: &mut EmitterScratch, sent: &[u32], max_len: usize, rng: &mut Rng) -> u64 {
        let k = self.settings.negative;
        let mut examples = 0;
        for chunk in sent.chunks(max_len) {
            if chunk.len() < 2 {
                continue;
            }
            if sc.batch.rows > 0 && sc.batch.n_targets + chunk.len() > self.settings.batch_targets {
                self.send(sc);
            }
            self.begin_row(sc);
            let b = &mut sc.batch;
            b.ids.extend(chunk.iter().map(|&w| w as i64));
            b.ids.resize(b.ids.len() + max_len - chunk.len(), -1);
            b.rows += 1;
            b.n_targets += chunk.len();
            for _ in 0..chunk.len() {
                self.negatives(sc, rng);
            }
            let b = &mut sc.batch;
            b.negatives.resize(b.negatives.len() + (max_len - chunk.len()) * k, -1);
            examples += chunk.len() as u64;
            if sc.batch.n_targets >= self.settings.batch_targets {
                self.send(sc);
            }
        }
        examples
    }
}

impl Model for Emitter<'_> {
    type Scratch = EmitterScratch;

    fn scratch(&self) -> EmitterScratch {
        EmitterScratch { batch: self.empty_batch(), pending: Vec::with_capacity(self.settings.negative), lr: 0.0 }
    }

    fn train_sentence(&self, sc: &mut EmitterScratch, sent: &[u32], lr: f32, rng: &mut Rng, _want_loss: bool) -> (f64, u64) {
        // A sentence's draws depend only on the generator at its start, as
        // the output layer's (`OutputScratch::new_sentence`).
        sc.pending.clear();
        sc.lr = lr;
        let examples = match self.settings.layout {
            Layout::Window { window, shrink } => self.window_rows(sc, sent, window, shrink, rng),
            Layout::Sentence { max_len } => self.sentence_rows(sc, sent, max_len, rng),
        };
        (0.0, examples)
    }

    fn sentence_done(&self, sc: &mut EmitterScratch, raw_words: u64) {
        sc.batch.raw_words += raw_words;
    }

    fn end_worker(&self, sc: &mut EmitterScratch) {
        if sc.batch.rows > 0 || sc.batch.raw_words > 0 {
            if sc.batch.rows == 0 {
                sc.batch.lr = sc.lr;
            }
            self.send(sc);
        }
    }
}

/// Where a stream reads from (owned: the run outlives the caller's frame).
pub enum StreamSource {
    File(FileSplit),
    Queue(Receiver<Job>),
}

/// How the background run ended.
struct Outcome {
    result: Result<(), String>,
    /// File sources: where every worker stopped.
    resume: Option<(SplitState, Vec<WorkerState>)>,
}

/// State shared by the background run and the consumer.
struct Shared {
    progress: Progress,
    abandoned: AtomicBool,
    discarded: AtomicU64,
    outcome: Mutex<Option<Outcome>>,
}

/// What `BatchStream::next` found.
#[derive(Debug)]
pub enum Next {
    Batch(Batch),
    /// Nothing arrived within the wait.
    Waiting,
    /// The run is over and every batch was taken.
    End,
    /// A worker failed (I/O error or panic); the stream is abandoned.
    Failed(String),
}

/// One epoch of batches produced on a background thread.
pub struct BatchStream {
    rx: Receiver<Batch>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BatchStream {
    /// Start the epoch `cfg` over `source` on a background thread.
    pub fn start(vocab: Arc<Vocab>, source: StreamSource, settings: BatchSettings, cfg: TrainConfig) -> Result<Self, String> {
        Self::start_with(vocab, source, settings, cfg, Progress::default())
    }

    /// `start` with the epoch's counters given (e.g. with a `SyncGate` scaling
    /// the learning rate's word count in a run of several processes).
    pub fn start_with(
        vocab: Arc<Vocab>,
        source: StreamSource,
        settings: BatchSettings,
        cfg: TrainConfig,
        progress: Progress,
    ) -> Result<Self, String> {
        settings.check(&vocab)?;
        let (tx, rx) = bounded(settings.prefetch);
        let shared = Arc::new(Shared {
            progress,
            abandoned: AtomicBool::new(false),
            discarded: AtomicU64::new(0),
            outcome: Mutex::new(None),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bidirmoe-batches".into())
            .spawn(move || {
                let emitter = Emitter::new(&vocab, settings, tx, &sh.abandoned, &sh.discarded);
                let src = match &source {
                    StreamSource::File(split) => Source::File(split),
                    StreamSource::Queue(rx) => Source::Queue(rx),
                };
                let result = run_epoch(&emitter, &vocab, src, &cfg, &sh.progress, |_| true);
                let resume = match &source {
                    StreamSource::File(split) => {
                        let workers = sh.progress.workers.lock().unwrap_or_else(|p| p.into_inner());
                        let cursors: Vec<_> = workers.iter().map(|(c, _)| c.clone()).collect();
                        Some((split.state(&cursors), workers.iter().map(|(_, s)| *s).collect()))
                    }
                    StreamSource::Queue(_) => None,
                };
                *sh.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Outcome { result, resume });
                // Closing the channel last: a consumer that sees it closed finds the outcome.
                drop(emitter);
            })
            .map_err(|e| format!("cannot start the batch thread: {e}"))?;
        Ok(BatchStream { rx, shared, thread: Mutex::new(Some(thread)) })
    }

    /// The run's counters (words read, examples), for progress reports.
    pub fn progress(&self) -> &Progress {
        &self.shared.progress
    }

    fn failure(&self) -> Option<String> {
        if let Some(e) = self.shared.progress.error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(e);
        }
        match &*self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Outcome { result: Err(e), .. }) => Some(e.clone()),
            _ => None,
        }
    }

    /// The next batch, waiting at most `wait`.
    pub fn next(&self, wait: Duration) -> Next {
        if let Some(e) = self.failure() {
            self.abandon();
            return Next::Failed(e);
        }
        match self.rx.recv_timeout(wait) {
            Ok(b) => Next::Batch(b),
            Err(RecvTimeoutError::Timeout) => Next::Waiting,
            Err(RecvTimeoutError::Disconnected) => match self.failure() {
                Some(e) => Next::Failed(e),
                None if self.finished() => Next::End,
                None => Next::Failed("the batch thread stopped unexpectedly".into()),
            },
        }
    }

    /// Stop reading: every worker ends after its current sentence and sends
    /// its partial batch. Take the batches until `End` for an exact resume.
    pub fn cancel(&self) {
        self.shared.progress.cancel.store(true, Ordering::Relaxed);
    }

    /// Stop and drop every batch not yet taken (nobody will train them).
    pub fn abandon(&self) {
        self.cancel();
        self.shared.abandoned.store(true, Ordering::Relaxed);
        while self.rx.try_recv().is_ok() {
            self.shared.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The background run has ended (its batches may still be waiting).
    pub fn finished(&self) -> bool {
        self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Batches dropped unseen (the stream was abandoned).
    pub fn discarded(&self) -> u64 {
        self.shared.discarded.load(Ordering::Relaxed)
    }

    /// Wait for the run to end and return (raw words, effective words,
    /// examples). Called before the stream was exhausted, it stops the run
    /// and discards the batches not taken.
    pub fn finish(&self) -> Result<(u64, u64, u64), String> {
        if !(self.finished() && self.rx.is_empty()) {
            self.abandon();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if t.join().is_err() {
                return Err("the batch thread panicked".into());
            }
        }
        self.abandon();
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let p = &self.shared.progress;
        Ok((p.raw_words.load(Ordering::Relaxed), p.effective_words.load(Ordering::Relaxed), p.examples.load(Ordering::Relaxed)))
    }

    /// Where the run stopped (None for a queue source), once it has ended
    /// and every batch was taken: the batches taken are exactly the corpus
    /// before this position.
    pub fn resume_state(&self) -> Result<Option<(SplitState, Vec<WorkerState>)>, String> {
        let outcome = self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
        let Some(outcome) = &*outcome else {
            return Err("the stream is still running: cancel() it and take its batches until the end first".into());
        };
        if let Err(e) = &outcome.result {
            return Err(format!("the stream failed: {e}"));
        }
        let discarded = self.discarded();
        if discarded > 0 {
            return Err(format!(
                "{discarded} batch(es) were discarded (the stream was finished or dropped before it was drained): \
                 a resume state would skip their examples"
            ));
        }
        if !self.rx.is_empty() {
            return Err(format!("{} batch(es) were not taken yet: take the batches until the end first", self.rx.len()));
        }
        Ok(outcome.resume.clone())
    }
}

impl Drop for BatchStream {
    /// The run stops on its own; the thread is not waited for.
    fn drop(&mut self) {
        self.abandon();
    }
}

/// Huffman paths as padded arrays (V x L, L the longest code): codes padded
/// with 0, points with −1, and each word's code length.
pub struct HuffmanArrays {
    pub codes: Vec<i8>,
    pub points: Vec<i64>,
    pub lengths: Vec<i64>,
    pub depth: usize,
}

pub fn huffman_arrays(h: &Huffman) -> HuffmanArrays {
    let depth = h.codes.iter().map(Vec::len).max().unwrap_or(0);
    let v = h.codes.len();
    let mut out = HuffmanArrays { codes: vec![0; v * depth], points: vec![-1; v * depth], lengths: Vec::with_capacity(v), depth };
    for (w, (c, p)) in h.codes.iter().zip(&h.points).enumerate() {
        for (j, (&cj, &pj)) in c.iter().zip(p).enumerate() {
            out.codes[w * depth + j] = cj as i8;
            out.points[w * depth + j] = pj as i64;
        }
        out.lengths.push(c.len() as i64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hogwild::Hogwild;
    use crate::models::cbow::Cbow;
    use crate::models::moe::{Gates, Moe};
    use crate::objective::{OutputLayer, OutputSpec};
    use crate::simd::SigmoidTable;
    use crate::vocab::VocabSettings;

    fn vocab(v: usize) -> Vocab {
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: true };
        Vocab::from_sorted((0..v).map(|i| (format!("w{i}"), (100 - i) as u64)).collect(), &s)
    }

    struct Flags {
        abandoned: AtomicBool,
        discarded: AtomicU64,
    }

    fn flags() -> Flags {
        Flags { abandoned: AtomicBool::new(false), discarded: AtomicU64::new(0) }
    }

    fn window_settings(window: usize, shrink: bool, negative: usize, batch_targets: usize) -> BatchSettings {
        BatchSettings { layout: Layout::Window { window, shrink }, negative, batch_targets, prefetch: 1000 }
    }

    /// Emit sentences as one worker and collect the batches (the partial one included).
    fn emit_all(voc: &Vocab, settings: BatchSettings, sents: &[&[u32]], rng: &mut Rng) -> Vec<Batch> {
        let f = flags();
        let (tx, rx) = bounded(1000);
        let e = Emitter::new(voc, settings, tx, &f.abandoned, &f.discarded);
        let mut sc = e.scratch();
        for sent in sents {
            e.train_sentence(&mut sc, sent, 0.025, rng, false);
            e.sentence_done(&mut sc, sent.len() as u64);
        }
        e.end_worker(&mut sc);
        drop(e);
        rx.iter().collect()
    }

    fn emit(voc: &Vocab, settings: BatchSettings, sent: &[u32], rng: &mut Rng) -> Vec<Batch> {
        emit_all(voc, settings, &[sent], rng)
    }

    fn sentence(n: usize, v: u32, seed: u64) -> Vec<u32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.below(v)).collect()
    }

    #[test]
    fn windows_and_negatives_are_the_rust_models_draws() {
        let voc = vocab(20);
        let (window, k) = (3, 4);
        let sent = sentence(50, 20, 1);
        let batches = emit(&voc, window_settings(window, true, k, 1000), &sent, &mut Rng::new(9));
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        // Direct recomputation: window size, then the negatives drawn one target ahead.
        let mut rng = Rng::new(9);
        let mut pending: Vec<u32> = Vec::new();
        let mut row = 0;
        for pos in 0..sent.len() {
            let (lo, hi) = window_bounds(pos, sent.len(), window, true, &mut rng);
            if hi - lo < 2 {
                continue;
            }
            assert_eq!(b.targets[row], sent[pos] as i64);
            let ctx = &b.ids[row * 2 * window..(row + 1) * 2 * window];
            for r in -(window as isize)..=window as isize {
                if r == 0 {
                    continue;
                }
                let c = pos as isize + r;
                let want = if c >= lo as isize && c < hi as isize { sent[c as usize] as i64 } else { -1 };
                assert_eq!(ctx[offset_index(r, window)], want, "pos {pos} offset {r}");
            }
            if pending.is_empty() {
                pending = (0..k).map(|_| voc.negatives.sample(&mut rng)).collect();
            }
            let got: Vec<u32> = b.negatives[row * k..(row + 1) * k].iter().map(|&x| x as u32).collect();
            assert_eq!(got, pending);
            pending = (0..k).map(|_| voc.negatives.sample(&mut rng)).collect();
            row += 1;
        }
        assert_eq!(b.rows, row);
        assert_eq!(b.raw_words, sent.len() as u64);
    }

    /// The emitter consumes the generator exactly as CBOW and sentence-mode
    /// MoE do, sentence after sentence, so later sentences (and a resumed
    /// run) stay in step.
    #[test]
    fn generator_ends_where_the_models_leave_it() {
        let voc = vocab(20);
        let (d, v, k) = (4, 20, 3);
        let spec = OutputSpec { negative: k, hs: false, softmax: false };
        for (seed, len) in [(3u64, 1usize), (4, 2), (5, 37), (6, 400)] {
            let sent = sentence(len, v as u32, seed);
            let (mut syn0, mut beta) = (vec![0.01f32; v * d], vec![0f32; v * d]);
            let out = OutputLayer { beta: Hogwild::new(&mut beta, d), syn1: Hogwild::empty(), bias: None, spec, vocab: &voc, sig: SigmoidTable::new() };
            let cbow = Cbow { syn0: Hogwild::new(&mut syn0, d), out, window: 4, shrink: true, cbow_mean: true, batch: 1 };
            let second = sentence(5, v as u32, seed + 100);
            let mut a = Rng::new(seed);
            let mut sc = cbow.scratch();
            cbow.train_sentence(&mut sc, &sent, 0.025, &mut a, false);
            cbow.train_sentence(&mut sc, &second, 0.025, &mut a, false);
            let mut b = Rng::new(seed);
            emit_all(&voc, window_settings(4, true, k, 7), &[&sent, &second], &mut b);
            assert_eq!(a.state(), b.state(), "window layout, sentence of {len}");

            let max_len = 8;
            let (mut alpha, mut beta2, mut pv) = (vec![0.01f32; v * d], vec![0f32; v * d], vec![0f32; max_len * d]);
            let (mut q, mut key, mut pk) = (vec![0f32; max_len * 2], vec![0f32; v * 2], vec![0f32; max_len * 2]);
            let out = OutputLayer { beta: Hogwild::new(&mut beta2, d), syn1: Hogwild::empty(), bias: None, spec, vocab: &voc, sig: SigmoidTable::new() };
            let moe = Moe {
                alpha: Hogwild::new(&mut alpha, d),
                gates: Gates::Absolute { query: Hogwild::new(&mut q, 2), key: Hogwild::new(&mut key, 2), pos_key: Hogwild::new(&mut pk, 2), max_len },
                offset_value: Hogwild::new(&mut pv, d),
                mask_gate: Hogwild::empty(),
                mask_value: Hogwild::empty(),
                out,
                heads: 1,
                full: false,
                window: 0,
                shrink: false,
                batch: 1,
            };
            let mut a = Rng::new(seed);
            let mut sc = moe.scratch();
            moe.train_sentence(&mut sc, &sent, 0.025, &mut a, false);
            moe.train_sentence(&mut sc, &second, 0.025, &mut a, false);
            let mut b = Rng::new(seed);
            let s = BatchSettings { layout: Layout::Sentence { max_len }, negative: k, batch_targets: 20, prefetch: 1000 };
            emit_all(&voc, s, &[&sent, &second], &mut b);
            assert_eq!(a.state(), b.state(), "sentence layout, sentence of {len}");
        }
    }

    #[test]
    fn every_position_with_context_is_one_target_and_batches_are_full() {
        let voc = vocab(20);
        for len in [1usize, 2, 3, 10, 101] {
            let sent = sentence(len, 20, len as u64);
            let batches = emit(&voc, window_settings(2, false, 0, 16), &sent, &mut Rng::new(1));
            let targets: Vec<i64> = batches.iter().flat_map(|b| b.targets.iter().copied()).collect();
            let with_context = if len >= 2 { len } else { 0 };
            assert_eq!(targets, sent.iter().take(with_context).map(|&w| w as i64).collect::<Vec<_>>());
            for b in &batches[..batches.len() - 1] {
                assert_eq!(b.rows, 16);
            }
            assert!(batches.iter().all(|b| b.negatives.is_empty() && b.ids.len() == b.rows * 4));
            assert_eq!(batches.iter().map(|b| b.raw_words).sum::<u64>(), len as u64);
            // Shrink off: each row holds every neighbour within the window.
            let ids: Vec<i64> = batches.iter().flat_map(|b| b.ids.iter().copied()).collect();
            for pos in 0..with_context {
                for (j, r) in [-2isize, -1, 1, 2].into_iter().enumerate() {
                    let c = pos as isize + r;
                    let want = if c >= 0 && (c as usize) < len { sent[c as usize] as i64 } else { -1 };
                    assert_eq!(ids[pos * 4 + j], want);
                }
            }
        }
    }

    #[test]
    fn sentence_layout_cuts_chunks_and_bounds_batch_words() {
        let voc = vocab(30);
        let sent: Vec<u32> = (0..13).collect();
        let s = BatchSettings { layout: Layout::Sentence { max_len: 4 }, negative: 2, batch_targets: 6, prefetch: 1000 };
        // Chunks of 4, 4, 4 and a 1-word chunk (dropped); 4 + 4 > 6: one chunk
        // per batch. The sentence's words go with the batch where it ended.
        let batches = emit(&voc, s, &sent, &mut Rng::new(2));
        assert_eq!(batches.len(), 3);
        for (i, b) in batches.iter().enumerate() {
            assert_eq!((b.rows, b.n_targets), (1, 4));
            assert_eq!(b.ids, (4 * i as i64..4 * i as i64 + 4).collect::<Vec<_>>());
            assert_eq!(b.negatives.len(), 4 * 2);
            assert_eq!(b.raw_words, if i == 2 { 13 } else { 0 });
        }

        let sent: Vec<u32> = (0..10).collect();
        let s = BatchSettings { layout: Layout::Sentence { max_len: 4 }, negative: 1, batch_targets: 6, prefetch: 1000 };
        // Chunks 4, 4, 2: [4] then [4, 2] (6 words fit, the batch is full);
        // the worker's last batch carries only the sentence's words.
        let batches = emit(&voc, s, &sent, &mut Rng::new(2));
        assert_eq!(batches.len(), 3);
        assert_eq!((batches[1].rows, batches[1].n_targets, batches[1].raw_words), (2, 6, 0));
        assert_eq!((batches[2].rows, batches[2].raw_words, batches[2].lr), (0, 10, 0.025));
        assert_eq!(batches[1].ids, vec![4, 5, 6, 7, 8, 9, -1, -1]);
        assert_eq!(&batches[1].negatives[6..], &[-1, -1]);
        assert!(batches[1].negatives[..6].iter().all(|&n| (0..30).contains(&n)));
    }

    #[test]
    fn huffman_arrays_pad_every_path() {
        let voc = vocab(9);
        let h = voc.huffman.as_ref().unwrap();
        let a = huffman_arrays(h);
        let depth = h.codes.iter().map(Vec::len).max().unwrap();
        assert_eq!(a.depth, depth);
        for w in 0..9 {
            let n = h.codes[w].len();
            assert_eq!(a.lengths[w], n as i64);
            for j in 0..depth {
                let (c, p) = (a.codes[w * depth + j], a.points[w * depth + j]);
                if j < n {
                    assert_eq!((c, p), (h.codes[w][j] as i8, h.points[w][j] as i64));
                } else {
                    assert_eq!((c, p), (0, -1));
                }
            }
        }
    }

    fn write_corpus(name: &str, lines: usize) -> (std::path::PathBuf, u64) {
        let path = std::env::temp_dir().join(format!("bidirmoe_batches_{}_{name}.txt", std::process::id()));
        let mut text = String::new();
        let mut words = 0;
        for i in 0..lines {
            let n = 1 + i % 9;
            for j in 0..n {
                text.push_str(&format!("w{} ", (i * 7 + j * 3) % 25));
            }
            text.push_str(if i % 5 == 0 { "oov\n" } else { "\n" });
            words += n as u64 + (i % 5 == 0) as u64;
        }
        std::fs::write(&path, text).unwrap();
        (path, words)
    }

    fn config(workers: usize) -> TrainConfig {
        TrainConfig {
            workers,
            alpha: 0.025,
            min_alpha: 0.0001,
            total_words: 1000,
            words_before: 0,
            seed: 3,
            epoch: 0,
            want_loss: false,
            tick: Duration::from_millis(5),
            max_words: 0,
            resume: Vec::new(),
            hot: Default::default(),
        }
    }

    /// Take batches until the end (cancelling after `stop_after` batches):
    /// the targets, contexts and negatives in order, and the corpus words.
    fn drain(s: &BatchStream, stop_after: Option<usize>) -> ([Vec<i64>; 3], u64) {
        let (mut got, mut raw, mut n) = ([Vec::new(), Vec::new(), Vec::new()], 0, 0);
        loop {
            match s.next(Duration::from_millis(20)) {
                Next::Batch(b) => {
                    got[0].extend(b.targets);
                    got[1].extend(b.ids);
                    got[2].extend(b.negatives);
                    raw += b.raw_words;
                    n += 1;
                    if Some(n) == stop_after {
                        s.cancel();
                    }
                }
                Next::Waiting => {}
                Next::End => return (got, raw),
                Next::Failed(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_cancelled_stream_resumes_with_exactly_the_rest() {
        let voc = Arc::new(vocab(25));
        let (path, words) = write_corpus("resume", 3000);
        let settings = BatchSettings { layout: Layout::Window { window: 2, shrink: false }, negative: 2, batch_targets: 64, prefetch: 2 };
        for workers in [1, 2] {
            let full = BatchStream::start(voc.clone(), StreamSource::File(FileSplit::new(&path, workers).unwrap()), settings, config(workers)).unwrap();
            let (mut all, raw) = drain(&full, None);
            assert_eq!(raw, words);
            assert_eq!(full.finish().unwrap().0, words);

            let first = BatchStream::start(voc.clone(), StreamSource::File(FileSplit::new(&path, workers).unwrap()), settings, config(workers)).unwrap();
            let (mut got, raw1) = drain(&first, Some(5));
            assert!(raw1 < words, "the cancel stopped the run early");
            let (split, states) = first.resume_state().unwrap().unwrap();
            assert_eq!(first.finish().unwrap().0, raw1);
            let mut cfg = config(workers);
            cfg.resume = states;
            let second = BatchStream::start(voc.clone(), StreamSource::File(FileSplit::resume(&path, workers, &split).unwrap()), settings, cfg).unwrap();
            let (rest, raw2) = drain(&second, None);
            assert_eq!(raw1 + raw2, words);
            for (g, r) in got.iter_mut().zip(rest) {
                g.extend(r);
            }
            if workers == 1 {
                assert_eq!(got, all, "one worker: the same examples in the same order");
            }
            got[0].sort_unstable();
            all[0].sort_unstable();
            assert_eq!(got[0], all[0]);
        }
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn finishing_early_discards_and_refuses_a_resume_state() {
        let voc = Arc::new(vocab(25));
        let (path, _) = write_corpus("early", 3000);
        let settings = BatchSettings { layout: Layout::Window { window: 2, shrink: true }, negative: 0, batch_targets: 16, prefetch: 1 };
        let s = BatchStream::start(voc, StreamSource::File(FileSplit::new(&path, 2).unwrap()), settings, config(2)).unwrap();
        assert!(matches!(s.next(Duration::from_secs(5)), Next::Batch(_)));
        assert!(s.resume_state().is_err(), "still running");
        s.finish().unwrap();
        assert!(s.discarded() > 0);
        assert!(s.resume_state().unwrap_err().contains("discarded"));
        assert!(matches!(s.next(Duration::ZERO), Next::End));
        std::fs::remove_file(path).ok();
    }
}
