//! Vector kernels with run-time dispatch: AVX-512F, AVX2+FMA, NEON (always on
//! aarch64) or scalar. One wheel runs on any machine; the best level the CPU
//! supports is detected once and cached.
//!
//! Public functions (`dot`, `axpy`, `scale`) are safe: they check lengths and
//! pick the kernel. `unsafe` is confined to this file; each block says why it
//! is sound.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Scalar = 1,
    Avx2Fma = 2,
    Avx512 = 3,
    Neon = 4,
}

/// The active level (0 = not detected yet); `force_level` overrides it.
static LEVEL: AtomicU8 = AtomicU8::new(0);
/// `wide()`'s answer for the current level: 0 unknown, 1 no, 2 yes.
static WIDE: AtomicU8 = AtomicU8::new(0);

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Level::Avx2Fma;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return Level::Neon;
    }
    #[allow(unreachable_code)]
    Level::Scalar
}

fn from_u8(v: u8) -> Level {
    match v {
        2 => Level::Avx2Fma,
        3 => Level::Avx512,
        4 => Level::Neon,
        _ => Level::Scalar,
    }
}

/// The kernel level in use.
#[inline]
pub fn level() -> Level {
    let l = LEVEL.load(Ordering::Relaxed);
    if l != 0 {
        return from_u8(l);
    }
    let d = detect();
    LEVEL.store(d as u8, Ordering::Relaxed);
    d
}

/// Force a kernel level (for tests and benchmarks). A level the CPU lacks is
/// refused and the call returns false; `None` restores automatic detection.
pub fn force_level(l: Option<Level>) -> bool {
    match l {
        None => {
            LEVEL.store(detect() as u8, Ordering::Relaxed);
            WIDE.store(0, Ordering::Relaxed);
            true
        }
        Some(l) => {
            let best = detect();
            let ok = match l {
                Level::Scalar => true,
                Level::Avx2Fma => best == Level::Avx2Fma || best == Level::Avx512,
                Level::Avx512 => best == Level::Avx512,
                Level::Neon => best == Level::Neon,
            };
            if ok {
                LEVEL.store(l as u8, Ordering::Relaxed);
                WIDE.store(0, Ordering::Relaxed);
            }
            ok
        }
    }
}

pub fn level_name() -> &'static str {
    match level() {
        Level::Scalar => "scalar",
        Level::Avx2Fma => "avx2+fma",
        Level::Avx512 => "avx512f",
        Level::Neon => "neon",
    }
}

// ---------------------------------------------------------------- scalar

fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators so the compiler can keep several lanes in flight.
    let mut s = [0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            s[k] += a[4 * i + k] * b[4 * i + k];
        }
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for i in 4 * chunks..a.len() {
        t += a[i] * b[i];
    }
    t
}

fn axpy_scalar(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

fn update_pair_scalar(g: f32, h: &[f32], out: &mut [f32], grad: &mut [f32]) {
    for ((o, gr), x) in out.iter_mut().zip(grad.iter_mut()).zip(h) {
        *gr += g * *o;
        *o += g * *x;
    }
}

fn scale_scalar(alpha: f32, x: &mut [f32]) {
    for xi in x.iter_mut() {
        *xi *= alpha;
    }
}

// ---------------------------------------------------------------- x86_64

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `f()`, with whatever gets inlined into it code-generated for AVX2+FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut t = _mm_cvtss_f32(s);
        while i < n {
            t += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        t
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let px = x.as_ptr();
        let py = y.as_mut_ptr();
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn update_pair_avx2(g: f32, h: &[f32], out: &mut [f32], grad: &mut [f32]) {
        let n = h.len();
        let (ph, po, pg) = (h.as_ptr(), out.as_mut_ptr(), grad.as_mut_ptr());
        let vg = _mm256_set1_ps(g);
        let mut i = 0;
        while i + 8 <= n {
            let o = _mm256_loadu_ps(po.add(i));
            _mm256_storeu_ps(pg.add(i), _mm256_fmadd_ps(vg, o, _mm256_loadu_ps(pg.add(i))));
            _mm256_storeu_ps(po.add(i), _mm256_fmadd_ps(vg, _mm256_loadu_ps(ph.add(i)), o));
            i += 8;
        }
        while i < n {
            let o = *po.add(i);
            *pg.add(i) += g * o;
            *po.add(i) = o + g * *ph.add(i);
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn scores8_avx2<const VB: usize>(z: &[[f32; 8]; VB], rows: &[&[[f32; 8]; VB]; 8]) -> [f32; 8] {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (a, row) in acc.iter_mut().zip(rows) {
            let mut t = _mm256_mul_ps(_mm256_loadu_ps(z[0].as_ptr()), _mm256_loadu_ps(row[0].as_ptr()));
            for b in 1..VB {
                t = _mm256_fmadd_ps(_mm256_loadu_ps(z[b].as_ptr()), _mm256_loadu_ps(row[b].as_ptr()), t);
            }
            *a = t;
        }
        let t0 = _mm256_hadd_ps(acc[0], acc[1]);
        let t1 = _mm256_hadd_ps(acc[2], acc[3]);
        let t2 = _mm256_hadd_ps(acc[4], acc[5]);
        let t3 = _mm256_hadd_ps(acc[6], acc[7]);
        // [s0 s1 s2 s3 | s0' s1' s2' s3']: the sums of the low and the high halves
        let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
        let r = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1));
        let mut o = [0f32; 8];
        _mm256_storeu_ps(o.as_mut_ptr(), r);
        o
    }

    /// One row of `exchange_rows_avx2`: `acc += g·row`, `row += g·x`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exchange_row_avx2<const VB: usize>(row: &mut [[f32; 8]; VB], gv: __m256, xv: &[__m256; VB], acc: &mut [__m256; VB]) {
        for b in 0..VB {
            let p = row[b].as_mut_ptr();
            let old = _mm256_loadu_ps(p);
            acc[b] = _mm256_fmadd_ps(gv, old, acc[b]);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(gv, xv[b], old));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exchange_rows_avx2<const VB: usize>(rows: &mut [[[f32; 8]; VB]], g: &[f32], x: &[[f32; 8]; VB]) -> [[f32; 8]; VB] {
        let mut xv = [_mm256_setzero_ps(); VB];
        for (v, xb) in xv.iter_mut().zip(x) {
            *v = _mm256_loadu_ps(xb.as_ptr());
        }
        let (mut even, mut odd) = ([_mm256_setzero_ps(); VB], [_mm256_setzero_ps(); VB]);
        let n = rows.len().min(g.len());
        let (pairs, rest) = rows[..n].as_chunks_mut::<2>();
        for (two, gg) in pairs.iter_mut().zip(g.chunks_exact(2)) {
            exchange_row_avx2(&mut two[0], _mm256_set1_ps(gg[0]), &xv, &mut even);
            exchange_row_avx2(&mut two[1], _mm256_set1_ps(gg[1]), &xv, &mut odd);
        }
        if let Some(row) = rest.first_mut() {
            exchange_row_avx2(row, _mm256_set1_ps(g[n - 1]), &xv, &mut even);
        }
        let mut o = [[0f32; 8]; VB];
        for b in 0..VB {
            _mm256_storeu_ps(o[b].as_mut_ptr(), _mm256_add_ps(even[b], odd[b]));
        }
        o
    }

    /// `$name(x)`: the lanes of `x` combined by `$op` in every lane, by a
    /// butterfly over the halves, then pairs, then neighbours (the portable
    /// `butterfly`'s order).
    macro_rules! lanes_fold_avx2 {
        ($name:ident, $op:ident) => {
            #[target_feature(enable = "avx2,fma")]
            #[inline]
            pub unsafe fn $name(x: [f32; 8]) -> [f32; 8] {
                let v = _mm256_loadu_ps(x.as_ptr());
                let v = $op(v, _mm256_permute2f128_ps::<0x01>(v, v));
                let v = $op(v, _mm256_permute_ps::<0b0100_1110>(v));
                let v = $op(v, _mm256_permute_ps::<0b1011_0001>(v));
                let mut o = [0f32; 8];
                _mm256_storeu_ps(o.as_mut_ptr(), v);
                o
            }
        };
    }
    lanes_fold_avx2!(lanes_max_avx2, _mm256_max_ps);
    lanes_fold_avx2!(lanes_sum_avx2, _mm256_add_ps);

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn scale_avx2(alpha: f32, x: &mut [f32]) {
        let n = x.len();
        let px = x.as_mut_ptr();
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(px.add(i), _mm256_mul_ps(va, _mm256_loadu_ps(px.add(i))));
            i += 8;
        }
        while i < n {
            *px.add(i) *= alpha;
            i += 1;
        }
    }

    /// The last `t` (1..16) floats of a row at `p`, zeros above: 4, 8 and
    /// 12 by plain loads, which take their data from a pending plain store
    /// of the same piece (a masked load waits for the store to reach the cache).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn tail_load(p: *const f32, t: usize) -> __m512 {
        match t {
            4 => _mm512_zextps128_ps512(_mm_loadu_ps(p)),
            8 => _mm512_zextps256_ps512(_mm256_loadu_ps(p)),
            12 => _mm512_insertf32x4::<2>(_mm512_zextps256_ps512(_mm256_loadu_ps(p)), _mm_loadu_ps(p.add(8))),
            _ => _mm512_maskz_loadu_ps(((1u32 << t) - 1) as __mmask16, p),
        }
    }

    /// Store the first `t` (1..16) lanes of `v` at `p`, by plain stores where
    /// `t` is 4, 8 or 12 (see `tail_load`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn tail_store(p: *mut f32, t: usize, v: __m512) {
        match t {
            4 => _mm_storeu_ps(p, _mm512_castps512_ps128(v)),
            8 => _mm256_storeu_ps(p, _mm512_castps512_ps256(v)),
            12 => {
                _mm256_storeu_ps(p, _mm512_castps512_ps256(v));
                _mm_storeu_ps(p.add(8), _mm512_extractf32x4_ps::<2>(v));
            }
            _ => _mm512_mask_storeu_ps(p, ((1u32 << t) - 1) as __mmask16, v),
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let pa = a.as_ptr();
        let pb = b.as_ptr();
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)), acc1);
            i += 32;
        }
        if i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            i += 16;
        }
        if i < n {
            // Partial tail: lanes past the end load as zero.
            let xa = tail_load(pa.add(i), n - i);
            let xb = tail_load(pb.add(i), n - i);
            acc1 = _mm512_fmadd_ps(xa, xb, acc1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let px = x.as_ptr();
        let py = y.as_mut_ptr();
        let va = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            let r = _mm512_fmadd_ps(va, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), r);
            i += 16;
        }
        if i < n {
            let r = _mm512_fmadd_ps(va, tail_load(px.add(i), n - i), tail_load(py.add(i), n - i));
            tail_store(py.add(i), n - i, r);
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn update_pair_avx512(g: f32, h: &[f32], out: &mut [f32], grad: &mut [f32]) {
        let n = h.len();
        let (ph, po, pg) = (h.as_ptr(), out.as_mut_ptr(), grad.as_mut_ptr());
        let vg = _mm512_set1_ps(g);
        let mut i = 0;
        while i + 16 <= n {
            let o = _mm512_loadu_ps(po.add(i));
            _mm512_storeu_ps(pg.add(i), _mm512_fmadd_ps(vg, o, _mm512_loadu_ps(pg.add(i))));
            _mm512_storeu_ps(po.add(i), _mm512_fmadd_ps(vg, _mm512_loadu_ps(ph.add(i)), o));
            i += 16;
        }
        if i < n {
            let t = n - i;
            let o = tail_load(po.add(i), t);
            tail_store(pg.add(i), t, _mm512_fmadd_ps(vg, o, tail_load(pg.add(i), t)));
            tail_store(po.add(i), t, _mm512_fmadd_ps(vg, tail_load(ph.add(i), t), o));
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn scale_avx512(alpha: f32, x: &mut [f32]) {
        let n = x.len();
        let px = x.as_mut_ptr();
        let va = _mm512_set1_ps(alpha);
        let mut i = 0;
        while i + 16 <= n {
            _mm512_storeu_ps(px.add(i), _mm512_mul_ps(va, _mm512_loadu_ps(px.add(i))));
            i += 16;
        }
        if i < n {
            tail_store(px.add(i), n - i, _mm512_mul_ps(va, tail_load(px.add(i), n - i)));
        }
    }
}

// ---------------------------------------------------------------- aarch64

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    #[target_feature(enable = "neon")]
    pub unsafe fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = vdupq_n_f32(0.0);
        let mut acc1 = vdupq_n_f32(0.0);
        let mut i = 0;
        while i + 8 <= n {
            acc0 = vfmaq_f32(acc0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            acc1 = vfmaq_f32(acc1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
            i += 8;
        }
        let mut t = vaddvq_f32(vaddq_f32(acc0, acc1));
        while i < n {
            t += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        t
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn axpy_neon(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = vdupq_n_f32(alpha);
        let mut i = 0;
        while i + 4 <= n {
            vst1q_f32(py.add(i), vfmaq_f32(vld1q_f32(py.add(i)), va, vld1q_f32(px.add(i))));
            i += 4;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn update_pair_neon(g: f32, h: &[f32], out: &mut [f32], grad: &mut [f32]) {
        let n = h.len();
        let (ph, po, pg) = (h.as_ptr(), out.as_mut_ptr(), grad.as_mut_ptr());
        let vg = vdupq_n_f32(g);
        let mut i = 0;
        while i + 4 <= n {
            let o = vld1q_f32(po.add(i));
            vst1q_f32(pg.add(i), vfmaq_f32(vld1q_f32(pg.add(i)), vg, o));
            vst1q_f32(po.add(i), vfmaq_f32(o, vg, vld1q_f32(ph.add(i))));
            i += 4;
        }
        while i < n {
            let o = *po.add(i);
            *pg.add(i) += g * o;
            *po.add(i) = o + g * *ph.add(i);
            i += 1;
        }
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn scale_neon(alpha: f32, x: &mut [f32]) {
        let n = x.len();
        let px = x.as_mut_ptr();
        let va = vdupq_n_f32(alpha);
        let mut i = 0;
        while i + 4 <= n {
            vst1q_f32(px.add(i), vmulq_f32(va, vld1q_f32(px.add(i))));
            i += 4;
        }
        while i < n {
            *px.add(i) *= alpha;
            i += 1;
        }
    }
}

// ---------------------------------------------------------------- dispatch

/// Run `f` compiled for AVX2+FMA when the CPU has them (and the level in
/// use is not forced lower), else as it is. For a hot loop written in plain
/// Rust with `#[inline(always)]` helpers: inlined into the AVX2 function
/// below, its loops are auto-vectorised 8 floats wide instead of SSE2's 4.
#[inline(always)]
pub fn with_wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            // SAFETY: `run_avx2` only enables code generation for AVX2 and
            // FMA, which the CPU was just checked to support.
            return unsafe { x86::run_avx2(f) };
        }
    }
    f()
}

/// Does the CPU have AVX2 and FMA, and is the level in use not forced
/// lower? (One load in hot loops: the answer is kept in `WIDE`, 0 while
/// unknown, and forgotten when the level is forced.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn wide() -> bool {
    match WIDE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let w = matches!(level(), Level::Avx2Fma | Level::Avx512)
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            WIDE.store(if w { 2 } else { 1 }, Ordering::Relaxed);
            w
        }
    }
}

/// Eight floats: one AVX register.
pub type Block8 = [f32; 8];

/// Scores of rows against `z`, eight rows at once: lane r of `out[g]` is
/// `Σ_b <z[b], rows[8g + r][b]>` (a row's blocks by multiply-adds, then
/// the eight rows' lane sums by a transposing reduction: in-register
/// shuffles, not eight horizontal sums). In the last group, lanes past the
/// rows hold repeats of the last row's score: the caller masks them.
/// `out` has room for ⌈rows/8⌉ blocks.
#[inline(always)]
pub fn block_scores<const VB: usize>(z: &[Block8; VB], rows: &[[Block8; VB]], out: &mut [Block8]) {
    let last = rows.len().saturating_sub(1);
    let groups = out.iter_mut().enumerate().take(rows.len().div_ceil(8));
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            let (full, _) = rows.as_chunks::<8>();
            for (g, o) in groups {
                let r: [&[Block8; VB]; 8] = match full.get(g) {
                    Some(eight) => eight.each_ref(),
                    None => std::array::from_fn(|k| &rows[(8 * g + k).min(last)]),
                };
                // SAFETY: the CPU has AVX2 and FMA (just checked).
                *o = unsafe { x86::scores8_avx2(z, &r) };
            }
            return;
        }
    }
    for (g, o) in groups {
        let acc: [Block8; 8] = std::array::from_fn(|k| {
            let row = &rows[(8 * g + k).min(last)];
            let mut t = [0f32; 8];
            for (zb, rb) in z.iter().zip(row) {
                for i in 0..8 {
                    t[i] += zb[i] * rb[i];
                }
            }
            t
        });
        // lane sums: pairs within each half, then quads, then the halves
        let pairs = |a: &Block8, b: &Block8| -> Block8 {
            std::array::from_fn(|i| {
                let (half, k) = (i / 4 * 4, i % 4);
                let v = if k < 2 { a } else { b };
                v[half + 2 * (k % 2)] + v[half + 2 * (k % 2) + 1]
            })
        };
        let t = [pairs(&acc[0], &acc[1]), pairs(&acc[2], &acc[3]), pairs(&acc[4], &acc[5]), pairs(&acc[6], &acc[7])];
        let (u0, u1) = (pairs(&t[0], &t[1]), pairs(&t[2], &t[3]));
        *o = std::array::from_fn(|i| if i < 4 { u0[i] + u0[i + 4] } else { u1[i - 4] + u1[i] });
    }
}

/// The word2vec pair update on rows of VB blocks: returns `Σ_r g[r] ·
/// rows[r]` (the rows before their update) and sets `rows[r] += g[r] · x`.
/// With AVX2 a kernel of its own (not inlined: its accumulators keep their
/// registers), the even and the odd rows summed apart, then together.
#[inline(always)]
pub fn exchange_rows<const VB: usize>(rows: &mut [[Block8; VB]], g: &[f32], x: &[Block8; VB]) -> [Block8; VB] {
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            // SAFETY: the CPU has AVX2 and FMA (just checked).
            return unsafe { x86::exchange_rows_avx2(rows, g, x) };
        }
    }
    let mut acc = [[0f32; 8]; VB];
    for (row, &gr) in rows.iter_mut().zip(g) {
        for ((rb, xb), ab) in row.iter_mut().zip(x).zip(acc.iter_mut()) {
            let (old, xv, av) = (*rb, *xb, *ab);
            *ab = std::array::from_fn(|k| gr.mul_add(old[k], av[k]));
            *rb = std::array::from_fn(|k| gr.mul_add(xv[k], old[k]));
        }
    }
    acc
}

/// The maximum of a block's lanes, in every lane (halves, then pairs, then neighbours).
#[inline(always)]
pub fn lanes_max(x: Block8) -> Block8 {
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            // SAFETY: the CPU has AVX2 and FMA (just checked).
            return unsafe { x86::lanes_max_avx2(x) };
        }
    }
    butterfly(x, |a, b| if a > b { a } else { b })
}

