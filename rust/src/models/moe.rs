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
//! Sentence mode (absolute positions, SPEC): sentences are cut into chunks of
//! at most `max_len` words; every other word of the chunk is an expert, with
//!
//!   l_h(j, m) = <query[h, j], key[h, w_m] + pos_key[h, m]> / sqrt(d_k)
//!   x(m)      = alpha[w_m] + pos_value[m]
//!
//! (`pos_value` takes the place of `offset_value`; the value path is shared).
//! There the mask expert is the masked token at position j itself, with a
//! learned key: gate <query[h, j], mask_key[h] + pos_key[h, j]> / sqrt(d_k),
//! value mask_value + pos_value[j] — exactly what attention gives it.
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
//! `SHARED_FLUSH` targets and at the end of every sentence, instead of
//! fighting over the same cache lines.

use super::{publish_rows, window_and_prefetch, HotSpec, Model, Privatized};
use crate::hogwild::{Hogwild, HotRows, MaskPos, MoeExperts, MoeMask};
use crate::objective::{OutputLayer, OutputScratch};
use crate::sampling::Rng;
use crate::simd::{axpy, dot, dot_axpy2, mix, softmax_rows};

/// Targets between applications of a thread's offset/mask gradients.
const SHARED_FLUSH: u32 = 64;

/// How the gate logits are computed.
pub enum Gates<'a> {
    /// Window mode: `salience` (H x V) + `offset_gate` (H x R).
    Window { salience: Hogwild<'a>, offset_gate: Hogwild<'a> },
    /// Sentence mode: `query` (H·max_len x d_k), `key` (H·V x d_k), `pos_key` (H·max_len x d_k).
    Absolute { query: Hogwild<'a>, key: Hogwild<'a>, pos_key: Hogwild<'a>, max_len: usize },
}

pub struct Moe<'a> {
    /// Context value vectors, V x D_in (SPEC `alpha`).
    pub alpha: Hogwild<'a>,
    pub gates: Gates<'a>,
    /// Value per offset (window mode, R x D_in) or per absolute position
    /// (sentence mode, max_len x D_in): SPEC `offset_value` / `pos_value`.
    pub offset_value: Hogwild<'a>,
    /// Mask expert gate: 1 x H scores (window mode) or 1 x H·d_k keys
    /// (sentence mode, `mask_key`); empty when off.
    pub mask_gate: Hogwild<'a>,
    /// Mask expert value, 1 x D_in (empty when off).
    pub mask_value: Hogwild<'a>,
    pub out: OutputLayer<'a>,
    pub heads: usize,
    /// true: "full" head values (D_in = H·d); false: "slice".
    pub full: bool,
    pub window: usize,
    pub shrink: bool,
    /// Targets per mini-batch sharing one draw of negatives (1: the exact
    /// per-target update; only with negative sampling alone).
    pub batch: usize,
}

/// One target's forward state, kept until its backward pass.
struct Slot {
    /// Expert vectors x(m), n x D_in.
    x: Vec<f32>,
    /// MoE weights θ_h(m), H x n.
    theta: Vec<f32>,
    /// Per-head mixtures z_h, H x s.
    zh: Vec<f32>,
    z: Vec<f32>,
    grad: Vec<f32>,
    words: Vec<u32>,
    /// Row of each expert in the offset (window) or position (sentence) tables.
    offsets: Vec<u32>,
    /// Sentence mode: the target's position (its query row).
    tpos: usize,
    /// Sentence mode: the target's query per head (H x d_k), copied before updates.
    q: Vec<f32>,
    /// One expert's MoE weights, one per head.
    tm: Vec<f32>,
    /// A row of D_in zeros (the window-mode mask expert has no position value).
    zero: Vec<f32>,
}

/// A thread's pending gradients of the small shared parameters.
struct Shared {
    /// Window mode: where the mask expert's value gradient also lands (no
    /// position value to update; cleared with every flush), D_in.
    dx: Vec<f32>,
    /// g per head block of a value row (D_in), g_h · z_h per head and
    /// a_h(m) = g_h · x(m)_h per expert and head (n x H).
    gexp: Vec<f32>,
    gz: Vec<f32>,
    dots: Vec<f32>,
    /// Pending gradients of the shared small parameters (offset_gate or
    /// query + pos_key, offset/pos values, mask expert).
    d_offset_gate: Vec<f32>,
    d_query: Vec<f32>,
    d_pos_key: Vec<f32>,
    d_offset_value: Vec<f32>,
    d_mask_gate: Vec<f32>,
    d_mask_value: Vec<f32>,
    pending: u32,
}

