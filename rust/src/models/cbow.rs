//! CBOW (Mikolov et al. 2013): predict the word at j from the sum or mean of
//! its context vectors, h = Σ_m alpha[w_m] (/|C| when `cbow_mean`).

use super::{window_and_prefetch, Model};
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
}

pub struct CbowScratch {
    h: Vec<f32>,
    grad: Vec<f32>,
    out: OutputScratch,
}

impl Model for Cbow<'_> {
    type Scratch = CbowScratch;

    fn scratch(&self) -> CbowScratch {
        let d = self.syn0.cols();
        CbowScratch { h: vec![0.0; d], grad: vec![0.0; d], out: OutputScratch::new(self.syn0.rows(), &self.out.spec, 1) }
    }

    fn train_sentence(&self, sc: &mut CbowScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
        let mut loss = 0.0f64;
        let mut examples = 0;
        for pos in 0..sent.len() {
            let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.syn0, &self.out);
            sc.h.fill(0.0);
            let mut count = 0usize;
            for c in lo..hi {
                if c != pos {
                    axpy(1.0, self.syn0.row(sent[c] as usize), &mut sc.h);
                    count += 1;
                }
            }
            if count == 0 {
                continue;
            }
            let inv = 1.0 / count as f32;
            if self.cbow_mean {
                scale(inv, &mut sc.h);
            }
            sc.grad.fill(0.0);
            loss += self.out.step(&sc.h, 1, sent[pos], lr, &mut sc.grad, &mut sc.out, rng, want_loss) as f64;
            // gensim: with a summed context the error is spread over the words;
            // with the mean every word gets the full error (word2vec's update).
            if !self.cbow_mean {
                scale(inv, &mut sc.grad);
            }
            for c in lo..hi {
                if c != pos {
                    self.syn0.add_to_row(sent[c] as usize, 1.0, &sc.grad);
                }
            }
            examples += 1;
        }
        (loss, examples)
    }
}