/// The sum of a block's lanes, in every lane (in `lanes_max`'s order).
#[inline(always)]
pub fn lanes_sum(x: Block8) -> Block8 {
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            // SAFETY: the CPU has AVX2 and FMA (just checked).
            return unsafe { x86::lanes_sum_avx2(x) };
        }
    }
    butterfly(x, |a, b| a + b)
}

#[inline(always)]
fn butterfly(x: Block8, op: impl Fn(f32, f32) -> f32) -> Block8 {
    let mut t = x;
    for w in [4, 2, 1] {
        let u = t;
        t = std::array::from_fn(|i| op(u[i], u[i ^ w]));
    }
    t
}

/// Vectors shorter than this (an AVX register) skip the dispatch and the
/// kernel call: inline scalar code, as the kernels' own tails compute it.
/// Sentence-mode gates (key size d_k) and narrow heads are this short.
const SHORT: usize = 8;

/// `a · b`. Panics if the lengths differ (a programming error, never user input).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    if a.len() < SHORT {
        // What the vector kernels do below one register, without the call.
        let mut t = 0.0;
        for (x, y) in a.iter().zip(b) {
            t += x * y;
        }
        return t;
    }
    match level() {
        // SAFETY: the level is only set to a feature set the CPU reported
        // (detect / force_level), and both slices have the same length, which
        // the kernels rely on for every pointer offset they read.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::dot_avx512(a, b) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { x86::dot_avx2(a, b) },
        // SAFETY: NEON is part of the aarch64 baseline; lengths checked above.
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { arm::dot_neon(a, b) },
        _ => dot_scalar(a, b),
    }
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    if x.len() < SHORT {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += alpha * xi;
        }
        return;
    }
    match level() {
        // SAFETY: as in `dot`: detected features, equal lengths.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::axpy_avx512(alpha, x, y) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { x86::axpy_avx2(alpha, x, y) },
        // SAFETY: NEON baseline; equal lengths.
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { arm::axpy_neon(alpha, x, y) },
        _ => axpy_scalar(alpha, x, y),
    }
}

/// The output-layer update for one scored row, in one pass:
/// `grad += g * out; out += g * h` (grad sees `out` before its update).
#[inline]
pub fn update_pair(g: f32, h: &[f32], out: &mut [f32], grad: &mut [f32]) {
    assert!(h.len() == out.len() && out.len() == grad.len());
    if h.len() < SHORT {
        for ((o, gr), hi) in out.iter_mut().zip(grad.iter_mut()).zip(h) {
            let old = *o;
            *gr += g * old;
            *o = old + g * hi;
        }
        return;
    }
    match level() {
        // SAFETY: detected features; all three slices have the same length.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::update_pair_avx512(g, h, out, grad) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { x86::update_pair_avx2(g, h, out, grad) },
        // SAFETY: NEON baseline; equal lengths.
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { arm::update_pair_neon(g, h, out, grad) },
        _ => update_pair_scalar(g, h, out, grad),
    }
}

/// `x *= alpha`.
#[inline]
pub fn scale(alpha: f32, x: &mut [f32]) {
    match level() {
        // SAFETY: detected features; a single slice, every offset < len.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { x86::scale_avx512(alpha, x) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { x86::scale_avx2(alpha, x) },
        // SAFETY: NEON baseline.
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { arm::scale_neon(alpha, x) },
        _ => scale_scalar(alpha, x),
    }
}

// ------------------------------------------------ fused output-layer kernels
//
// The output layer scores an output row against one or several hidden rows
// and pushes the gradient both ways. With `dot` / `axpy` / `update_pair` that
// is two or three kernel calls, each behind its own dispatch, per (output
// row, hidden row) pair; these do one output row's whole work in one call,
// with the score-to-gradient map `gfn` (sigmoid table, label, loss) inlined
// into the vector code. Every element sees the same floating-point
// operations in the same order as the separate calls did.

macro_rules! output_kernels {
    ($(#[$attr:meta])*, $score_pair:ident, $score_rows:ident, $add_rows:ident, $dot:path, $axpy:path, $update_pair:path) => {
        /// `score_pair` at this level (see there).
        $(#[$attr])*
        pub unsafe fn $score_pair(h: &[f32], out: &mut [f32], grad: &mut [f32], c: f32, gfn: impl FnOnce(f32) -> f32) -> f32 {
            let g = gfn($dot(h, out));
            if g != 0.0 {
                if c == 1.0 {
                    $update_pair(g, h, out, grad);
                } else {
                    $axpy(g, out, grad);
                    if c != 0.0 {
                        $axpy(g * c, h, out);
                    }
                }
            }
            g
        }

        /// `score_rows` at this level (see there).
        $(#[$attr])*
        pub unsafe fn $score_rows(w: &[f32], h: &[f32], grad: &mut [f32], gs: &mut [f32], mut gfn: impl FnMut(usize, f32) -> f32) {
            let d = w.len();
            for (i, (hi, gi)) in h.chunks_exact(d).zip(grad.chunks_exact_mut(d)).zip(gs.iter_mut()).map(|((a, b), c)| (a, (b, c))).enumerate() {
                let g = gfn(i, $dot(hi, w));
                *gi.1 = g;
                if g != 0.0 {
                    $axpy(g, w, gi.0);
                }
            }
        }

        /// `add_rows` at this level (see there).
        $(#[$attr])*
        pub unsafe fn $add_rows(out: &mut [f32], h: &[f32], gs: &[f32], c: f32) {
            for (hi, &g) in h.chunks_exact(out.len()).zip(gs) {
                if g != 0.0 {
                    $axpy(g * c, hi, out);
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod output_x86 {
    use super::x86::*;
    output_kernels!(#[target_feature(enable = "avx512f")] #[inline], score_pair_avx512, score_rows_avx512, add_rows_avx512,
                    dot_avx512, axpy_avx512, update_pair_avx512);
    output_kernels!(#[target_feature(enable = "avx2,fma")] #[inline], score_pair_avx2, score_rows_avx2, add_rows_avx2,
                    dot_avx2, axpy_avx2, update_pair_avx2);
}

/// Through the dispatching functions: the scalar level, and vectors shorter
/// than `SHORT` (which those compute inline).
mod output_scalar {
    use super::{axpy, dot, update_pair};
    output_kernels!(#[inline], score_pair_scalar, score_rows_scalar, add_rows_scalar, dot, axpy, update_pair);
}

/// word2vec's update of one output row `out` by one hidden vector `h`:
/// f = h·out, g = gfn(f); then, unless g = 0, grad += g·out (out before
/// its update) and out += g·c·h (c: the row's update factor; 0 freezes it).
/// Returns g. Same arithmetic as `dot`, then `update_pair` (c = 1) or two
/// `axpy` — in one call.
#[inline]
pub fn score_pair(h: &[f32], out: &mut [f32], grad: &mut [f32], c: f32, gfn: impl FnOnce(f32) -> f32) -> f32 {
    assert!(h.len() == out.len() && out.len() == grad.len());
    // SAFETY (all arms): the level is only set to a feature set the CPU
    // reported (detect / force_level); the three slices have one length,
    // which the kernels rely on for every pointer offset.
    match if h.len() < SHORT { Level::Scalar } else { level() } {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { output_x86::score_pair_avx512(h, out, grad, c, gfn) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { output_x86::score_pair_avx2(h, out, grad, c, gfn) },
        _ => unsafe { output_scalar::score_pair_scalar(h, out, grad, c, gfn) },
    }
}

/// One output row `w` (read only) against the `n = gs.len()` hidden rows of
/// `h` (n x d, d = w.len()): g_i = gfn(i, h_i·w) goes to gs[i], and
/// grad_i += g_i·w where g_i ≠ 0 (`grad` n x d). `dot` then `axpy` per row,
/// in one call.
#[inline]
pub fn score_rows(w: &[f32], h: &[f32], grad: &mut [f32], gs: &mut [f32], gfn: impl FnMut(usize, f32) -> f32) {
    let (d, n) = (w.len(), gs.len());
    assert!(d > 0 && h.len() >= n * d && grad.len() >= n * d);
    // SAFETY (all arms): detected features, as in `score_pair`; the kernels
    // only index through bounds-checked slices sized above.
    match if d < SHORT { Level::Scalar } else { level() } {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { output_x86::score_rows_avx512(w, h, grad, gs, gfn) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { output_x86::score_rows_avx2(w, h, grad, gs, gfn) },
        _ => unsafe { output_scalar::score_rows_scalar(w, h, grad, gs, gfn) },
    }
}

/// out += c·gs[i]·h_i for each row i of `h` (in order of i, zeros skipped):
/// what `axpy` per row does, in one call.
#[inline]
pub fn add_rows(out: &mut [f32], h: &[f32], gs: &[f32], c: f32) {
    let d = out.len();
    assert!(d > 0 && h.len() >= gs.len() * d);
    // SAFETY (all arms): detected features, as in `score_pair`; bounds-checked slices.
    match if d < SHORT { Level::Scalar } else { level() } {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { output_x86::add_rows_avx512(out, h, gs, c) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { output_x86::add_rows_avx2(out, h, gs, c) },
        _ => unsafe { output_scalar::add_rows_scalar(out, h, gs, c) },
    }
}

// ------------------------------------------------- fused MoE expert kernels
//
// The MoE expert loop touches each expert row twice per target: forward
// (x = alpha[w] + offset_value[r]; z += θ x) and backward (a = g·x for the
// gate gradient; alpha[w] += c g; d_offset_value[r] += θ g). Each kernel
// does its pass in one sweep instead of three; head blocks are short
// (d / heads), so the AVX-512 versions finish with one masked vector.

#[inline(always)]
fn mix_body(a: &[f32], b: &[f32], x: &mut [f32], t: f32, z: &mut [f32]) {
    let n = x.len();
    let (a, b, z) = (&a[..n], &b[..n], &mut z[..n]);
    for i in 0..n {
        let v = a[i] + b[i];
        x[i] = v;
        z[i] += t * v;
    }
}

#[inline(always)]
fn dot_axpy2_body(g: &[f32], x: &[f32], c1: f32, y1: &mut [f32], c2: f32, y2: &mut [f32]) -> f32 {
    let n = g.len();
    let (x, y1, y2) = (&x[..n], &mut y1[..n], &mut y2[..n]);
    let mut acc = [0f32; 16];
    let full = n / 16 * 16;
    for k in (0..full).step_by(16) {
        for l in 0..16 {
            let gi = g[k + l];
            acc[l] += gi * x[k + l];
            y1[k + l] += c1 * gi;
            y2[k + l] += c2 * gi;
        }
    }
    let mut t = 0.0;
    for i in full..n {
        t += g[i] * x[i];
        y1[i] += c1 * g[i];
        y2[i] += c2 * g[i];
    }
    let mut s = [0f32; 8];
    for l in 0..8 {
        s[l] = acc[l] + acc[l + 8];
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + t
}

#[cfg(target_arch = "x86_64")]
mod fused_x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn mix_avx512(a: &[f32], b: &[f32], x: &mut [f32], t: f32, z: &mut [f32]) {
        let n = x.len();
        let (pa, pb, px, pz) = (a.as_ptr(), b.as_ptr(), x.as_mut_ptr(), z.as_mut_ptr());
        let vt = _mm512_set1_ps(t);
        let mut i = 0;
        while i + 16 <= n {
            let v = _mm512_add_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            _mm512_storeu_ps(px.add(i), v);
            _mm512_storeu_ps(pz.add(i), _mm512_fmadd_ps(vt, v, _mm512_loadu_ps(pz.add(i))));
            i += 16;
        }
        if i < n {
            // Masked tail: lanes past the end are neither loaded nor stored.
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            let v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)));
            _mm512_mask_storeu_ps(px.add(i), m, v);
            _mm512_mask_storeu_ps(pz.add(i), m, _mm512_fmadd_ps(vt, v, _mm512_maskz_loadu_ps(m, pz.add(i))));
        }
    }

    /// The lane kernel with one coefficient (every lane's permute picks it).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn mix_avx2(a: &[f32], b: &[f32], x: &mut [f32], t: f32, z: &mut [f32]) {
        super::lanes_x86::mix_lanes_avx2(a, b, x, &[t], z)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn dot_axpy2_avx512(g: &[f32], x: &[f32], c1: f32, y1: &mut [f32], c2: f32, y2: &mut [f32]) -> f32 {
        let n = g.len();
        let (pg, px, p1, p2) = (g.as_ptr(), x.as_ptr(), y1.as_mut_ptr(), y2.as_mut_ptr());
        let (v1, v2) = (_mm512_set1_ps(c1), _mm512_set1_ps(c2));
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let vg = _mm512_loadu_ps(pg.add(i));
            acc = _mm512_fmadd_ps(vg, _mm512_loadu_ps(px.add(i)), acc);
            _mm512_storeu_ps(p1.add(i), _mm512_fmadd_ps(v1, vg, _mm512_loadu_ps(p1.add(i))));
            _mm512_storeu_ps(p2.add(i), _mm512_fmadd_ps(v2, vg, _mm512_loadu_ps(p2.add(i))));
            i += 16;
        }
        if i < n {
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            let vg = _mm512_maskz_loadu_ps(m, pg.add(i));
            acc = _mm512_fmadd_ps(vg, _mm512_maskz_loadu_ps(m, px.add(i)), acc);
            _mm512_mask_storeu_ps(p1.add(i), m, _mm512_fmadd_ps(v1, vg, _mm512_maskz_loadu_ps(m, p1.add(i))));
            _mm512_mask_storeu_ps(p2.add(i), m, _mm512_fmadd_ps(v2, vg, _mm512_maskz_loadu_ps(m, p2.add(i))));
        }
        _mm512_reduce_add_ps(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn dot_axpy2_avx2(g: &[f32], x: &[f32], c1: f32, y1: &mut [f32], c2: f32, y2: &mut [f32]) -> f32 {
        let n = g.len();
        let (pg, px, p1, p2) = (g.as_ptr(), x.as_ptr(), y1.as_mut_ptr(), y2.as_mut_ptr());
        let (v1, v2) = (_mm256_set1_ps(c1), _mm256_set1_ps(c2));
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let vg = _mm256_loadu_ps(pg.add(i));
            acc = _mm256_fmadd_ps(vg, _mm256_loadu_ps(px.add(i)), acc);
            _mm256_storeu_ps(p1.add(i), _mm256_fmadd_ps(v1, vg, _mm256_loadu_ps(p1.add(i))));
            _mm256_storeu_ps(p2.add(i), _mm256_fmadd_ps(v2, vg, _mm256_loadu_ps(p2.add(i))));
            i += 8;
        }
        let hi = _mm256_extractf128_ps(acc, 1);
        let s = _mm_add_ps(hi, _mm256_castps256_ps128(acc));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut t = _mm_cvtss_f32(s);
        while i < n {
            let gi = *pg.add(i);
            t += gi * *px.add(i);
            *p1.add(i) += c1 * gi;
            *p2.add(i) += c2 * gi;
            i += 1;
        }
        t
    }
}

// Several heads in one sweep. With H heads a value row is H blocks of
// s = n / H floats, and the per-block kernels above run H short passes of s
// floats, each ending in a partial (masked or scalar) vector that the next
// expert reads right back: store-to-load forwarding fails on those and the
// short passes stall. The lane kernels below sweep the whole row in full
// vectors instead; each lane finds its head's coefficient with a permute of
// the H coefficients held in one register (lane i belongs to head i / s,
// computed as trunc((i + 0.5) / s) in floats: exact while i < 2^20), and the
// per-head dot products are kept in one accumulator per head, each masked to
// the lanes of its head.

/// The largest row the float lane-to-head map serves exactly.
const LANES_MAX_ROW: usize = 1 << 20;

/// Lanes lo..hi (hi <= 32) of a vector as a bit mask.
#[inline(always)]
fn lane_bits(lo: usize, hi: usize) -> u32 {
    (((1u64 << hi) - 1) as u32) & !(((1u64 << lo) - 1) as u32)
}

#[cfg(target_arch = "x86_64")]
mod lanes_x86 {
    use super::lane_bits;
    use std::arch::x86_64::*;

    /// The H <= 16 head coefficients in the low lanes of a register (the
    /// rest zero), built from scalar loads: `t` was usually just written
    /// element by element, and a vector load of it would wait for those
    /// stores to retire (store-to-load forwarding does not merge stores).
    ///
    /// The coefficients are `t[0]`, `t[stride]`, ..., `t[(h - 1)·stride]`.
    ///
    /// # Safety
    /// AVX-512F; 1 <= h <= 16 and those h floats are readable.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn coefficients16(t: *const f32, h: usize, stride: usize) -> __m512 {
        let q = |k: usize| {
            // volatile: the compiler must not merge two of these loads into one wider load
            let g = |i: usize| std::ptr::read_volatile(t.add((k + i).min(h - 1) * stride));
            _mm_setr_ps(g(0), g(1), g(2), g(3))
        };
        let mut v = _mm512_zextps128_ps512(q(0));
        if h > 4 {
            v = _mm512_insertf32x4::<1>(v, q(4));
        }
        if h > 8 {
            v = _mm512_insertf32x4::<2>(v, q(8));
        }
        if h > 12 {
            v = _mm512_insertf32x4::<3>(v, q(12));
        }
        v
    }

    /// `coefficients16` for H <= 8 heads in an AVX register.
    ///
    /// # Safety
    /// AVX2 and FMA; 1 <= h <= 8 and `t[0]`, `t[stride]`, ..., `t[(h - 1)·stride]` are readable.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn coefficients8(t: *const f32, h: usize, stride: usize) -> __m256 {
        let q = |k: usize| {
            // volatile: the compiler must not merge two of these loads into one wider load
            let g = |i: usize| std::ptr::read_volatile(t.add((k + i).min(h - 1) * stride));
            _mm_setr_ps(g(0), g(1), g(2), g(3))
        };
        let v = _mm256_zextps128_ps256(q(0));
        if h > 4 {
            _mm256_insertf128_ps::<1>(v, q(4))
        } else {
            v
        }
    }

    /// Lane-to-head map of 16 lanes at positions `pos` (+ 0.5; see the section note).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn heads16(pos: __m512, inv_s: __m512) -> __m512i {
        _mm512_cvttps_epi32(_mm512_mul_ps(pos, inv_s))
    }

    /// Load / store 16 lanes: whole (`FULL`) or masked to `m`. The whole
    /// ones matter: a masked load does not take its data from an earlier
    /// store still in flight, and the next expert reads z right back.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn ld<const FULL: bool>(m: __mmask16, p: *const f32) -> __m512 {
        if FULL {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(m, p)
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn st<const FULL: bool>(m: __mmask16, p: *mut f32, v: __m512) {
        if FULL {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, m, v)
        }
    }

    /// `mix` with t.len() = H <= 16 heads, in whole-row vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn mix_lanes_avx512(a: &[f32], b: &[f32], x: &mut [f32], t: &[f32], z: &mut [f32]) {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn step<const FULL: bool>(m: __mmask16, pa: *const f32, pb: *const f32, px: *mut f32, pz: *mut f32, vt: __m512) {
            let v = _mm512_add_ps(ld::<FULL>(m, pa), ld::<FULL>(m, pb));
            st::<FULL>(m, px, v);
            st::<FULL>(m, pz, _mm512_fmadd_ps(vt, v, ld::<FULL>(m, pz)));
        }
        let n = x.len();
        let (pa, pb, px, pz) = (a.as_ptr(), b.as_ptr(), x.as_mut_ptr(), z.as_mut_ptr());
        let tv = coefficients16(t.as_ptr(), t.len(), 1);
        let mut pos = _mm512_add_ps(_mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.), _mm512_set1_ps(0.5));
        let inv_s = _mm512_set1_ps(t.len() as f32 / n as f32);
        let mut i = 0;
        while i + 16 <= n {
            let vt = _mm512_permutexvar_ps(heads16(pos, inv_s), tv);
            pos = _mm512_add_ps(pos, _mm512_set1_ps(16.0));
            step::<true>(0xffff, pa.add(i), pb.add(i), px.add(i), pz.add(i), vt);
            i += 16;
        }
        if i < n {
            let vt = _mm512_permutexvar_ps(heads16(pos, inv_s), tv);
            step::<false>(((1u32 << (n - i)) - 1) as __mmask16, pa.add(i), pb.add(i), px.add(i), pz.add(i), vt);
        }
    }

    /// The running state of `dot_axpy2_lanes_avx512`: one accumulator, for
    /// the head in progress (a head that ends inside a vector takes that
    /// vector's lanes up to its end, is reduced into `dots`, and the next
    /// head starts on the remaining lanes).
    struct Heads {
        acc: __m512,
        head: usize,
        end: usize,
        s: usize,
        pos: __m512,
        inv_s: __m512,
        cv: __m512,
        cv1: __m512,
    }

    /// One vector (lanes i..e) of `dot_axpy2_lanes_avx512`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot_axpy2_step<const FULL: bool>(st8: &mut Heads, i: usize, e: usize, pg: *const f32, px: *const f32, p1: *mut f32, p2: *mut f32, dots: &mut [f32]) {
        let m = ((1u32 << (e - i)) - 1) as __mmask16;
        let idx = heads16(st8.pos, st8.inv_s);
        st8.pos = _mm512_add_ps(st8.pos, _mm512_set1_ps(16.0));
        let (vc, vc1) = (_mm512_permutexvar_ps(idx, st8.cv), _mm512_permutexvar_ps(idx, st8.cv1));
        let vg = ld::<FULL>(m, pg.add(i));
        let vx = ld::<FULL>(m, px.add(i));
        st::<FULL>(m, p1.add(i), _mm512_fmadd_ps(vc1, vg, ld::<FULL>(m, p1.add(i))));
        st::<FULL>(m, p2.add(i), _mm512_fmadd_ps(vc, vg, ld::<FULL>(m, p2.add(i))));
        if st8.end > e {
            // the whole vector lies inside the head in progress
            st8.acc = _mm512_mask3_fmadd_ps(vg, vx, st8.acc, m);
            return;
        }
        let mut lo = i;
        loop {
            st8.acc = _mm512_mask3_fmadd_ps(vg, vx, st8.acc, lane_bits(lo - i, st8.end.min(e) - i) as __mmask16);
            if st8.end > e {
                break;
            }
            dots[st8.head] = _mm512_reduce_add_ps(st8.acc);
            st8.acc = _mm512_setzero_ps();
            st8.head += 1;
            lo = st8.end;
            st8.end += st8.s;
            if lo >= e {
                break;
            }
        }
    }

    /// `dot_axpy2` with c.len() = H <= 16 heads, in whole-row vectors.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn dot_axpy2_lanes_avx512(g: &[f32], x: &[f32], f1: f32, y1: &mut [f32], c: &[f32], y2: &mut [f32], dots: &mut [f32]) {
        let (n, h) = (g.len(), c.len());
        let (pg, px, p1, p2) = (g.as_ptr(), x.as_ptr(), y1.as_mut_ptr(), y2.as_mut_ptr());
        let cv = coefficients16(c.as_ptr(), c.len(), 1);
        let mut st8 = Heads {
            acc: _mm512_setzero_ps(),
            head: 0,
            end: n / h,
            s: n / h,
            pos: _mm512_add_ps(_mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.), _mm512_set1_ps(0.5)),
            inv_s: _mm512_set1_ps(h as f32 / n as f32),
            cv,
            cv1: _mm512_mul_ps(_mm512_set1_ps(f1), cv),
        };
        let mut i = 0;
        while i + 16 <= n {
            dot_axpy2_step::<true>(&mut st8, i, i + 16, pg, px, p1, p2, dots);
            i += 16;
        }
        if i < n {
            dot_axpy2_step::<false>(&mut st8, i, n, pg, px, p1, p2, dots);
        }
    }

    /// Lane-to-head map of 8 lanes at positions `pos` (+ 0.5).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn heads8(pos: __m256, inv_s: __m256) -> __m256i {
        _mm256_cvttps_epi32(_mm256_mul_ps(pos, inv_s))
    }

    /// `mix` with t.len() = H <= 8 heads: full vectors, then a scalar tail.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn mix_lanes_avx2(a: &[f32], b: &[f32], x: &mut [f32], t: &[f32], z: &mut [f32]) {
        let n = x.len();
        let s = n / t.len();
        let (pa, pb, px, pz) = (a.as_ptr(), b.as_ptr(), x.as_mut_ptr(), z.as_mut_ptr());
        let tv = coefficients8(t.as_ptr(), t.len(), 1);
        let mut pos = _mm256_setr_ps(0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5);
        let inv_s = _mm256_set1_ps(t.len() as f32 / n as f32);
        let mut i = 0;
        while i + 8 <= n {
            let vt = _mm256_permutevar8x32_ps(tv, heads8(pos, inv_s));
            pos = _mm256_add_ps(pos, _mm256_set1_ps(8.0));
            let v = _mm256_add_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            _mm256_storeu_ps(px.add(i), v);
            _mm256_storeu_ps(pz.add(i), _mm256_fmadd_ps(vt, v, _mm256_loadu_ps(pz.add(i))));
            i += 8;
        }
        while i < n {
            let v = *pa.add(i) + *pb.add(i);
            *px.add(i) = v;
            *pz.add(i) += t[i / s] * v;
            i += 1;
        }
    }

    /// `dot_axpy2` with c.len() = H <= 8 heads: full vectors, then a scalar tail.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn dot_axpy2_lanes_avx2(g: &[f32], x: &[f32], f1: f32, y1: &mut [f32], c: &[f32], y2: &mut [f32], dots: &mut [f32]) {
        let (n, h) = (g.len(), c.len());
        let s = n / h;
        let (pg, px, p1, p2) = (g.as_ptr(), x.as_ptr(), y1.as_mut_ptr(), y2.as_mut_ptr());
        let cv = coefficients8(c.as_ptr(), c.len(), 1);
        let cv1 = _mm256_mul_ps(_mm256_set1_ps(f1), cv);
        let mut pos = _mm256_setr_ps(0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5);
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let inv_s = _mm256_set1_ps(h as f32 / n as f32);
        let mut acc = _mm256_setzero_ps();
        let (mut head, mut end) = (0usize, s);
        let mut i = 0;
        while i + 8 <= n {
            let e = i + 8;
            let idx = heads8(pos, inv_s);
            pos = _mm256_add_ps(pos, _mm256_set1_ps(8.0));
            let (vc, vc1) = (_mm256_permutevar8x32_ps(cv, idx), _mm256_permutevar8x32_ps(cv1, idx));
            let vg = _mm256_loadu_ps(pg.add(i));
            let vx = _mm256_loadu_ps(px.add(i));
            _mm256_storeu_ps(p1.add(i), _mm256_fmadd_ps(vc1, vg, _mm256_loadu_ps(p1.add(i))));
            _mm256_storeu_ps(p2.add(i), _mm256_fmadd_ps(vc, vg, _mm256_loadu_ps(p2.add(i))));
            i = e;
            if end > e {
                // the whole vector lies inside the head in progress
                acc = _mm256_fmadd_ps(vg, vx, acc);
                continue;
            }
            // one accumulator for the head in progress, as in the AVX-512 kernel
            let mut lo = e - 8;
            loop {
                // lanes lo..min(end, e) of this vector
                let (l0, l1) = (_mm256_set1_epi32((lo + 8 - e) as i32 - 1), _mm256_set1_epi32((end.min(e) + 8 - e) as i32));
                let lanes = _mm256_and_si256(_mm256_cmpgt_epi32(iota, l0), _mm256_cmpgt_epi32(l1, iota));
                acc = _mm256_fmadd_ps(_mm256_and_ps(vg, _mm256_castsi256_ps(lanes)), vx, acc);
                if end > e {
                    break;
                }
                dots[head] = hsum8(acc);
                acc = _mm256_setzero_ps();
                head += 1;
                lo = end;
                end += s;
                if lo >= e {
                    break;
                }
            }
            i = e;
        }
        // the head left open by the vectors finishes in the scalar tail
        let mut t = if head < h { hsum8(acc) } else { 0.0 };
        while i < n {
            let gi = *pg.add(i);
            t += gi * *px.add(i);
            *p1.add(i) += f1 * c[head] * gi;
            *p2.add(i) += c[head] * gi;
            i += 1;
            if i == end {
                dots[head] = t;
                t = 0.0;
                head += 1;
                end += s;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn hsum8(a: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(a, 1);
        let q = _mm_add_ps(hi, _mm256_castps256_ps128(a));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)))
    }
}