pub struct MoeScratch {
    /// The single-target path (and `load_masked`, `z`, `theta`).
    cur: Slot,
    /// The mini-batch path: one slot per target of the batch.
    batch: Vec<Slot>,
    /// Mixtures and their gradients of the batch's targets, B x d.
    zs: Vec<f32>,
    gs: Vec<f32>,
    targets: Vec<u32>,
    acc: Shared,
    /// Whether the model has a mask expert (for `theta`).
    with_mask: bool,
    out: OutputScratch,
    /// Private hot rows of alpha and beta (a worker of several; `Model::worker_scratch`).
    hot: Option<Box<Privatized>>,
}

/// A position that holds no token (tabular: a value to impute): never an expert.
pub const ABSENT: u32 = u32::MAX;

impl Slot {
    #[inline]
    fn load_masked(&mut self, chunk: &[u32], j: usize) {
        self.words.clear();
        self.offsets.clear();
        for (m, &w) in chunk.iter().enumerate() {
            if m != j && w != ABSENT {
                self.words.push(w);
                self.offsets.push(m as u32);
            }
        }
        self.tpos = j;
    }

    /// Window mode: the experts of the target at `pos` (window lo..hi).
    #[inline]
    fn load_window(&mut self, sent: &[u32], pos: usize, lo: usize, hi: usize, window: usize) {
        self.words.clear();
        self.offsets.clear();
        for c in lo..hi {
            if c != pos {
                self.words.push(sent[c]);
                self.offsets.push(offset_index(c as isize - pos as isize, window) as u32);
            }
        }
    }
}

impl MoeScratch {
    /// Sentence mode: position `j` of `chunk` is masked and every other
    /// position holding a token is an expert (at its absolute position).
    #[inline]
    pub fn load_masked(&mut self, chunk: &[u32], j: usize) {
        self.cur.load_masked(chunk, j);
    }

    /// The mixture z of the last forward pass.
    pub fn z(&self) -> &[f32] {
        &self.cur.z
    }

    /// The MoE weights θ_h(m) of the last forward pass for head `h`: one per
    /// expert in load order (the mask expert last when enabled).
    pub fn theta(&self, h: usize) -> &[f32] {
        let n = self.cur.words.len() + self.with_mask as usize;
        &self.cur.theta[h * n..(h + 1) * n]
    }

    /// The positions (sentence mode) or offset rows (window mode) of the loaded experts.
    pub fn expert_rows(&self) -> &[u32] {
        &self.cur.offsets
    }

    /// The output layer's scratch (tests record the negatives through it).
    pub fn output(&mut self) -> &mut OutputScratch {
        &mut self.out
    }
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

impl Gates<'_> {
    fn alias(&self) -> Gates<'_> {
        match self {
            Gates::Window { salience, offset_gate } => Gates::Window { salience: salience.alias(), offset_gate: offset_gate.alias() },
            Gates::Absolute { query, key, pos_key, max_len } => {
                Gates::Absolute { query: query.alias(), key: key.alias(), pos_key: pos_key.alias(), max_len: *max_len }
            }
        }
    }
}

