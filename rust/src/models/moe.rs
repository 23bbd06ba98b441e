//! CBOW-MoE (SPEC "Model 1", window mode): the reparameterised single-layer
//! bidirectional attention. The context words of target j are experts mixed
//! by per-head MoE weights instead of a plain average:
//!
//!   l_h(m)   = salience[h, w_m] + offset_gate[h, r_m]          (gate logit)
//!   θ_h(m)   = softmax_m l_h(m)                                (MoE weights)
//!   x(m)     = alpha[w_m] + offset_value[r_m]                  (expert m's vector)
//!   z_h      = Σ_m θ_h(m) x(m)[head h]                         (head h's mixture)
//!   z        = concat_h z_h  ("slice")  |  Σ_h z_h  ("full")
//!   p(k | ·) ∝ exp(beta[k] · z)                                (shared output layer)
//!
//! plus, optionally, the mask expert (gate `mask_gate[h]`, value
//! `mask_value`): the masked position attending to itself.
//!
//! Value layout: every value row (alpha, offset_value, mask_value) has
//! `D_in` columns. With `head_values = "slice"`, D_in = d and head h owns
//! columns [h·d/H, (h+1)·d/H) — its slice of z. With "full", D_in = H·d, head
//! h owns the block [h·d, (h+1)·d) and the heads' outputs are summed.
//!
//! Gradients (g = lr · ∂log p/∂z from the output layer, g_h its head-h part):
//!   ∂x(m)[head h] += θ_h(m) g_h      → alpha[w_m], offset_value[r_m]
//!   ∂l_h(m)        = θ_h(m) (g_h · x(m)_h − g_h · z_h) → salience, offset_gate
//! The offset and mask parameters are small and touched by every target, so
//! each thread accumulates their gradients and applies them every
//! `SHARED_FLUSH` targets instead of fighting over the same cache lines.

use super::{window_bounds, Model};
use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;
use crate::simd::{axpy, dot, prefetch};

/// Targets between applications of a thread's offset/mask gradients.
const SHARED_FLUSH: u32 = 64;

pub struct Moe<'a> {
    /// Context value vectors, V x D_in (SPEC `alpha`).
    pub alpha: Hogwild<'a>,
    /// Gate score per head and word, H x V.
    pub salience: Hogwild<'a>,
    /// Gate score per head and offset, H x R.
    pub offset_gate: Hogwild<'a>,
    /// Value per offset, R x D_in.
    pub offset_value: Hogwild<'a>,
    /// Mask expert gate, 1 x H (empty when off).
    pub mask_gate: Hogwild<'a>,
    /// Mask expert value, 1 x D_in (empty when off).
    pub mask_value: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub heads: usize,
    /// true: "full" head values (D_in = H·d); false: "slice".
    pub full: bool,
    pub window: usize,
    pub shrink: bool,
}

pub struct MoeScratch {
    /// Expert vectors x(m), n x D_in.
    x: Vec<f32>,
    /// Expert gradients, n x D_in.
    dx: Vec<f32>,
    /// MoE weights θ_h(m), H x n.
    theta: Vec<f32>,
    /// Per-head mixtures z_h, H x s.
    zh: Vec<f32>,
    z: Vec<f32>,
    grad: Vec<f32>,
    words: Vec<u32>,
    offsets: Vec<u32>,
    /// Pending gradients of the shared small parameters.
    d_offset_gate: Vec<f32>,
    d_offset_value: Vec<f32>,
    d_mask_gate: Vec<f32>,
    d_mask_value: Vec<f32>,
    pending: u32,
    out: OutputScratch,
}

/// Offset r (−window..−1, 1..window) → row index 0..2·window.
#[inline]
pub fn offset_index(r: isize, window: usize) -> usize {
    if r < 0 {
        (r + window as isize) as usize
    } else {
        (r + window as isize - 1) as usize
    }
}

