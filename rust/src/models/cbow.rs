//! CBOW (Mikolov et al. 2013): predict the word at j from the sum or mean of
//! its context vectors, h = Σ_m alpha[w_m] (/|C| when `cbow_mean`).
//!
//! With `batch > 1` (and negative sampling alone) B consecutive targets of a
//! sentence form one mini-batch (HogBatch, Ji et al. 2016): their hidden
//! vectors are all taken from the input vectors as they were before the
//! batch, the output layer scores them against one shared draw of negatives
//! (`OutputLayer::negative_batch`), and then each target's gradient goes back
//! into its context words. `batch = 1` is word2vec's exact per-target update.

use super::{publish_rows, window_and_prefetch, HotSpec, Model, Privatized};
use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;
use crate::simd::{axpy, scale};

pub struct Cbow<'a> {
    /// Input (context) vectors, gensim's `wv.vectors` / SPEC's `alpha`.
    pub syn0: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub window: usize,
    pub shrink: bool,
    pub cbow_mean: bool,
    /// Targets per mini-batch (1: the exact per-target update).
    pub batch: usize,
}

pub struct CbowScratch {
    /// Hidden vectors of the batch's targets, B x d.
    h: Vec<f32>,
    grad: Vec<f32>,
    targets: Vec<u32>,
    /// Per batch row: (window start, window end, target position, 1/|C|).
    spans: Vec<(usize, usize, usize, f32)>,
    out: OutputScratch,
    /// Private hot rows (a worker of several; `Model::worker_scratch`).
    hot: Option<Box<Privatized>>,
}

impl CbowScratch {
    /// The output layer's scratch (tests record the negatives through it).
    pub fn output(&mut self) -> &mut OutputScratch {
        &mut self.out
    }
}

impl Cbow<'_> {
    /// This model with a worker's private rows (`Hogwild::with_hot`).
    fn with_hot<'b>(&'b self, hot: &'b mut Privatized) -> Cbow<'b> {
        let (input, output) = (&mut hot.input, &mut hot.output);
        Cbow { syn0: self.syn0.with_hot(input), out: self.out.with_hot(output), ..*self }
    }

    fn batched(&self) -> bool {
        self.batch > 1 && self.out.batchable()
    }

    /// The hidden vector of the target at `pos` (window lo..hi) into `h`;
    /// returns 1/|C|, or None for an empty context.
    fn hidden(&self, sent: &[u32], pos: usize, lo: usize, hi: usize, h: &mut [f32]) -> Option<f32> {
        h.fill(0.0);
        let mut count = 0usize;
        for c in lo..hi {
            if c != pos {
                axpy(1.0, self.syn0.row(sent[c] as usize), h);
                count += 1;
            }
        }
        if count == 0 {
            return None;
        }
        let inv = 1.0 / count as f32;
        if self.cbow_mean {
            scale(inv, h);
        }
        Some(inv)
    }

    /// Push a target's gradient into its context words. gensim: with a
    /// summed context the error is spread over the words; with the mean
    /// every word gets the full error (word2vec's update).
    fn backward(&self, sent: &[u32], (lo, hi, pos, inv): (usize, usize, usize, f32), grad: &mut [f32]) {
        if !self.cbow_mean {
            scale(inv, grad);
        }
        for c in lo..hi {
            if c != pos {
                self.syn0.add_to_row(sent[c] as usize, 1.0, grad);
            }
        }
    }

    /// Train the batch gathered in the scratch and empty it.
    fn flush(&self, sc: &mut CbowScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        let (d, b) = (self.syn0.cols(), sc.targets.len());
        if b == 0 {
            return 0.0;
        }
        let grad = &mut sc.grad[..b * d];
        grad.fill(0.0);
        let loss = self.out.negative_batch(&sc.h[..b * d], &sc.targets, lr, grad, &mut sc.out, rng, want_loss);
        for (i, &span) in sc.spans.iter().enumerate() {
            self.backward(sent, span, &mut grad[i * d..(i + 1) * d]);
        }
        sc.targets.clear();
        sc.spans.clear();
        loss as f64
    }
}

impl Model for Cbow<'_> {
    type Scratch = CbowScratch;

    fn scratch(&self) -> CbowScratch {
        let (d, b) = (self.syn0.cols(), self.batch.max(1));
        CbowScratch {
            h: vec![0.0; b * d],
            grad: vec![0.0; b * d],
            targets: Vec::with_capacity(b),
            spans: Vec::with_capacity(b),
            out: OutputScratch::new(self.syn0.rows(), &self.out.spec, b),
            hot: None,
        }
    }

    fn worker_scratch(&self, hot: HotSpec) -> CbowScratch {
        CbowScratch { hot: Privatized::new(hot, &self.syn0, &self.out), ..self.scratch() }
    }

    fn train_sentence(&self, sc: &mut CbowScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        let Some(mut hot) = sc.hot.take() else { return self.train(sc, sent, lr, rng, want_loss) };
        let done = self.with_hot(&mut hot).train(sc, sent, lr, rng, want_loss);
        hot.trained(done.1, &self.syn0, &self.out, None);
        sc.hot = Some(hot);
        done
    }

    fn publish(&self, sc: &mut CbowScratch) {
        publish_rows(&mut sc.hot, &self.syn0, &self.out, None);
    }
}

impl Cbow<'_> {
    /// One sentence (`Model::train_sentence`) on this model's rows as given.
    fn train(&self, sc: &mut CbowScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
        let d = self.syn0.cols();
        let mut loss = 0.0f64;
        let mut examples = 0;
        if self.batched() {
            for pos in 0..sent.len() {
                let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
                let i = sc.targets.len();
                let Some(inv) = self.hidden(sent, pos, lo, hi, &mut sc.h[i * d..(i + 1) * d]) else { continue };
                sc.targets.push(sent[pos]);
                sc.spans.push((lo, hi, pos, inv));
                examples += 1;
                if sc.targets.len() == self.batch {
                    loss += self.flush(sc, sent, lr, rng, want_loss);
                }
            }
            loss += self.flush(sc, sent, lr, rng, want_loss);
            return (loss, examples);
        }
        if self.out.has_cbow_kernel(&self.syn0) {
            // The same update in one register-resident kernel per target.
            for pos in 0..sent.len() {
                let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
                if hi - lo < 2 {
                    continue; // no context word besides the target
                }
                let l = self.out.cbow_target(&self.syn0, &sent[lo..hi], pos - lo, self.cbow_mean, sent[pos], lr, &mut sc.out, rng, want_loss);
                loss += l as f64;
                examples += 1;
            }
            return (loss, examples);
        }
        for pos in 0..sent.len() {
            let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
            let Some(inv) = self.hidden(sent, pos, lo, hi, &mut sc.h[..d]) else { continue };
            sc.grad[..d].fill(0.0);
            loss += self.out.step(&sc.h[..d], 1, sent[pos], lr, &mut sc.grad[..d], &mut sc.out, rng, want_loss) as f64;
            self.backward(sent, (lo, hi, pos, inv), &mut sc.grad[..d]);
            examples += 1;
        }
        (loss, examples)
    }
}
