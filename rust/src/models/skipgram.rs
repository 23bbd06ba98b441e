//! Skip-gram (Mikolov et al. 2013): each context word's vector predicts the
//! word at j. The context words of one position share their negatives and are
//! scored as one small matrix product (pWord2Vec, Ji et al. 2016).
//!
//! With `batch > 1` (negative sampling alone) the (context, target) pairs of
//! B consecutive positions form one mini-batch sharing a single draw of
//! negatives (`OutputLayer::negative_batch`): each negative row is loaded once
//! per B windows instead of once per window. `batch = 1` keeps one draw per
//! window.

use super::{publish_rows, window_and_prefetch, HotSpec, Model, Privatized};
use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;

pub struct SkipGram<'a> {
    pub syn0: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub window: usize,
    pub shrink: bool,
    /// Target positions per mini-batch (1: one draw of negatives per window).
    pub batch: usize,
}

pub struct SkipGramScratch {
    /// Input rows of the batch's pairs, rows x d.
    h: Vec<f32>,
    grad: Vec<f32>,
    /// Per pair: the word it predicts, and the context word it updates.
    targets: Vec<u32>,
    inputs: Vec<u32>,
    out: OutputScratch,
    /// Private hot rows (a worker of several; `Model::worker_scratch`).
    hot: Option<Box<Privatized>>,
}

impl SkipGramScratch {
    /// The output layer's scratch (tests record the negatives through it).
    pub fn output(&mut self) -> &mut OutputScratch {
        &mut self.out
    }
}

impl SkipGram<'_> {
    /// This model with a worker's private rows (`Hogwild::with_hot`).
    fn with_hot<'b>(&'b self, hot: &'b mut Privatized) -> SkipGram<'b> {
        let (input, output) = (&mut hot.input, &mut hot.output);
        SkipGram { syn0: self.syn0.with_hot(input), out: self.out.with_hot(output), ..*self }
    }

    fn batched(&self) -> bool {
        self.batch > 1 && self.out.batchable()
    }

    /// Train the gathered pairs and empty the batch.
    fn flush(&self, sc: &mut SkipGramScratch, lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        let (d, n) = (self.syn0.cols(), sc.targets.len());
        if n == 0 {
            return 0.0;
        }
        let grad = &mut sc.grad[..n * d];
        grad.fill(0.0);
        let loss = self.out.negative_batch(&sc.h[..n * d], &sc.targets, lr, grad, &mut sc.out, rng, want_loss);
        for (i, &w) in sc.inputs.iter().enumerate() {
            self.syn0.add_to_row(w as usize, 1.0, &grad[i * d..(i + 1) * d]);
        }
        sc.targets.clear();
        sc.inputs.clear();
        loss as f64
    }
}

impl Model for SkipGram<'_> {
    type Scratch = SkipGramScratch;

    fn scratch(&self) -> SkipGramScratch {
        let d = self.syn0.cols();
        let rows = 2 * self.window * self.batch.max(1);
        SkipGramScratch {
            h: vec![0.0; rows * d],
            grad: vec![0.0; rows * d],
            targets: Vec::with_capacity(rows),
            inputs: Vec::with_capacity(rows),
            out: OutputScratch::new(self.syn0.rows(), &self.out.spec, rows),
            hot: None,
        }
    }

    fn worker_scratch(&self, hot: HotSpec) -> SkipGramScratch {
        SkipGramScratch { hot: Privatized::new(hot, &self.syn0, &self.out), ..self.scratch() }
    }

    fn train_sentence(&self, sc: &mut SkipGramScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        let Some(mut hot) = sc.hot.take() else { return self.train(sc, sent, lr, rng, want_loss) };
        let done = self.with_hot(&mut hot).train(sc, sent, lr, rng, want_loss);
        hot.trained(done.1, &self.syn0, &self.out, None);
        sc.hot = Some(hot);
        done
    }

    fn publish(&self, sc: &mut SkipGramScratch) {
        publish_rows(&mut sc.hot, &self.syn0, &self.out, None);
    }
}

impl SkipGram<'_> {
    /// One sentence (`Model::train_sentence`) on this model's rows as given.
    fn train(&self, sc: &mut SkipGramScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
        let d = self.syn0.cols();
        let mut loss = 0.0f64;
        let mut examples = 0;
        if self.batched() {
            let mut positions = 0;
            for pos in 0..sent.len() {
                let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
                for c in lo..hi {
                    if c != pos {
                        let n = sc.targets.len();
                        sc.h[n * d..(n + 1) * d].copy_from_slice(self.syn0.row(sent[c] as usize));
                        sc.targets.push(sent[pos]);
                        sc.inputs.push(sent[c]);
                        examples += 1;
                    }
                }
                positions += 1;
                if positions == self.batch {
                    loss += self.flush(sc, lr, rng, want_loss);
                    positions = 0;
                }
            }
            loss += self.flush(sc, lr, rng, want_loss);
            return (loss, examples);
        }
        for pos in 0..sent.len() {
            let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
            let mut n = 0;
            for c in lo..hi {
                if c != pos {
                    sc.h[n * d..(n + 1) * d].copy_from_slice(self.syn0.row(sent[c] as usize));
                    n += 1;
                }
            }
            if n == 0 {
                continue;
            }
            let grad = &mut sc.grad[..n * d];
            grad.fill(0.0);
            loss += self.out.step(&sc.h[..n * d], n, sent[pos], lr, grad, &mut sc.out, rng, want_loss) as f64;
            let mut i = 0;
            for c in lo..hi {
                if c != pos {
                    self.syn0.add_to_row(sent[c] as usize, 1.0, &grad[i * d..(i + 1) * d]);
                    i += 1;
                }
            }
            examples += n as u64;
        }
        (loss, examples)
    }
}
