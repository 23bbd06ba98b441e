//! The tabular extension (SPEC "Tabular extension"): CBOW-MoE in sentence
//! mode over the columns of a table. A row is a "sentence" of one token per
//! column, the token (f, c) of column f with category c; the vocabulary is
//! laid out column by column, so column f owns the ids `starts[f]..starts[f+1]`.
//! Absolute positions are column indices: `pos_key[h, f]` and `pos_value[f]`
//! are the feature encodings (SPEC `feature_gate`, `feature_value`), and the
//! masked column's query `query[h, j]` makes the gate depend on which column
//! is predicted:
//!
//!   l_h(f)   = <query[h, j], key[h, t_f] + pos_key[h, f]> / sqrt(d_k)   (f ≠ j)
//!   z_h      = Σ_f softmax_f(l_h(f)) · (alpha[t_f] + pos_value[f])[head h]
//!   p(c | ·) ∝ exp(beta[(j, c)] · z + bias[(j, c)])     over column j's categories only
//!
//! plus the mask expert (the masked column itself: key `mask_key[h] +
//! pos_key[h, j]`, value `mask_value + pos_value[j]`). With a fixed query the
//! gate collapses to SPEC's `salience[h, t_f] + feature_gate[h, f]`.
//! Prediction is `Moe`'s sentence mode with a per-column output range.
//!
//! Training is row at once: the loss of a row is Σ_j w_j · (−log p(t_j | the
//! row's other present columns)) over its present columns j (the MLM
//! objective; w_j weighs the target column against the others). Every
//! column's keys and values (key + pos_key, alpha + pos_value) are gathered
//! once per row and shared by every masked column; each masked column adds
//! its gradient to per-row accumulators, applied once at the end of the row
//! — one SGD step on the row's exact gradient. (Only column j's own output
//! rows `beta[(j, ·)]` are updated as soon as j is done: nothing else in the
//! row reads them, so that is the same step.) Values marked `ABSENT` (to
//! impute) are neither experts nor targets. A fit trains the gate arrays
//! (`key`, `pos_key`, `query`) in copies regrouped so that one token's or one
//! column's vectors of every head lie side by side, and writes them back at
//! the end.

use super::moe::{Gates, Moe, MoeScratch, ABSENT};
use crate::hogwild::Hogwild;
use crate::sampling::Rng;
use crate::simd::{block_scores, dot, exp_lanes, lanes_max, lanes_sum, with_wide, ColumnAt, ColumnBuffers};
use std::ops::Range;

pub struct Tabular<'m, 'a> {
    pub moe: &'m Moe<'a>,
    /// Column f owns the token ids `starts[f]..starts[f + 1]` (length F + 1).
    pub starts: &'m [u32],
    /// Loss weight of each column (length F), or empty: every column 1.
    pub weights: &'m [f32],
}

/// How one fit runs.
#[derive(Clone, Copy, Debug)]
pub struct FitSettings {
    pub epochs: usize,
    /// Learning rate, falling linearly to `min_alpha` over the whole fit.
    pub alpha: f32,
    pub min_alpha: f32,
    pub seed: u64,
    pub workers: usize,
    /// Train with the head-by-head row step even where the lane-block step
    /// applies (the same SGD step; for benchmarks comparing the two).
    pub heads_step: bool,
}

/// `x[i] = exp(x[i])` for x ≤ 0 (softmax logits less their maximum), in a
/// branch-free loop the compiler vectorises: x = n·ln2 + r with |r| ≤ ln2/2,
/// exp(r) by its Taylor series to degree 7 (truncation error < 1e-8 there,
/// evaluated by Estrin's scheme),
/// 2^n built in the exponent bits. Inputs below −87 (−∞ included) are taken
/// as −87: exp gives 1.6e-38 there, not 0 (callers zero what must be 0).
#[inline(always)]
fn exp_nonpositive(x: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2: f32 = std::f32::consts::LN_2;
    // Adding 1.5·2^23 rounds to an integer n held in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    for v in x.iter_mut() {
        let a = v.max(-87.0);
        let t = a * LOG2E + SHIFT;
        let n = t - SHIFT;
        let r = a - n * LN2;
        // Estrin's scheme: the same polynomial, its terms in pairs, a
        // dependency chain of 4 multiply-adds instead of Horner's 7
        let (r2, a0, a1) = (r * r, 1.0 + r, 0.5 + r * (1.0 / 6.0));
        let (r4, a2, a3) = (r2 * r2, 1.0 / 24.0 + r * (1.0 / 120.0), 1.0 / 720.0 + r * (1.0 / 5040.0));
        let p = (a0 + r2 * a1) + r4 * (a2 + r2 * a3);
        // t's bits are 0x4B40_0000 + n; adding the bias 127 and shifting the
        // low bits into the exponent field gives 2^n (−126 ≤ n ≤ 0 here).
        let two_n = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
        *v = p * two_n;
    }
}

/// `exp_nonpositive` on whole blocks, its steps as multiply-adds
/// (`simd::exp_lanes`, the masked-column kernel's): the same approximation,
/// one rounding less per fused step.
#[inline(always)]
fn exp_blocks(x: &mut [Block]) {
    for b in x.iter_mut() {
        *b = exp_lanes(*b);
    }
}

/// `out[k] = Σ_{i in segment k} a[i]·b[i]`: per-head dot products of two
/// vectors laid out head by head in segments of `seg` floats.
#[inline(always)]
fn seg_dot(a: &[f32], b: &[f32], seg: usize, out: &mut [f32]) {
    for (o, (ca, cb)) in out.iter_mut().zip(a.chunks_exact(seg).zip(b.chunks_exact(seg))) {
        *o = ca.iter().zip(cb).map(|(x, y)| x * y).sum();
    }
}

/// `y[i] += w[k]·x[i]` for i in segment k (a per-head weight on each head's part).
#[inline(always)]
fn seg_axpy(w: &[f32], x: &[f32], seg: usize, y: &mut [f32]) {
    for (&wk, (cx, cy)) in w.iter().zip(x.chunks_exact(seg).zip(y.chunks_exact_mut(seg))) {
        for (yi, xi) in cy.iter_mut().zip(cx) {
            *yi += wk * xi;
        }
    }
}

/// `y += x` (elementwise, vectorised by the compiler).
#[inline(always)]
fn add(x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `out = a + b`.
#[inline(always)]
fn sum_into(a: &[f32], b: &[f32], out: &mut [f32]) {
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x + y;
    }
}

/// The gate arrays regrouped for the row-at-once step: row r of `key`,
/// `pos_key`, `query` (each H·R x d_k in the model, head-major) becomes
/// one row holding every head's vector, so a token's or a column's keys
/// are one contiguous vector: float s of head h at `at[h·d_k + s]` of a
/// row of `width`. The head-by-head step packs them side by side
/// (`at` the identity, width H·d_k); the lane-block step transposes them,
/// heads across lanes (see `lane_layout`), and holds the other trained
/// arrays in that layout too.
pub struct Regrouped {
    key: Vec<f32>,
    pos_key: Vec<f32>,
    query: Vec<f32>,
    width: usize,
    at: Vec<usize>,
    lanes: Option<PaddedRest>,
}

/// The lane-block step's copies of `alpha`, `beta`, `pos_value` (the
/// model's `offset_value`), `mask_value` and `mask_key` (`mask_gate`), in
/// the lane layout, and of the output bias in whole blocks per column.
struct PaddedRest {
    alpha: Vec<f32>,
    beta: Vec<f32>,
    pos_value: Vec<f32>,
    mask_value: Vec<f32>,
    mask_key: Vec<f32>,
    bias: PaddedBias,
}

/// The output bias, column by column in whole blocks of `LANES` (zeros
/// past a column's categories): column j's biases start at block `at[j]`.
/// Empty when the model has no bias.
struct PaddedBias {
    blocks: Vec<f32>,
    at: Vec<usize>,
}