impl Moe<'_> {
    /// This model with a worker's private rows of alpha and beta (`Hogwild::with_hot`).
    fn with_hot<'b>(&'b self, hot: &'b mut Privatized) -> Moe<'b> {
        let (input, output) = (&mut hot.input, &mut hot.output);
        Moe {
            alpha: self.alpha.with_hot(input),
            gates: match &self.gates {
                Gates::Window { salience, offset_gate } => Gates::Window { salience: salience.with_hot(&mut hot.gates), offset_gate: offset_gate.alias() },
                g => g.alias(),
            },
            offset_value: self.offset_value.alias(),
            mask_gate: self.mask_gate.alias(),
            mask_value: self.mask_value.alias(),
            out: self.out.with_hot(output),
            ..*self
        }
    }

    fn d(&self) -> usize {
        self.out.dim()
    }
    /// Window mode's gate scores per word (H x V).
    fn salience(&self) -> Option<&Hogwild<'_>> {
        match &self.gates {
            Gates::Window { salience, .. } => Some(salience),
            Gates::Absolute { .. } => None,
        }
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
    /// Rows of the offset/position tables.
    fn r(&self) -> usize {
        self.offset_value.rows()
    }
    fn vocab_len(&self) -> usize {
        self.alpha.rows()
    }
    /// Largest number of experts for one target (the mask expert included).
    fn max_experts(&self) -> usize {
        match &self.gates {
            Gates::Window { .. } => 2 * self.window + 1,
            Gates::Absolute { max_len, .. } => *max_len,
        }
    }

    /// Apply a thread's accumulated offset/mask gradients to the shared parameters.
    fn flush_shared(&self, sc: &mut Shared) {
        if sc.pending == 0 {
            return;
        }
        let (r, d_in, h) = (self.r(), self.d_in(), self.heads);
        match &self.gates {
            Gates::Window { offset_gate, .. } => {
                for hh in 0..h {
                    offset_gate.add_to_row(hh, 1.0, &sc.d_offset_gate[hh * r..(hh + 1) * r]);
                }
                sc.d_offset_gate.fill(0.0);
            }
            Gates::Absolute { query, pos_key, .. } => {
                let dk = query.cols();
                for row in 0..query.rows() {
                    query.add_to_row(row, 1.0, &sc.d_query[row * dk..(row + 1) * dk]);
                    pos_key.add_to_row(row, 1.0, &sc.d_pos_key[row * dk..(row + 1) * dk]);
                }
                sc.d_query.fill(0.0);
                sc.d_pos_key.fill(0.0);
            }
        }
        for k in 0..r {
            self.offset_value.add_to_row(k, 1.0, &sc.d_offset_value[k * d_in..(k + 1) * d_in]);
        }
        if self.has_mask() {
            self.mask_gate.add_to_row(0, 1.0, &sc.d_mask_gate);
            self.mask_value.add_to_row(0, 1.0, &sc.d_mask_value);
            sc.d_mask_gate.fill(0.0);
            sc.d_mask_value.fill(0.0);
        }
        sc.d_offset_value.fill(0.0);
        sc.dx.fill(0.0);
        sc.pending = 0;
    }

    /// Forward pass for one target given its experts (`sc.words`, `sc.offsets`;
    /// the mask expert last when enabled): fills x, theta, zh and z.
    pub fn forward(&self, sc: &mut MoeScratch) {
        self.forward_slot(&mut sc.cur);
    }

    /// The gate weights θ_h(m) of the experts loaded in `sc` (the mask
    /// expert last): the logits, then each head's softmax over the experts.
    fn gate_weights(&self, sc: &mut Slot) {
        let h = self.heads;
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        // Gates first: they need no value row, so each expert's value row is
        // then read once, in one sweep that also mixes it into every head.
        match &self.gates {
            Gates::Window { salience, offset_gate } => {
                // expert-major: one expert's word and offset, then its H gates
                let og = offset_gate.as_slice();
                let r = offset_gate.cols();
                for m in 0..nc {
                    let (w, o) = (sc.words[m] as usize, sc.offsets[m] as usize);
                    for hh in 0..h {
                        sc.theta[hh * n + m] = salience.get(hh, w) + og[hh * r + o];
                    }
                }
                if self.has_mask() {
                    for (hh, &g) in self.mask_gate.row(0)[..h].iter().enumerate() {
                        sc.theta[hh * n + nc] = g;
                    }
                }
            }
            Gates::Absolute { query, key, pos_key, max_len } => {
                let dk = query.cols();
                let scale = 1.0 / (dk as f32).sqrt();
                let v = self.vocab_len();
                for hh in 0..h {
                    let th = &mut sc.theta[hh * n..(hh + 1) * n];
                    let q = &mut sc.q[hh * dk..(hh + 1) * dk];
                    q.copy_from_slice(query.row(hh * max_len + sc.tpos));
                    for m in 0..nc {
                        let kw = key.row(hh * v + sc.words[m] as usize);
                        let kp = pos_key.row(hh * max_len + sc.offsets[m] as usize);
                        th[m] = (dot(q, kw) + dot(q, kp)) * scale;
                    }
                    if self.has_mask() {
                        let mk = &self.mask_gate.row(0)[hh * dk..(hh + 1) * dk];
                        th[nc] = (dot(q, mk) + dot(q, pos_key.row(hh * max_len + sc.tpos))) / (dk as f32).sqrt();
                    }
                }
            }
        }
        // Every head's softmax over its n experts.
        if n > 0 {
            softmax_rows(&mut sc.theta[..h * n], n);
        }
    }

    fn forward_slot(&self, sc: &mut Slot) {
        self.gate_weights(sc);
        let (d, d_in, s, h) = (self.d(), self.d_in(), self.s(), self.heads);
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        // x(m) = alpha[w_m] + offset_value[r_m], and z_h += θ_h(m) x(m)[head h]:
        // one sweep per expert over all heads (zh is H blocks of s = D_in / H).
        sc.zh.fill(0.0);
        for m in 0..nc {
            let (a, b) = (self.alpha.row(sc.words[m] as usize), self.offset_value.row(sc.offsets[m] as usize));
            for hh in 0..h {
                sc.tm[hh] = sc.theta[hh * n + m];
            }
            mix(a, b, &mut sc.x[m * d_in..(m + 1) * d_in], &sc.tm, &mut sc.zh);
        }
        if self.has_mask() {
            // the mask expert's value: mask_value (+ pos_value[j] in sentence mode)
            let b = match &self.gates {
                Gates::Window { .. } => &sc.zero[..d_in],
                Gates::Absolute { .. } => self.offset_value.row(sc.tpos),
            };
            for hh in 0..h {
                sc.tm[hh] = sc.theta[hh * n + nc];
            }
            mix(self.mask_value.row(0), b, &mut sc.x[nc * d_in..n * d_in], &sc.tm, &mut sc.zh);
        }
        if self.full {
            sc.z[..d].fill(0.0);
            for hh in 0..h {
                axpy(1.0, &sc.zh[hh * s..(hh + 1) * s], &mut sc.z[..d]);
            }
        } else {
            sc.z[..d].copy_from_slice(&sc.zh[..d]);
        }
    }

    /// Backward pass given g = lr·∂log p/∂z in `sc.grad`: updates alpha and
    /// salience (shared, Hogwild) and accumulates the offset/mask gradients.
    /// Each expert is one sweep over all heads (`Hogwild::dot_add_blocks`):
    /// a_h(m) = g_h · x(m)_h, alpha[w_m] += θ_h g_h, d offset_value += θ_h g_h.
    /// The gates then need g_h · z_h = Σ_m θ_h(m) a_h(m) (z_h is that mixture
    /// of the x(m)_h), so no separate pass over z.
    fn backward(&self, sc: &mut Slot, acc: &mut Shared) {
        let (d, d_in, h) = (self.d(), self.d_in(), self.heads);
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        // g per head block of a value row: slice heads own their part of g;
        // full heads all see the whole g.
        if self.full {
            for hh in 0..h {
                acc.gexp[hh * d..(hh + 1) * d].copy_from_slice(&sc.grad[..d]);
            }
        } else {
            acc.gexp[..d].copy_from_slice(&sc.grad[..d]);
        }
        // a_h(m) for every expert (n x H), and the value updates.
        for m in 0..nc {
            let (w, o) = (sc.words[m] as usize, sc.offsets[m] as usize);
            for hh in 0..h {
                sc.tm[hh] = sc.theta[hh * n + m];
            }
            let dov = &mut acc.d_offset_value[o * d_in..(o + 1) * d_in];
            self.alpha.dot_add_blocks(w, &sc.tm, &acc.gexp[..d_in], &sc.x[m * d_in..(m + 1) * d_in], dov, &mut acc.dots[m * h..(m + 1) * h]);
        }
        if self.has_mask() {
            // The mask expert (last): its value gradient goes to the pending
            // sums (and to pos_value[j] in sentence mode; else to a scratch row).
            for hh in 0..h {
                sc.tm[hh] = sc.theta[hh * n + nc];
            }
            let y2 = match &self.gates {
                Gates::Window { .. } => &mut acc.dx[..d_in],
                Gates::Absolute { .. } => &mut acc.d_offset_value[sc.tpos * d_in..(sc.tpos + 1) * d_in],
            };
            dot_axpy2(&acc.gexp[..d_in], &sc.x[nc * d_in..n * d_in], 1.0, &sc.tm, &mut acc.d_mask_value, y2, &mut acc.dots[nc * h..n * h]);
        }
        self.gate_grads(sc, acc);
    }

    /// The gates' part of the backward pass, from the dots a_h(m) = g_h ·
    /// x(m)_h in `acc.dots`: salience (shared, Hogwild) and the pending
    /// offset/mask gate gradients; flushes those every `SHARED_FLUSH` targets.
    fn gate_grads(&self, sc: &Slot, acc: &mut Shared) {
        let (h, r) = (self.heads, self.r());
        let nc = sc.words.len();
        let n = nc + self.has_mask() as usize;
        for hh in 0..h {
            let th = &sc.theta[hh * n..(hh + 1) * n];
            acc.gz[hh] = th.iter().zip(acc.dots[hh..].iter().step_by(h)).map(|(t, a)| t * a).sum();
        }
        // The gates: ∂l_h(m) = θ_h(m) (a_h(m) − g_h · z_h).
        match &self.gates {
            Gates::Window { salience, .. } => {
                let dl = |m: usize, hh: usize| sc.theta[hh * n + m] * (acc.dots[m * h + hh] - acc.gz[hh]);
                for m in 0..nc {
                    let (w, o) = (sc.words[m] as usize, sc.offsets[m] as usize);
                    let f = self.alpha.factor(w);
                    for hh in 0..h {
                        let g = dl(m, hh);
                        salience.add_at(hh, w, g * f);
                        acc.d_offset_gate[hh * r + o] += g;
                    }
                }
                for hh in 0..h * (n - nc) {
                    acc.d_mask_gate[hh] += dl(nc, hh);
                }
            }
            Gates::Absolute { query, key, pos_key, max_len } => {
                let dk = query.cols();
                let scale = 1.0 / (dk as f32).sqrt();
                for m in 0..n {
                    for hh in 0..h {
                        let g = sc.theta[hh * n + m] * (acc.dots[m * h + hh] - acc.gz[hh]) * scale;
                        let q = &sc.q[hh * dk..(hh + 1) * dk];
                        let row = hh * max_len + sc.tpos;
                        let dq = &mut acc.d_query[row * dk..(row + 1) * dk];
                        if m < nc {
                            // l = <q, key[w] + pos_key[o]> / sqrt(d_k):
                            // dq += g * key[w] (before its update), key[w] += g * q
                            let (w, o) = (sc.words[m] as usize, sc.offsets[m] as usize);
                            key.exchange(hh * self.vocab_len() + w, g, q, dq); // key carries the per-word factor
                            axpy(g, pos_key.row(hh * max_len + o), dq);
                            axpy(g, q, &mut acc.d_pos_key[(hh * max_len + o) * dk..(hh * max_len + o + 1) * dk]);
                        } else {
                            // the mask expert: l = <q, mask_key + pos_key[tpos]> / sqrt(d_k)
                            axpy(g, &self.mask_gate.row(0)[hh * dk..(hh + 1) * dk], dq);
                            axpy(g, pos_key.row(row), dq);
                            axpy(g, q, &mut acc.d_mask_gate[hh * dk..(hh + 1) * dk]);
                            axpy(g, q, &mut acc.d_pos_key[row * dk..(row + 1) * dk]);
                        }
                    }
                }
            }
        }
        acc.pending += 1;
        if acc.pending >= SHARED_FLUSH {
            self.flush_shared(acc);
        }
    }

    /// One example: forward, output layer, backward. Returns the loss.
    pub fn example(&self, sc: &mut MoeScratch, target: u32, lr: f32, rng: &mut Rng, want_loss: bool) -> f32 {
        if let Some(loss) = self.example_in_registers(sc, target, lr, rng, want_loss) {
            return loss;
        }
        self.step_with(sc, |z, grad, out| self.out.step(z, 1, target, lr, grad, out, rng, want_loss))
    }

    /// `example` in one register-resident kernel (`Hogwild::moe_target`:
    /// the value sweeps and the output layer, z and g in registers) between
    /// the gate weights and the gates' gradients, where one serves (slice
    /// heads, negative sampling alone, a kernel for the size, no update
    /// factors); None, having done nothing, elsewhere. The same arithmetic
    /// in the same order as `step_with`, so the same vectors bit for bit.
    fn example_in_registers(&self, sc: &mut MoeScratch, target: u32, lr: f32, rng: &mut Rng, want_loss: bool) -> Option<f32> {
        if self.full || !self.out.has_cbow_kernel(&self.alpha) || !self.alpha.has_moe_kernel(self.heads) {
            return None;
        }
        let (cur, acc) = (&mut sc.cur, &mut sc.acc);
        self.gate_weights(cur);
        let mask = self.has_mask().then(|| MoeMask {
            value: self.mask_value.row(0),
            pos: match &self.gates {
                Gates::Window { .. } => MaskPos::Zero(&cur.zero, &mut acc.dx),
                Gates::Absolute { .. } => MaskPos::Value(cur.tpos),
            },
            dvalue: &mut acc.d_mask_value,
        });
        let mut e = MoeExperts { words: &cur.words, offsets: &cur.offsets, theta: &cur.theta, heads: self.heads, x: &mut cur.x, z: &mut cur.z, dots: &mut acc.dots };
        let mut loss = 0.0;
        let rows = self.out.exact_rows(target, &mut sc.out, rng);
        let coef = self.out.coefficients(lr, want_loss, &mut loss);
        self.alpha.moe_target(&mut e, &self.offset_value, &mut acc.d_offset_value, mask, &self.out.beta, rows, coef);
        self.gate_grads(cur, acc);
        Some(loss)
    }

    /// One example with the output layer step given by the caller: forward,
    /// `output(z, grad, scratch)` (adds lr·∂log p/∂z to grad, returns the
    /// loss), backward. The tabular model scores only the masked column here.
    #[inline]
    pub fn step_with(&self, sc: &mut MoeScratch, output: impl FnOnce(&[f32], &mut [f32], &mut OutputScratch) -> f32) -> f32 {
        let d = self.d();
        let cur = &mut sc.cur;
        self.forward_slot(cur);
        cur.grad[..d].fill(0.0);
        let loss = output(&cur.z[..d], &mut cur.grad[..d], &mut sc.out);
        self.backward(cur, &mut sc.acc);
        loss
    }

    /// Finish: apply pending shared gradients (call at the end of a run).
    pub fn finish(&self, sc: &mut MoeScratch) {
        self.flush_shared(&mut sc.acc);
    }

    fn batched(&self) -> bool {
        self.batch > 1 && self.out.batchable()
    }

    /// Mini-batch path: run the forward pass of the target whose experts
    /// are loaded in slot `i`, queue it, and train the batch once full.
    fn queue(&self, sc: &mut MoeScratch, target: u32, lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        let d = self.d();
        let i = sc.targets.len();
        self.forward_slot(&mut sc.batch[i]);
        sc.zs[i * d..(i + 1) * d].copy_from_slice(&sc.batch[i].z[..d]);
        sc.targets.push(target);
        if sc.targets.len() == self.batch {
            self.flush_batch(sc, lr, rng, want_loss)
        } else {
            0.0
        }
    }

    /// Train the queued targets: one shared draw of negatives for all of
    /// them (`OutputLayer::negative_batch`), then each target's backward pass.
    fn flush_batch(&self, sc: &mut MoeScratch, lr: f32, rng: &mut Rng, want_loss: bool) -> f64 {
        let (d, b) = (self.d(), sc.targets.len());
        if b == 0 {
            return 0.0;
        }
        let gs = &mut sc.gs[..b * d];
        gs.fill(0.0);
        let loss = self.out.negative_batch(&sc.zs[..b * d], &sc.targets, lr, gs, &mut sc.out, rng, want_loss);
        for (i, slot) in sc.batch[..b].iter_mut().enumerate() {
            slot.grad[..d].copy_from_slice(&gs[i * d..(i + 1) * d]);
            self.backward(slot, &mut sc.acc);
        }
        sc.targets.clear();
        loss as f64
    }

    /// Queue one example (as `sc_set` loads it) on the mini-batch path;
    /// trains the batch once full (for tests: the batch as one call).
    #[allow(clippy::too_many_arguments)]
    pub fn queue_example(&self, sc: &mut MoeScratch, words: &[u32], offsets: &[isize], target: u32,
                         target_pos: Option<usize>, lr: f32, rng: &mut Rng) -> f64 {
        let slot = &mut sc.batch[sc.targets.len()];
        slot.set(words, offsets, self.window, target_pos);
        self.queue(sc, target, lr, rng, false)
    }

    /// Train what the mini-batch path has queued.
    pub fn flush_batch_now(&self, sc: &mut MoeScratch, lr: f32, rng: &mut Rng) -> f64 {
        self.flush_batch(sc, lr, rng, false)
    }

    fn slot(&self) -> Slot {
        let (d, d_in, h) = (self.d(), self.d_in(), self.heads);
        let n = self.max_experts();
        let dk = match &self.gates {
            Gates::Window { .. } => 0,
            Gates::Absolute { query, .. } => query.cols(),
        };
        Slot {
            x: vec![0.0; n * d_in],
            theta: vec![0.0; h * n],
            zh: vec![0.0; h * self.s()],
            z: vec![0.0; d],
            grad: vec![0.0; d],
            words: Vec::with_capacity(n),
            offsets: Vec::with_capacity(n),
            tpos: 0,
            q: vec![0.0; h * dk],
            tm: vec![0.0; h],
            zero: vec![0.0; d_in],
        }
    }
}