impl Moe<'_> {
    fn d(&self) -> usize {
        self.out.dim()
    }
    fn d_in(&self) -> usize {
        self.alpha.cols()
    }
    /// Width of one head's value block.
    fn s(&self) -> usize {
        if self.full {
            self.d()
        } else {
            self.d() / self.heads
        }
    }
    fn has_mask(&self) -> bool {
        self.mask_value.rows() > 0
    }
    fn r(&self) -> usize {
        self.offset_gate.cols()
    }

    /// Apply a thread's accumulated offset/mask gradients to the shared parameters.
    fn flush_shared(&self, sc: &mut MoeScratch) {
        if sc.pending == 0 {
            return;
        }
        let (r, d_in, h) = (self.r(), self.d_in(), self.heads);
        for hh in 0..h {
            axpy(1.0, &sc.d_offset_gate[hh * r..(hh + 1) * r], self.offset_gate.row_mut(hh));
        }
        for k in 0..r {
            axpy(1.0, &sc.d_offset_value[k * d_in..(k + 1) * d_in], self.offset_value.row_mut(k));
        }
        if self.has_mask() {
            axpy(1.0, &sc.d_mask_gate, self.mask_gate.row_mut(0));
            axpy(1.0, &sc.d_mask_value, self.mask_value.row_mut(0));
            sc.d_mask_gate.fill(0.0);
            sc.d_mask_value.fill(0.0);
        }
        sc.d_offset_gate.fill(0.0);
        sc.d_offset_value.fill(0.0);
        sc.pending = 0;
    }

    /// Forward pass for one target given its experts (`sc.words`, `sc.offsets`;
    /// the mask expert last when enabled): fills x, theta, zh and z.
    pub fn forward(&self, sc: &mut MoeScratch) {
        let (d, d_in, s, h) = (self.d(), self.d_in(), self.s(), self.heads);
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        for m in 0..nc {
            let xm = &mut sc.x[m * d_in..(m + 1) * d_in];
            xm.copy_from_slice(self.alpha.row(sc.words[m] as usize));
            axpy(1.0, self.offset_value.row(sc.offsets[m] as usize), xm);
        }
        if self.has_mask() {
            sc.x[nc * d_in..n * d_in].copy_from_slice(self.mask_value.row(0));
        }
        sc.z[..d].fill(0.0);
        for hh in 0..h {
            let th = &mut sc.theta[hh * n..(hh + 1) * n];
            let sal = self.salience.row(hh);
            let og = self.offset_gate.row(hh);
            let mut mx = f32::NEG_INFINITY;
            for m in 0..nc {
                th[m] = sal[sc.words[m] as usize] + og[sc.offsets[m] as usize];
                mx = mx.max(th[m]);
            }
            if self.has_mask() {
                th[nc] = self.mask_gate.row(0)[hh];
                mx = mx.max(th[nc]);
            }
            let mut tot = 0.0f32;
            for t in th.iter_mut() {
                *t = (*t - mx).exp();
                tot += *t;
            }
            let inv = 1.0 / tot;
            let zh = &mut sc.zh[hh * s..(hh + 1) * s];
            zh.fill(0.0);
            for (m, t) in th.iter_mut().enumerate() {
                *t *= inv;
                axpy(*t, &sc.x[m * d_in + hh * s..m * d_in + (hh + 1) * s], zh);
            }
            if self.full {
                axpy(1.0, zh, &mut sc.z[..d]);
            } else {
                sc.z[hh * s..(hh + 1) * s].copy_from_slice(zh);
            }
        }
    }

    /// Backward pass given g = lr·∂log p/∂z in `sc.grad`: updates alpha and
    /// salience (shared, Hogwild) and accumulates the offset/mask gradients.
    fn backward(&self, sc: &mut MoeScratch) {
        let (d_in, s, h, r) = (self.d_in(), self.s(), self.heads, self.r());
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        sc.dx[..n * d_in].fill(0.0);
        for hh in 0..h {
            let gh = if self.full { &sc.grad[..s] } else { &sc.grad[hh * s..(hh + 1) * s] };
            let gz = dot(gh, &sc.zh[hh * s..(hh + 1) * s]);
            let th = &sc.theta[hh * n..(hh + 1) * n];
            let sal = self.salience.row_mut(hh);
            for m in 0..n {
                let col = m * d_in + hh * s;
                let a = dot(gh, &sc.x[col..col + s]);
                let dl = th[m] * (a - gz);
                axpy(th[m], gh, &mut sc.dx[col..col + s]);
                if m < nc {
                    sal[sc.words[m] as usize] += dl;
                    sc.d_offset_gate[hh * r + sc.offsets[m] as usize] += dl;
                } else {
                    sc.d_mask_gate[hh] += dl;
                }
            }
        }
        for m in 0..nc {
            let dxm = &sc.dx[m * d_in..(m + 1) * d_in];
            axpy(1.0, dxm, self.alpha.row_mut(sc.words[m] as usize));
            let o = sc.offsets[m] as usize;
            axpy(1.0, dxm, &mut sc.d_offset_value[o * d_in..(o + 1) * d_in]);
        }
        if self.has_mask() {
            axpy(1.0, &sc.dx[nc * d_in..n * d_in], &mut sc.d_mask_value);
        }
        sc.pending += 1;
        if sc.pending >= SHARED_FLUSH {
            self.flush_shared(sc);
        }
    }

    /// One example: forward, output layer, backward. Returns the loss.
    pub fn example(&self, sc: &mut MoeScratch, target: u32, lr: f32, rng: &mut Rng, want_loss: bool) -> f32 {
        let d = self.d();
        self.forward(sc);
        sc.grad[..d].fill(0.0);
        let loss = self.out.step(&sc.z[..d], 1, target, lr, &mut sc.grad[..d], &mut sc.out, rng, want_loss);
        self.backward(sc);
        loss
    }

    /// Finish: apply pending shared gradients (call at the end of a run).
    pub fn finish(&self, sc: &mut MoeScratch) {
        self.flush_shared(sc);
    }
}