impl PaddedBias {
    fn new(bias: Option<&Hogwild<'_>>, starts: &[u32]) -> Self {
        let Some(b) = bias else { return PaddedBias { blocks: Vec::new(), at: Vec::new() } };
        let mut at = vec![0usize];
        for w in starts.windows(2) {
            at.push(at[at.len() - 1] + (w[1] - w[0]).div_ceil(LANES as u32) as usize);
        }
        let mut blocks = vec![0f32; at[at.len() - 1] * LANES];
        for (j, w) in starts.windows(2).enumerate() {
            for (i, t) in (w[0] as usize..w[1] as usize).enumerate() {
                blocks[at[j] * LANES + i] = b.row(t)[0];
            }
        }
        PaddedBias { blocks, at }
    }

    fn write_back(&self, dst: Option<&Hogwild<'_>>, starts: &[u32]) {
        let Some(b) = dst else { return };
        for (j, w) in starts.windows(2).enumerate() {
            for (i, t) in (w[0] as usize..w[1] as usize).enumerate() {
                b.set_row(t, &[self.blocks[self.at[j] * LANES + i]]);
            }
        }
    }
}

/// `src` (H·R x d_k, head-major) as R x `width`, float s of head h at `at[h·d_k + s]` (zeros elsewhere).
fn regroup(src: &Hogwild<'_>, heads: usize, width: usize, at: &[usize]) -> Vec<f32> {
    let (dk, r) = (src.cols(), src.rows() / heads);
    let mut out = vec![0f32; r * width];
    for h in 0..heads {
        for i in 0..r {
            for (s, &x) in src.row(h * r + i).iter().enumerate() {
                out[i * width + at[h * dk + s]] = x;
            }
        }
    }
    out
}

/// Write `buf` (R x `width`) back into `dst` (H·R x d_k).
fn ungroup(buf: &[f32], heads: usize, width: usize, at: &[usize], dst: &Hogwild<'_>) {
    let (dk, r) = (dst.cols(), dst.rows() / heads);
    let mut row = vec![0f32; dk];
    for h in 0..heads {
        for i in 0..r {
            row.iter_mut().enumerate().for_each(|(s, x)| *x = buf[i * width + at[h * dk + s]]);
            dst.set_row(h * r + i, &row);
        }
    }
}

/// `src` (R x c, c = `at.len()`) as R x `width`, float c at `at[c]` (zeros elsewhere).
fn pad(src: &Hogwild<'_>, width: usize, at: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; src.rows() * width];
    for i in 0..src.rows() {
        for (&x, &c) in src.row(i).iter().zip(at) {
            out[i * width + c] = x;
        }
    }
    out
}

/// Write `buf` (R x `width`) back into `dst` (R x c).
fn unpad(buf: &[f32], width: usize, at: &[usize], dst: &Hogwild<'_>) {
    let mut row = vec![0f32; dst.cols()];
    for i in 0..dst.rows() {
        row.iter_mut().zip(at).for_each(|(x, &c)| *x = buf[i * width + c]);
        dst.set_row(i, &row);
    }
}

/// Head count, value width per head (d/H) and key size: the loop lengths of
/// the row step, passed as constants for the common sizes.
#[derive(Clone, Copy)]
struct Dims {
    h: usize,
    s: usize,
    dk: usize,
}

impl Dims {
    #[inline(always)]
    fn d(self) -> usize {
        self.h * self.s
    }
    #[inline(always)]
    fn hdk(self) -> usize {
        self.h * self.dk
    }
}

/// Hogwild views of a `Regrouped`: what the row-at-once step reads and updates.
struct Gates2<'p> {
    key: Hogwild<'p>,
    pos_key: Hogwild<'p>,
    query: Hogwild<'p>,
    lanes: Option<Rest2<'p>>,
}

/// Hogwild views of a `PaddedRest`.
struct Rest2<'p> {
    alpha: Hogwild<'p>,
    beta: Hogwild<'p>,
    pos_value: Hogwild<'p>,
    mask_value: Hogwild<'p>,
    mask_key: Hogwild<'p>,
    /// `PaddedBias`: one block a row.
    bias: Option<Hogwild<'p>>,
    bias_at: &'p [usize],
}

/// Per-thread buffers of the row-at-once step (no allocation per row).
pub struct RowScratch {
    /// The row's present columns and their tokens.
    cols: Vec<usize>,
    toks: Vec<usize>,
    /// Per present column (H·d_k each): its key key[t] + pos_key[f], the
    /// mask expert's key there mask_key + pos_key[f], and its query.
    k: Vec<f32>,
    km: Vec<f32>,
    q: Vec<f32>,
    /// Per present column (d each): alpha[t] + pos_value[f] and the mask
    /// expert's value there, mask_value + pos_value[f].
    v: Vec<f32>,
    vm: Vec<f32>,
    /// Gradient accumulators of the same shapes.
    dk: Vec<f32>,
    dkm: Vec<f32>,
    dq: Vec<f32>,
    dv: Vec<f32>,
    dvm: Vec<f32>,
    /// Gate logits, then MoE weights, of the masked column being trained:
    /// (F + 1) x H, expert-major, the mask expert last.
    theta: Vec<f32>,
    /// Per-head scratch (H): maxima, sums, gate gradients.
    hv: Vec<f32>,
    hw: Vec<f32>,
    /// The mixture z, lr·∂log p/∂z, and z's gradient part per expert (d).
    z: Vec<f32>,
    gz: Vec<f32>,
    diff: Vec<f32>,
    /// The masked column's class probabilities (room for whole blocks).
    probs: Vec<f32>,
    /// The row's mask-expert gradients (key: H·d_k, value: d).
    dmk: Vec<f32>,
    dmv: Vec<f32>,
    /// The lane-block path's buffers (see `Lanes`).
    ln: LaneScratch,
}

impl RowScratch {
    /// Note the row's present columns and their tokens; returns their count.
    #[inline(always)]
    fn load_row(&mut self, row: &[u32]) -> usize {
        self.cols.clear();
        self.toks.clear();
        for (c, &t) in row.iter().enumerate() {
            if t != ABSENT {
                self.cols.push(c);
                self.toks.push(t as usize);
            }
        }
        self.cols.len()
    }
}

impl Tabular<'_, '_> {
    pub fn columns(&self) -> usize {
        self.starts.len() - 1
    }

    /// Column j's token ids.
    #[inline]
    pub fn range(&self, j: usize) -> Range<usize> {
        self.starts[j] as usize..self.starts[j + 1] as usize
    }

    fn weight(&self, j: usize) -> f32 {
        self.weights.get(j).copied().unwrap_or(1.0)
    }

    fn parts(&self) -> (&Hogwild<'_>, &Hogwild<'_>, &Hogwild<'_>) {
        match &self.moe.gates {
            Gates::Absolute { query, key, pos_key, .. } => (query, key, pos_key),
            Gates::Window { .. } => panic!("the tabular model runs in sentence mode"),
        }
    }

    fn has_mask(&self) -> bool {
        self.moe.mask_value.rows() > 0
    }

    /// Head count, head width and key size.
    fn dims(&self) -> Dims {
        let h = self.moe.heads;
        Dims { h, s: self.moe.out.dim() / h, dk: self.parts().0.cols() }
    }

    /// Does the lane-block step apply (d_k = d/H = 2, 4 or 8, at most 16 heads)?
    fn lanes_apply_to(&self) -> bool {
        let dm = self.dims();
        dm.s == dm.dk && matches!(dm.s, 2 | 4 | 8) && dm.h <= 2 * LANES
    }

    /// The trained arrays as the row step wants them (copies), see `Regrouped`.
    pub fn regrouped(&self) -> Regrouped {
        self.regrouped_for(self.lanes_apply_to())
    }

    /// `regrouped`, for the lane-block step or the head-by-head one.
    fn regrouped_for(&self, lanes: bool) -> Regrouped {
        let (query, key, pos_key) = self.parts();
        let (h, dk) = (self.moe.heads, query.cols());
        let (width, at) = if lanes { lane_layout(h, dk) } else { (h * dk, (0..h * dk).collect()) };
        let lanes = lanes.then(|| PaddedRest {
            alpha: pad(&self.moe.alpha, width, &at),
            beta: pad(&self.moe.out.beta, width, &at),
            pos_value: pad(&self.moe.offset_value, width, &at),
            mask_value: pad(&self.moe.mask_value, width, &at),
            mask_key: pad(&self.moe.mask_gate, width, &at),
            bias: PaddedBias::new(self.moe.out.bias.as_ref(), self.starts),
        });
        let (key, pos_key, query) = (regroup(key, h, width, &at), regroup(pos_key, h, width, &at), regroup(query, h, width, &at));
        Regrouped { key, pos_key, query, width, at, lanes }
    }

