//! Skip-gram (Mikolov et al. 2013): each context word's vector predicts the
//! word at j. The context words of one position share their negatives and are
//! scored as one small matrix product (pWord2Vec, Ji et al. 2016).

use super::{window_and_prefetch, Model};
use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;

pub struct SkipGram<'a> {
    pub syn0: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub window: usize,
    pub shrink: bool,
}

pub struct SkipGramScratch {
    h: Vec<f32>,
    grad: Vec<f32>,
    out: OutputScratch,
}

impl Model for SkipGram<'_> {
    type Scratch = SkipGramScratch;

    fn scratch(&self) -> SkipGramScratch {
        let d = self.syn0.cols();
        let rows = 2 * self.window;
        SkipGramScratch {
            h: vec![0.0; rows * d],
            grad: vec![0.0; rows * d],
            out: OutputScratch::new(self.syn0.rows(), &self.out.spec, rows),
        }
    }

    fn train_sentence(&self, sc: &mut SkipGramScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
        let d = self.syn0.cols();
        let mut loss = 0.0f64;
        let mut examples = 0;
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