impl Model for Moe<'_> {
    type Scratch = MoeScratch;

    fn scratch(&self) -> MoeScratch {
        let (d, d_in, h, r) = (self.d(), self.d_in(), self.heads, self.r());
        let n = 2 * self.window + 1;
        MoeScratch {
            x: vec![0.0; n * d_in],
            dx: vec![0.0; n * d_in],
            theta: vec![0.0; h * n],
            zh: vec![0.0; h * self.s()],
            z: vec![0.0; d],
            grad: vec![0.0; d],
            words: Vec::with_capacity(n),
            offsets: Vec::with_capacity(n),
            d_offset_gate: vec![0.0; h * r],
            d_offset_value: vec![0.0; r * d_in],
            d_mask_gate: vec![0.0; h],
            d_mask_value: vec![0.0; d_in],
            pending: 0,
            out: OutputScratch::new(self.alpha.rows(), &self.out.spec, 1),
        }
    }

    fn train_sentence(&self, sc: &mut MoeScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        let mut loss = 0.0f64;
        let mut examples = 0;
        for pos in 0..sent.len() {
            let (lo, hi) = window_bounds(pos, sent.len(), self.window, self.shrink, rng);
            if let Some(&w) = sent.get(pos + self.window + 1) {
                prefetch(self.alpha.row(w as usize));
            }
            if let Some(&w) = sent.get(pos + 1) {
                self.out.prefetch_target(w);
            }
            sc.words.clear();
            sc.offsets.clear();
            for c in lo..hi {
                if c != pos {
                    sc.words.push(sent[c]);
                    sc.offsets.push(offset_index(c as isize - pos as isize, self.window) as u32);
                }
            }
            if sc.words.is_empty() {
                continue;
            }
            loss += self.example(sc, sent[pos], lr, rng, want_loss) as f64;
            examples += 1;
        }
        (loss, examples)
    }

    fn end_worker(&self, sc: &mut MoeScratch) {
        self.finish(sc);
    }
}

/// Load one example's experts into the scratch (offsets as −window..window).
pub fn sc_set(sc: &mut MoeScratch, words: &[u32], offsets: &[isize], window: usize) {
    sc.words.clear();
    sc.offsets.clear();
    sc.words.extend_from_slice(words);
    sc.offsets.extend(offsets.iter().map(|&r| offset_index(r, window) as u32));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::OutputSpec;
    use crate::simd::SigmoidTable;
    use crate::vocab::{Vocab, VocabSettings};

    #[test]
    fn offset_index_covers_both_sides() {
        let w = 3;
        let got: Vec<usize> = [-3isize, -2, -1, 1, 2, 3].iter().map(|&r| offset_index(r, w)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);
    }

    /// Uniform gates, zero offsets and no mask expert: z is CBOW's mean.
    #[test]
    fn untrained_moe_is_cbow() {
        let (v, d, h, window) = (6, 8, 2, 2);
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (format!("w{i}"), 10 - i as u64)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let mut rng = Rng::new(1);
        let mut alpha: Vec<f32> = (0..v * d).map(|_| rng.unit_f32() - 0.5).collect();
        let mut beta = vec![0f32; v * d];
        let (mut sal, mut og, mut ov) = (vec![0f32; h * v], vec![0f32; h * 2 * window], vec![0f32; 2 * window * d]);
        let spec = OutputSpec { negative: 2, hs: false, softmax: false };
        let alpha_copy = alpha.clone();
        let m = Moe {
            alpha: Hogwild::new(&mut alpha, d),
            salience: Hogwild::new(&mut sal, v),
            offset_gate: Hogwild::new(&mut og, 2 * window),
            offset_value: Hogwild::new(&mut ov, d),
            mask_gate: Hogwild::empty(),
            mask_value: Hogwild::empty(),
            out: OutputLayer { beta: Hogwild::new(&mut beta, d), syn1: Hogwild::empty(), bias: None, spec, vocab: &voc, sig: SigmoidTable::new() },
            heads: h,
            full: false,
            window,
            shrink: false,
        };
        let mut sc = m.scratch();
        sc.words.extend([1, 3, 4]);
        sc.offsets.extend([0, 1, 2]);
        m.forward(&mut sc);
        for j in 0..d {
            let mean = (alpha_copy[d + j] + alpha_copy[3 * d + j] + alpha_copy[4 * d + j]) / 3.0;
            assert!((sc.z[j] - mean).abs() < 1e-6);
        }
    }
}