    /// Copy the trained arrays back into the model.
    pub fn write_back(&self, g: &Regrouped) {
        let (query, key, pos_key) = self.parts();
        let (h, w, at) = (self.moe.heads, g.width, &g.at[..]);
        ungroup(&g.key, h, w, at, key);
        ungroup(&g.pos_key, h, w, at, pos_key);
        ungroup(&g.query, h, w, at, query);
        if let Some(p) = &g.lanes {
            unpad(&p.alpha, w, at, &self.moe.alpha);
            unpad(&p.beta, w, at, &self.moe.out.beta);
            unpad(&p.pos_value, w, at, &self.moe.offset_value);
            unpad(&p.mask_value, w, at, &self.moe.mask_value);
            unpad(&p.mask_key, w, at, &self.moe.mask_gate);
            p.bias.write_back(self.moe.out.bias.as_ref(), self.starts);
        }
    }

    fn views<'p>(&self, g: &'p mut Regrouped) -> Gates2<'p> {
        let w = g.width;
        Gates2 {
            key: Hogwild::new(&mut g.key, w),
            pos_key: Hogwild::new(&mut g.pos_key, w),
            query: Hogwild::new(&mut g.query, w),
            lanes: g.lanes.as_mut().map(|p| Rest2 {
                alpha: Hogwild::new(&mut p.alpha, w),
                beta: Hogwild::new(&mut p.beta, w),
                pos_value: Hogwild::new(&mut p.pos_value, w),
                mask_value: Hogwild::new(&mut p.mask_value, w),
                mask_key: Hogwild::new(&mut p.mask_key, w),
                bias: (!p.bias.blocks.is_empty()).then(|| Hogwild::new(&mut p.bias.blocks, LANES)),
                bias_at: &p.bias.at,
            }),
        }
    }

    pub fn row_scratch(&self) -> RowScratch {
        let (f, h, d) = (self.columns(), self.moe.heads, self.moe.out.dim());
        let hdk = h * self.parts().0.cols();
        let widest = (0..f).map(|j| self.range(j).len()).max().unwrap_or(0);
        let z = |n: usize| vec![0f32; n];
        RowScratch {
            cols: Vec::with_capacity(f),
            toks: Vec::with_capacity(f),
            k: z(f * hdk),
            km: z(f * hdk),
            q: z(f * hdk),
            v: z(f * d),
            vm: z(f * d),
            dk: z(f * hdk),
            dkm: z(f * hdk),
            dq: z(f * hdk),
            dv: z(f * d),
            dvm: z(f * d),
            theta: z((f + 1) * h),
            hv: z(h),
            hw: z(h),
            z: z(d),
            gz: z(d),
            diff: z(d),
            probs: z(widest.div_ceil(LANES) * LANES),
            dmk: z(hdk),
            dmv: z(d),
            ln: LaneScratch::new(f, self.dims()),
        }
    }

    /// One exact SGD step on one row, in place: every present column (or
    /// only column `only`) masked and predicted from the row's other present
    /// columns, the gradient of the summed weighted loss applied once.
    /// Returns the summed (unweighted) loss.
    pub fn step_row(&self, row: &[u32], lr: f32, only: Option<usize>) -> f64 {
        let mut g = self.regrouped();
        let mut rs = self.row_scratch();
        let loss = self.train_row(&mut rs, &self.views(&mut g), row, lr, only).0;
        self.write_back(&g);
        loss
    }

    /// The row-at-once step (see the module doc); returns the summed loss
    /// and the number of masked columns. Compiled for the widest vectors
    /// the CPU has, and for the common head sizes (value part d/H, key
    /// size d_k) as constants, so the per-head loops unroll into vector code.
    fn train_row(&self, rs: &mut RowScratch, g: &Gates2<'_>, row: &[u32], lr: f32, only: Option<usize>) -> (f64, u64) {
        let dm = self.dims();
        match &g.lanes {
            Some(p) => self.train_row_lanes(rs, g, p, row, lr, only, dm),
            None => self.train_row_heads(rs, g, row, lr, only, dm),
        }
    }

    /// The row step head by head: any head width and key size.
    fn train_row_heads(&self, rs: &mut RowScratch, g: &Gates2<'_>, row: &[u32], lr: f32, only: Option<usize>, dm: Dims) -> (f64, u64) {
        let h = dm.h;
        // one inlined copy per arm, its sizes constants
        with_wide(
            #[inline(always)]
            || match (dm.h, dm.s, dm.dk) {
                (5, 4, 4) => self.train_row_sized(rs, g, row, lr, only, Dims { h: 5, s: 4, dk: 4 }), // the defaults
                (_, 4, 4) => self.train_row_sized(rs, g, row, lr, only, Dims { h, s: 4, dk: 4 }),
                (_, 2, 2) => self.train_row_sized(rs, g, row, lr, only, Dims { h, s: 2, dk: 2 }),
                (_, 8, 8) => self.train_row_sized(rs, g, row, lr, only, Dims { h, s: 8, dk: 8 }),
                _ => self.train_row_sized(rs, g, row, lr, only, dm),
            },
        )
    }

    #[inline(always)]
    fn train_row_sized(&self, rs: &mut RowScratch, g: &Gates2<'_>, row: &[u32], lr: f32, only: Option<usize>, dm: Dims) -> (f64, u64) {
        let (d, hdk) = (dm.d(), dm.hdk());
        let mask = self.has_mask();
        let n = rs.load_row(row);
        if n < 2 {
            return (0.0, 0); // a lone column has no context: nothing to learn from
        }
        // Every present column's keys, query and values, gathered once.
        for p in 0..n {
            let (c, t) = (rs.cols[p], rs.toks[p]);
            let (pv, pk) = (self.moe.offset_value.row(c), g.pos_key.row(c));
            sum_into(self.moe.alpha.row(t), pv, &mut rs.v[p * d..(p + 1) * d]);
            sum_into(g.key.row(t), pk, &mut rs.k[p * hdk..(p + 1) * hdk]);
            rs.q[p * hdk..(p + 1) * hdk].copy_from_slice(g.query.row(c));
            if mask {
                sum_into(self.moe.mask_value.row(0), pv, &mut rs.vm[p * d..(p + 1) * d]);
                sum_into(self.moe.mask_gate.row(0), pk, &mut rs.km[p * hdk..(p + 1) * hdk]);
            }
        }
        for buf in [&mut rs.dk, &mut rs.dkm, &mut rs.dq] {
            buf[..n * hdk].fill(0.0);
        }
        rs.dv[..n * d].fill(0.0);
        rs.dvm[..n * d].fill(0.0);
        let (mut loss, mut count) = (0.0f64, 0u64);
        for a in 0..n {
            if only.is_some_and(|j| j != rs.cols[a]) {
                continue;
            }
            loss += self.masked_column(rs, a, lr, dm) as f64;
            count += 1;
        }
        self.apply(rs, g, dm);
        (loss, count)
    }

    /// Column `rs.cols[a]` masked: forward, its output softmax (its beta and
    /// bias rows updated), and its gradient added to the row's accumulators.
    #[inline(always)]
    fn masked_column(&self, rs: &mut RowScratch, a: usize, lr: f32, dm: Dims) -> f32 {
        let Dims { h, s, dk } = dm;
        let (d, hdk, n) = (dm.d(), dm.hdk(), rs.cols.len());
        let scale = 1.0 / (dk as f32).sqrt();
        let mask = self.has_mask();
        let qa = a * hdk..(a + 1) * hdk;
        // Gate logits of every expert (row b of theta; b = n: the mask expert), all heads at once.
        for b in 0..=n {
            let th = &mut rs.theta[b * h..(b + 1) * h];
            if b == a || (b == n && !mask) {
                th.fill(f32::NEG_INFINITY);
                continue;
            }
            let keys = if b < n { &rs.k[b * hdk..(b + 1) * hdk] } else { &rs.km[a * hdk..(a + 1) * hdk] };
            seg_dot(&rs.q[qa.clone()], keys, dk, th);
            th.iter_mut().for_each(|t| *t *= scale);
        }
        // Softmax over the experts, per head.
        let theta = &mut rs.theta[..(n + 1) * h];
        rs.hv.fill(f32::NEG_INFINITY);
        for th in theta.chunks_exact(h) {
            for (m, &t) in rs.hv.iter_mut().zip(th) {
                *m = m.max(t);
            }
        }
        for th in theta.chunks_exact_mut(h) {
            for (t, &m) in th.iter_mut().zip(&rs.hv) {
                *t -= m;
            }
        }
        exp_nonpositive(theta);
        theta[a * h..(a + 1) * h].fill(0.0); // the masked column is no expert
        if !mask {
            theta[n * h..].fill(0.0);
        }
        rs.hw.fill(0.0);
        for th in theta.chunks_exact(h) {
            add(th, &mut rs.hw);
        }
        rs.hw.iter_mut().for_each(|t| *t = 1.0 / *t);
        for th in theta.chunks_exact_mut(h) {
            for (t, &inv) in th.iter_mut().zip(&rs.hw) {
                *t *= inv;
            }
        }
        // The mixture z: head h mixes its part of the experts' values.
        rs.z.fill(0.0);
        for b in 0..=n {
            if b == a || (b == n && !mask) {
                continue;
            }
            let vals = if b < n { &rs.v[b * d..(b + 1) * d] } else { &rs.vm[a * d..(a + 1) * d] };
            seg_axpy(&rs.theta[b * h..(b + 1) * h], vals, s, &mut rs.z);
        }
        // The masked column's softmax over its own categories: updates its
        // beta/bias rows, gz = lr·w_j·∂log p/∂z.
        let j = rs.cols[a];
        let loss = self.output(rs, j, rs.toks[a], lr * self.weight(j), d);
        // Back through the mixture into the row's accumulators:
        //   ∂x_b,h += θ_h(b) g_h;  ∂l_h(b) = θ_h(b) (g_h · (x_b,h − z_h));
        //   ∂q_a,h += ∂l_h(b)/√d_k · k_b,h;  ∂k_b,h += ∂l_h(b)/√d_k · q_a,h.
        for b in 0..=n {
            if b == a || (b == n && !mask) {
                continue;
            }
            let (vals, dvals, keys, dkeys, r) =
                if b < n { (&rs.v, &mut rs.dv, &rs.k, &mut rs.dk, b) } else { (&rs.vm, &mut rs.dvm, &rs.km, &mut rs.dkm, a) };
            let th = &rs.theta[b * h..(b + 1) * h];
            for (o, (x, zz)) in rs.diff.iter_mut().zip(vals[r * d..(r + 1) * d].iter().zip(&rs.z)) {
                *o = x - zz;
            }
            seg_dot(&rs.gz, &rs.diff, s, &mut rs.hv);
            for (dl, &t) in rs.hv.iter_mut().zip(th) {
                *dl *= t * scale;
            }
            seg_axpy(th, &rs.gz, s, &mut dvals[r * d..(r + 1) * d]);
            seg_axpy(&rs.hv, &keys[r * hdk..(r + 1) * hdk], dk, &mut rs.dq[qa.clone()]);
            seg_axpy(&rs.hv, &rs.q[qa.clone()], dk, &mut dkeys[r * hdk..(r + 1) * hdk]);
        }
        loss
    }

    /// Softmax of `rs.z` over column j's categories with `target` the true
    /// token: updates their beta (and bias) rows by lr·∂log p/∂, sets
    /// `rs.gz` = lr·∂log p/∂z (before those updates) and returns −log p.
    #[inline(always)]
    fn output(&self, rs: &mut RowScratch, j: usize, target: usize, lr: f32, d: usize) -> f32 {
        let (out, range) = (&self.moe.out, self.range(j));
        let lo = range.start;
        let probs = &mut rs.probs[..range.len()];
        let mut mx = f32::NEG_INFINITY;
        for (i, p) in probs.iter_mut().enumerate() {
            *p = dot(&rs.z[..d], &out.beta.row(lo + i)[..d]) + out.bias.as_ref().map_or(0.0, |b| b.row(lo + i)[0]);
            mx = mx.max(*p);
        }
        probs.iter_mut().for_each(|p| *p -= mx);
        exp_nonpositive(probs);
        let inv = 1.0 / probs.iter().sum::<f32>();
        probs.iter_mut().for_each(|p| *p *= inv);
        rs.gz.fill(0.0);
        let t = target - lo;
        for (i, &p) in probs.iter().enumerate() {
            let g = (if i == t { 1.0 } else { 0.0 } - p) * lr;
            out.beta.exchange(lo + i, g, &rs.z[..d], &mut rs.gz[..d]);
            if let Some(b) = &out.bias {
                b.add_at(lo + i, 0, g);
            }
        }
        -probs[t].max(f32::MIN_POSITIVE).ln()
    }

    /// Apply the row's accumulated gradients to the shared parameters.
    #[inline(always)]
    fn apply(&self, rs: &mut RowScratch, g: &Gates2<'_>, dm: Dims) {
        let (d, hdk) = (dm.d(), dm.hdk());
        let mask = self.has_mask();
        rs.dmk.fill(0.0);
        rs.dmv.fill(0.0);
        for (p, (&c, &t)) in rs.cols.iter().zip(&rs.toks).enumerate() {
            let (dv, dkey) = (&rs.dv[p * d..(p + 1) * d], &rs.dk[p * hdk..(p + 1) * hdk]);
            self.moe.alpha.add_to_row(t, 1.0, dv);
            self.moe.offset_value.add_to_row(c, 1.0, dv);
            g.key.add_to_row(t, 1.0, dkey);
            g.pos_key.add_to_row(c, 1.0, dkey);
            g.query.add_to_row(c, 1.0, &rs.dq[p * hdk..(p + 1) * hdk]);
            if mask {
                let (dvm, dkm) = (&rs.dvm[p * d..(p + 1) * d], &rs.dkm[p * hdk..(p + 1) * hdk]);
                self.moe.offset_value.add_to_row(c, 1.0, dvm);
                g.pos_key.add_to_row(c, 1.0, dkm);
                add(dvm, &mut rs.dmv);
                add(dkm, &mut rs.dmk);
            }
        }
        if mask {
            self.moe.mask_gate.add_to_row(0, 1.0, &rs.dmk);
            self.moe.mask_value.add_to_row(0, 1.0, &rs.dmv);
        }
    }

    /// p(column j = c | the row's other present columns) for c in column j's
    /// range, into `probs`; the gates θ_h of the experts (head-major, H x n,
    /// the mask expert last) into `gates` when given.
    pub fn predict(&self, sc: &mut MoeScratch, row: &[u32], j: usize, probs: &mut [f32], gates: Option<&mut [f32]>) {
        sc.load_masked(row, j);
        self.moe.forward(sc);
        self.moe.out.probabilities(&sc.z()[..self.moe.out.dim()], self.range(j), probs);
        if let Some(g) = gates {
            let n = sc.theta(0).len();
            for h in 0..self.moe.heads {
                g[h * n..(h + 1) * n].copy_from_slice(sc.theta(h));
            }
        }
    }

    /// Train on `data` (rows x F token ids, row-major) for `s.epochs` epochs,
    /// rows shuffled every epoch, one SGD step per row, Hogwild over
    /// `s.workers` threads (one thread: reproducible for a seed).
    /// `stop(epoch)` is asked after every epoch and ends the fit early when
    /// it returns false. Returns the mean loss per masked cell of each epoch run.
    pub fn fit(&self, data: &[u32], s: &FitSettings, mut stop: impl FnMut(usize) -> bool) -> Vec<f64> {
        let f = self.columns();
        let rows = if f == 0 { 0 } else { data.len() / f };
        let mut order: Vec<u32> = (0..rows as u32).collect();
        let mut rng = Rng::new(s.seed);
        let workers = s.workers.clamp(1, rows.max(1));
        let total = (s.epochs * rows).max(1) as f32;
        let lr_at = |done: usize| (s.alpha - (s.alpha - s.min_alpha) * done as f32 / total).max(s.min_alpha);
        let mut scratches: Vec<RowScratch> = (0..workers).map(|_| self.row_scratch()).collect();
        let mut regrouped = self.regrouped_for(self.lanes_apply_to() && !s.heads_step);
        let g = self.views(&mut regrouped);
        let g = &g;
        let mut losses = Vec::with_capacity(s.epochs);
        for epoch in 0..s.epochs {
            for i in (1..rows).rev() {
                order.swap(i, rng.below(i as u32 + 1) as usize);
            }
            let base = epoch * rows;
            let run = |rs: &mut RowScratch, part: &[u32], first: usize| -> (f64, u64) {
                let (mut loss, mut n) = (0.0, 0);
                for (i, &r) in part.iter().enumerate() {
                    let r = r as usize;
                    let (l, k) = self.train_row(rs, g, &data[r * f..(r + 1) * f], lr_at(base + first + i), None);
                    loss += l;
                    n += k;
                }
                (loss, n)
            };
            let (loss, n) = if workers == 1 {
                run(&mut scratches[0], &order, 0)
            } else {
                let per = rows.div_ceil(workers);
                std::thread::scope(|scope| {
                    let handles: Vec<_> = scratches
                        .iter_mut()
                        .zip(order.chunks(per).enumerate())
                        .map(|(rs, (w, part))| scope.spawn(move || run(rs, part, w * per)))
                        .collect();
                    handles.into_iter().fold((0.0, 0), |(l, n), h| {
                        let (a, b) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                        (l + a, n + b)
                    })
                })
            };
            losses.push(if n > 0 { loss / n as f64 } else { 0.0 });
            if !stop(epoch) {
                break;
            }
        }
        self.write_back(&regrouped);
        losses
    }
}