// ------------------------------------------------- exp for gate softmaxes
//
// e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 (|r| <= ln2 / 2,
// ln 2 split in a high and a low part so r keeps its precision); e^r by its
// Taylor polynomial to degree 6 (truncation below 2e-7 relative), evaluated
// by Horner; 2^n built in the exponent bits. Inputs are clamped to
// [-87, 88] (no overflow, no denormals).

const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const EXP_POLY: [f32; 7] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0];

fn exp_one(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    let n = (x * LOG2E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_POLY[6];
    for k in (0..6).rev() {
        p = p * r + EXP_POLY[k];
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(target_arch = "x86_64")]
mod exp_x86 {
    use super::{EXP_HI, EXP_LO, EXP_POLY, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
        let n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x));
        let mut p = _mm512_set1_ps(EXP_POLY[6]);
        for k in (0..6).rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_POLY[k]));
        }
        let e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
        _mm512_mul_ps(p, _mm512_castsi512_ps(e))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn exp_avx512(x: &mut [f32]) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            _mm512_storeu_ps(p.add(i), exp16(_mm512_loadu_ps(p.add(i))));
            i += 16;
        }
        if i < n {
            // plain stores for a 4-, 8- or 12-float tail: the softmax reads it right back
            super::x86::tail_store(p.add(i), n - i, exp16(super::x86::tail_load(p.add(i), n - i)));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
        let n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x));
        let mut p = _mm256_set1_ps(EXP_POLY[6]);
        for k in (0..6).rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_POLY[k]));
        }
        let e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp_avx2(x: &mut [f32]) {
        let (n, p) = (x.len(), x.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), exp8(_mm256_loadu_ps(p.add(i))));
            i += 8;
        }
        while i < n {
            *p.add(i) = super::exp_one(*p.add(i));
            i += 1;
        }
    }
}

/// `x[i] = e^x[i]` for every element (relative error about 2e-7; inputs
/// clamped to [-87, 88]). For softmaxes: subtract the maximum first.
#[inline]
pub fn exp_inplace(x: &mut [f32]) {
    match level() {
        // SAFETY: detected features (as in `dot`); the kernels touch only
        // x[0..len] (the AVX-512 tail: exactly its floats, `tail_load` / `tail_store`).
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { exp_x86::exp_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => unsafe { exp_x86::exp_avx2(x) },
        _ => {
            for v in x.iter_mut() {
                *v = exp_one(*v);
            }
        }
    }
}

/// Softmax of each row of n elements of `x` (x.len() a multiple of n):
/// subtract the row's maximum, then one `exp_inplace` over all rows, then
/// divide each row by its sum. (A masked vector a row measured no faster:
/// the rows are written element by element just before.)
pub fn softmax_rows(x: &mut [f32], n: usize) {
    assert!(n > 0 && x.len().is_multiple_of(n));
    for row in x.chunks_exact_mut(n) {
        // four running maxima, not one chain (the maximum is exact in any order)
        let mut m4 = [f32::NEG_INFINITY; 4];
        for (k, &t) in row.iter().enumerate() {
            m4[k % 4] = m4[k % 4].max(t);
        }
        let mx = m4[0].max(m4[1]).max(m4[2].max(m4[3]));
        for t in row.iter_mut() {
            *t -= mx;
        }
    }
    exp_inplace(x);
    for row in x.chunks_exact_mut(n) {
        let inv = 1.0 / row.iter().sum::<f32>();
        for t in row.iter_mut() {
            *t *= inv;
        }
    }
}

type MixFn = unsafe fn(&[f32], &[f32], &mut [f32], f32, &mut [f32]);
type DotAxpy2Fn = unsafe fn(&[f32], &[f32], f32, &mut [f32], f32, &mut [f32]) -> f32;

/// The scalar bodies behind the same (unsafe) pointer type as the vector kernels.
unsafe fn mix_scalar(a: &[f32], b: &[f32], x: &mut [f32], t: f32, z: &mut [f32]) {
    mix_body(a, b, x, t, z)
}
unsafe fn dot_axpy2_scalar(g: &[f32], x: &[f32], c1: f32, y1: &mut [f32], c2: f32, y2: &mut [f32]) -> f32 {
    dot_axpy2_body(g, x, c1, y1, c2, y2)
}

/// The fused kernels for the active level. Calling one is sound only with
/// slices of equal length (the vector kernels index up to `x.len()` / `g.len()`).
fn fused_kernels() -> (MixFn, DotAxpy2Fn) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => (fused_x86::mix_avx512, fused_x86::dot_axpy2_avx512),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma => (fused_x86::mix_avx2, fused_x86::dot_axpy2_avx2),
        _ => (mix_scalar, dot_axpy2_scalar),
    }
}

/// One expert's forward sweep over `t.len()` head blocks of equal width:
/// `x = a + b`, and block h of `z` += `t[h]` * block h of `x`.
#[inline]
pub fn mix(a: &[f32], b: &[f32], x: &mut [f32], t: &[f32], z: &mut [f32]) {
    let n = x.len();
    assert!(a.len() == n && b.len() == n && z.len() == n && !t.is_empty() && n.is_multiple_of(t.len()));
    match level() {
        // SAFETY (both arms): a feature set the CPU reported (level()); every
        // slice has length n (checked above), the heads fit one register
        // (H <= 16 / 8) and n < LANES_MAX_ROW keeps the lane-to-head map exact.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if t.len() > 1 && t.len() <= 16 && n < LANES_MAX_ROW => {
            return unsafe { lanes_x86::mix_lanes_avx512(a, b, x, t, z) };
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2Fma if t.len() > 1 && t.len() <= 8 && n < LANES_MAX_ROW => {
            return unsafe { lanes_x86::mix_lanes_avx2(a, b, x, t, z) };
        }
        _ => {}
    }
    let (s, k) = (n / t.len(), fused_kernels().0);
    for (h, &th) in t.iter().enumerate() {
        let r = h * s..(h + 1) * s;
        // SAFETY: the kernel is for a feature set the CPU reported (level()),
        // and the four blocks have the same length s (checked above).
        unsafe { k(&a[r.clone()], &b[r.clone()], &mut x[r.clone()], th, &mut z[r]) };
    }
}

/// One expert's backward sweep over `c.len()` head blocks of equal width:
/// block h gets `dots[h] = g_h · x_h`, `y1_h += f1 * c[h] * g_h` and
/// `y2_h += c[h] * g_h`.
#[inline]
pub fn dot_axpy2(g: &[f32], x: &[f32], f1: f32, c: &[f32], y1: &mut [f32], y2: &mut [f32], dots: &mut [f32]) {
    let n = g.len();
    assert!(x.len() == n && y1.len() == n && y2.len() == n && !c.is_empty() && n.is_multiple_of(c.len()));
    assert!(dots.len() == c.len());
    let h = c.len();
    #[cfg(target_arch = "x86_64")]
    if h > 1 && n < LANES_MAX_ROW && matches!((level(), h), (Level::Avx512, 2..=16) | (Level::Avx2Fma, 2..=8)) {
        // SAFETY: as in `mix`: a reported feature set, slices of length n,
        // H heads in one register, n < LANES_MAX_ROW.
        unsafe {
            if level() == Level::Avx512 {
                lanes_x86::dot_axpy2_lanes_avx512(g, x, f1, y1, c, y2, dots)
            } else {
                lanes_x86::dot_axpy2_lanes_avx2(g, x, f1, y1, c, y2, dots)
            }
        }
        return;
    }
    let (s, k) = (n / c.len(), fused_kernels().1);
    for (h, &ch) in c.iter().enumerate() {
        let r = h * s..(h + 1) * s;
        // SAFETY: as in `mix`: a detected feature set, four blocks of length s.
        dots[h] = unsafe { k(&g[r.clone()], &x[r.clone()], f1 * ch, &mut y1[r.clone()], ch, &mut y2[r]) };
    }
}

// ------------------------------------ register-resident per-target kernels
//
// The exact per-target updates (CBOW's hidden vector against K+1 output
// rows; skip-gram's output rows against the window's rows) through the
// kernels above make a dozen short calls per target, and each keeps its
// vectors in memory: the hidden vector and its gradient are stored after
// every output row and loaded back for the next, with the row's last partial
// vector written by a masked store, which the next masked load of the same
// address cannot take from the store buffer (it waits for the store to
// reach the cache). These kernels are compiled for one vector size each
// (N AVX-512 registers, the last holding T floats), keep the hidden vector,
// its gradient and the output row being updated in registers for the whole
// target, and write a row's tail as plain 4- or 8-float stores where T
// allows. Every element sees the same operations in the same order as the
// separate kernels (same accumulators in `dot`, same reduction, `axpy` by
// FMA), so the trained vectors are bit for bit the same.

/// The level whose register-resident kernels serve rows of d floats: the
/// active level where it has them for d (AVX-512: `cbow_target`,
/// `window_target` and `moe_target`; AVX2: `cbow_target` and
/// `window_target`), None (the separate kernels) otherwise.
pub fn register_level(d: usize) -> Option<Level> {
    match level() {
        Level::Avx512 if matches!(d, 32 | 50 | 64 | 100 | 128 | 200 | 256 | 300) => Some(Level::Avx512),
        Level::Avx2Fma if matches!(d, 32 | 64 | 100 | 128 | 200 | 256 | 300) => Some(Level::Avx2Fma),
        _ => None,
    }
}