impl Model for Moe<'_> {
    type Scratch = MoeScratch;

    fn scratch(&self) -> MoeScratch {
        let (d, d_in, h, r) = (self.d(), self.d_in(), self.heads, self.r());
        let dq_len = match &self.gates {
            Gates::Window { .. } => 0,
            Gates::Absolute { query, .. } => query.rows() * query.cols(),
        };
        let b = if self.batched() { self.batch } else { 0 };
        MoeScratch {
            cur: self.slot(),
            batch: (0..b).map(|_| self.slot()).collect(),
            zs: vec![0.0; b * d],
            gs: vec![0.0; b * d],
            targets: Vec::with_capacity(b),
            acc: Shared {
                dx: vec![0.0; d_in],
                gexp: vec![0.0; d_in],
                gz: vec![0.0; h],
                dots: vec![0.0; h * self.max_experts()],
                d_offset_gate: if dq_len == 0 { vec![0.0; h * r] } else { Vec::new() },
                d_query: vec![0.0; dq_len],
                d_pos_key: vec![0.0; dq_len],
                d_offset_value: vec![0.0; r * d_in],
                d_mask_gate: vec![0.0; self.mask_gate.cols().max(h)],
                d_mask_value: vec![0.0; d_in],
                pending: 0,
            },
            with_mask: self.has_mask(),
            out: OutputScratch::new(self.alpha.rows(), &self.out.spec, b.max(1)),
            hot: None,
        }
    }

    fn worker_scratch(&self, hot: HotSpec) -> MoeScratch {
        let mut private = Privatized::new(hot, &self.alpha, &self.out);
        if let (Some(p), Some(salience)) = (private.as_mut(), self.salience()) {
            p.gates = HotRows::of_cols(salience, hot.rows);
        }
        MoeScratch { hot: private, ..self.scratch() }
    }

    fn train_sentence(&self, sc: &mut MoeScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        let Some(mut hot) = sc.hot.take() else { return self.train(sc, sent, lr, rng, want_loss) };
        let done = self.with_hot(&mut hot).train(sc, sent, lr, rng, want_loss);
        hot.trained(done.1, &self.alpha, &self.out, self.salience());
        sc.hot = Some(hot);
        done
    }

    fn publish(&self, sc: &mut MoeScratch) {
        publish_rows(&mut sc.hot, &self.alpha, &self.out, self.salience());
    }

    fn end_worker(&self, sc: &mut MoeScratch) {
        self.finish(sc);
    }
}