// ---------------------------------------------------------------------------
// The lane-block row step. When a head's value part and its key have the
// same width S (the default: d_k = d/H), S is 2, 4 or 8 and there are at
// most 16 heads, every vector of the step (key, query, value, the mixture,
// the output rows) is held *transposed*, heads across lanes: with HP = H
// rounded up to a power of 2 (at most 8) lanes per group of heads, a block
// (one AVX2 register) holds R = 8/HP floats of each of HP heads — float s
// of head h in lane (s mod R)·HP + h mod 8 of block ⌊s/R⌋·NH + ⌊h/8⌋, NH =
// ⌈H/8⌉. From 5 heads on R = 1: block s holds float s of every head. A
// per-head scalar (gate logit, MoE weight, its gradient) is then NH blocks,
// head h in every lane ≡ h mod HP, and everything is lane-wise arithmetic
// on whole blocks: the per-head dot product <q_h, k_h> is a multiply-add
// per block and, when R > 1, log2 R butterfly adds (in-register shuffles;
// none from 5 heads on), the softmax over the experts is lane-wise over
// the experts' logit blocks, the mixture and the backward pass are
// multiply-adds of a weight block into each block. Lanes of no head are
// zero in every trained vector, so they stay zero and are never written
// back. The math is the head-by-head step's, term for term up to rounding
// (checked against it in the tests).
//
// To predict column a, expert b ≠ a is column b and expert a is the mask
// expert at column a (key mask_key + pos_key[a], value mask_value +
// pos_value[a], read from the mask buffers in place of column a's own);
// without a mask expert slot a gets weight 0.
//
// With one block of heads (5 to 8 heads) a masked column is one kernel,
// `simd::masked_column` (forward, output softmax and update, backward; the
// same operations as `lanes_forward`, `lanes_output`, `lanes_backward`),
// on the row's buffers checked once per row (`Hogwild::column_steps`).