/// The level whose `moe_target` serves rows of d floats in `heads` heads:
/// AVX-512 with 1 to 16 heads dividing d, AVX2 with 1 to 8 heads of 8
/// floats or more (smaller heads take the separate lane kernels there),
/// None otherwise.
pub fn moe_register_level(d: usize, heads: usize) -> Option<Level> {
    match register_level(d)? {
        Level::Avx512 if (1..=16).contains(&heads) && d.is_multiple_of(heads) => Some(Level::Avx512),
        Level::Avx2Fma if heads == 1 || ((2..=8).contains(&heads) && d.is_multiple_of(heads) && d / heads >= 8) => Some(Level::Avx2Fma),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
mod rows512 {
    use std::arch::x86_64::*;

    /// The last vector of a row: T floats (1..=16) at `p`, zeros above.
    #[inline(always)]
    unsafe fn load_tail<const T: usize>(p: *const f32) -> __m512 {
        if T == 16 {
            _mm512_loadu_ps(p)
        } else {
            super::x86::tail_load(p, T)
        }
    }

    /// Store the first T lanes of `v` at `p` (plain stores where T allows).
    #[inline(always)]
    unsafe fn store_tail<const T: usize>(p: *mut f32, v: __m512) {
        if T == 16 {
            _mm512_storeu_ps(p, v)
        } else {
            super::x86::tail_store(p, T, v)
        }
    }

    #[inline(always)]
    unsafe fn load<const N: usize, const T: usize>(p: *const f32) -> [__m512; N] {
        let mut v = [_mm512_setzero_ps(); N];
        for (k, x) in v.iter_mut().enumerate().take(N - 1) {
            *x = _mm512_loadu_ps(p.add(16 * k));
        }
        v[N - 1] = load_tail::<T>(p.add(16 * (N - 1)));
        v
    }

    #[inline(always)]
    unsafe fn store<const N: usize, const T: usize>(p: *mut f32, v: &[__m512; N]) {
        for (k, x) in v.iter().enumerate().take(N - 1) {
            _mm512_storeu_ps(p.add(16 * k), *x);
        }
        store_tail::<T>(p.add(16 * (N - 1)), v[N - 1]);
    }

    /// `dot_avx512`'s sum: full vectors alternate between two accumulators,
    /// a partial last vector goes to the second, then one reduction.
    #[inline(always)]
    unsafe fn dot<const N: usize, const T: usize>(a: &[__m512; N], b: &[__m512; N]) -> f32 {
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for k in 0..N {
            if k % 2 == 0 && (k + 1 < N || T == 16) {
                acc0 = _mm512_fmadd_ps(a[k], b[k], acc0);
            } else {
                acc1 = _mm512_fmadd_ps(a[k], b[k], acc1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    /// `y += a * x` by FMA, as `axpy_avx512`.
    #[inline(always)]
    unsafe fn axpy<const N: usize>(a: f32, x: &[__m512; N], y: &mut [__m512; N]) {
        let va = _mm512_set1_ps(a);
        for (yk, xk) in y.iter_mut().zip(x) {
            *yk = _mm512_fmadd_ps(va, *xk, *yk);
        }
    }

    #[inline(always)]
    unsafe fn scale<const N: usize>(a: f32, x: &mut [__m512; N]) {
        let va = _mm512_set1_ps(a);
        for xk in x.iter_mut() {
            *xk = _mm512_mul_ps(va, *xk);
        }
    }

    /// The output layer of one hidden vector `h` (CBOW's and BidirMoE's exact
    /// update): for each output row o = outs[j] in order, g = gfn(j, h·row),
    /// and unless g = 0, grad += g·row (the row before its update) and
    /// row += g·out_factor(o)·h, stored unless that factor is 0 (what
    /// `score_pair` does row after row). Returns grad, from zero.
    #[inline(always)]
    unsafe fn output_rows<const N: usize, const T: usize>(h: &[__m512; N], output: super::RowBase, outs: &[u32], out_factor: impl Fn(u32) -> f32, mut gfn: impl FnMut(usize, f32) -> f32) -> [__m512; N] {
        let d = 16 * (N - 1) + T;
        let mut grad = [_mm512_setzero_ps(); N];
        for (j, &o) in outs.iter().enumerate() {
            let p = output.row(o, d);
            let mut row = load::<N, T>(p);
            let g = gfn(j, dot::<N, T>(h, &row));
            if g != 0.0 {
                axpy(g, &row, &mut grad);
                let c = out_factor(o);
                if c != 0.0 {
                    axpy(g * c, h, &mut row);
                    store::<N, T>(p, &row);
                }
            }
        }
        grad
    }

    /// See `super::cbow_target`; rows of D = 16(N-1) + T floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn cbow_target<const N: usize, const T: usize>(
        r: &super::CbowRows<'_>,
        in_factor: impl Fn(u32) -> f32,
        out_factor: impl Fn(u32) -> f32,
        gfn: impl FnMut(usize, f32) -> f32,
    ) {
        let super::CbowRows { input, ctx, skip, output, outs, mean } = *r;
        let d = 16 * (N - 1) + T;
        let mut h = [_mm512_setzero_ps(); N];
        let mut count = 0usize;
        for (k, &w) in ctx.iter().enumerate() {
            if k != skip {
                axpy(1.0, &load::<N, T>(input.row(w, d)), &mut h);
                count += 1;
            }
        }
        let inv = 1.0 / count as f32;
        if mean {
            scale(inv, &mut h);
        }
        let mut grad = output_rows::<N, T>(&h, output, outs, out_factor, gfn);
        if !mean {
            scale(inv, &mut grad);
        }
        for (k, &w) in ctx.iter().enumerate() {
            let a = in_factor(w);
            if k != skip && a != 0.0 {
                let p = input.row(w, d);
                let mut row = load::<N, T>(p);
                axpy(a, &grad, &mut row);
                store::<N, T>(p, &row);
            }
        }
    }

    /// See `super::moe_target`; rows of D = 16(N-1) + T floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn moe_target<const N: usize, const T: usize>(r: &super::MoeRows<'_>, in_factor: impl Fn(u32) -> f32, out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
        use super::lanes_x86::{coefficients16, heads16};
        let super::MoeRows { words, mask, theta, heads, x, z: zout, dots, output, outs, .. } = *r;
        let d = 16 * (N - 1) + T;
        let nc = words.len();
        let n = nc + mask.is_some() as usize;
        // Each vector's lane-to-head map, as `mix` and `dot_axpy2` compute it.
        let inv_s = _mm512_set1_ps(heads as f32 / d as f32);
        let mut pos = _mm512_add_ps(_mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.), _mm512_set1_ps(0.5));
        let mut idx = [_mm512_setzero_si512(); N];
        for ik in idx.iter_mut() {
            *ik = heads16(pos, inv_s);
            pos = _mm512_add_ps(pos, _mm512_set1_ps(16.0));
        }
        let expert = |m: usize| r.expert(m, d, &in_factor);
        // Forward: x(m) = a + b (kept for the backward), z += θ_h(m) x(m)_h.
        let mut z = [_mm512_setzero_ps(); N];
        for m in 0..n {
            let (pa, pb, ..) = expert(m);
            let tv = coefficients16(theta.as_ptr().add(m), heads, n);
            let (a, b) = (load::<N, T>(pa), load::<N, T>(pb));
            let mut v = [_mm512_setzero_ps(); N];
            for k in 0..N {
                v[k] = _mm512_add_ps(a[k], b[k]);
                z[k] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[k], tv), v[k], z[k]);
            }
            store::<N, T>(x.add(m * d), &v);
        }
        store::<N, T>(zout, &z);
        let grad = output_rows::<N, T>(&z, output, outs, out_factor, gfn);
        // Backward: per expert, a_h(m) = g_h · x(m)_h (one accumulator per
        // head, masked to its lanes; unmasked with one head, as `dot_axpy2`),
        // y1 += f1·θ_h(m)·g_h, y2 += θ_h(m)·g_h.
        let s = d / heads;
        // With heads of 16 lanes or more, at most one head ends in each
        // vector: vector k takes lanes `cur[k]` into the head in progress,
        // and where that head ends there (`ends[k]`), lanes `next[k]` start
        // the next one (the same lanes as the general loop below, planned
        // once per target so the expert loop keeps g and x(m) in registers).
        let one_end = heads == 1 || s >= 16;
        let (mut cur, mut next, mut ends) = ([0 as __mmask16; N], [0 as __mmask16; N], [false; N]);
        for k in 0..N {
            let (lo, hi) = (16 * k, (16 * k + 16).min(d));
            let b = (lo / s + 1) * s;
            ends[k] = b <= hi;
            cur[k] = if heads == 1 { 0xffff } else { super::lane_bits(0, b.min(hi) - lo) as __mmask16 };
            next[k] = if ends[k] { super::lane_bits(b - lo, hi - lo) as __mmask16 } else { 0 };
        }
        for m in 0..n {
            let (_, _, p1, f1, p2) = expert(m);
            let cv = coefficients16(theta.as_ptr().add(m), heads, n);
            let cv1 = _mm512_mul_ps(_mm512_set1_ps(f1), cv);
            let xm = load::<N, T>(x.add(m * d));
            let (mut y1, mut y2) = (load::<N, T>(p1), load::<N, T>(p2));
            for k in 0..N {
                y1[k] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[k], cv1), grad[k], y1[k]);
                y2[k] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx[k], cv), grad[k], y2[k]);
            }
            store::<N, T>(p1, &y1);
            store::<N, T>(p2, &y2);
            let (mut acc, mut head) = (_mm512_setzero_ps(), 0);
            if one_end {
                for k in 0..N {
                    acc = _mm512_mask3_fmadd_ps(grad[k], xm[k], acc, cur[k]);
                    if ends[k] {
                        *dots.add(m * heads + head) = _mm512_reduce_add_ps(acc);
                        acc = _mm512_mask3_fmadd_ps(grad[k], xm[k], _mm512_setzero_ps(), next[k]);
                        head += 1;
                    }
                }
                continue;
            }
            for k in 0..N {
                // the heads with lanes in vector k, in order
                while head < heads && head * s < 16 * k + 16 {
                    let (lo, hi) = ((head * s).max(16 * k) - 16 * k, (head * s + s).min(16 * k + 16) - 16 * k);
                    let lanes = if heads == 1 { 0xffff } else { super::lane_bits(lo, hi) as __mmask16 };
                    acc = _mm512_mask3_fmadd_ps(grad[k], xm[k], acc, lanes);
                    if head * s + s > 16 * k + 16 {
                        break; // the head goes on in the next vector
                    }
                    *dots.add(m * heads + head) = _mm512_reduce_add_ps(acc);
                    acc = _mm512_setzero_ps();
                    head += 1;
                }
            }
        }
    }

    /// See `super::window_target`; rows of D = 16(N-1) + T floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn window_target<const N: usize, const T: usize>(h: *const f32, grad: *mut f32, n: usize, output: super::RowBase, outs: &[u32], out_factor: impl Fn(u32) -> f32, mut gfn: impl FnMut(usize, f32) -> f32) {
        let d = 16 * (N - 1) + T;
        for (j, &o) in outs.iter().enumerate() {
            let p = output.row(o, d);
            let old = load::<N, T>(p);
            let mut new = old;
            let c = out_factor(o);
            for i in 0..n {
                let hi = load::<N, T>(h.add(i * d));
                let g = gfn(j, dot::<N, T>(&hi, &old));
                if g != 0.0 {
                    let pg = grad.add(i * d);
                    let mut gi = load::<N, T>(pg);
                    axpy(g, &old, &mut gi);
                    store::<N, T>(pg, &gi);
                    axpy(g * c, &hi, &mut new);
                }
            }
            if c != 0.0 {
                store::<N, T>(p, &new);
            }
        }
    }
}

/// CBOW's per-target kernel for AVX2. Its 16 registers do not hold the
/// hidden vector, its gradient and an output row at once (13 registers
/// each at d = 100), so this keeps the hidden vector h alone in registers
/// and streams each output row and the gradient through L1: an output row
/// is loaded for its dot with h, then again for its update, the gradient
/// loaded and stored once per row. The separate kernels (`dot`,
/// `update_pair`, `axpy`) load h for every pass instead. The arithmetic is
/// theirs, element by element in the same order: FMA over whole vectors of
/// 8, `dot_avx2`'s two accumulators and reduction, and the row's last T = 4
/// floats as their scalar loops compute them (a multiply, then an add).
#[cfg(target_arch = "x86_64")]
mod rows256 {
    use std::arch::x86_64::*;

    /// The last T floats of a row (T = 0 or 4), zeros above.
    #[inline(always)]
    unsafe fn tail<const T: usize>(p: *const f32) -> __m128 {
        if T == 4 {
            _mm_loadu_ps(p)
        } else {
            _mm_setzero_ps()
        }
    }

    #[inline(always)]
    unsafe fn put_tail<const T: usize>(p: *mut f32, v: __m128) {
        if T == 4 {
            _mm_storeu_ps(p, v)
        }
    }

    /// y + a·x on the tail, as the scalar loops: a multiply, then an add.
    #[inline(always)]
    unsafe fn tail_axpy(a: f32, x: __m128, y: __m128) -> __m128 {
        _mm_add_ps(y, _mm_mul_ps(_mm_set1_ps(a), x))
    }

    /// The row at `p` dotted with the row in registers (`v`, tail `vt`), summed
    /// as `dot_avx2` does: vectors alternately into two accumulators, one
    /// reduction, then the tail's products added in order.
    #[inline(always)]
    unsafe fn dot<const N: usize, const T: usize>(p: *const f32, v: &[__m256; N], vt: __m128) -> f32 {
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (b, vb) in v.iter().enumerate() {
            if b % 2 == 0 {
                acc0 = _mm256_fmadd_ps(*vb, _mm256_loadu_ps(p.add(8 * b)), acc0);
            } else {
                acc1 = _mm256_fmadd_ps(*vb, _mm256_loadu_ps(p.add(8 * b)), acc1);
            }
        }
        tail_sum::<T>(super::lanes_x86::hsum8(_mm256_add_ps(acc0, acc1)), vt, tail::<T>(p.add(8 * N)))
    }

    /// s + a_0·b_0 + a_1·b_1 + ... over the tail, added in order (the scalar
    /// loops' sum after the vectors' reduction).
    #[inline(always)]
    unsafe fn tail_sum<const T: usize>(mut s: f32, a: __m128, b: __m128) -> f32 {
        if T == 4 {
            let mut prod = [0f32; 4];
            _mm_storeu_ps(prod.as_mut_ptr(), _mm_mul_ps(a, b));
            for x in prod {
                s += x;
            }
        }
        s
    }

    /// The output rows against the hidden vector in registers (h, tail ht),
    /// in order: g = gfn(j, h·row); unless g = 0, grad += g·row (the row
    /// before its update) and row += g·c·h, c = out_factor(o) (no store when
    /// c = 0): `score_pair` row after row. Returns grad (from zero).
    #[inline(always)]
    unsafe fn output_rows<const N: usize, const T: usize>(h: &[__m256; N], ht: __m128, output: super::RowBase, outs: &[u32], out_factor: impl Fn(u32) -> f32, mut gfn: impl FnMut(usize, f32) -> f32) -> ([__m256; N], __m128) {
        let d = 8 * N + T;
        let mut grad = [_mm256_setzero_ps(); N];
        let mut gt = _mm_setzero_ps();
        for (j, &o) in outs.iter().enumerate() {
            let p = output.row(o, d);
            let g = gfn(j, dot::<N, T>(p, h, ht));
            if g == 0.0 {
                continue;
            }
            let c = out_factor(o);
            let (vg, vgc) = (_mm256_set1_ps(g), _mm256_set1_ps(g * c));
            for (b, (gb, hb)) in grad.iter_mut().zip(h).enumerate() {
                let x = _mm256_loadu_ps(p.add(8 * b));
                *gb = _mm256_fmadd_ps(vg, x, *gb);
                if c != 0.0 {
                    _mm256_storeu_ps(p.add(8 * b), _mm256_fmadd_ps(vgc, *hb, x));
                }
            }
            let x = tail::<T>(p.add(8 * N));
            gt = tail_axpy(g, x, gt);
            if c != 0.0 {
                put_tail::<T>(p.add(8 * N), tail_axpy(g * c, ht, x));
            }
        }
        (grad, gt)
    }