impl Moe<'_> {
    /// One sentence (`Model::train_sentence`) on this model's rows as given.
    fn train(&self, sc: &mut MoeScratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        sc.out.new_sentence();
        let mut loss = 0.0f64;
        let mut examples = 0;
        let batched = self.batched();
        if let Gates::Absolute { max_len, .. } = &self.gates {
            // Sentence mode: every other word of the chunk is an expert.
            for chunk in sent.chunks(*max_len) {
                if chunk.len() < 2 {
                    continue;
                }
                for j in 0..chunk.len() {
                    if batched {
                        sc.batch[sc.targets.len()].load_masked(chunk, j);
                        loss += self.queue(sc, chunk[j], lr, rng, want_loss);
                    } else {
                        sc.load_masked(chunk, j);
                        loss += self.example(sc, chunk[j], lr, rng, want_loss) as f64;
                    }
                    examples += 1;
                }
            }
        } else {
            for pos in 0..sent.len() {
                let (lo, hi) = window_and_prefetch(sent, pos, self.window, self.shrink, rng, &self.alpha, &self.out);
                if let (Some(&w), Gates::Window { salience, .. }) = (sent.get(pos + self.window + 1), &self.gates) {
                    // the entering word's gate scores: one cache line per head (salience is H x V)
                    for hh in 0..self.heads {
                        salience.prefetch_at(hh, w as usize);
                    }
                }
                let slot = if batched { &mut sc.batch[sc.targets.len()] } else { &mut sc.cur };
                slot.load_window(sent, pos, lo, hi, self.window);
                if slot.words.is_empty() {
                    continue;
                }
                loss += if batched {
                    self.queue(sc, sent[pos], lr, rng, want_loss)
                } else {
                    self.example(sc, sent[pos], lr, rng, want_loss) as f64
                };
                examples += 1;
            }
        }
        loss += self.flush_batch(sc, lr, rng, want_loss);
        // A sentence ends with its updates applied, so a run stopped between
        // sentences (a checkpoint) leaves nothing pending in the scratch.
        self.flush_shared(&mut sc.acc);
        (loss, examples)
    }
}