/// Lanes per block.
const LANES: usize = 8;
type Block = [f32; LANES];
const ZERO: Block = [0.0; LANES];
/// Each lane's index (as a float: lane-wise compares stay float compares).
const LANE_INDEX: Block = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];

/// Lanes a group of heads takes in a block: H rounded up to a power of 2,
/// at most 8 (see above).
fn head_lanes(heads: usize) -> usize {
    heads.next_power_of_two().min(LANES)
}

/// The lane layout of an H-head vector of d_k floats per head (see above):
/// its padded width and the place of float s of head h at `[h·d_k + s]`.
fn lane_layout(heads: usize, dk: usize) -> (usize, Vec<usize>) {
    let (hp, nh) = (head_lanes(heads), heads.div_ceil(LANES));
    let r = LANES / hp; // floats of a head per block
    let at = (0..heads * dk)
        .map(|i| {
            let (h, s) = (i / dk, i % dk);
            ((s / r) * nh + h / LANES) * LANES + (s % r) * hp + h % LANES
        })
        .collect();
    (dk.div_ceil(r) * nh * LANES, at)
}

/// Buffers of the lane-block step: vectors of ⌈S/R⌉·NH blocks, per-head
/// scalars of NH blocks (see above).
pub struct LaneScratch {
    /// Per present column: key + pos_key, mask key there, query / √d_k.
    k: Vec<Block>,
    km: Vec<Block>,
    q: Vec<Block>,
    /// Per present column: alpha + pos_value, the mask value there.
    v: Vec<Block>,
    vm: Vec<Block>,
    /// Gradient accumulators of the same shapes (dq before its 1/√d_k).
    dk: Vec<Block>,
    dkm: Vec<Block>,
    dq: Vec<Block>,
    dv: Vec<Block>,
    dvm: Vec<Block>,
    /// MoE weights of the masked column being trained, per expert.
    th: Vec<Block>,
}

impl LaneScratch {
    fn new(f: usize, dm: Dims) -> Self {
        let nh = dm.h.div_ceil(LANES);
        let z = |n: usize| vec![ZERO; n];
        let vb = f * dm.s.max(dm.dk) * nh;
        LaneScratch {
            k: z(vb),
            km: z(vb),
            q: z(vb),
            v: z(vb),
            vm: z(vb),
            dk: z(vb),
            dkm: z(vb),
            dq: z(vb),
            dv: z(vb),
            dvm: z(vb),
            th: z(f * nh),
        }
    }
}

// Lane-wise arithmetic on whole blocks (whole blocks in, whole block out:
// the compiler then emits one vector instruction each).
#[inline(always)]
fn mul(a: Block, b: Block) -> Block {
    lanewise(|i| a[i] * b[i])
}

#[inline(always)]
fn plus(a: Block, b: Block) -> Block {
    lanewise(|i| a[i] + b[i])
}

#[inline(always)]
fn minus(a: Block, b: Block) -> Block {
    lanewise(|i| a[i] - b[i])
}

/// `y += a ⊙ b`.
#[inline(always)]
fn fma_into(a: Block, b: Block, y: &mut Block) {
    let c = *y;
    *y = lanewise(|i| a[i].mul_add(b[i], c[i]));
}

/// `y += x`.
#[inline(always)]
fn add_into(x: Block, y: &mut Block) {
    *y = plus(*y, x);
}

/// `NB` blocks copied out of a slice of exactly that many.
#[inline(always)]
fn grab<const NB: usize>(x: &[Block]) -> [Block; NB] {
    let mut o = [ZERO; NB];
    o.copy_from_slice(&x[..NB]);
    o
}

/// The block of `f(i)` for each lane i. (A plain loop: `std::array::from_fn`
/// is sometimes left out of line, a call in the middle of the AVX2 loop.)
#[inline(always)]
fn lanewise(f: impl Fn(usize) -> f32) -> Block {
    let mut o = ZERO;
    for (i, x) in o.iter_mut().enumerate() {
        *x = f(i);
    }
    o
}

/// `[f(0), .., f(NB - 1)]`, by the same plain loop.
#[inline(always)]
fn blockwise<const NB: usize>(f: impl Fn(usize) -> Block) -> [Block; NB] {
    let mut o = [ZERO; NB];
    for (c, x) in o.iter_mut().enumerate() {
        *x = f(c);
    }
    o
}

/// Lane i's value summed over the lanes ≡ i mod HP (the R floats of a
/// head a block holds): log2(8/HP) butterfly steps, none for HP = 8.
#[inline(always)]
fn fold<const HP: usize>(x: Block) -> Block {
    let mut t = x;
    let mut w = HP;
    while w < LANES {
        let u = t;
        t = lanewise(|i| u[i] + u[i ^ w]);
        w <<= 1;
    }
    t
}

