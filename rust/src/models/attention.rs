//! Single-layer bidirectional attention in its original parameterisation
//! (SPEC "Model 2"): one layer, no feed-forward, no residual, no norm.
//!
//!   e_m = rho[w_m] + p[r_m]              (token + offset / position encoding)
//!   e_j = mask + p[r_j]                  (the masked target position)
//!   q_h = W_Q^h e_j,  k_m^h = W_K^h e_m,  v_m^h = W_V^h e_m
//!   a_h = softmax_m (q_h · k_m^h / sqrt(d_k))      over the context and j itself
//!   o   = W_O concat_h Σ_m a_h(m) v_m^h
//!   p(k | context) ∝ exp(beta[k] · o (+ bias[k]))   (shared output layer)
//!
//! Keys and values are linear in e_m, so per block of targets each token's
//! `W_K rho[w]`, `W_V rho[w]` and each encoding row's `W_K p[r]`, `W_V p[r]`
//! are computed once and reused by every target that sees them. Gradients are
//! accumulated per token and per encoding row; the outer products into the
//! weight matrices and the back-projections into rho / p / mask happen once
//! per block. A block of one target is exactly one SGD step.
//!
//! The dense parameters every target shares (W_Q, W_K, W_V, W_O, the encodings
//! and the mask embedding) are stepped with the block's *mean* gradient:
//! summing 32 targets' gradients at word2vec's learning rate makes them
//! diverge. Word rows (rho, beta) keep word2vec's per-example steps.
//!
//! Window mode: p has 2·window + 1 rows (offsets −window..window, row r +
//! window; the target sits at offset 0). Sentence mode: sentences are cut into
//! chunks of `max_len` words and p has `max_len` rows (absolute positions).

use super::{window_bounds, Model};
use crate::hogwild::Hogwild;
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;
use crate::simd::{axpy, dot};

/// Targets per block (between weight updates).
const BLOCK: usize = 32;

pub struct Attention<'a> {
    /// Word embeddings, V x d.
    pub rho: Hogwild<'a>,
    /// Offset (window) or position (sentence) encodings, P x d.
    pub pos: Hogwild<'a>,
    /// The [MASK] embedding, 1 x d.
    pub mask: Hogwild<'a>,
    /// Per-head projections stacked by head: (H·d_k) x d, (H·d_k) x d, (H·d_v) x d.
    pub wq: Hogwild<'a>,
    pub wk: Hogwild<'a>,
    pub wv: Hogwild<'a>,
    /// Output projection, d x (H·d_v).
    pub wo: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub window: usize,
    pub shrink: bool,
    /// Sentence mode chunk length (None: window mode).
    pub max_len: Option<usize>,
}

/// One target of a block: its position in the block's token span, its word,
/// its encoding row, and its experts (span index, encoding row).
struct Target {
    word: u32,
    self_row: usize,
    experts: Vec<(usize, usize)>,
}

pub struct AttentionScratch {
    // Per block: projections of the span's tokens and of every encoding row.
    kr: Vec<f32>, // span x H·dk
    vr: Vec<f32>, // span x H·dv
    kp: Vec<f32>, // P x H·dk
    vp: Vec<f32>, // P x H·dv
    km: Vec<f32>, // H·dk   (W_K mask)
    vm: Vec<f32>, // H·dv
    qm: Vec<f32>, // H·dk   (W_Q mask)
    qp: Vec<f32>, // P x H·dk (W_Q p[r])
    // Gradient accumulators for the block.
    dkr: Vec<f32>,
    dvr: Vec<f32>,
    dkp: Vec<f32>,
    dvp: Vec<f32>,
    dkm: Vec<f32>,
    dvm: Vec<f32>,
    dq: Vec<f32>, // P x H·dk: gradient w.r.t. q of targets at each encoding row
    dwo: Vec<f32>,
    dwq_buf: Vec<f32>,
    dwk_buf: Vec<f32>,
    dwv_buf: Vec<f32>,
    mask_copy: Vec<f32>,
    drho: Vec<f32>, // span x d
    dmask: Vec<f32>,
    dq_total: Vec<f32>,
    // Per target.
    q: Vec<f32>,
    k: Vec<f32>, // n x H·dk
    v: Vec<f32>, // n x H·dv
    a: Vec<f32>, // H x n
    u: Vec<f32>, // H·dv
    o: Vec<f32>, // d
    g: Vec<f32>, // d
    du: Vec<f32>,
    da: Vec<f32>,
    e: Vec<f32>,
    de: Vec<f32>,
    span_words: Vec<u32>,
    targets: Vec<Target>,
    out: OutputScratch,
}