/// Load one example's experts into the scratch. Window mode: `offsets` are
/// −window..window; sentence mode (`target_pos` given): absolute positions.
pub fn sc_set(sc: &mut MoeScratch, words: &[u32], offsets: &[isize], window: usize, target_pos: Option<usize>) {
    sc.cur.set(words, offsets, window, target_pos);
}

impl Slot {
    fn set(&mut self, words: &[u32], offsets: &[isize], window: usize, target_pos: Option<usize>) {
        self.words.clear();
        self.offsets.clear();
        self.words.extend_from_slice(words);
        match target_pos {
            None => self.offsets.extend(offsets.iter().map(|&r| offset_index(r, window) as u32)),
            Some(t) => {
                self.offsets.extend(offsets.iter().map(|&r| r as u32));
                self.tpos = t;
            }
        }
    }
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

    /// The register-resident path of `example` (`Hogwild::moe_target`) against
    /// the separate kernels (`step_with` with the output layer's `step`):
    /// the same draws and bit for bit the same parameters after a run of
    /// targets, window and sentence mode, 1 and 4 heads, with a mask expert
    /// and a word repeated among the experts.
    #[test]
    fn register_path_matches_separate_kernels() {
        let (v, d, window, max_len) = (7, 32, 2, 6);
        if crate::simd::moe_register_level(d, 1).is_none() {
            return;
        }
        let voc = Vocab::from_sorted(
            (0..v).map(|i| (format!("w{i}"), 20 - i as u64)).collect(),
            &VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false },
        );
        let sent = [1u32, 4, 2, 4, 6, 0, 3, 5, 2, 1];
        for (absolute, h) in [(false, 1), (false, 4), (true, 1), (true, 4)] {
            let r = if absolute { max_len } else { 2 * window };
            let dk = 8;
            let mut rng = Rng::new(3);
            let mut init = |len: usize| (0..len).map(|_| rng.unit_f32() - 0.5).collect::<Vec<f32>>();
            let base = [init(v * d), init(v * d), init(h * v), init(h * r), init(r * d), init(if absolute { h * dk } else { h }), init(d),
                        init(h * max_len * dk), init(h * v * dk), init(h * max_len * dk)];
            let mut results = Vec::new();
            for registers in [true, false] {
                let mut p = base.clone();
                let [alpha, beta, sal, og, ov, mg, mv, query, key, pos_key] = &mut p;
                let gates = if absolute {
                    Gates::Absolute { query: Hogwild::new(query, dk), key: Hogwild::new(key, dk), pos_key: Hogwild::new(pos_key, dk), max_len }
                } else {
                    Gates::Window { salience: Hogwild::new(sal, v), offset_gate: Hogwild::new(og, r) }
                };
                let m = Moe {
                    alpha: Hogwild::new(alpha, d),
                    gates,
                    offset_value: Hogwild::new(ov, d),
                    mask_gate: Hogwild::new(mg, if absolute { h * dk } else { h }),
                    mask_value: Hogwild::new(mv, d),
                    out: OutputLayer { beta: Hogwild::new(beta, d), syn1: Hogwild::empty(), bias: None, spec: OutputSpec { negative: 3, hs: false, softmax: false }, vocab: &voc, sig: SigmoidTable::new() },
                    heads: h,
                    full: false,
                    window,
                    shrink: false,
                    batch: 1,
                };
                let (mut sc, mut rng) = (m.scratch(), Rng::new(11));
                for (pos, &target) in sent.iter().enumerate() {
                    if absolute {
                        let start = pos / max_len * max_len;
                        sc.load_masked(&sent[start..(start + max_len).min(sent.len())], pos - start);
                    } else {
                        let (lo, hi) = (pos.saturating_sub(window), (pos + window + 1).min(sent.len()));
                        sc.cur.load_window(&sent, pos, lo, hi, window);
                    }
                    if registers {
                        assert!(m.example_in_registers(&mut sc, target, 0.05, &mut rng, false).is_some());
                    } else {
                        m.step_with(&mut sc, |z, grad, out| m.out.step(z, 1, target, 0.05, grad, out, &mut rng, false));
                    }
                }
                m.finish(&mut sc);
                results.push(p.iter().map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>()).collect::<Vec<_>>());
            }
            assert!(results[0] != base.iter().map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>()).collect::<Vec<_>>());
            assert!(results[0] == results[1], "absolute={absolute} heads={h}");
        }
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
            gates: Gates::Window { salience: Hogwild::new(&mut sal, v), offset_gate: Hogwild::new(&mut og, 2 * window) },
            offset_value: Hogwild::new(&mut ov, d),
            mask_gate: Hogwild::empty(),
            mask_value: Hogwild::empty(),
            out: OutputLayer { beta: Hogwild::new(&mut beta, d), syn1: Hogwild::empty(), bias: None, spec, vocab: &voc, sig: SigmoidTable::new() },
            heads: h,
            full: false,
            window,
            shrink: false,
            batch: 1,
        };
        let mut sc = m.scratch();
        sc_set(&mut sc, &[1, 3, 4], &[-2, -1, 1], window, None);
        m.forward(&mut sc);
        for j in 0..d {
            let mean = (alpha_copy[d + j] + alpha_copy[3 * d + j] + alpha_copy[4 * d + j]) / 3.0;
            assert!((sc.z()[j] - mean).abs() < 1e-6);
        }
    }
}