/// Row i of a lane-layout matrix as its VB blocks.
#[inline(always)]
fn row_blocks<'a, const VB: usize>(m: &'a Hogwild<'_>, i: usize) -> &'a [Block; VB] {
    m.row(i).as_chunks::<LANES>().0.try_into().expect("a row of VB blocks")
}

/// The first `n` vectors of VB blocks of a buffer, to write.
#[inline(always)]
fn vectors_mut<const VB: usize>(buf: &mut [Block], n: usize) -> &mut [[Block; VB]] {
    buf[..n * VB].as_chunks_mut::<VB>().0
}

/// The first `n` vectors of VB blocks of a buffer.
#[inline(always)]
fn vectors<const VB: usize>(buf: &[Block], n: usize) -> &[[Block; VB]] {
    buf[..n * VB].as_chunks::<VB>().0
}

impl Tabular<'_, '_> {
    /// The row step on lane blocks (see above); as constants: HP lanes per
    /// group of heads, S = ⌈d_k/R⌉ blocks per head group, NH head groups
    /// and VB = S·NH blocks per vector.
    #[allow(clippy::too_many_arguments)]
    fn train_row_lanes(&self, rs: &mut RowScratch, g: &Gates2<'_>, p: &Rest2<'_>, row: &[u32], lr: f32, only: Option<usize>, dm: Dims) -> (f64, u64) {
        let (hp, nh) = (head_lanes(dm.h), dm.h.div_ceil(LANES));
        let sb = dm.s.div_ceil(LANES / hp);
        macro_rules! arms {
            ($(($hp:literal, $s:literal, $nh:literal, $vb:literal)),*) => {
                match (hp, sb, nh) {
                    $(($hp, $s, $nh) => self.lanes_sized::<$hp, $s, $nh, $vb>(rs, g, p, row, lr, only),)*
                    _ => unreachable!("lanes_apply_to admits only these sizes"),
                }
            };
        }
        with_wide(
            #[inline(always)]
            || {
                arms!(
                    (8, 4, 1, 4), // the defaults
                    (8, 2, 1, 2),
                    (8, 8, 1, 8),
                    (8, 2, 2, 4),
                    (8, 4, 2, 8),
                    (8, 8, 2, 16),
                    (4, 1, 1, 1),
                    (4, 2, 1, 2),
                    (4, 4, 1, 4),
                    (2, 1, 1, 1),
                    (2, 2, 1, 2),
                    (1, 1, 1, 1)
                )
            },
        )
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lanes_sized<const HP: usize, const S: usize, const NH: usize, const VB: usize>(&self, rs: &mut RowScratch, g: &Gates2<'_>, p: &Rest2<'_>, row: &[u32], lr: f32, only: Option<usize>) -> (f64, u64) {
        debug_assert_eq!(S * NH, VB);
        let n = rs.load_row(row);
        if n < 2 {
            return (0.0, 0); // a lone column has no context: nothing to learn from
        }
        self.lanes_row::<HP, S, NH, VB>(rs, g, p, lr, only, n)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lanes_row<const HP: usize, const S: usize, const NH: usize, const VB: usize>(&self, rs: &mut RowScratch, g: &Gates2<'_>, p: &Rest2<'_>, lr: f32, only: Option<usize>, n: usize) -> (f64, u64) {
        let mask = self.has_mask();
        let (cols, toks) = (&rs.cols[..n], &rs.toks[..n]);
        let ln = &mut rs.ln;
        let scale = 1.0 / (self.dims().dk as f32).sqrt();
        let (mv, mk) = if mask { (*row_blocks::<VB>(&p.mask_value, 0), *row_blocks::<VB>(&p.mask_key, 0)) } else { ([ZERO; VB], [ZERO; VB]) };
        let (v, k, q) = (vectors_mut::<VB>(&mut ln.v, n), vectors_mut::<VB>(&mut ln.k, n), vectors_mut::<VB>(&mut ln.q, n));
        for (e, (&c, &t)) in cols.iter().zip(toks).enumerate() {
            let (pv, al) = (row_blocks::<VB>(&p.pos_value, c), row_blocks::<VB>(&p.alpha, t));
            let (pk, ke, qu) = (row_blocks::<VB>(&g.pos_key, c), row_blocks::<VB>(&g.key, t), row_blocks::<VB>(&g.query, c));
            v[e] = blockwise(|b| plus(al[b], pv[b]));
            k[e] = blockwise(|b| plus(ke[b], pk[b]));
            q[e] = blockwise(|b| mul(qu[b], [scale; LANES]));
        }
        if mask {
            let (vm, km) = (vectors_mut::<VB>(&mut ln.vm, n), vectors_mut::<VB>(&mut ln.km, n));
            for (e, &c) in cols.iter().enumerate() {
                let (pv, pk) = (row_blocks::<VB>(&p.pos_value, c), row_blocks::<VB>(&g.pos_key, c));
                vm[e] = blockwise(|b| plus(mv[b], pv[b]));
                km[e] = blockwise(|b| plus(mk[b], pk[b]));
            }
        }
        for buf in [&mut ln.dk, &mut ln.dkm, &mut ln.dq, &mut ln.dv, &mut ln.dvm] {
            buf[..n * VB].fill(ZERO);
        }
        let (mut loss, mut count, mut like) = (0.0f64, 0u64, 1.0f64);
        // −log of a product of probabilities, one logarithm per row
        // (flushed before the product could leave f64's range)
        let mut record = |pt: f32| {
            like *= pt.max(f32::MIN_POSITIVE) as f64;
            if like < 1e-200 {
                loss -= like.ln();
                like = 1.0;
            }
            count += 1;
        };
        let masked = (0..n).filter(|&a| only.is_none_or(|j| j == cols[a]));
        if HP == LANES && NH == 1 {
            // one block of heads: each masked column in one kernel, on
            // buffers checked once for the row
            let buffers = ColumnBuffers::new(
                [vectors::<VB>(&ln.q, n), vectors::<VB>(&ln.k, n), vectors::<VB>(&ln.v, n), vectors::<VB>(&ln.km, n), vectors::<VB>(&ln.vm, n)],
                [vectors_mut::<VB>(&mut ln.dk, n), vectors_mut::<VB>(&mut ln.dv, n), vectors_mut::<VB>(&mut ln.dkm, n), vectors_mut::<VB>(&mut ln.dvm, n)],
                &mut ln.th[..n],
                rs.probs.as_chunks_mut::<LANES>().0,
            );
            let mut steps = p.beta.column_steps(p.bias.as_ref(), buffers);
            for a in masked {
                let (j, range) = (cols[a], self.range(cols[a]));
                let at = ColumnAt { a, mask, target: toks[a] - range.start, lr: lr * self.weight(j) };
                let (dqa, pt) = steps.step(range.start, range.len(), p.bias_at.get(j).copied().unwrap_or(0), &at);
                record(pt);
                for (d, x) in ln.dq[a * VB..(a + 1) * VB].iter_mut().zip(&dqa) {
                    add_into(*x, d);
                }
            }
        } else {
            for a in masked {
                let j = cols[a];
                let slot = a * VB..(a + 1) * VB;
                let qa: [Block; VB] = grab(&ln.q[slot.clone()]);
                let z = Self::lanes_forward::<HP, S, NH, VB>(ln, &qa, a, n, mask);
                let (gz, pt) = self.lanes_output::<VB>(p, rs.probs.as_chunks_mut::<LANES>().0, &z, j, toks[a], lr * self.weight(j));
                let dqa = Self::lanes_backward::<HP, S, NH, VB>(ln, &qa, &z, &gz, a, n, mask);
                record(pt);
                for (d, x) in ln.dq[slot].iter_mut().zip(&dqa) {
                    add_into(*x, d);
                }
            }
        }
        self.lanes_apply::<VB>(rs, g, p, scale, n);
        (loss - like.ln(), count)
    }

    /// Masked column a, slot a the mask expert's (see the section's
    /// comment): the MoE weights of every expert into `ln.th`; returns the
    /// mixture z.
    #[inline(always)]
    fn lanes_forward<const HP: usize, const S: usize, const NH: usize, const VB: usize>(ln: &mut LaneScratch, qa: &[Block; VB], a: usize, n: usize, mask: bool) -> [Block; VB] {
        let (k, v) = (ln.k[..n * VB].as_chunks::<VB>().0, ln.v[..n * VB].as_chunks::<VB>().0);
        let th = ln.th[..n * NH].as_chunks_mut::<NH>().0;
        let (km, vm) = (&ln.km[..n * VB].as_chunks::<VB>().0[a], &ln.vm[..n * VB].as_chunks::<VB>().0[a]);
        let m = if mask { a } else { n }; // the expert read from the mask buffers, if any
        // gate logits: head h's <q_h, k_h> in its lanes, S multiply-adds and a fold
        let mut mx = [[f32::NEG_INFINITY; LANES]; NH];
        for (e, (tb, kb)) in th.iter_mut().zip(k).enumerate() {
            let kb = if e == m { km } else { kb };
            for c in 0..NH {
                let mut t = mul(qa[c], kb[c]);
                for s in 1..S {
                    fma_into(qa[s * NH + c], kb[s * NH + c], &mut t);
                }
                t = fold::<HP>(t);
                if !mask && e == a {
                    t = [f32::NEG_INFINITY; LANES];
                }
                tb[c] = t;
                let x = mx[c];
                mx[c] = lanewise(|i| if t[i] > x[i] { t[i] } else { x[i] });
            }
        }
        // softmax over the experts, lane-wise
        for tb in th.iter_mut() {
            for c in 0..NH {
                tb[c] = minus(tb[c], mx[c]);
            }
        }
        exp_blocks(th.as_flattened_mut());
        if !mask {
            th[a] = [ZERO; NH]; // the masked column is no expert
        }
        let mut sum = [ZERO; NH];
        for tb in th.iter() {
            for c in 0..NH {
                add_into(tb[c], &mut sum[c]);
            }
        }
        let inv: [Block; NH] = blockwise(|c| lanewise(|i| 1.0 / sum[c][i]));
        let mut z = [ZERO; VB];
        for (e, (tb, vb)) in th.iter_mut().zip(v).enumerate() {
            let vb = if e == m { vm } else { vb };
            for c in 0..NH {
                tb[c] = mul(tb[c], inv[c]);
                for s in 0..S {
                    fma_into(tb[c], vb[s * NH + c], &mut z[s * NH + c]);
                }
            }
        }
        z
    }

    /// Softmax of z over column j's categories, `target` the true token:
    /// column j's beta (and bias) rows take their step; returns
    /// lr·∂log p/∂z (before the update) and p(target). The scores live in
    /// whole blocks of 8 categories (`lg`, room for the widest column),
    /// lanes past the column's last category −∞, then weight 0: no scalar
    /// loop over the categories but the update's.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lanes_output<const VB: usize>(&self, p: &Rest2<'_>, lg: &mut [Block], z: &[Block; VB], j: usize, target: usize, lr: f32) -> ([Block; VB], f32) {
        let range = self.range(j);
        let (lo, m) = (range.start, range.len());
        let ng = m.div_ceil(LANES);
        let lg = &mut lg[..ng];
        // eight categories' scores at once (see `block_scores`)
        block_scores(z, p.beta.rows_of(range).as_chunks::<LANES>().0.as_chunks::<VB>().0, lg);
        if let Some(b) = &p.bias {
            for (l, bb) in lg.iter_mut().zip(b.rows_of(p.bias_at[j]..p.bias_at[j] + ng).as_chunks::<LANES>().0) {
                *l = plus(*l, *bb);
            }
        }
        let (tail, rem) = (lg[ng - 1], (m - (ng - 1) * LANES) as f32);
        lg[ng - 1] = lanewise(|i| if LANE_INDEX[i] < rem { tail[i] } else { f32::NEG_INFINITY });
        // the maximum and the sum lane-wise over the groups, then across the lanes
        let mut mx = lg[0];
        for l in lg.iter() {
            mx = lanewise(|i| if l[i] > mx[i] { l[i] } else { mx[i] });
        }
        let mx = lanes_max(mx);
        for l in lg.iter_mut() {
            *l = minus(*l, mx);
        }
        exp_blocks(lg);
        let tail = lg[ng - 1];
        lg[ng - 1] = lanewise(|i| if LANE_INDEX[i] < rem { tail[i] } else { 0.0 });
        let mut sum = ZERO;
        for l in lg.iter() {
            add_into(*l, &mut sum);
        }
        let total = lanes_sum(sum);
        let inv = lanewise(|i| 1.0 / total[i]);
        let t = target - lo;
        let p_target = lg[t / LANES][t % LANES] * inv[0];
        // now the step of each category's score (0 past the last)
        for (gi, l) in lg.iter_mut().enumerate() {
            let (q, tl) = (*l, t as f32 - (gi * LANES) as f32);
            *l = lanewise(|i| (if LANE_INDEX[i] == tl { 1.0 } else { 0.0 } - q[i] * inv[i]) * lr);
        }
        // gz from the rows before their update (in registers) and the update, one pass
        let gz = p.beta.exchange_outer_blocks8(lo, &lg.as_flattened()[..m], z);
        if let Some(b) = &p.bias {
            b.add_block_rows(p.bias_at[j], lg);
        }
        (gz, p_target)
    }

    /// Back through masked column a's mixture (slot a the mask expert's,
    /// its gradients into the mask accumulators) into the row's
    /// accumulators: for expert b with weights θ_b (NH blocks, lane h head
    /// h's) and value x_b,
    ///   ∂x_b += θ_b g;  dl_b = θ_b ⊙ (<g, x_b> − <g, z>) per head;
    ///   ∂q_a += dl_b k_b;  ∂k_b += dl_b q_a/√d_k.
    /// Returns ∂q_a (before its 1/√d_k).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn lanes_backward<const HP: usize, const S: usize, const NH: usize, const VB: usize>(ln: &mut LaneScratch, qa: &[Block; VB], z: &[Block; VB], gz: &[Block; VB], a: usize, n: usize, mask: bool) -> [Block; VB] {
        let (k, v, th) = (ln.k[..n * VB].as_chunks::<VB>().0, ln.v[..n * VB].as_chunks::<VB>().0, ln.th[..n * NH].as_chunks::<NH>().0);
        let (dk, dv) = (ln.dk[..n * VB].as_chunks_mut::<VB>().0, ln.dv[..n * VB].as_chunks_mut::<VB>().0);
        let (km, vm) = (&ln.km[..n * VB].as_chunks::<VB>().0[a], &ln.vm[..n * VB].as_chunks::<VB>().0[a]);
        let (dkm, dvm) = (&mut ln.dkm[..n * VB].as_chunks_mut::<VB>().0[a], &mut ln.dvm[..n * VB].as_chunks_mut::<VB>().0[a]);
        let m = if mask { a } else { n }; // as in `lanes_forward`
        // <g, z> per head
        // (a plain loop: a closure this size is left out of line, as SSE code)
        let mut gzz = [ZERO; NH];
        for (c, o) in gzz.iter_mut().enumerate() {
            let mut t = mul(gz[c], z[c]);
            for s in 1..S {
                fma_into(gz[s * NH + c], z[s * NH + c], &mut t);
            }
            *o = fold::<HP>(t);
        }
        let mut dqa = [ZERO; VB];
        let experts = k.iter().zip(v).zip(th);
        for (e, (((kb, vb), tb), (dkb, dvb))) in experts.zip(dk.iter_mut().zip(dv.iter_mut())).enumerate() {
            if !mask && e == a {
                continue; // weight 0
            }
            let (kb, vb, dkb, dvb) = if e == m { (km, vm, &mut *dkm, &mut *dvm) } else { (kb, vb, dkb, dvb) };
            for c in 0..NH {
                let t = tb[c];
                let mut u = mul(gz[c], vb[c]);
                for s in 1..S {
                    fma_into(gz[s * NH + c], vb[s * NH + c], &mut u);
                }
                let u = fold::<HP>(u);
                let dl = mul(t, minus(u, gzz[c]));
                for s in 0..S {
                    let i = s * NH + c;
                    fma_into(t, gz[i], &mut dvb[i]);
                    fma_into(dl, kb[i], &mut dqa[i]);
                    fma_into(dl, qa[i], &mut dkb[i]);
                }
            }
        }
        dqa
    }