impl Attention<'_> {
    fn d(&self) -> usize {
        self.rho.cols()
    }
    fn hk(&self) -> usize {
        self.heads * self.dk
    }
    fn hv(&self) -> usize {
        self.heads * self.dv
    }
    fn p_rows(&self) -> usize {
        self.pos.rows()
    }

    /// y = W x for a row-major W (rows x cols) given as a Hogwild matrix.
    fn project(w: &Hogwild<'_>, x: &[f32], y: &mut [f32]) {
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = dot(w.row(i), x);
        }
    }

    /// Start a block: project the span's tokens and every encoding row.
    fn begin_block(&self, sc: &mut AttentionScratch) {
        let (hk, hv) = (self.hk(), self.hv());
        let span = sc.span_words.len();
        for (i, &w) in sc.span_words.iter().enumerate() {
            let r = self.rho.row(w as usize);
            Self::project(&self.wk, r, &mut sc.kr[i * hk..(i + 1) * hk]);
            Self::project(&self.wv, r, &mut sc.vr[i * hv..(i + 1) * hv]);
        }
        for r in 0..self.p_rows() {
            let p = self.pos.row(r);
            Self::project(&self.wk, p, &mut sc.kp[r * hk..(r + 1) * hk]);
            Self::project(&self.wv, p, &mut sc.vp[r * hv..(r + 1) * hv]);
            Self::project(&self.wq, p, &mut sc.qp[r * hk..(r + 1) * hk]);
        }
        let m = self.mask.row(0);
        Self::project(&self.wk, m, &mut sc.km);
        Self::project(&self.wv, m, &mut sc.vm);
        Self::project(&self.wq, m, &mut sc.qm);
        sc.dkr[..span * hk].fill(0.0);
        sc.dvr[..span * hv].fill(0.0);
        sc.dkp.fill(0.0);
        sc.dvp.fill(0.0);
        sc.dkm.fill(0.0);
        sc.dvm.fill(0.0);
        sc.dq.fill(0.0);
        sc.dwo.fill(0.0);
    }

    /// Forward + output layer + backward for one target of the block.
    fn target(&self, sc: &mut AttentionScratch, t: usize, lr: f32, rng: &mut Rng, want_loss: bool) -> f32 {
        let (hk, hv, d, dk, dv, h) = (self.hk(), self.hv(), self.d(), self.dk, self.dv, self.heads);
        let (word, self_row) = (sc.targets[t].word, sc.targets[t].self_row);
        let nc = sc.targets[t].experts.len();
        let n = nc + 1; // the masked token attends to itself (last expert)
        let scale = 1.0 / (dk as f32).sqrt();
        // q = W_Q (mask + p[self]) = qm + qp[self]
        for i in 0..hk {
            sc.q[i] = sc.qm[i] + sc.qp[self_row * hk + i];
        }
        for (m, &(si, r)) in sc.targets[t].experts.iter().enumerate() {
            for i in 0..hk {
                sc.k[m * hk + i] = sc.kr[si * hk + i] + sc.kp[r * hk + i];
            }
            for i in 0..hv {
                sc.v[m * hv + i] = sc.vr[si * hv + i] + sc.vp[r * hv + i];
            }
        }
        for i in 0..hk {
            sc.k[nc * hk + i] = sc.km[i] + sc.kp[self_row * hk + i];
        }
        for i in 0..hv {
            sc.v[nc * hv + i] = sc.vm[i] + sc.vp[self_row * hv + i];
        }
        // Attention weights and head outputs.
        for hh in 0..h {
            let q = &sc.q[hh * dk..(hh + 1) * dk];
            let a = &mut sc.a[hh * n..(hh + 1) * n];
            let mut mx = f32::NEG_INFINITY;
            for m in 0..n {
                a[m] = dot(q, &sc.k[m * hk + hh * dk..m * hk + (hh + 1) * dk]) * scale;
                mx = mx.max(a[m]);
            }
            let mut tot = 0.0;
            for x in a.iter_mut() {
                *x = (*x - mx).exp();
                tot += *x;
            }
            let u = &mut sc.u[hh * dv..(hh + 1) * dv];
            u.fill(0.0);
            for m in 0..n {
                a[m] /= tot;
                axpy(a[m], &sc.v[m * hv + hh * dv..m * hv + (hh + 1) * dv], u);
            }
        }
        Self::project(&self.wo, &sc.u, &mut sc.o);
        sc.g.fill(0.0);
        let loss = self.out.step(&sc.o, 1, word, lr, &mut sc.g, &mut sc.out, rng, want_loss);
        // Backward. dW_O += g ⊗ u; du = W_O^T g.
        sc.du.fill(0.0);
        for i in 0..d {
            axpy(sc.g[i], self.wo.row(i), &mut sc.du);
            axpy(sc.g[i], &sc.u, &mut sc.dwo[i * hv..(i + 1) * hv]);
        }
        for hh in 0..h {
            let du = &sc.du[hh * dv..(hh + 1) * dv];
            let a = &sc.a[hh * n..(hh + 1) * n];
            let mut mean = 0.0;
            for m in 0..n {
                sc.da[m] = dot(du, &sc.v[m * hv + hh * dv..m * hv + (hh + 1) * dv]);
                mean += a[m] * sc.da[m];
            }
            let q = &sc.q[hh * dk..(hh + 1) * dk];
            for m in 0..n {
                let dl = a[m] * (sc.da[m] - mean) * scale;
                // d k_m = dl q ; d q += dl k_m ; d v_m = a_m du
                let km = &sc.k[m * hk + hh * dk..m * hk + (hh + 1) * dk];
                axpy(dl, km, &mut sc.dq[self_row * hk + hh * dk..self_row * hk + (hh + 1) * dk]);
                let (kcol, vcol) = (hh * dk, hh * dv);
                if m < nc {
                    let (si, r) = sc.targets[t].experts[m];
                    axpy(dl, q, &mut sc.dkr[si * hk + kcol..si * hk + kcol + dk]);
                    axpy(dl, q, &mut sc.dkp[r * hk + kcol..r * hk + kcol + dk]);
                    axpy(a[m], du, &mut sc.dvr[si * hv + vcol..si * hv + vcol + dv]);
                    axpy(a[m], du, &mut sc.dvp[r * hv + vcol..r * hv + vcol + dv]);
                } else {
                    axpy(dl, q, &mut sc.dkm[kcol..kcol + dk]);
                    axpy(dl, q, &mut sc.dkp[self_row * hk + kcol..self_row * hk + kcol + dk]);
                    axpy(a[m], du, &mut sc.dvm[vcol..vcol + dv]);
                    axpy(a[m], du, &mut sc.dvp[self_row * hv + vcol..self_row * hv + vcol + dv]);
                }
            }
        }
        loss
    }

    /// dW += dy ⊗ x and dx += W^T dy, for y = W x (W rows x cols). The weight
    /// update is applied after every back-projection of the block (see end_block).
    fn back(w: &Hogwild<'_>, dw: &mut [f32], dy: &[f32], x: &[f32], dx: &mut [f32]) {
        let cols = w.cols();
        for (i, &g) in dy.iter().enumerate() {
            if g != 0.0 {
                axpy(g, w.row(i), dx);
                axpy(g, x, &mut dw[i * cols..(i + 1) * cols]);
            }
        }
    }

    /// End a block: back-project the accumulated gradients into rho, p and
    /// mask, then update the weight matrices.
    fn end_block(&self, sc: &mut AttentionScratch, dwq: &mut [f32], dwk: &mut [f32], dwv: &mut [f32]) {
        let (hk, hv, d) = (self.hk(), self.hv(), self.d());
        let mean = 1.0 / sc.targets.len().max(1) as f32; // dense parameters: block-mean step
        dwq.fill(0.0);
        dwk.fill(0.0);
        dwv.fill(0.0);
        // Tokens: rho[w] += W_K^T dk + W_V^T dv (all computed before any row
        // changes, so a word seen twice in the block gets the exact gradient).
        let span = sc.span_words.len();
        sc.drho[..span * d].fill(0.0);
        for i in 0..span {
            let w = sc.span_words[i] as usize;
            let de = &mut sc.drho[i * d..(i + 1) * d];
            Self::back(&self.wk, dwk, &sc.dkr[i * hk..(i + 1) * hk], self.rho.row(w), de);
            Self::back(&self.wv, dwv, &sc.dvr[i * hv..(i + 1) * hv], self.rho.row(w), de);
        }
        for i in 0..span {
            axpy(1.0, &sc.drho[i * d..(i + 1) * d], self.rho.row_mut(sc.span_words[i] as usize));
        }
        // Encoding rows: as keys/values, and as the target's query input.
        sc.mask_copy.copy_from_slice(self.mask.row(0));
        sc.dmask.fill(0.0);
        sc.dq_total.fill(0.0);
        for r in 0..self.p_rows() {
            sc.e.copy_from_slice(self.pos.row(r));
            sc.de.fill(0.0);
            Self::back(&self.wk, dwk, &sc.dkp[r * hk..(r + 1) * hk], &sc.e, &mut sc.de);
            Self::back(&self.wv, dwv, &sc.dvp[r * hv..(r + 1) * hv], &sc.e, &mut sc.de);
            // q for targets at row r was W_Q (mask + p[r]).
            let dq = &sc.dq[r * hk..(r + 1) * hk];
            if dq.iter().any(|&x| x != 0.0) {
                for (i, &g) in dq.iter().enumerate() {
                    if g != 0.0 {
                        axpy(g, self.wq.row(i), &mut sc.de);
                        axpy(g, &sc.mask_copy, &mut dwq[i * d..(i + 1) * d]);
                        axpy(g, &sc.e, &mut dwq[i * d..(i + 1) * d]);
                    }
                }
                axpy(1.0, dq, &mut sc.dq_total);
            }
            axpy(mean, &sc.de, self.pos.row_mut(r));
        }
        // Mask: as the self-expert's key/value input and the query input.
        Self::back(&self.wk, dwk, &sc.dkm, &sc.mask_copy, &mut sc.dmask);
        Self::back(&self.wv, dwv, &sc.dvm, &sc.mask_copy, &mut sc.dmask);
        for (i, &g) in sc.dq_total.iter().enumerate() {
            if g != 0.0 {
                axpy(g, self.wq.row(i), &mut sc.dmask);
            }
        }
        axpy(mean, &sc.dmask, self.mask.row_mut(0));
        for (i, row) in dwq.chunks(d).enumerate() {
            axpy(mean, row, self.wq.row_mut(i));
        }
        for (i, row) in dwk.chunks(d).enumerate() {
            axpy(mean, row, self.wk.row_mut(i));
        }
        for (i, row) in dwv.chunks(d).enumerate() {
            axpy(mean, row, self.wv.row_mut(i));
        }
        for (i, row) in sc.dwo.chunks(hv).enumerate() {
            axpy(mean, row, self.wo.row_mut(i));
        }
    }

    /// Train one block whose targets and span are already in the scratch.
    pub fn run_block(&self, sc: &mut AttentionScratch, lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        self.begin_block(sc);
        let mut loss = 0.0;
        for t in 0..sc.targets.len() {
            loss += self.target(sc, t, lr, rng, want_loss) as f64;
        }
        let (mut dwq, mut dwk, mut dwv) = (
            std::mem::take(&mut sc.dwq_buf),
            std::mem::take(&mut sc.dwk_buf),
            std::mem::take(&mut sc.dwv_buf),
        );
        self.end_block(sc, &mut dwq, &mut dwk, &mut dwv);
        sc.dwq_buf = dwq;
        sc.dwk_buf = dwk;
        sc.dwv_buf = dwv;
        loss
    }

    /// Set up a one-target block from explicit experts (for gradient tests):
    /// `context` = (word, encoding row) pairs, the target's word and row.
    pub fn load_example(sc: &mut AttentionScratch, context: &[(u32, usize)], word: u32, self_row: usize) {
        sc.span_words.clear();
        sc.targets.clear();
        let mut experts = Vec::with_capacity(context.len());
        for (i, &(w, r)) in context.iter().enumerate() {
            sc.span_words.push(w);
            experts.push((i, r));
        }
        sc.targets.push(Target { word, self_row, experts });
    }
}