    /// See `super::moe_target`; rows of D = 8N + T floats, T = 0 or 4, in H
    /// heads of s = D/H >= 8 floats (H <= 8). One head: the arithmetic of
    /// `mix_avx2`, `score_pair_avx2` and `dot_axpy2_avx2` called one after
    /// the other; several: of `mix_lanes_avx2`, `score_pair_avx2` and
    /// `dot_axpy2_lanes_avx2`. z, then its gradient, held in registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn moe_target<const N: usize, const T: usize>(r: &super::MoeRows<'_>, in_factor: impl Fn(u32) -> f32, out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
        if r.heads == 1 {
            moe_heads::<N, T, false>(r, std::ptr::null(), in_factor, out_factor, gfn)
        } else {
            let plan = HeadPlan::<N>::new(8 * N + T, r.heads);
            moe_heads::<N, T, true>(r, &plan, in_factor, out_factor, gfn)
        }
    }

    /// Where the heads lie in a row of N vectors (and a tail): each
    /// vector's lane-to-head map, as `mix_lanes_avx2` computes it, and for
    /// the vectors where a head ends (bit k of `ends`; at most one per
    /// vector, as heads have 8 floats or more), the lane `cut[k]` (1..=8)
    /// where the next head starts.
    struct HeadPlan<const N: usize> {
        idx: [__m256i; N],
        ends: u64,
        cut: [u8; N],
    }

    impl<const N: usize> HeadPlan<N> {
        #[inline(always)]
        unsafe fn new(d: usize, heads: usize) -> Self {
            let s = d / heads;
            assert!(heads * s == d && heads <= 8 && s >= 8 && N < 64, "the AVX2 kernel: up to 8 heads of 8 floats or more");
            let inv_s = _mm256_set1_ps(heads as f32 / d as f32);
            let mut pos = _mm256_setr_ps(0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5);
            let mut plan = HeadPlan { idx: [_mm256_setzero_si256(); N], ends: 0, cut: [0; N] };
            for k in 0..N {
                plan.idx[k] = super::lanes_x86::heads8(pos, inv_s);
                pos = _mm256_add_ps(pos, _mm256_set1_ps(8.0));
                let end = (8 * k / s + 1) * s; // the end of the head at lane 0
                if end <= 8 * k + 8 {
                    plan.ends |= 1 << k;
                    plan.cut[k] = (end - 8 * k) as u8;
                }
            }
            plan
        }

        /// Lanes below (`below`) or from `cut[k]` on, as a float mask.
        #[inline(always)]
        unsafe fn lanes(&self, k: usize, below: bool) -> __m256 {
            let (iota, c) = (_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(self.cut[k] as i32));
            _mm256_castsi256_ps(if below { _mm256_cmpgt_epi32(c, iota) } else { _mm256_cmpgt_epi32(iota, _mm256_sub_epi32(c, _mm256_set1_epi32(1))) })
        }
    }

    /// `moe_target` with one head (`MULTI` false, no plan, never read: a
    /// broadcast coefficient, one dot per expert) or several (`plan`: each
    /// vector's coefficients permuted from the H gate weights by its
    /// lane-to-head map; a head's dot closed in the vector where it ends).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn moe_heads<const N: usize, const T: usize, const MULTI: bool>(r: &super::MoeRows<'_>, plan: *const HeadPlan<N>, in_factor: impl Fn(u32) -> f32, out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
        use super::lanes_x86::{coefficients8, hsum8};
        let super::MoeRows { words, mask, theta, heads, x, z: zout, dots, output, outs, .. } = *r;
        let d = 8 * N + T;
        let n = words.len() + mask.is_some() as usize;
        assert!(MULTI != plan.is_null() && (MULTI || heads == 1), "a plan for several heads, none for one");
        assert!(theta.len() >= heads * n, "theta holds H x n gate weights");
        // the last head's weights (the row's tail belongs to it; the only head when one)
        let last = &theta[(heads - 1) * n..heads * n];
        let coef = |tv: __m256, k: usize| if MULTI { _mm256_permutevar8x32_ps(tv, (*plan).idx[k]) } else { tv };
        let gate = |m: usize, tl: f32| if MULTI { coefficients8(theta.as_ptr().add(m), heads, n) } else { _mm256_set1_ps(tl) };
        // forward: x(m) = a + b (kept for the backward), z_h += θ_h(m)·x(m)_h
        let mut z = [_mm256_setzero_ps(); N];
        let mut zt = _mm_setzero_ps();
        for (m, &tl) in last.iter().enumerate() {
            let (pa, pb, ..) = r.expert(m, d, &in_factor);
            let (px, tv) = (x.add(m * d), gate(m, tl));
            for (b, zb) in z.iter_mut().enumerate() {
                let v = _mm256_add_ps(_mm256_loadu_ps(pa.add(8 * b)), _mm256_loadu_ps(pb.add(8 * b)));
                _mm256_storeu_ps(px.add(8 * b), v);
                *zb = _mm256_fmadd_ps(coef(tv, b), v, *zb);
            }
            let v = _mm_add_ps(tail::<T>(pa.add(8 * N)), tail::<T>(pb.add(8 * N)));
            put_tail::<T>(px.add(8 * N), v);
            zt = tail_axpy(tl, v, zt);
        }
        for (b, zb) in z.iter().enumerate() {
            _mm256_storeu_ps(zout.add(8 * b), *zb);
        }
        put_tail::<T>(zout.add(8 * N), zt);
        let (grad, gt) = output_rows::<N, T>(&z, zt, output, outs, out_factor, gfn);
        // backward, per expert: dots[m·H + h] = g_h·x(m)_h, y1 += f1·θ_h·g_h, y2 += θ_h·g_h
        for (m, &tl) in last.iter().enumerate() {
            let (_, _, p1, f1, p2) = r.expert(m, d, &in_factor);
            let (px, cv) = (x.add(m * d), gate(m, tl));
            let cv1 = if MULTI { _mm256_mul_ps(_mm256_set1_ps(f1), cv) } else { _mm256_set1_ps(f1 * tl) };
            let pd = dots.add(if MULTI { m * heads } else { m });
            let (mut acc, mut head) = (_mm256_setzero_ps(), 0);
            for (b, gb) in grad.iter().enumerate() {
                let vx = _mm256_loadu_ps(px.add(8 * b));
                _mm256_storeu_ps(p1.add(8 * b), _mm256_fmadd_ps(coef(cv1, b), *gb, _mm256_loadu_ps(p1.add(8 * b))));
                _mm256_storeu_ps(p2.add(8 * b), _mm256_fmadd_ps(coef(cv, b), *gb, _mm256_loadu_ps(p2.add(8 * b))));
                if !MULTI || (*plan).ends & (1 << b) == 0 {
                    acc = _mm256_fmadd_ps(*gb, vx, acc);
                    continue;
                }
                // head `head` ends at lane cut[b]; the next one starts there
                acc = _mm256_fmadd_ps(_mm256_and_ps(*gb, (*plan).lanes(b, true)), vx, acc);
                *pd.add(head) = hsum8(acc);
                head += 1;
                acc = if (*plan).cut[b] < 8 { _mm256_fmadd_ps(_mm256_and_ps(*gb, (*plan).lanes(b, false)), vx, _mm256_setzero_ps()) } else { _mm256_setzero_ps() };
            }
            if !MULTI || head < heads {
                // the last head, open at the tail (or the only head)
                *pd.add(head) = tail_sum::<T>(hsum8(acc), gt, tail::<T>(px.add(8 * N)));
            }
            put_tail::<T>(p1.add(8 * N), tail_axpy(f1 * tl, gt, tail::<T>(p1.add(8 * N))));
            put_tail::<T>(p2.add(8 * N), tail_axpy(tl, gt, tail::<T>(p2.add(8 * N))));
        }
    }

    /// See `super::cbow_target`; rows of D = 8N + T floats, T = 0 or 4.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn cbow_target<const N: usize, const T: usize>(
        r: &super::CbowRows<'_>,
        in_factor: impl Fn(u32) -> f32,
        out_factor: impl Fn(u32) -> f32,
        gfn: impl FnMut(usize, f32) -> f32,
    ) {
        let super::CbowRows { input, ctx, skip, output, outs, mean } = *r;
        let d = 8 * N + T;
        // h: the context rows summed in order (`axpy` by 1.0 from zero)
        let one = _mm256_set1_ps(1.0);
        let mut h = [_mm256_setzero_ps(); N];
        let mut ht = _mm_setzero_ps();
        let mut count = 0usize;
        for (k, &w) in ctx.iter().enumerate() {
            if k != skip {
                let p = input.row(w, d);
                for (b, hb) in h.iter_mut().enumerate() {
                    *hb = _mm256_fmadd_ps(one, _mm256_loadu_ps(p.add(8 * b)), *hb);
                }
                ht = tail_axpy(1.0, tail::<T>(p.add(8 * N)), ht);
                count += 1;
            }
        }
        let inv = 1.0 / count as f32;
        if mean {
            let vi = _mm256_set1_ps(inv);
            for hb in h.iter_mut() {
                *hb = _mm256_mul_ps(vi, *hb);
            }
            ht = _mm_mul_ps(ht, _mm_set1_ps(inv));
        }
        let (mut grad, mut gt) = output_rows::<N, T>(&h, ht, output, outs, out_factor, gfn);
        if !mean {
            let vi = _mm256_set1_ps(inv);
            for gb in grad.iter_mut() {
                *gb = _mm256_mul_ps(vi, *gb);
            }
            gt = _mm_mul_ps(gt, _mm_set1_ps(inv));
        }
        // every context row += in_factor(w)·grad, in order
        for (k, &w) in ctx.iter().enumerate() {
            let a = in_factor(w);
            if k != skip && a != 0.0 {
                let p = input.row(w, d);
                let va = _mm256_set1_ps(a);
                for (b, gb) in grad.iter().enumerate() {
                    _mm256_storeu_ps(p.add(8 * b), _mm256_fmadd_ps(va, *gb, _mm256_loadu_ps(p.add(8 * b))));
                }
                put_tail::<T>(p.add(8 * N), tail_axpy(a, gt, tail::<T>(p.add(8 * N))));
            }
        }
    }

    /// See `super::window_target`; rows of D = 8N + T floats, T = 0 or 4.
    /// The output row's old value stays in registers for the window's dots
    /// and gradients; its update goes to memory after each hidden row (the
    /// same FMAs, in the same order, as `add_rows` after `score_rows`).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn window_target<const N: usize, const T: usize>(h: *const f32, grad: *mut f32, n: usize, output: super::RowBase, outs: &[u32], out_factor: impl Fn(u32) -> f32, mut gfn: impl FnMut(usize, f32) -> f32) {
        let d = 8 * N + T;
        for (j, &o) in outs.iter().enumerate() {
            let p = output.row(o, d);
            let mut old = [_mm256_setzero_ps(); N];
            for (b, ob) in old.iter_mut().enumerate() {
                *ob = _mm256_loadu_ps(p.add(8 * b));
            }
            let ot = tail::<T>(p.add(8 * N));
            let c = out_factor(o);
            for i in 0..n {
                let hi = h.add(i * d);
                let g = gfn(j, dot::<N, T>(hi, &old, ot));
                if g == 0.0 {
                    continue;
                }
                let pg = grad.add(i * d);
                let vg = _mm256_set1_ps(g);
                for (b, ob) in old.iter().enumerate() {
                    _mm256_storeu_ps(pg.add(8 * b), _mm256_fmadd_ps(vg, *ob, _mm256_loadu_ps(pg.add(8 * b))));
                }
                put_tail::<T>(pg.add(8 * N), tail_axpy(g, ot, tail::<T>(pg.add(8 * N))));
                if c != 0.0 {
                    let vgc = _mm256_set1_ps(g * c);
                    for b in 0..N {
                        _mm256_storeu_ps(p.add(8 * b), _mm256_fmadd_ps(vgc, _mm256_loadu_ps(hi.add(8 * b)), _mm256_loadu_ps(p.add(8 * b))));
                    }
                    put_tail::<T>(p.add(8 * N), tail_axpy(g * c, tail::<T>(hi.add(8 * N)), tail::<T>(p.add(8 * N))));
                }
            }
        }
    }
}

/// Where the register kernels find row w of a V x d matrix: at `shared +
/// w·d`, except the rows below `hot_rows`, which a worker keeps private
/// copies of (hot-row privatization, `hogwild::HotRows`) at `hot + w·d`.
/// `hot_rows = 0` (one worker): every row in `shared`, one compare per row.
#[derive(Clone, Copy, Debug)]
pub struct RowBase {
    pub shared: *mut f32,
    pub hot: *mut f32,
    pub hot_rows: u32,
}

/// Every row in the matrix at `shared` (no private rows).
impl From<*mut f32> for RowBase {
    fn from(shared: *mut f32) -> Self {
        RowBase { shared, hot: std::ptr::null_mut(), hot_rows: 0 }
    }
}

impl RowBase {
    /// Row `w`'s first float (rows of `d` floats).
    ///
    /// # Safety
    /// As `ptr::add`: the row must lie inside the allocation its base points into.
    #[inline(always)]
    pub unsafe fn row(self, w: u32, d: usize) -> *mut f32 {
        let base = if w < self.hot_rows { self.hot } else { self.shared };
        base.add(w as usize * d)
    }
}

/// Calls `$f::<N, T>($args)` for the vector sizes of `register_level`:
/// `rows512` (N AVX-512 vectors, the last holding T floats) or, after
/// `avx2`, `rows256` (N AVX2 vectors, then T = 0 or 4 floats).
macro_rules! by_size {
    (avx2, $d:expr, $f:ident, $($arg:expr),*) => {
        match $d {
            32 => rows256::$f::<4, 0>($($arg),*),
            64 => rows256::$f::<8, 0>($($arg),*),
            100 => rows256::$f::<12, 4>($($arg),*),
            128 => rows256::$f::<16, 0>($($arg),*),
            200 => rows256::$f::<25, 0>($($arg),*),
            256 => rows256::$f::<32, 0>($($arg),*),
            300 => rows256::$f::<37, 4>($($arg),*),
            _ => unreachable!("no AVX2 register kernel for this size"),
        }
    };
    ($d:expr, $f:ident, $($arg:expr),*) => {
        match $d {
            32 => rows512::$f::<2, 16>($($arg),*),
            50 => rows512::$f::<4, 2>($($arg),*),
            64 => rows512::$f::<4, 16>($($arg),*),
            100 => rows512::$f::<7, 4>($($arg),*),
            128 => rows512::$f::<8, 16>($($arg),*),
            200 => rows512::$f::<13, 8>($($arg),*),
            256 => rows512::$f::<16, 16>($($arg),*),
            300 => rows512::$f::<19, 12>($($arg),*),
            _ => unreachable!("no register kernel for this size"),
        }
    };
}

/// CBOW's exact per-target update in one call, the hidden vector and its
/// gradient held in registers: h = Σ_k input[ctx[k]] over k ≠ `skip` (times
/// 1/|C| when `mean`); then for each output row o = outs[j] in order, g =
/// gfn(j, h·output[o]), and unless g = 0, grad += g·output[o] (the row
/// before its update) and output[o] += g·out_factor(o)·h (no store when
/// that factor is 0); finally grad /= |C| unless `mean`, and every context
/// row input[w] += in_factor(w)·grad (in order; skipped where the factor is
/// 0). The same arithmetic, in the same order, as `axpy`, `scale`,
/// `score_pair` and `axpy` called one after the other.
///
/// # Safety
/// `lv` is `register_level(d)` (a level the CPU has, with a kernel for
/// d); `ctx` has an entry besides `skip`; for every id w in `ctx`, `input + w·d` starts d floats
/// inside one live allocation, and the same for `output` and `outs`. The
/// rows may be updated by other threads meanwhile (Hogwild), and `input`
/// and `output` may be the same matrix: every row is read from memory when
/// its step needs it and written back before the next step reads.
#[inline]
pub unsafe fn cbow_target(lv: Level, d: usize, rows: &CbowRows<'_>, in_factor: impl Fn(u32) -> f32, out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if lv == Level::Avx2Fma {
        by_size!(avx2, d, cbow_target, rows, in_factor, out_factor, gfn);
    } else {
        by_size!(d, cbow_target, rows, in_factor, out_factor, gfn);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no register kernel on this architecture {:?}", (lv, d, rows.skip));
}

/// The rows of one CBOW target for `cbow_target`: the context `ctx` (all
/// but `ctx[skip]`) as rows of the matrix at `input`, the output rows `outs`
/// of the matrix at `output`, and whether the hidden vector is their mean.
#[derive(Clone, Copy)]
pub struct CbowRows<'a> {
    pub input: RowBase,
    pub ctx: &'a [u32],
    pub skip: usize,
    pub output: RowBase,
    pub outs: &'a [u32],
    pub mean: bool,
}

/// One BidirMoE target's exact update (slice heads, the gate weights θ
/// given) in one call, the mixture z and its gradient g held in registers:
/// for each expert m in order (`words`, then the mask expert when `mask` is
/// set), x(m) = a_m + b_m is stored in row m of `x` and z_h += θ_h(m) x(m)_h
/// (a_m = alpha[words[m]], b_m = values[offsets[m]]; the mask expert's
/// `value` and `pos`); z is stored at `z`; the output rows `outs` update as
/// in `cbow_target` (g from zero); then for each expert in order,
/// dots[m·H + h] = g_h · x(m)_h, alpha[words[m]]_h += in_factor(words[m])·
/// θ_h(m)·g_h and dvalues[offsets[m]]_h += θ_h(m)·g_h (the mask expert:
/// `dvalue` and `dpos`, factor 1). Head h owns lanes [h·d/H, (h+1)·d/H).
/// The same arithmetic, in the same order, as `mix`, `score_pair` and
/// `dot_axpy2` called one after the other.
///
/// # Safety
/// `lv` is `moe_register_level(d, H)` (a level the CPU has, with a kernel
/// for d and H heads); H divides d; `theta` holds H x n
/// floats (n experts, the mask expert included), `dots` n·H, `x` n·d and
/// `z` d, all outside every matrix; every row pointer formed (alpha and
/// dvalues rows of each expert, values rows, the mask expert's four rows,
/// output rows of `outs`) starts d floats inside one live allocation; no
/// expert's `dvalues` row is another's or the mask expert's `dpos`, and
/// none of them is an alpha row. Alpha rows may repeat and be updated by
/// other threads meanwhile (read from memory when a step needs them).
#[inline]
pub unsafe fn moe_target(lv: Level, d: usize, rows: &MoeRows<'_>, in_factor: impl Fn(u32) -> f32, out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if lv == Level::Avx2Fma {
        by_size!(avx2, d, moe_target, rows, in_factor, out_factor, gfn);
    } else {
        by_size!(d, moe_target, rows, in_factor, out_factor, gfn);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no register kernel on this architecture {:?}", (lv, d, rows.heads));
}

/// The rows of one BidirMoE target for `moe_target`.
#[derive(Clone, Copy)]
pub struct MoeRows<'a> {
    /// The words' value rows (V x d), updated.
    pub alpha: RowBase,
    pub words: &'a [u32],
    /// The offset (or position) value rows, read, and their pending gradients.
    pub values: *const f32,
    pub offsets: &'a [u32],
    pub dvalues: *mut f32,
    pub mask: Option<MaskRows>,
    /// θ_h(m), H x n.
    pub theta: &'a [f32],
    pub heads: usize,
    /// Scratch: the experts' values (n x d), z (d) and the dots (n x H).
    pub x: *mut f32,
    pub z: *mut f32,
    pub dots: *mut f32,
    pub output: RowBase,
    pub outs: &'a [u32],
}

impl MoeRows<'_> {
    /// Expert m's rows (d floats each): its value is a + b, and the backward
    /// adds f1·θ·g to y1 and θ·g to y2; returns (a, b, y1, f1, y2).
    ///
    /// # Safety
    /// m < the experts (the mask expert last); the rows as `moe_target` requires.
    #[inline(always)]
    unsafe fn expert(&self, m: usize, d: usize, in_factor: &impl Fn(u32) -> f32) -> (*const f32, *const f32, *mut f32, f32, *mut f32) {
        if m < self.words.len() {
            let (w, o) = (self.alpha.row(self.words[m], d), self.offsets[m] as usize * d);
            (w, self.values.add(o), w, in_factor(self.words[m]), self.dvalues.add(o))
        } else {
            let k = self.mask.expect("the mask expert");
            (k.value, k.pos, k.dvalue, 1.0, k.dpos)
        }
    }
}

/// The mask expert's rows: its value is `value + pos`; the backward adds
/// θ·g to `dvalue` and `dpos`.
#[derive(Clone, Copy)]
pub struct MaskRows {
    pub value: *const f32,
    pub pos: *const f32,
    pub dvalue: *mut f32,
    pub dpos: *mut f32,
}