    /// Apply the row's accumulated gradients to the shared parameters.
    #[inline(always)]
    fn lanes_apply<const VB: usize>(&self, rs: &mut RowScratch, g: &Gates2<'_>, p: &Rest2<'_>, scale: f32, n: usize) {
        let mask = self.has_mask();
        let ln = &mut rs.ln;
        let (cols, toks) = (&rs.cols[..n], &rs.toks[..n]);
        let (dv, dk, dq) = (vectors::<VB>(&ln.dv, n), vectors::<VB>(&ln.dk, n), vectors::<VB>(&ln.dq, n));
        p.alpha.add_blocks_at(toks, 1.0, dv);
        g.key.add_blocks_at(toks, 1.0, dk);
        g.query.add_blocks_at(cols, scale, dq);
        if mask {
            // the mask expert's key and value gradients, summed over the
            // row; then column c's encodings take its own and its mask
            // expert's gradients at once
            let (dvm, dkm) = (vectors_mut::<VB>(&mut ln.dvm, n), vectors_mut::<VB>(&mut ln.dkm, n));
            let (mut dmk, mut dmv) = ([ZERO; VB], [ZERO; VB]);
            for e in 0..n {
                for b in 0..VB {
                    add_into(dkm[e][b], &mut dmk[b]);
                    add_into(dvm[e][b], &mut dmv[b]);
                    add_into(dv[e][b], &mut dvm[e][b]);
                    add_into(dk[e][b], &mut dkm[e][b]);
                }
            }
            p.pos_value.add_blocks_at(cols, 1.0, dvm);
            g.pos_key.add_blocks_at(cols, 1.0, dkm);
            p.mask_key.add_blocks(0, 1.0, &dmk);
            p.mask_value.add_blocks(0, 1.0, &dmv);
        } else {
            p.pos_value.add_blocks_at(cols, 1.0, dv);
            g.pos_key.add_blocks_at(cols, 1.0, dk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::moe::Gates;
    use crate::models::Model;
    use crate::objective::{OutputLayer, OutputSpec};
    use crate::simd::{force_level, Level, SigmoidTable};
    use crate::vocab::{Vocab, VocabSettings};

    /// A table model over `a` = [alpha, beta, pos_value, query, key, pos_key,
    /// bias, mask_key, mask_value] (the last two empty: no mask expert).
    fn table_moe<'a>(a: &'a mut [Vec<f32>], voc: &'a Vocab, d: usize, h: usize, dk: usize, f: usize) -> Moe<'a> {
        let [alpha, beta, pv, q, key, pk, bias, mk, mv] = a else { panic!("9 arrays") };
        let opt = |x: &'a mut Vec<f32>, cols: usize| if x.is_empty() { Hogwild::empty() } else { Hogwild::new(x, cols) };
        Moe {
            alpha: Hogwild::new(alpha, d),
            gates: Gates::Absolute { query: Hogwild::new(q, dk), key: Hogwild::new(key, dk), pos_key: Hogwild::new(pk, dk), max_len: f },
            offset_value: Hogwild::new(pv, d),
            mask_gate: opt(mk, h * dk),
            mask_value: opt(mv, d),
            out: OutputLayer {
                beta: Hogwild::new(beta, d),
                syn1: Hogwild::empty(),
                bias: Some(Hogwild::new(bias, 1)),
                spec: OutputSpec { negative: 0, hs: false, softmax: true },
                vocab: voc,
                sig: SigmoidTable::new(),
            },
            heads: h,
            full: false,
            window: 1,
            shrink: false,
            batch: 1,
        }
    }

    /// The lane-block step and the head-by-head step are the same SGD step,
    /// for head widths 2, 4 and 8, 1 to 16 heads (8, 4, 2 or 1 floats of a
    /// head per block; one block of heads or two), with and without the
    /// mask expert.
    #[test]
    fn lane_step_equals_head_step() {
        // the portable code too (5 to 8 heads: `simd::masked_column`'s)
        for level in [Some(Level::Scalar), None] {
            force_level(level);
            for (d, h, dk) in [(20usize, 5usize, 4usize), (10, 5, 2), (16, 2, 8), (8, 2, 4), (20, 10, 2), (32, 16, 2), (40, 10, 4), (8, 1, 8), (2, 1, 2), (12, 3, 4), (24, 3, 8), (6, 3, 2), (64, 8, 8), (56, 7, 8)] {
                for mask in [true, false] {
                    lane_step_equals_head_step_at(d, h, dk, mask);
                }
            }
        }
        force_level(None);
    }

    fn lane_step_equals_head_step_at(d: usize, h: usize, dk: usize, mask: bool) {
        let sizes = [3usize, 11, 2, 4]; // 11: the output scores in two groups of 8
        let f = sizes.len();
        let v: usize = sizes.iter().sum();
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (i.to_string(), 1)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let mut rng = Rng::new(11);
        let mut init = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit_f32() - 0.5).collect() };
        let (mk, mv) = if mask { (h * dk, d) } else { (0, 0) };
        let sets: Vec<Vec<f32>> = [v * d, v * d, f * d, h * f * dk, h * v * dk, h * f * dk, v, mk, mv].iter().map(|&n| init(n)).collect();
        let starts = [0u32, 3, 14, 16, 20];
        let rows: [[u32; 4]; 3] = [[1, 12, 15, 18], [0, ABSENT, 14, 19], [2, 7, ABSENT, ABSENT]];
        let mut results = Vec::new();
        for lanes in [false, true] {
            let mut a = sets.clone();
            let moe = table_moe(&mut a, &voc, d, h, dk, f);
            let t = Tabular { moe: &moe, starts: &starts, weights: &[1.0, 2.0, 0.5, 1.0] };
            assert!(t.lanes_apply_to() && t.has_mask() == mask);
            let mut g = t.regrouped_for(lanes);
            let mut rs = t.row_scratch();
            let mut losses = Vec::new();
            for row in &rows {
                losses.push(t.train_row(&mut rs, &t.views(&mut g), row, 0.3, None).0);
            }
            t.write_back(&g);
            drop(moe);
            results.push((losses, a));
        }
        let ((l0, a0), (l1, a1)) = (&results[0], &results[1]);
        for (x, y) in l0.iter().zip(l1) {
            assert!((x - y).abs() < 1e-5 * x.abs().max(1.0), "{d} {h} {dk} {mask}: {l0:?} {l1:?}");
        }
        for (k, (x, y)) in a0.iter().zip(a1).enumerate() {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() < 1e-5, "{d} {h} {dk} {mask}, array {k}: {p} vs {q}");
            }
        }
        assert_ne!(a0, &sets, "the steps changed the parameters");
    }

    /// Two perfectly dependent columns (category i of column 0 always with
    /// category i of column 1): training must learn to predict each from the other.
    #[test]
    fn learns_a_dependent_column() {
        let (k, d, h, dk) = (4usize, 8usize, 2usize, 4usize);
        let (f, v) = (2usize, 2 * k);
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (i.to_string(), 1)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let mut rng = Rng::new(3);
        let mut small = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.unit_f32() - 0.5) * 0.2).collect() };
        let mut a: Vec<Vec<f32>> = [v * d, v * d, f * d, h * f * dk, h * v * dk, h * f * dk].iter().map(|&n| small(n)).collect();
        a.extend([vec![0f32; v], vec![], vec![]]);
        let moe = table_moe(&mut a, &voc, d, h, dk, f);
        let starts = [0u32, k as u32, v as u32];
        let t = Tabular { moe: &moe, starts: &starts, weights: &[] };
        let data: Vec<u32> = (0..200).flat_map(|i| [(i % k) as u32, (k + i % k) as u32]).collect();
        let s = FitSettings { epochs: 30, alpha: 0.1, min_alpha: 0.001, seed: 1, workers: 1, heads_step: false };
        let losses = t.fit(&data, &s, |_| true);
        assert!(losses[losses.len() - 1] < 0.1 * losses[0], "{losses:?}");
        let mut sc = moe.scratch();
        let mut p = vec![0f32; k];
        for c in 0..k {
            t.predict(&mut sc, &[c as u32, ABSENT], 1, &mut p, None);
            let best = (0..k).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, c);
        }
    }
}