impl Model for Attention<'_> {
    type Scratch = AttentionScratch;

    fn scratch(&self) -> AttentionScratch {
        let (hk, hv, d, h) = (self.hk(), self.hv(), self.d(), self.heads);
        let p = self.p_rows();
        let n = match self.max_len {
            Some(l) => l,
            None => 2 * self.window + 1,
        };
        let span = match self.max_len {
            Some(l) => l,
            None => BLOCK + 2 * self.window,
        };
        AttentionScratch {
            kr: vec![0.0; span * hk],
            vr: vec![0.0; span * hv],
            kp: vec![0.0; p * hk],
            vp: vec![0.0; p * hv],
            km: vec![0.0; hk],
            vm: vec![0.0; hv],
            qm: vec![0.0; hk],
            qp: vec![0.0; p * hk],
            dkr: vec![0.0; span * hk],
            dvr: vec![0.0; span * hv],
            dkp: vec![0.0; p * hk],
            dvp: vec![0.0; p * hv],
            dkm: vec![0.0; hk],
            dvm: vec![0.0; hv],
            dq: vec![0.0; p * hk],
            dwo: vec![0.0; d * hv],
            dwq_buf: vec![0.0; hk * d],
            dwk_buf: vec![0.0; hk * d],
            dwv_buf: vec![0.0; hv * d],
            mask_copy: vec![0.0; d],
            drho: vec![0.0; span * d],
            dmask: vec![0.0; d],
            dq_total: vec![0.0; hk],
            q: vec![0.0; hk],
            k: vec![0.0; n * hk],
            v: vec![0.0; n * hv],
            a: vec![0.0; h * n],
            u: vec![0.0; hv],
            o: vec![0.0; d],
            g: vec![0.0; d],
            du: vec![0.0; hv],
            da: vec![0.0; n],
            e: vec![0.0; d],
            de: vec![0.0; d],
            span_words: Vec::with_capacity(span),
            targets: Vec::with_capacity(BLOCK.max(n)),
            out: OutputScratch::new(self.rho.rows(), &self.out.spec, 1),
        }
    }

    fn train_sentence(&self, sc: &mut AttentionScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        let mut loss = 0.0;
        let mut examples = 0;
        match self.max_len {
            Some(l) => {
                for chunk in sent.chunks(l) {
                    if chunk.len() < 2 {
                        continue;
                    }
                    sc.span_words.clear();
                    sc.span_words.extend_from_slice(chunk);
                    sc.targets.clear();
                    for j in 0..chunk.len() {
                        let experts = (0..chunk.len()).filter(|&i| i != j).map(|i| (i, i)).collect();
                        sc.targets.push(Target { word: chunk[j], self_row: j, experts });
                    }
                    examples += chunk.len() as u64;
                    loss += self.run_block(sc, lr, rng, want_loss);
                }
            }
            None => {
                let w = self.window;
                let mut start = 0;
                while start < sent.len() {
                    let end = (start + BLOCK).min(sent.len());
                    let lo = start.saturating_sub(w);
                    let hi = (end + w).min(sent.len());
                    sc.span_words.clear();
                    sc.span_words.extend_from_slice(&sent[lo..hi]);
                    sc.targets.clear();
                    for pos in start..end {
                        let (a, b) = window_bounds(pos, sent.len(), w, self.shrink, rng);
                        let experts: Vec<(usize, usize)> = (a..b)
                            .filter(|&c| c != pos)
                            .map(|c| (c - lo, (c as isize - pos as isize + w as isize) as usize))
                            .collect();
                        if !experts.is_empty() {
                            sc.targets.push(Target { word: sent[pos], self_row: w, experts });
                        }
                    }
                    examples += sc.targets.len() as u64;
                    if !sc.targets.is_empty() {
                        loss += self.run_block(sc, lr, rng, want_loss);
                    }
                    start = end;
                }
            }
        }
        (loss, examples)
    }
}