/// The output layer's update for the n hidden rows of `h` (n x d) sharing
/// one target, in one call: for each output row o = outs[j] in order, with
/// its old value β held in registers, g_i = gfn(j, h_i·β) for each i, and
/// where g_i ≠ 0, grad_i += g_i·β and the new row accumulates
/// g_i·out_factor(o)·h_i (in order of i), stored once (not at all when that
/// factor is 0). With no row repeated in `outs`, that is exactly `score_rows`
/// for every j, then `add_rows` for every j (each row's scores use its value
/// before the target, which no other j changes).
///
/// # Safety
/// `lv` is `register_level(d)`; `h` and `grad` point to n·d floats each,
/// outside the output matrix; every `output + o·d` starts d floats inside one
/// live allocation; no id is repeated in `outs`.
#[inline]
#[allow(clippy::too_many_arguments)]
pub unsafe fn window_target(lv: Level, d: usize, h: *const f32, grad: *mut f32, n: usize, output: RowBase, outs: &[u32], out_factor: impl Fn(u32) -> f32, gfn: impl FnMut(usize, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if lv == Level::Avx2Fma {
        by_size!(avx2, d, window_target, h, grad, n, output, outs, out_factor, gfn);
    } else {
        by_size!(d, window_target, h, grad, n, output, outs, out_factor, gfn);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no register kernel on this architecture {:?}", (lv, d, h, grad, n, output, outs));
}

/// A strided matrix view for `gemm`: `data[i * rs + j * cs]` is element (i, j).
#[derive(Clone, Copy, Debug)]
pub struct Strides {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Strides {
    /// Row-major rows x cols.
    pub fn rm(rows: usize, cols: usize) -> Self {
        Strides { rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major rows x cols matrix (a cols x rows view).
    pub fn rm_t(rows: usize, cols: usize) -> Self {
        Strides { rows: cols, cols: rows, rs: 1, cs: cols }
    }
    fn fits(&self, len: usize) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// C = alpha · A B + beta · C for strided views (the `matrixmultiply` crate's
/// sgemm: blocked, with AVX/FMA chosen at run time). Shapes and bounds are
/// checked; a mismatch is a programming error and panics.
pub fn gemm(alpha: f32, a: &[f32], sa: Strides, b: &[f32], sb: Strides, beta: f32, c: &mut [f32], sc: Strides) {
    assert!(sa.cols == sb.rows && sa.rows == sc.rows && sb.cols == sc.cols, "gemm shapes");
    assert!(sa.fits(a.len()) && sb.fits(b.len()) && sc.fits(c.len()), "gemm bounds");
    if sc.rows == 0 || sc.cols == 0 {
        return;
    }
    // SAFETY: every element the kernel touches, (i, j) with i < rows and
    // j < cols of each view, lies inside its slice (checked just above); C is
    // a unique borrow, so it cannot alias A or B.
    unsafe {
        matrixmultiply::sgemm(
            sc.rows, sa.cols, sc.cols, alpha,
            a.as_ptr(), sa.rs as isize, sa.cs as isize,
            b.as_ptr(), sb.rs as isize, sb.cs as isize,
            beta,
            c.as_mut_ptr(), sc.rs as isize, sc.cs as isize,
        )
    }
}

/// Ask the CPU to start loading `row` into cache (a hint; no effect on
/// results), for writing where the CPU has PREFETCHW (every AMD64 CPU,
/// Intel since Broadwell): every row prefetched here is updated soon after,
/// and a line that another core last wrote then arrives owned, in one
/// transfer between the cores instead of two (the read, then taking
/// ownership for the write). That is what Hogwild workers pay for every
/// shared row, and it is dear between cores that share no cache (docs/speed.md,
/// twelfth round of issue 14).
#[inline]
pub fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = row.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(row);
        let write = has_prefetchw();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults or changes memory; the address
            // is inside `row` (off < its size in bytes). SSE is x86_64
            // baseline; PREFETCHW only where CPUID says the CPU has it.
            unsafe {
                if write {
                    std::arch::asm!("prefetchw [{0}]", in(reg) p.add(off), options(nostack, preserves_flags, readonly));
                } else {
                    _mm_prefetch(p.add(off), _MM_HINT_T0);
                }
            }
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Whether the CPU has PREFETCHW (CPUID 0x8000_0001, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        // SAFETY (older toolchains mark __cpuid unsafe): CPUID exists on every
        // x86_64 CPU; extended leaves are read only when the highest one
        // reported covers 0x8000_0001.
        #[allow(unused_unsafe)]
        unsafe { __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0 }
    })
}

/// Sigmoid through a lookup table over [-MAX_EXP, MAX_EXP], as word2vec does
/// (1000 entries); outside the range it saturates to 0 or 1.
pub const MAX_EXP: f32 = 6.0;
const EXP_TABLE_SIZE: usize = 1000;

/// The tables are built once per process and shared, so a copy of this
/// handle is free (a worker's view of an output layer copies it).
#[derive(Clone, Copy)]
pub struct SigmoidTable {
    table: &'static [f32],
    log_table: &'static [f32],
}

impl SigmoidTable {
    pub fn new() -> Self {
        static TABLES: std::sync::OnceLock<(Vec<f32>, Vec<f32>)> = std::sync::OnceLock::new();
        let (table, log_table) = TABLES.get_or_init(|| {
            let mut table = Vec::with_capacity(EXP_TABLE_SIZE);
            let mut log_table = Vec::with_capacity(EXP_TABLE_SIZE);
            for i in 0..EXP_TABLE_SIZE {
                let x = (i as f64 / EXP_TABLE_SIZE as f64 * 2.0 - 1.0) * MAX_EXP as f64;
                let s = 1.0 / (1.0 + (-x).exp());
                table.push(s as f32);
                log_table.push(s.ln() as f32);
            }
            (table, log_table)
        });
        SigmoidTable { table, log_table }
    }

    #[inline]
    fn idx(f: f32) -> usize {
        (((f + MAX_EXP) * (EXP_TABLE_SIZE as f32 / MAX_EXP / 2.0)) as usize).min(EXP_TABLE_SIZE - 1)
    }

    /// σ(f), saturating outside ±MAX_EXP.
    #[inline]
    pub fn sigmoid(&self, f: f32) -> f32 {
        if f <= -MAX_EXP {
            0.0
        } else if f >= MAX_EXP {
            1.0
        } else {
            self.table[Self::idx(f)]
        }
    }

    /// log σ(f), exact (not tabulated) outside ±MAX_EXP.
    #[inline]
    pub fn log_sigmoid(&self, f: f32) -> f32 {
        if f <= -MAX_EXP || f >= MAX_EXP {
            log_sigmoid_exact(f)
        } else {
            self.log_table[Self::idx(f)]
        }
    }

    /// The negative-sampling coefficient of one score f = h·β:
    /// lr·(label − σ(f)), and −log σ(±f) added to `loss` when `want_loss`
    /// (+f for the target, label 1; −f for a negative, label 0). Small and
    /// always inlined: the output kernels call it once per score.
    #[inline(always)]
    pub fn coefficient(&self, label: f32, f: f32, lr: f32, want_loss: bool, loss: &mut f32) -> f32 {
        if want_loss {
            *loss -= self.log_sigmoid(if label > 0.0 { f } else { -f });
        }
        (label - self.sigmoid(f)) * lr
    }
}

/// log σ(f) = −log(1 + e^{−f}) in f64, for saturated scores (rare: kept out of line).
#[cold]
#[inline(never)]
fn log_sigmoid_exact(f: f32) -> f32 {
    -((-f as f64).exp().ln_1p() as f32)
}

impl Default for SigmoidTable {
    fn default() -> Self {
        Self::new()
    }
}

// ------------------------------------------- the tabular lane step's masked column

/// The row's buffers for the masked columns of the tabular lane-block step
/// (`models::tabular`, "lane-block row step") with one block of heads (5
/// to 8 heads, head h in lane h; VB blocks per vector, block s holding
/// float s of every head): one vector per present column ("expert") each.
/// Built by [`ColumnBuffers::new`], which checks their lengths once.
pub struct ColumnBuffers<'a, const VB: usize> {
    /// Query (times 1/√d_k), key, value of each column, and the mask
    /// expert's key and value at each column.
    q: &'a [[Block8; VB]],
    k: &'a [[Block8; VB]],
    v: &'a [[Block8; VB]],
    km: &'a [[Block8; VB]],
    vm: &'a [[Block8; VB]],
    /// Gradient accumulators of k, v, km, vm (`dk`, `dkm` before 1/√d_k).
    dk: &'a mut [[Block8; VB]],
    dv: &'a mut [[Block8; VB]],
    dkm: &'a mut [[Block8; VB]],
    dvm: &'a mut [[Block8; VB]],
    /// Scratch: one block per expert (its MoE weights), one per group of
    /// eight categories (their scores).
    th: &'a mut [Block8],
    lg: &'a mut [Block8],
}

impl<'a, const VB: usize> ColumnBuffers<'a, VB> {
    /// `[q, k, v, km, vm]`, `[dk, dv, dkm, dvm]`, all of one length n, `th`
    /// at least n blocks. Panics otherwise (a programming error).
    pub fn new(read: [&'a [[Block8; VB]]; 5], [dk, dv, dkm, dvm]: [&'a mut [[Block8; VB]]; 4], th: &'a mut [Block8], lg: &'a mut [Block8]) -> Self {
        let [q, k, v, km, vm] = read;
        let n = k.len();
        assert!(read.iter().all(|x| x.len() == n) && [dk.len(), dv.len(), dkm.len(), dvm.len()].iter().all(|&l| l == n) && th.len() >= n);
        ColumnBuffers { q, k, v, km, vm, dk, dv, dkm, dvm, th, lg }
    }

    /// Every buffer, for overlap checks.
    pub fn slices(&self) -> [&[f32]; 11] {
        [
            self.q.as_flattened().as_flattened(),
            self.k.as_flattened().as_flattened(),
            self.v.as_flattened().as_flattened(),
            self.km.as_flattened().as_flattened(),
            self.vm.as_flattened().as_flattened(),
            self.dk.as_flattened().as_flattened(),
            self.dv.as_flattened().as_flattened(),
            self.dkm.as_flattened().as_flattened(),
            self.dvm.as_flattened().as_flattened(),
            self.th.as_flattened(),
            self.lg.as_flattened(),
        ]
    }
}

/// Which column is masked: column `a` of the row (with a mask expert, the
/// mask expert's vectors at column a stand in for column a's own; without,
/// column a has weight 0), its true category `target` (an index into the
/// column's output rows) and the step `lr`.
pub struct ColumnAt {
    pub a: usize,
    pub mask: bool,
    pub target: usize,
    pub lr: f32,
}

/// The steps of `exp(x)` for x ≤ 0 on one block (the portable twin of the
/// AVX2 kernel's): x = n·ln2 + r, exp(r) by its Taylor series to degree 7
/// (Estrin's scheme, multiply-adds), 2^n built in the exponent bits; x
/// below −87 taken as −87.
#[inline(always)]
pub fn exp_lanes(x: Block8) -> Block8 {
    std::array::from_fn(|i| {
        let a = x[i].max(-87.0);
        let t = a.mul_add(EXP_LOG2E, EXP_SHIFT);
        let n = t - EXP_SHIFT;
        let r = (-n).mul_add(EXP_LN2, a);
        let r2 = r * r;
        let (a0, a1) = (1.0 + r, r.mul_add(1.0 / 6.0, 0.5));
        let (a2, a3) = (r.mul_add(1.0 / 120.0, 1.0 / 24.0), r.mul_add(1.0 / 5040.0, 1.0 / 720.0));
        let p = (r2 * r2).mul_add(r2.mul_add(a3, a2), r2.mul_add(a1, a0));
        // t's bits are 0x4B40_0000 + n: adding the bias 127 and shifting the
        // low bits into the exponent field gives 2^n (−126 ≤ n ≤ 0 here)
        p * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
    })
}

const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
const EXP_LN2: f32 = std::f32::consts::LN_2;
/// Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
const EXP_SHIFT: f32 = 12_582_912.0;
const LANE_INDEX8: Block8 = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];

/// The masked column's whole step: forward through the experts' mixture,
/// the softmax over the column's categories (`beta`: its output rows,
/// `bias`: their biases in blocks of eight, if any) with those rows and
/// biases updated, and back into the experts' accumulators. Returns the
/// query's gradient (before its 1/√d_k) and p(target). With AVX2 one
/// kernel; the portable code does the same operations in the same order.
/// Panics if an index is out of range (a programming error).
#[inline(always)]
pub fn masked_column<const VB: usize>(c: &mut ColumnBuffers<'_, VB>, at: &ColumnAt, beta: &mut [[Block8; VB]], bias: Option<&mut [Block8]>) -> ([Block8; VB], f32) {
    let m = beta.len();
    let ng = m.div_ceil(8);
    assert!(at.a < c.k.len() && at.target < m && c.lg.len() >= ng && bias.as_ref().is_none_or(|b| b.len() >= ng));
    #[cfg(target_arch = "x86_64")]
    {
        if wide() {
            // SAFETY: the CPU has AVX2 and FMA (just checked); the lengths
            // the kernel indexes by were checked above and in `ColumnBuffers::new`.
            return unsafe { column_x86::masked_column_avx2(c, at, beta, bias) };
        }
    }
    masked_column_portable(c, at, beta, bias)
}

#[inline(always)]
fn lanes8(f: impl Fn(usize) -> f32) -> Block8 {
    std::array::from_fn(f)
}

fn masked_column_portable<const VB: usize>(c: &mut ColumnBuffers<'_, VB>, at: &ColumnAt, beta: &mut [[Block8; VB]], bias: Option<&mut [Block8]>) -> ([Block8; VB], f32) {
    let (n, m) = (c.k.len(), beta.len());
    let ng = m.div_ceil(8);
    let (own, skip) = if at.mask { (at.a, n) } else { (n, at.a) };
    let fma = |a: Block8, b: Block8, y: Block8| lanes8(|i| a[i].mul_add(b[i], y[i]));
    let dot = |a: &[Block8; VB], b: &[Block8; VB]| (1..VB).fold(lanes8(|i| a[0][i] * b[0][i]), |t, s| fma(a[s], b[s], t));
    let q = c.q[at.a];
    // the gate logits, their softmax over the experts, the mixture z
    let mut mx = [f32::NEG_INFINITY; 8];
    for e in 0..n {
        let ke = if e == own { &c.km[e] } else { &c.k[e] };
        let t = if e == skip { [f32::NEG_INFINITY; 8] } else { dot(&q, ke) };
        c.th[e] = t;
        mx = lanes8(|i| if t[i] > mx[i] { t[i] } else { mx[i] });
    }
    let mut sum = [0f32; 8];
    for e in 0..n {
        let x = if e == skip { [0f32; 8] } else { exp_lanes(lanes8(|i| c.th[e][i] - mx[i])) };
        c.th[e] = x;
        sum = lanes8(|i| sum[i] + x[i]);
    }
    let inv = lanes8(|i| 1.0 / sum[i]);
    let mut z = [[0f32; 8]; VB];
    for e in 0..n {
        let w = lanes8(|i| c.th[e][i] * inv[i]);
        c.th[e] = w;
        let ve = if e == own { &c.vm[e] } else { &c.v[e] };
        for s in 0..VB {
            z[s] = fma(w, ve[s], z[s]);
        }
    }
    // the scores of the column's categories, eight at once
    let lg = &mut c.lg[..ng];
    block_scores(&z, beta, lg);
    if let Some(b) = &bias {
        for (l, bb) in lg.iter_mut().zip(b.iter()) {
            *l = lanes8(|i| l[i] + bb[i]);
        }
    }
    let rem = (m - (ng - 1) * 8) as f32;
    let tail = lg[ng - 1];
    lg[ng - 1] = lanes8(|i| if LANE_INDEX8[i] < rem { tail[i] } else { f32::NEG_INFINITY });
    let mut gm = lg[0];
    for l in lg.iter() {
        gm = lanes8(|i| if l[i] > gm[i] { l[i] } else { gm[i] });
    }
    let gm = butterfly(gm, |a, b| if a > b { a } else { b });
    let mut total = [0f32; 8];
    for (g, l) in lg.iter_mut().enumerate() {
        let x = exp_lanes(lanes8(|i| l[i] - gm[i]));
        let x = if g == ng - 1 { lanes8(|i| if LANE_INDEX8[i] < rem { x[i] } else { 0.0 }) } else { x };
        *l = x;
        total = lanes8(|i| total[i] + x[i]);
    }
    let total = butterfly(total, |a, b| a + b);
    let inv = lanes8(|i| 1.0 / total[i]);
    let t = at.target;
    let p_target = lg[t / 8][t % 8] * inv[0];
    for (g, l) in lg.iter_mut().enumerate() {
        let tl = t as f32 - (g * 8) as f32;
        *l = lanes8(|i| ((if LANE_INDEX8[i] == tl { 1.0 } else { 0.0 }) - l[i] * inv[i]) * at.lr);
    }
    let gz = exchange_rows(beta, &lg.as_flattened()[..m], &z);
    if let Some(b) = bias {
        for (bb, l) in b.iter_mut().zip(lg.iter()) {
            *bb = lanes8(|i| bb[i] + l[i]);
        }
    }
    // back through the mixture
    let gzz = dot(&gz, &z);
    let mut dq = [[0f32; 8]; VB];
    for e in 0..n {
        if e == skip {
            continue;
        }
        let t = c.th[e];
        let (ke, ve, dke, dve) = if e == own { (&c.km[e], &c.vm[e], &mut c.dkm[e], &mut c.dvm[e]) } else { (&c.k[e], &c.v[e], &mut c.dk[e], &mut c.dv[e]) };
        let u = dot(&gz, ve);
        let dl = lanes8(|i| t[i] * (u[i] - gzz[i]));
        for s in 0..VB {
            dve[s] = fma(t, gz[s], dve[s]);
            dq[s] = fma(dl, ke[s], dq[s]);
            dke[s] = fma(dl, q[s], dke[s]);
        }
    }
    (dq, p_target)
}

#[cfg(target_arch = "x86_64")]
mod column_x86 {
    use super::{Block8, ColumnAt, ColumnBuffers, EXP_LN2, EXP_LOG2E, EXP_SHIFT, LANE_INDEX8};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn ld(b: &Block8) -> __m256 {
        _mm256_loadu_ps(b.as_ptr())
    }

    #[inline(always)]
    unsafe fn st(b: &mut Block8, v: __m256) {
        _mm256_storeu_ps(b.as_mut_ptr(), v)
    }

    /// `exp_lanes` on a register, step for step.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn exp8(x: __m256) -> __m256 {
        let a = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let t = _mm256_fmadd_ps(a, _mm256_set1_ps(EXP_LOG2E), _mm256_set1_ps(EXP_SHIFT));
        let n = _mm256_sub_ps(t, _mm256_set1_ps(EXP_SHIFT));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2), a);
        let r2 = _mm256_mul_ps(r, r);
        let a0 = _mm256_add_ps(_mm256_set1_ps(1.0), r);
        let a1 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5));
        let a2 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0 / 120.0), _mm256_set1_ps(1.0 / 24.0));
        let a3 = _mm256_fmadd_ps(r, _mm256_set1_ps(1.0 / 5040.0), _mm256_set1_ps(1.0 / 720.0));
        let p = _mm256_fmadd_ps(_mm256_mul_ps(r2, r2), _mm256_fmadd_ps(r2, a3, a2), _mm256_fmadd_ps(r2, a1, a0));
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(127))));
        _mm256_mul_ps(p, two_n)
    }

    /// `<a, b>` per lane over the VB blocks.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot<const VB: usize>(a: &[__m256; VB], b: &[Block8; VB]) -> __m256 {
        let mut t = _mm256_mul_ps(a[0], ld(&b[0]));
        for s in 1..VB {
            t = _mm256_fmadd_ps(a[s], ld(&b[s]), t);
        }
        t
    }

    /// `super::masked_column` (whose checks the caller made).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn masked_column_avx2<const VB: usize>(c: &mut ColumnBuffers<'_, VB>, at: &ColumnAt, beta: &mut [[Block8; VB]], bias: Option<&mut [Block8]>) -> ([Block8; VB], f32) {
        let (n, m) = (c.k.len(), beta.len());
        let ng = m.div_ceil(8);
        let (own, skip) = if at.mask { (at.a, n) } else { (n, at.a) };
        let zero = _mm256_setzero_ps();
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut q = [zero; VB];
        for (qs, src) in q.iter_mut().zip(&c.q[at.a]) {
            *qs = ld(src);
        }
        let (k, v, th) = (c.k.as_ptr(), c.v.as_ptr(), c.th.as_mut_ptr());
        let (km, vm) = (c.km.as_ptr(), c.vm.as_ptr());
        // the gate logits, their softmax over the experts, the mixture z
        let mut mx = ninf;
        for e in 0..n {
            let ke = if e == own { &*km.add(e) } else { &*k.add(e) };
            let t = if e == skip { ninf } else { dot(&q, ke) };
            st(&mut *th.add(e), t);
            mx = _mm256_max_ps(t, mx);
        }
        let mut sum = zero;
        for e in 0..n {
            let x = if e == skip { zero } else { exp8(_mm256_sub_ps(ld(&*th.add(e)), mx)) };
            st(&mut *th.add(e), x);
            sum = _mm256_add_ps(sum, x);
        }
        let inv = _mm256_div_ps(_mm256_set1_ps(1.0), sum);
        let mut z = [zero; VB];
        for e in 0..n {
            let w = _mm256_mul_ps(ld(&*th.add(e)), inv);
            st(&mut *th.add(e), w);
            let ve = if e == own { &*vm.add(e) } else { &*v.add(e) };
            for s in 0..VB {
                z[s] = _mm256_fmadd_ps(w, ld(&ve[s]), z[s]);
            }
        }
        let mut zb = [[0f32; 8]; VB];
        for s in 0..VB {
            st(&mut zb[s], z[s]);
        }
        // the scores of the column's categories, eight at once
        let lg = c.lg.as_mut_ptr();
        let last = m - 1;
        for g in 0..ng {
            let r: [&[Block8; VB]; 8] = if 8 * g + 8 <= m {
                std::array::from_fn(|i| &*beta.as_ptr().add(8 * g + i))
            } else {
                std::array::from_fn(|i| &*beta.as_ptr().add((8 * g + i).min(last)))
            };
            let mut s = ld(&super::x86::scores8_avx2(&zb, &r));
            if let Some(b) = &bias {
                s = _mm256_add_ps(s, ld(b.get_unchecked(g)));
            }
            st(&mut *lg.add(g), s);
        }
        let keep = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_loadu_ps(LANE_INDEX8.as_ptr()), _mm256_set1_ps((m - (ng - 1) * 8) as f32));
        let tail = &mut *lg.add(ng - 1);
        let x = _mm256_blendv_ps(ninf, ld(tail), keep);
        st(tail, x);
        let mut gm = ld(&*lg);
        for g in 0..ng {
            gm = _mm256_max_ps(ld(&*lg.add(g)), gm);
        }
        let gm = ld(&super::x86::lanes_max_avx2(std::mem::transmute::<__m256, Block8>(gm)));
        let mut total = zero;
        for g in 0..ng {
            let mut x = exp8(_mm256_sub_ps(ld(&*lg.add(g)), gm));
            if g == ng - 1 {
                x = _mm256_and_ps(x, keep);
            }
            st(&mut *lg.add(g), x);
            total = _mm256_add_ps(total, x);
        }
        let inv = _mm256_div_ps(_mm256_set1_ps(1.0), ld(&super::x86::lanes_sum_avx2(std::mem::transmute::<__m256, Block8>(total))));
        let t = at.target;
        let p_target = (*lg.add(t / 8))[t % 8] * _mm256_cvtss_f32(inv);
        let (lr, lanes, one) = (_mm256_set1_ps(at.lr), _mm256_loadu_ps(LANE_INDEX8.as_ptr()), _mm256_set1_ps(1.0));
        for g in 0..ng {
            let hot = _mm256_and_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(lanes, _mm256_set1_ps(t as f32 - (g * 8) as f32)), one);
            st(&mut *lg.add(g), _mm256_mul_ps(_mm256_sub_ps(hot, _mm256_mul_ps(ld(&*lg.add(g)), inv)), lr));
        }
        let gzb = super::x86::exchange_rows_avx2(beta, std::slice::from_raw_parts(lg as *const f32, m), &zb);
        if let Some(b) = bias {
            for g in 0..ng {
                let bb = b.get_unchecked_mut(g);
                let x = _mm256_add_ps(ld(bb), ld(&*lg.add(g)));
                st(bb, x);
            }
        }
        // back through the mixture
        let mut gz = [zero; VB];
        for s in 0..VB {
            gz[s] = ld(&gzb[s]);
        }
        let gzz = dot(&gz, &zb);
        let mut dq = [zero; VB];
        let (dk, dv, dkm, dvm) = (c.dk.as_mut_ptr(), c.dv.as_mut_ptr(), c.dkm.as_mut_ptr(), c.dvm.as_mut_ptr());
        for e in 0..n {
            if e == skip {
                continue;
            }
            let t = ld(&*th.add(e));
            let (ke, ve, dke, dve) = if e == own { (&*km.add(e), &*vm.add(e), &mut *dkm.add(e), &mut *dvm.add(e)) } else { (&*k.add(e), &*v.add(e), &mut *dk.add(e), &mut *dv.add(e)) };
            let dl = _mm256_mul_ps(t, _mm256_sub_ps(dot(&gz, ve), gzz));
            for s in 0..VB {
                let x = _mm256_fmadd_ps(t, gz[s], ld(&dve[s]));
                st(&mut dve[s], x);
                dq[s] = _mm256_fmadd_ps(dl, ld(&ke[s]), dq[s]);
                let y = _mm256_fmadd_ps(dl, q[s], ld(&dke[s]));
                st(&mut dke[s], y);
            }
        }
        let mut out = [[0f32; 8]; VB];
        for s in 0..VB {
            st(&mut out[s], dq[s]);
        }
        (out, p_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    // Shared by the register-kernel tests below.
    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()), "{what} [{k}]: {g} vs {w}");
        }
    }

    /// Update factor of output row w (0, ½ and 1 among them).
    fn out_f(w: u32) -> f32 {
        [0.0f32, 1.0, 1.0, 0.5, 1.0, 1.0][w as usize]
    }

    /// A stand-in gradient coefficient of output row j (the target, j = 0, or a negative) at score f.
    fn gfn(j: usize, f: f32) -> f32 {
        if j == 0 { 0.3 - 0.2 * f } else { -0.1 - 0.25 * f }
    }

    fn gfn64(j: usize, f: f64) -> f64 {
        if j == 0 { 0.3 - 0.2 * f } else { -0.1 - 0.25 * f }
    }

    /// Deterministic test values in [-0.18, 0.19].
    fn val(k: usize, s: usize) -> f32 {
        ((k * s % 29) as f32 - 14.0) * 0.013
    }

    /// Whether this CPU runs the kernels of `lv`.
    #[cfg(target_arch = "x86_64")]
    fn cpu_has(lv: Level) -> bool {
        match lv {
            Level::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Level::Avx2Fma => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            _ => false,
        }
    }

    /// The separate kernels of `lv` (AVX-512 or AVX2), called directly, not
    /// through the dispatch that other tests may switch meanwhile. Safety:
    /// the CPU has `lv`'s features; the kernels' slice lengths.
    #[cfg(target_arch = "x86_64")]
    mod separate {
        use super::super::{output_x86, x86, Level};
        pub unsafe fn axpy(lv: Level, a: f32, x: &[f32], y: &mut [f32]) {
            if lv == Level::Avx512 { x86::axpy_avx512(a, x, y) } else { x86::axpy_avx2(a, x, y) }
        }
        pub unsafe fn scale(lv: Level, a: f32, x: &mut [f32]) {
            if lv == Level::Avx512 { x86::scale_avx512(a, x) } else { x86::scale_avx2(a, x) }
        }
        pub unsafe fn score_pair(lv: Level, h: &[f32], out: &mut [f32], grad: &mut [f32], c: f32, gfn: impl FnOnce(f32) -> f32) -> f32 {
            if lv == Level::Avx512 { output_x86::score_pair_avx512(h, out, grad, c, gfn) } else { output_x86::score_pair_avx2(h, out, grad, c, gfn) }
        }
        pub unsafe fn score_rows(lv: Level, w: &[f32], h: &[f32], grad: &mut [f32], gs: &mut [f32], gfn: impl FnMut(usize, f32) -> f32) {
            if lv == Level::Avx512 { output_x86::score_rows_avx512(w, h, grad, gs, gfn) } else { output_x86::score_rows_avx2(w, h, grad, gs, gfn) }
        }
        pub unsafe fn add_rows(lv: Level, out: &mut [f32], h: &[f32], gs: &[f32], c: f32) {
            if lv == Level::Avx512 { output_x86::add_rows_avx512(out, h, gs, c) } else { output_x86::add_rows_avx2(out, h, gs, c) }
        }
    }

    /// The register-resident CBOW and skip-gram kernels, at every level
    /// (AVX-512, AVX2) and size they exist for, against (a) the same level's
    /// separate kernels called one after the other, bit for bit, and (b)
    /// float64 loops written from the definitions. With update factors 0,
    /// 1/2 and 1, a repeated context word and (CBOW) a repeated output row,
    /// the mean and the sum.
    #[test]
    fn register_kernels_match_separate_kernels_and_reference() {
        #[cfg(target_arch = "x86_64")]
        for lv in [Level::Avx512, Level::Avx2Fma] {
            if !cpu_has(lv) {
                continue;
            }
            let in_f = |w: u32| [1.0f32, 1.0, 1.0, 0.5, 0.0, 1.0][w as usize];
            let sizes: &[usize] = if lv == Level::Avx512 { &[32, 50, 64, 100, 128, 200, 256, 300] } else { &[32, 64, 100, 128, 200, 256, 300] };
            for &d in sizes {
                let input0: Vec<f32> = (0..6 * d).map(|k| val(k, 7)).collect();
                let output0: Vec<f32> = (0..6 * d).map(|k| val(k, 11)).collect();
                let (ctx, skip, outs) = ([1u32, 3, 1, 4, 2], 2, [2u32, 5, 0, 5, 3]);
                for mean in [true, false] {
                    let (mut i1, mut o1) = (input0.clone(), output0.clone());
                    // SAFETY: the CPU has lv (checked above), which has a kernel for d; every id < 6 rows of d floats.
                    let rows = CbowRows { input: i1.as_mut_ptr().into(), ctx: &ctx, skip, output: o1.as_mut_ptr().into(), outs: &outs, mean };
                    unsafe { cbow_target(lv, d, &rows, in_f, out_f, gfn) };
                    // (a) the separate kernels
                    let (mut i2, mut o2) = (input0.clone(), output0.clone());
                    let (mut h, mut grad) = (vec![0f32; d], vec![0f32; d]);
                    let inv = 1.0 / (ctx.len() - 1) as f32;
                    // SAFETY: the CPU has lv (checked above); equal slice lengths.
                    unsafe {
                        for (k, &w) in ctx.iter().enumerate() {
                            if k != skip {
                                separate::axpy(lv, 1.0, &i2[w as usize * d..][..d], &mut h);
                            }
                        }
                        if mean {
                            separate::scale(lv, inv, &mut h);
                        }
                        for (j, &o) in outs.iter().enumerate() {
                            separate::score_pair(lv, &h, &mut o2[o as usize * d..][..d], &mut grad, out_f(o), |f| gfn(j, f));
                        }
                        if !mean {
                            separate::scale(lv, inv, &mut grad);
                        }
                        for (k, &w) in ctx.iter().enumerate() {
                            if k != skip && in_f(w) != 0.0 {
                                separate::axpy(lv, in_f(w), &grad, &mut i2[w as usize * d..][..d]);
                            }
                        }
                    }
                    assert_eq!(bits(&i1), bits(&i2), "cbow input rows, {lv:?}, d={d}");
                    assert_eq!(bits(&o1), bits(&o2), "cbow output rows, {lv:?}, d={d}");
                    // (b) float64
                    let mut i3: Vec<f64> = input0.iter().map(|&x| x as f64).collect();
                    let mut o3: Vec<f64> = output0.iter().map(|&x| x as f64).collect();
                    let mut h = vec![0f64; d];
                    for (k, &w) in ctx.iter().enumerate() {
                        for e in 0..d {
                            h[e] += if k != skip { i3[w as usize * d + e] } else { 0.0 };
                        }
                    }
                    let c = (ctx.len() - 1) as f64;
                    h.iter_mut().for_each(|x| *x /= if mean { c } else { 1.0 });
                    let mut grad = vec![0f64; d];
                    for (j, &o) in outs.iter().enumerate() {
                        let row = &mut o3[o as usize * d..][..d];
                        let g = gfn64(j, row.iter().zip(&h).map(|(a, b)| a * b).sum());
                        for e in 0..d {
                            grad[e] += g * row[e];
                            row[e] += g * out_f(o) as f64 * h[e];
                        }
                    }
                    for (k, &w) in ctx.iter().enumerate() {
                        for e in 0..d {
                            let a = if k != skip { in_f(w) as f64 } else { 0.0 };
                            i3[w as usize * d + e] += a * grad[e] / if mean { 1.0 } else { c };
                        }
                    }
                    close(&i1, &i3, "cbow input rows vs float64");
                    close(&o1, &o3, "cbow output rows vs float64");
                }
                // skip-gram's window: 4 hidden rows, distinct output rows
                let n = 4;
                let h: Vec<f32> = (0..n * d).map(|k| val(k, 5)).collect();
                let grad0: Vec<f32> = (0..n * d).map(|k| val(k, 3)).collect();
                let outs = [2u32, 0, 5, 3];
                let (mut o1, mut g1) = (output0.clone(), grad0.clone());
                // SAFETY: the CPU has lv (checked), which has a kernel for d; h and grad n x d outside o1, ids < 6, none repeated.
                unsafe { window_target(lv, d, h.as_ptr(), g1.as_mut_ptr(), n, o1.as_mut_ptr().into(), &outs, out_f, gfn) };
                let (mut o2, mut g2, mut gs) = (output0.clone(), grad0.clone(), vec![0f32; n * outs.len()]);
                // SAFETY: the CPU has lv (checked above); slices sized n x d and d.
                unsafe {
                    for (j, &o) in outs.iter().enumerate() {
                        separate::score_rows(lv, &o2[o as usize * d..][..d], &h, &mut g2, &mut gs[j * n..(j + 1) * n], |_, f| gfn(j, f));
                    }
                    for (j, &o) in outs.iter().enumerate() {
                        if out_f(o) != 0.0 {
                            separate::add_rows(lv, &mut o2[o as usize * d..][..d], &h, &gs[j * n..(j + 1) * n], out_f(o));
                        }
                    }
                }
                assert_eq!(bits(&o1), bits(&o2), "window output rows, {lv:?}, d={d}");
                assert_eq!(bits(&g1), bits(&g2), "window gradient, {lv:?}, d={d}");
                let mut o3: Vec<f64> = output0.iter().map(|&x| x as f64).collect();
                let mut g3: Vec<f64> = grad0.iter().map(|&x| x as f64).collect();
                for (j, &o) in outs.iter().enumerate() {
                    let old: Vec<f64> = o3[o as usize * d..][..d].to_vec();
                    for i in 0..n {
                        let hi = &h[i * d..(i + 1) * d];
                        let g = gfn64(j, hi.iter().zip(&old).map(|(a, b)| *a as f64 * b).sum());
                        for e in 0..d {
                            g3[i * d + e] += g * old[e];
                            o3[o as usize * d + e] += g * out_f(o) as f64 * hi[e] as f64;
                        }
                    }
                }
                close(&o1, &o3, "window output rows vs float64");
                close(&g1, &g3, "window gradient vs float64");
            }
        }
    }

    /// `moe_target` at every level and size it exists for, with 1, 2, 4, 5,
    /// 10 and 16 heads (those dividing d; AVX2: one head), a repeated word,
    /// update factors ½ and 1 on the words' rows and 0, ½, 1 on the output
    /// rows, a repeated output row, and a mask expert whose position part is
    /// a values row: against the same level's kernels that `mix`,
    /// `score_pair` and `dot_axpy2` dispatch to, called one after the other
    /// (bit for bit), and float64 loops.
    #[test]
    fn moe_kernel_matches_separate_kernels_and_reference() {
        #[cfg(target_arch = "x86_64")]
        for lv in [Level::Avx512, Level::Avx2Fma] {
            if !cpu_has(lv) {
                continue;
            }
            let in_f = |w: u32| [1.0f32, 1.0, 1.0, 0.5, 1.0, 1.0][w as usize];
            let (words, offsets, outs, mpos) = ([1u32, 3, 1, 4], [0u32, 1, 2, 3], [2u32, 5, 0, 5, 3], 4usize);
            let (nc, n) = (words.len(), words.len() + 1);
            for d in [32usize, 50, 64, 100, 128, 200, 256, 300] {
                let alpha0: Vec<f32> = (0..6 * d).map(|k| val(k, 7)).collect();
                let output0: Vec<f32> = (0..6 * d).map(|k| val(k, 11)).collect();
                let values: Vec<f32> = (0..5 * d).map(|k| val(k, 5)).collect();
                let dvalues0: Vec<f32> = (0..5 * d).map(|k| val(k, 3)).collect();
                let mvalue: Vec<f32> = (0..d).map(|k| val(k, 13)).collect();
                let dmask0: Vec<f32> = (0..d).map(|k| val(k, 17)).collect();
                for heads in [1usize, 2, 4, 5, 8, 10, 16].into_iter().filter(|h| d % h == 0) {
                    if lv == Level::Avx2Fma && (heads > 8 || d / heads < 8 || d == 50) {
                        continue; // the AVX2 kernel: up to 8 heads of 8 floats or more, no d = 50
                    }
                    let theta: Vec<f32> = (0..heads * n).map(|k| 0.05 + (k % 7) as f32 * 0.03).collect();
                    // the kernel
                    let (mut a1, mut o1, mut dv1, mut dm1) = (alpha0.clone(), output0.clone(), dvalues0.clone(), dmask0.clone());
                    let (mut x1, mut z1, mut dots1) = (vec![0f32; n * d], vec![0f32; d], vec![0f32; n * heads]);
                    let dv = dv1.as_mut_ptr();
                    let mask = MaskRows { value: mvalue.as_ptr(), pos: values[mpos * d..].as_ptr(), dvalue: dm1.as_mut_ptr(), dpos: dv.wrapping_add(mpos * d) };
                    let rows = MoeRows {
                        alpha: a1.as_mut_ptr().into(),
                        words: &words,
                        values: values.as_ptr(),
                        offsets: &offsets,
                        dvalues: dv,
                        mask: Some(mask),
                        theta: &theta,
                        heads,
                        x: x1.as_mut_ptr(),
                        z: z1.as_mut_ptr(),
                        dots: dots1.as_mut_ptr(),
                        output: o1.as_mut_ptr().into(),
                        outs: &outs,
                    };
                    // SAFETY: the CPU has lv (checked above), which has a kernel for d and
                    // these heads (dividing d); every id < the rows of its buffer; scratch
                    // sized n x d, d, n x H.
                    unsafe { moe_target(lv, d, &rows, in_f, out_f, gfn) };
                    // (a) the separate kernels
                    let (mut a2, mut o2, mut dv2, mut dm2) = (alpha0.clone(), output0.clone(), dvalues0.clone(), dmask0.clone());
                    let (mut x2, mut z2, mut dots2, mut grad) = (vec![0f32; n * d], vec![0f32; d], vec![0f32; n * heads], vec![0f32; d]);
                    let tm = |m: usize| (0..heads).map(|h| theta[h * n + m]).collect::<Vec<f32>>();
                    let a_row = |m: usize, a: &[f32]| if m < nc { a[words[m] as usize * d..][..d].to_vec() } else { mvalue.clone() };
                    let b_row = |m: usize| &values[if m < nc { offsets[m] as usize } else { mpos } * d..][..d];
                    // SAFETY: the CPU has lv (checked above); every slice has length d (x2: n x d), H <= 16 (AVX2: <= 8).
                    unsafe {
                        for m in 0..n {
                            let (a, t, x) = (a_row(m, &a2), tm(m), &mut x2[m * d..(m + 1) * d]);
                            if lv == Level::Avx2Fma && heads == 1 {
                                fused_x86::mix_avx2(&a, b_row(m), x, t[0], &mut z2);
                            } else if lv == Level::Avx2Fma {
                                lanes_x86::mix_lanes_avx2(&a, b_row(m), x, &t, &mut z2);
                            } else if heads == 1 {
                                fused_x86::mix_avx512(&a, b_row(m), x, t[0], &mut z2);
                            } else {
                                lanes_x86::mix_lanes_avx512(&a, b_row(m), x, &t, &mut z2);
                            }
                        }
                        for (j, &o) in outs.iter().enumerate() {
                            separate::score_pair(lv, &z2, &mut o2[o as usize * d..][..d], &mut grad, out_f(o), |f| gfn(j, f));
                        }
                        for m in 0..n {
                            let (t, x) = (tm(m), &x2[m * d..(m + 1) * d]);
                            let (y1, f1, r2) = if m < nc { (&mut a2[words[m] as usize * d..][..d], in_f(words[m]), offsets[m] as usize) } else { (&mut dm2[..], 1.0, mpos) };
                            let (y2, dots) = (&mut dv2[r2 * d..(r2 + 1) * d], &mut dots2[m * heads..(m + 1) * heads]);
                            if lv == Level::Avx2Fma && heads == 1 {
                                dots[0] = fused_x86::dot_axpy2_avx2(&grad, x, f1 * t[0], y1, t[0], y2);
                            } else if lv == Level::Avx2Fma {
                                lanes_x86::dot_axpy2_lanes_avx2(&grad, x, f1, y1, &t, y2, dots);
                            } else if heads == 1 {
                                dots[0] = fused_x86::dot_axpy2_avx512(&grad, x, f1 * t[0], y1, t[0], y2);
                            } else {
                                lanes_x86::dot_axpy2_lanes_avx512(&grad, x, f1, y1, &t, y2, dots);
                            }
                        }
                    }
                    assert!(a1 != alpha0 && o1 != output0 && dv1 != dvalues0 && dm1 != dmask0, "the kernel updated every buffer");
                    for (what, got, want) in [("alpha", &a1, &a2), ("output", &o1, &o2), ("dvalues", &dv1, &dv2), ("dmask", &dm1, &dm2), ("x", &x1, &x2), ("z", &z1, &z2), ("dots", &dots1, &dots2)] {
                        assert_eq!(bits(got), bits(want), "moe {what}, {lv:?}, d={d}, heads={heads}");
                    }
                    // (b) float64, from the definitions
                    let f64s = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
                    let (mut a3, mut o3, mut dv3, mut dm3) = (f64s(&alpha0), f64s(&output0), f64s(&dvalues0), f64s(&dmask0));
                    let s = d / heads;
                    let xs: Vec<Vec<f64>> = (0..n).map(|m| a_row(m, &alpha0).iter().zip(b_row(m)).map(|(a, b)| *a as f64 + *b as f64).collect()).collect();
                    let z3: Vec<f64> = (0..d).map(|e| (0..n).map(|m| theta[(e / s) * n + m] as f64 * xs[m][e]).sum()).collect();
                    let mut g3 = vec![0f64; d];
                    for (j, &o) in outs.iter().enumerate() {
                        let row = &mut o3[o as usize * d..][..d];
                        let g = gfn64(j, row.iter().zip(&z3).map(|(a, b)| a * b).sum());
                        for e in 0..d {
                            g3[e] += g * row[e];
                            row[e] += g * out_f(o) as f64 * z3[e];
                        }
                    }
                    let mut dots3 = vec![0f64; n * heads];
                    for m in 0..n {
                        for e in 0..d {
                            let t = theta[(e / s) * n + m] as f64;
                            dots3[m * heads + e / s] += g3[e] * xs[m][e];
                            if m < nc {
                                a3[words[m] as usize * d + e] += in_f(words[m]) as f64 * t * g3[e];
                                dv3[offsets[m] as usize * d + e] += t * g3[e];
                            } else {
                                dm3[e] += t * g3[e];
                                dv3[mpos * d + e] += t * g3[e];
                            }
                        }
                    }
                    for (what, got, want) in [("alpha", &a1, &a3), ("output", &o1, &o3), ("dvalues", &dv1, &dv3), ("dmask", &dm1, &dm3), ("z", &z1, &z3), ("dots", &dots1, &dots3)] {
                        close(got, want, &format!("moe {what} vs float64, d={d}, heads={heads}"));
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_at_every_level() {
        let levels = [Level::Scalar, Level::Avx2Fma, Level::Avx512, Level::Neon];
        let xs: Vec<f32> = (0..2001).map(|i| -60.0 + i as f32 * 0.0371).chain([0.0, -0.0, 1e-8, -86.5, 87.5]).collect();
        for &lv in &levels {
            if !force_level(Some(lv)) {
                continue;
            }
            for len in [1usize, 7, 8, 9, 16, 17, xs.len()] {
                let mut y = xs[..len].to_vec();
                exp_inplace(&mut y);
                for (x, y) in xs[..len].iter().zip(&y) {
                    let want = (*x as f64).exp();
                    assert!(((*y as f64) - want).abs() <= 4e-7 * want, "{lv:?} exp({x}) = {y}, want {want}");
                }
            }
        }
        force_level(None);
        let mut big = [-1000.0f32, 1000.0];
        exp_inplace(&mut big);
        assert!(big[0] >= 0.0 && big[0] < 1e-37 && big[1].is_finite());
    }

    /// The tabular lane-block kernels (`block_scores`, `lanes_max`,
    /// `lanes_sum`, `exchange_rows`) against float64 loops written from their
    /// definitions, at every level (AVX2 kernels and the portable code), for
    /// 1 to 17 rows (partial last groups of eight).
    #[test]
    fn block_kernels_agree_with_reference_at_every_level() {
        let levels = [Level::Scalar, Level::Avx2Fma, Level::Avx512, Level::Neon];
        let close = |got: f32, want: f64, what: &str| assert!((got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{what}: {got} vs {want}");
        let val = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 25.0;
        let z: [Block8; 3] = std::array::from_fn(|b| std::array::from_fn(|k| val(8 * b + k + 5)));
        for &lv in &levels {
            if !force_level(Some(lv)) {
                continue;
            }
            for n in [1usize, 7, 8, 9, 16, 17] {
                let rows: Vec<[Block8; 3]> = (0..n).map(|r| std::array::from_fn(|b| std::array::from_fn(|k| val(24 * r + 8 * b + k)))).collect();
                let dot = |r: usize| -> f64 { (0..3).flat_map(|b| (0..8).map(move |k| (b, k))).map(|(b, k)| z[b][k] as f64 * rows[r][b][k] as f64).sum() };
                let mut out = vec![[0f32; 8]; n.div_ceil(8)];
                block_scores(&z, &rows, &mut out);
                for r in 0..n {
                    close(out[r / 8][r % 8], dot(r), &format!("{lv:?} score of row {r} of {n}"));
                }
                let x = out[0];
                let want_max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
                for i in 0..8 {
                    assert_eq!(lanes_max(x)[i], want_max, "{lv:?} lanes_max");
                    close(lanes_sum(x)[i], want_sum, &format!("{lv:?} lanes_sum"));
                }
                let g: Vec<f32> = (0..n).map(|r| val(3 * r + 1) * 0.5).collect();
                let mut upd = rows.clone();
                let gz = exchange_rows(&mut upd, &g, &z);
                for b in 0..3 {
                    for k in 0..8 {
                        let want: f64 = (0..n).map(|r| g[r] as f64 * rows[r][b][k] as f64).sum();
                        close(gz[b][k], want, &format!("{lv:?} exchange gradient"));
                        for r in 0..n {
                            close(upd[r][b][k], rows[r][b][k] as f64 + g[r] as f64 * z[b][k] as f64, &format!("{lv:?} exchange update"));
                        }
                    }
                }
            }
        }
        force_level(None);
    }

    /// One masked column (`masked_column`) on made-up inputs at the level in
    /// use: every output, the updated rows and accumulators included.
    fn masked_column_case<const VB: usize>(n: usize, m: usize, bias: bool, a: usize, mask: bool) -> Vec<f32> {
        let val = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 60.0;
        let vecs = |seed: usize, count: usize| -> Vec<[Block8; VB]> { (0..count).map(|e| std::array::from_fn(|b| std::array::from_fn(|l| val(seed + 64 * e + 8 * b + l)))).collect() };
        let (q, k, v, km, vm) = (vecs(1, n), vecs(2, n), vecs(3, n), vecs(4, n), vecs(5, n));
        let (mut dk, mut dv, mut dkm, mut dvm) = (vecs(6, n), vecs(7, n), vecs(8, n), vecs(9, n));
        let (mut th, mut lg) = (vec![[0f32; 8]; n], vec![[0f32; 8]; m.div_ceil(8)]);
        let mut beta = vecs(10, m);
        let mut b: Vec<Block8> = (0..m.div_ceil(8)).map(|g| std::array::from_fn(|l| val(11 + 8 * g + l))).collect();
        let mut c = ColumnBuffers::new([&q, &k, &v, &km, &vm], [&mut dk, &mut dv, &mut dkm, &mut dvm], &mut th, &mut lg);
        let (dq, p) = masked_column(&mut c, &ColumnAt { a, mask, target: m / 2, lr: 0.3 }, &mut beta, bias.then_some(&mut b[..]));
        let mut out = vec![p];
        for x in [&dq[..], &dk.concat(), &dv.concat(), &dkm.concat(), &dvm.concat(), &beta.concat()] {
            out.extend(x.as_flattened());
        }
        out.extend(b.as_flattened());
        out.extend(th.as_flattened());
        out
    }

    /// The masked-column kernel with AVX2 and in portable code: the same
    /// operations in the same order (the output rows' gradient summed in
    /// another order), so the same results up to rounding, for 1 to 8
    /// blocks per vector, 2 to 17 categories, with and without the bias, a
    /// masked column of weight 0 (no mask expert) or the mask expert in its slot.
    #[test]
    fn masked_column_is_the_same_with_and_without_avx2() {
        if !force_level(Some(Level::Avx2Fma)) {
            return; // nothing to compare on this CPU
        }
        fn both<const VB: usize>(n: usize, m: usize, bias: bool, a: usize, mask: bool) {
            assert!(force_level(Some(Level::Avx2Fma)));
            let wide = masked_column_case::<VB>(n, m, bias, a, mask);
            assert!(force_level(Some(Level::Scalar)));
            let portable = masked_column_case::<VB>(n, m, bias, a, mask);
            for (i, (x, y)) in wide.iter().zip(&portable).enumerate() {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "VB {VB} n {n} m {m} bias {bias} a {a} mask {mask}: output {i}: {x} vs {y}");
            }
            assert!(wide.iter().all(|x| x.is_finite()));
        }
        for (n, m) in [(2usize, 2usize), (6, 11), (6, 10), (3, 8), (5, 17)] {
            for bias in [true, false] {
                for (a, mask) in [(1, true), (1, false), (n - 1, true), (0, false)] {
                    both::<1>(n, m, bias, a, mask);
                    both::<2>(n, m, bias, a, mask);
                    both::<4>(n, m, bias, a, mask);
                    both::<8>(n, m, bias, a, mask);
                }
            }
        }
        force_level(None);
    }

    /// The fused output-layer kernels against float64 loops written from
    /// their definitions, at every level and at lengths around the vector widths.
    #[test]
    fn output_kernels_agree_with_reference_at_every_level() {
        let levels = [Level::Scalar, Level::Avx2Fma, Level::Avx512, Level::Neon];
        let close = |got: f32, want: f64, what: &str| assert!((got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{what}: {got} vs {want}");
        for &lv in &levels {
            if !force_level(Some(lv)) {
                continue;
            }
            for d in [1usize, 7, 8, 9, 17, 33, 100] {
                let n = 3;
                let v = |k: usize, s: usize| ((k * s % 13) as f32 - 6.0) * 0.07;
                let h: Vec<f32> = (0..n * d).map(|k| v(k, 5)).collect();
                let w: Vec<f32> = (0..d).map(|k| v(k, 7)).collect();
                let grad0: Vec<f32> = (0..n * d).map(|k| v(k, 3)).collect();
                let dot64 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
                // score_pair: g = gfn(h·out); grad += g out_old; out += g c h
                for c in [1.0f32, 0.5, 0.0] {
                    let (mut out, mut grad) = (w.clone(), grad0[..d].to_vec());
                    let f = dot64(&h[..d], &w);
                    let g = score_pair(&h[..d], &mut out, &mut grad, c, |f| 0.3 - 0.1 * f);
                    let g64 = 0.3 - 0.1 * f;
                    close(g, g64, "score_pair g");
                    for k in 0..d {
                        close(grad[k], grad0[k] as f64 + g64 * w[k] as f64, "score_pair grad");
                        close(out[k], w[k] as f64 + g64 * c as f64 * h[k] as f64, "score_pair out");
                    }
                }
                // score_rows: g_i = gfn(i, h_i·w) (row 1 skipped), grad_i += g_i w; w untouched
                let (mut grad, mut gs) = (grad0.clone(), vec![9f32; n]);
                score_rows(&w, &h, &mut grad, &mut gs, |i, f| if i == 1 { 0.0 } else { 0.2 * f - 0.05 * i as f32 });
                for i in 0..n {
                    let g64 = if i == 1 { 0.0 } else { 0.2 * dot64(&h[i * d..(i + 1) * d], &w) - 0.05 * i as f64 };
                    close(gs[i], g64, "score_rows g");
                    for k in 0..d {
                        close(grad[i * d + k], grad0[i * d + k] as f64 + g64 * w[k] as f64, "score_rows grad");
                    }
                }
                // add_rows: out += c Σ_i g_i h_i
                let mut out = w.clone();
                add_rows(&mut out, &h, &[0.5, 0.0, -1.5], 0.25);
                for k in 0..d {
                    let want = w[k] as f64 + 0.25 * (0.5 * h[k] as f64 - 1.5 * h[2 * d + k] as f64);
                    close(out[k], want, "add_rows");
                }
            }
        }
        force_level(None);
    }

    #[test]
    fn kernels_agree_with_reference_at_every_level_and_length() {
        let levels = [Level::Scalar, Level::Avx2Fma, Level::Avx512, Level::Neon];
        for &lv in &levels {
            if !force_level(Some(lv)) {
                continue;
            }
            for n in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 20, 24, 28, 31, 32, 33, 100, 200, 300] {
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect();
                let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2).collect();
                let d = dot(&a, &b) as f64;
                assert!((d - reference_dot(&a, &b)).abs() < 1e-4, "{lv:?} n={n}");
                let mut y = b.clone();
                axpy(0.5, &a, &mut y);
                for i in 0..n {
                    assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
                }
                let mut out = a.clone();
                let mut grad = b.clone();
                update_pair(0.25, &b, &mut out, &mut grad);
                // the fused MoE kernels against the same elementwise formulas
                let (mut x, mut z) = (vec![9f32; n], b.clone());
                if n > 0 {
                    mix(&a, &b, &mut x, &[0.75], &mut z);
                }
                let (mut y1, mut y2) = (a.clone(), b.clone());
                let mut got = [0f32];
                if n > 0 {
                    dot_axpy2(&a, &b, -0.25, &[2.0], &mut y1, &mut y2, &mut got);
                } else {
                    y2 = b.clone();
                    y1 = vec![0.0; 0];
                }
                assert!((got[0] as f64 - reference_dot(&a, &b)).abs() < 1e-4, "{lv:?} n={n}");
                for i in 0..n {
                    assert!((x[i] - (a[i] + b[i])).abs() < 1e-6);
                    assert!((z[i] - (b[i] + 0.75 * (a[i] + b[i]))).abs() < 1e-6);
                    assert!((y1[i] - 0.5 * a[i]).abs() < 1e-6); // a + (-0.25 * 2) a
                    assert!((y2[i] - (b[i] + 2.0 * a[i])).abs() < 1e-6);
                }
                for i in 0..n {
                    assert!((grad[i] - (b[i] + 0.25 * a[i])).abs() < 1e-6);
                    assert!((out[i] - (a[i] + 0.25 * b[i])).abs() < 1e-6);
                }
                scale(2.0, &mut y);
                for i in 0..n {
                    assert!((y[i] - 2.0 * (b[i] + 0.5 * a[i])).abs() < 1e-5);
                }
            }
        }
        force_level(None);
    }

    /// The lane kernels (several heads per sweep) against per-head formulas,
    /// for head counts around the register widths and odd head widths.
    #[test]
    fn multi_head_kernels_match_per_head_formulas() {
        for &lv in &[Level::Scalar, Level::Avx2Fma, Level::Avx512, Level::Neon] {
            if !force_level(Some(lv)) {
                continue;
            }
            for (h, s) in [(2usize, 1usize), (2, 8), (3, 5), (4, 25), (4, 16), (5, 20), (7, 3), (8, 13), (9, 4), (16, 7), (17, 2), (20, 5)] {
                let n = h * s;
                let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect();
                let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.2).collect();
                let t: Vec<f32> = (0..h).map(|k| 0.1 + 0.3 * k as f32).collect();
                let (mut x, mut z) = (vec![9f32; n], b.clone());
                mix(&a, &b, &mut x, &t, &mut z);
                let (mut y1, mut y2, mut dots) = (a.clone(), b.clone(), vec![7f32; h]);
                dot_axpy2(&a, &b, -0.5, &t, &mut y1, &mut y2, &mut dots);
                for k in 0..h {
                    let r = k * s..(k + 1) * s;
                    let want = reference_dot(&a[r.clone()], &b[r.clone()]);
                    assert!((dots[k] as f64 - want).abs() < 1e-4, "{lv:?} h={h} s={s} head {k}");
                    for i in r {
                        assert!((x[i] - (a[i] + b[i])).abs() < 1e-6);
                        assert!((z[i] - (b[i] + t[k] * (a[i] + b[i]))).abs() < 1e-5, "{lv:?} h={h} s={s} z[{i}]");
                        assert!((y1[i] - (a[i] - 0.5 * t[k] * a[i])).abs() < 1e-5, "{lv:?} h={h} s={s} y1[{i}]");
                        assert!((y2[i] - (b[i] + t[k] * a[i])).abs() < 1e-5, "{lv:?} h={h} s={s} y2[{i}]");
                    }
                }
            }
        }
        force_level(None);
    }

    #[test]
    fn gemm_matches_naive_products_with_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![1f32; m * n];
        gemm(2.0, &a, Strides::rm(m, k), &b, Strides::rm(k, n), 0.5, &mut c, Strides::rm(m, n));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 0.5 + 2.0 * (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert!((c[i * n + j] - want).abs() < 1e-4);
            }
        }
        // A^T B with A stored row-major k x m.
        let at: Vec<f32> = (0..k * m).map(|i| (i as f32 * 0.21).sin()).collect();
        let mut c2 = vec![0f32; m * n];
        gemm(1.0, &at, Strides::rm_t(k, m), &b, Strides::rm(k, n), 0.0, &mut c2, Strides::rm(m, n));
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|t| at[t * m + i] * b[t * n + j]).sum();
                assert!((c2[i * n + j] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn sigmoid_table_close_to_exact() {
        let t = SigmoidTable::new();
        for i in -700..700 {
            let x = i as f32 / 100.0;
            let exact = 1.0 / (1.0 + (-x as f64).exp());
            assert!((t.sigmoid(x) as f64 - exact).abs() < 0.01, "x={x}");
            assert!((t.log_sigmoid(x) as f64 - exact.ln()).abs() < 0.02 + 0.01 * exact.ln().abs());
        }
    }
}
