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
use crate::simd::{axpy, dot, gemm, Strides};
use std::sync::Mutex;

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
    /// Serialises the block updates of the dense parameters (projections,
    /// encodings, [MASK]): every thread writes all of them every block, so
    /// unlike word rows they would collide constantly (see `apply_block`).
    pub dense_lock: Mutex<()>,
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
    espan: Vec<f32>, // span x d: the span's rho rows at the block's start
    dpos: Vec<f32>,  // P x d
    dmask: Vec<f32>,
    dq_total: Vec<f32>,
    // Per block: every target's attention weights (B x H x nmax), head
    // outputs U (B x H·dv), o = W_O u (B x d), output gradients G (B x d), dU.
    nmax: usize,
    a_all: Vec<f32>,
    u_all: Vec<f32>,
    o_all: Vec<f32>,
    g_all: Vec<f32>,
    du_all: Vec<f32>,
    // Per target.
    q: Vec<f32>,
    k: Vec<f32>, // n x H·dk
    v: Vec<f32>, // n x H·dv
    da: Vec<f32>,
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

    /// Start a block: project the span's tokens and every encoding row
    /// (matrix products over the whole span / encoding table).
    fn begin_block(&self, sc: &mut AttentionScratch) {
        let (hk, hv, d, p) = (self.hk(), self.hv(), self.d(), self.p_rows());
        let span = sc.span_words.len();
        for (i, &w) in sc.span_words.iter().enumerate() {
            sc.espan[i * d..(i + 1) * d].copy_from_slice(self.rho.row(w as usize));
        }
        let e = &sc.espan[..span * d];
        gemm(1.0, e, Strides::rm(span, d), self.wk.as_slice(), Strides::rm_t(hk, d), 0.0, &mut sc.kr[..span * hk], Strides::rm(span, hk));
        gemm(1.0, e, Strides::rm(span, d), self.wv.as_slice(), Strides::rm_t(hv, d), 0.0, &mut sc.vr[..span * hv], Strides::rm(span, hv));
        let pe = self.pos.as_slice();
        gemm(1.0, pe, Strides::rm(p, d), self.wk.as_slice(), Strides::rm_t(hk, d), 0.0, &mut sc.kp, Strides::rm(p, hk));
        gemm(1.0, pe, Strides::rm(p, d), self.wv.as_slice(), Strides::rm_t(hv, d), 0.0, &mut sc.vp, Strides::rm(p, hv));
        gemm(1.0, pe, Strides::rm(p, d), self.wq.as_slice(), Strides::rm_t(hk, d), 0.0, &mut sc.qp, Strides::rm(p, hk));
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

    /// Keys and values of target t's experts (context, then the masked token
    /// itself) into `sc.k`, `sc.v`, and its query into `sc.q`.
    fn load_experts(&self, sc: &mut AttentionScratch, t: usize) {
        let (hk, hv) = (self.hk(), self.hv());
        let self_row = sc.targets[t].self_row;
        for i in 0..hk {
            sc.q[i] = sc.qm[i] + sc.qp[self_row * hk + i];
        }
        let nc = sc.targets[t].experts.len();
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
    }

    /// Forward attention of target t: weights into `sc.a_all[t]`, head outputs into `sc.u_all[t]`.
    fn attend(&self, sc: &mut AttentionScratch, t: usize) {
        let (hk, hv, dk, dv, h) = (self.hk(), self.hv(), self.dk, self.dv, self.heads);
        self.load_experts(sc, t);
        let n = sc.targets[t].experts.len() + 1;
        let nmax = sc.nmax;
        let scale = 1.0 / (dk as f32).sqrt();
        for hh in 0..h {
            let q = &sc.q[hh * dk..(hh + 1) * dk];
            let a = &mut sc.a_all[(t * h + hh) * nmax..(t * h + hh) * nmax + n];
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
            let u = &mut sc.u_all[t * hv + hh * dv..t * hv + (hh + 1) * dv];
            u.fill(0.0);
            for m in 0..n {
                a[m] /= tot;
                axpy(a[m], &sc.v[m * hv + hh * dv..m * hv + (hh + 1) * dv], u);
            }
        }
    }

    /// Backward attention of target t given dL/du in `sc.du_all[t]`.
    fn attend_backward(&self, sc: &mut AttentionScratch, t: usize) {
        let (hk, hv, dk, dv, h) = (self.hk(), self.hv(), self.dk, self.dv, self.heads);
        self.load_experts(sc, t);
        let self_row = sc.targets[t].self_row;
        let nc = sc.targets[t].experts.len();
        let n = nc + 1;
        let nmax = sc.nmax;
        let scale = 1.0 / (dk as f32).sqrt();
        for hh in 0..h {
            let du = &sc.du_all[t * hv + hh * dv..t * hv + (hh + 1) * dv];
            let a = &sc.a_all[(t * h + hh) * nmax..(t * h + hh) * nmax + n];
            let mut mean = 0.0;
            for m in 0..n {
                sc.da[m] = dot(du, &sc.v[m * hv + hh * dv..m * hv + (hh + 1) * dv]);
                mean += a[m] * sc.da[m];
            }
            let q = &sc.q[hh * dk..(hh + 1) * dk];
            let (kcol, vcol) = (hh * dk, hh * dv);
            for m in 0..n {
                let dl = a[m] * (sc.da[m] - mean) * scale;
                // d k_m = dl q ; d q += dl k_m ; d v_m = a_m du
                let km = &sc.k[m * hk + kcol..m * hk + kcol + dk];
                axpy(dl, km, &mut sc.dq[self_row * hk + kcol..self_row * hk + kcol + dk]);
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
    /// mask (all with the block's weights), then update the weight matrices.
    fn end_block(&self, sc: &mut AttentionScratch, dwq: &mut [f32], dwk: &mut [f32], dwv: &mut [f32]) {
        let (hk, hv, d, p) = (self.hk(), self.hv(), self.d(), self.p_rows());
        let mean = 1.0 / sc.targets.len().max(1) as f32; // dense parameters: block-mean step
        let span = sc.span_words.len();
        let (wq, wk, wv) = (self.wq.as_slice(), self.wk.as_slice(), self.wv.as_slice());
        // Tokens: drho = dK_r W_K + dV_r W_V; dW_K = dK_r^T E; dW_V = dV_r^T E.
        let (e, dkr, dvr) = (&sc.espan[..span * d], &sc.dkr[..span * hk], &sc.dvr[..span * hv]);
        let drho = &mut sc.drho[..span * d];
        gemm(1.0, dkr, Strides::rm(span, hk), wk, Strides::rm(hk, d), 0.0, drho, Strides::rm(span, d));
        gemm(1.0, dvr, Strides::rm(span, hv), wv, Strides::rm(hv, d), 1.0, drho, Strides::rm(span, d));
        gemm(1.0, dkr, Strides::rm_t(span, hk), e, Strides::rm(span, d), 0.0, dwk, Strides::rm(hk, d));
        gemm(1.0, dvr, Strides::rm_t(span, hv), e, Strides::rm(span, d), 0.0, dwv, Strides::rm(hv, d));
        // Encodings, as keys/values of the experts and as the target's query
        // input q = W_Q (mask + p[r]): dP = dK_p W_K + dV_p W_V + dQ W_Q.
        let pe = self.pos.as_slice();
        let dp = &mut sc.dpos;
        gemm(1.0, &sc.dkp, Strides::rm(p, hk), wk, Strides::rm(hk, d), 0.0, dp, Strides::rm(p, d));
        gemm(1.0, &sc.dvp, Strides::rm(p, hv), wv, Strides::rm(hv, d), 1.0, dp, Strides::rm(p, d));
        gemm(1.0, &sc.dq, Strides::rm(p, hk), wq, Strides::rm(hk, d), 1.0, dp, Strides::rm(p, d));
        gemm(1.0, &sc.dkp, Strides::rm_t(p, hk), pe, Strides::rm(p, d), 1.0, dwk, Strides::rm(hk, d));
        gemm(1.0, &sc.dvp, Strides::rm_t(p, hv), pe, Strides::rm(p, d), 1.0, dwv, Strides::rm(hv, d));
        gemm(1.0, &sc.dq, Strides::rm_t(p, hk), pe, Strides::rm(p, d), 0.0, dwq, Strides::rm(hk, d));
        // The mask: its own key/value (the self-expert) and every query's input.
        sc.mask_copy.copy_from_slice(self.mask.row(0));
        sc.dmask.fill(0.0);
        sc.dq_total.fill(0.0);
        for r in 0..p {
            axpy(1.0, &sc.dq[r * hk..(r + 1) * hk], &mut sc.dq_total);
        }
        Self::back(&self.wk, dwk, &sc.dkm, &sc.mask_copy, &mut sc.dmask);
        Self::back(&self.wv, dwv, &sc.dvm, &sc.mask_copy, &mut sc.dmask);
        Self::back(&self.wq, dwq, &sc.dq_total, &sc.mask_copy, &mut sc.dmask);
        // Apply: word rows with word2vec's per-example steps, the rest block-mean.
        for i in 0..span {
            self.rho.add_to_row(sc.span_words[i] as usize, 1.0, &sc.drho[i * d..(i + 1) * d]);
        }
        // Dense parameters: every thread updates all of them every block, so a
        // lock-free read-modify-write would lose whole blocks' steps whenever
        // two threads overlap. One lock per block update (O(params), small
        // next to the block's GEMMs) makes each step land; forward passes of
        // other threads may still read a matrix mid-update (Hogwild reads).
        let _guard = self.dense_lock.lock().unwrap_or_else(|p| p.into_inner());
        for r in 0..p {
            self.pos.add_to_row(r, mean, &sc.dpos[r * d..(r + 1) * d]);
        }
        self.mask.add_to_row(0, mean, &sc.dmask);
        for (w, dw) in [(&self.wq, &*dwq), (&self.wk, &*dwk), (&self.wv, &*dwv), (&self.wo, &sc.dwo[..])] {
            for (i, row) in dw.chunks(w.cols()).enumerate() {
                w.add_to_row(i, mean, row);
            }
        }
    }

    /// Train one block whose targets and span are already in the scratch:
    /// attention for every target, O = U W_O^T, the output layer target by
    /// target, dU = G W_O and dW_O = G^T U, attention backward, block update.
    pub fn run_block(&self, sc: &mut AttentionScratch, lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        let (hv, d) = (self.hv(), self.d());
        let b = sc.targets.len();
        self.begin_block(sc);
        for t in 0..b {
            self.attend(sc, t);
        }
        let wo = self.wo.as_slice();
        gemm(1.0, &sc.u_all[..b * hv], Strides::rm(b, hv), wo, Strides::rm_t(d, hv), 0.0, &mut sc.o_all[..b * d], Strides::rm(b, d));
        let mut loss = 0.0;
        sc.g_all[..b * d].fill(0.0);
        for t in 0..b {
            let word = sc.targets[t].word;
            let (o, g) = (&sc.o_all[t * d..(t + 1) * d], &mut sc.g_all[t * d..(t + 1) * d]);
            loss += self.out.step(o, 1, word, lr, g, &mut sc.out, rng, want_loss) as f64;
        }
        let g = &sc.g_all[..b * d];
        gemm(1.0, g, Strides::rm(b, d), wo, Strides::rm(d, hv), 0.0, &mut sc.du_all[..b * hv], Strides::rm(b, hv));
        gemm(1.0, g, Strides::rm_t(b, d), &sc.u_all[..b * hv], Strides::rm(b, hv), 0.0, &mut sc.dwo, Strides::rm(d, hv));
        for t in 0..b {
            self.attend_backward(sc, t);
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
        let bmax = match self.max_len {
            Some(l) => l,
            None => BLOCK,
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
            espan: vec![0.0; span * d],
            dpos: vec![0.0; p * d],
            dmask: vec![0.0; d],
            dq_total: vec![0.0; hk],
            q: vec![0.0; hk],
            k: vec![0.0; n * hk],
            v: vec![0.0; n * hv],
            da: vec![0.0; n],
            nmax: n,
            a_all: vec![0.0; bmax * h * n],
            u_all: vec![0.0; bmax * hv],
            o_all: vec![0.0; bmax * d],
            g_all: vec![0.0; bmax * d],
            du_all: vec![0.0; bmax * hv],
            span_words: Vec::with_capacity(span),
            targets: Vec::with_capacity(BLOCK.max(n)),
            out: OutputScratch::new(self.rho.rows(), &self.out.spec, 1),
        }
    }

    fn train_sentence(&self, sc: &mut AttentionScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
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
