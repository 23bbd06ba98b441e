//! Lock-free shared parameter matrices (Hogwild!, Niu et al. 2011).
//!
//! Worker threads read and update rows of the same matrix without locks. Two
//! threads may touch the same row at once; a lost or torn `f32` update is
//! harmless for SGD on sparse problems like word2vec, which is the whole
//! argument of Hogwild and what word2vec, gensim and fastText all do. What
//! must never happen is an out-of-bounds access, a dangling pointer, or two
//! mutable views of one row inside one thread.
//!
//! The safe surface therefore never hands out `&mut` rows. Reads are shared
//! views ([`Hogwild::row`]) whose values other threads may change (the Hogwild
//! trade-off); writes go through methods that take the update's inputs from
//! *outside* the matrix — thread-local scratch, checked at run time — and
//! form the mutable view of the row only for the duration of the update:
//! [`Hogwild::add_to_row`] (row += a·x), [`Hogwild::exchange`] (the
//! word2vec pair update) and [`Hogwild::add_at`] (one element). The one
//! unsafe accessor, [`Hogwild::row_mut`], states its contract.
//!
//! A matrix may carry per-row update factors (gensim's `vectors_lockf`): every
//! update of row `i` is multiplied by `factor[i % factor.len()]`, so 0
//! freezes a row and 1 trains it normally.

use crate::simd::{add_rows, axpy, dot, dot_axpy2, exchange_rows, masked_column, moe_register_level, register_level, score_pair, update_pair, CbowRows, ColumnAt, ColumnBuffers, MaskRows, MoeRows, RowBase};
use std::marker::PhantomData;

/// A row-major `rows x cols` f32 matrix shared by all worker threads.
pub struct Hogwild<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    factor: &'a [f32],
    /// A worker's view ([`Hogwild::with_hot`]): rows below `hot_rows` live
    /// in that worker's private copies at `hot` (their values at the last
    /// merge at `snap`), not in the shared buffer. 0 for a plain handle.
    hot: *mut f32,
    snap: *mut f32,
    hot_rows: usize,
    /// Or (a view by columns, `HotRows::of_cols`): columns below
    /// `hot_cols` of every row live at `hot` (rows x hot_cols).
    hot_cols: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from an exclusive borrow held for 'a, so the data
// outlives every use; concurrent unsynchronised row updates are the intended
// Hogwild semantics (see module doc): element writes are plain f32 stores that
// cannot produce an invalid value or touch memory outside the buffer.
unsafe impl Send for Hogwild<'_> {}
unsafe impl Sync for Hogwild<'_> {}

/// One BidirMoE target's experts and scratch for `Hogwild::moe_target`:
/// expert m is the word `words[m]` at offset row `offsets[m]`, θ_h(m) is
/// `theta[h·n + m]` (n experts, the mask expert last), and the kernel
/// writes the experts' values (n x d) into `x`, the mixture into `z` and
/// g_h · x(m)_h into `dots[m·H + h]`.
pub struct MoeExperts<'s> {
    pub words: &'s [u32],
    pub offsets: &'s [u32],
    pub theta: &'s [f32],
    pub heads: usize,
    pub x: &'s mut [f32],
    pub z: &'s mut [f32],
    pub dots: &'s mut [f32],
}

/// The mask expert for `Hogwild::moe_target`: value `value` + its
/// position part, value gradient into `dvalue` and the position part's.
pub struct MoeMask<'s> {
    pub value: &'s [f32],
    pub pos: MaskPos<'s>,
    pub dvalue: &'s mut [f32],
}

/// The mask expert's position part.
pub enum MaskPos<'s> {
    /// None (window mode): a row of zeros, and a scratch row its gradient goes to.
    Zero(&'s [f32], &'s mut [f32]),
    /// Sentence mode: the target's position row of the values (and of their gradients).
    Value(usize),
}

impl<'a> Hogwild<'a> {
    /// Wrap `data` (length `rows * cols`).
    pub fn new(data: &'a mut [f32], cols: usize) -> Self {
        let rows = if cols == 0 { 0 } else { data.len() / cols };
        assert_eq!(rows * cols, data.len(), "matrix buffer is not rows x cols");
        Hogwild::plain(data.as_mut_ptr(), rows, cols, &[])
    }

    /// A handle on `rows x cols` floats at `ptr`, with no private rows.
    fn plain(ptr: *mut f32, rows: usize, cols: usize, factor: &'a [f32]) -> Self {
        Hogwild { ptr, rows, cols, factor, hot: std::ptr::null_mut(), snap: std::ptr::null_mut(), hot_rows: 0, hot_cols: 0, _borrow: PhantomData }
    }

    /// Multiply every update of row `i` by `factor[i % factor.len()]`
    /// (gensim's `vectors_lockf`; empty: no factor).
    pub fn with_factor(mut self, factor: &'a [f32]) -> Self {
        self.factor = factor;
        self
    }

    /// A second handle on the same matrix, for tied parameters (attention's
    /// `tie_output`: beta = rho). Two handles alias exactly as two Hogwild
    /// threads do, which is the contract of this type.
    pub fn alias(&self) -> Hogwild<'a> {
        Hogwild { hot: self.hot, snap: self.snap, hot_rows: self.hot_rows, hot_cols: self.hot_cols, ..Hogwild::shared_alias(self) }
    }

    /// A handle on the shared rows only (no worker's private rows).
    fn shared_alias(&self) -> Hogwild<'a> {
        Hogwild::plain(self.ptr, self.rows, self.cols, self.factor)
    }

    /// An empty matrix (a model part that is switched off).
    pub fn empty() -> Self {
        Hogwild::plain(std::ptr::NonNull::dangling().as_ptr(), 0, 0, &[])
    }

    /// A worker's view of this matrix with hot-row privatization: rows
    /// `0..hot.rows()` are read and written in `hot`'s private copies, the
    /// others in the shared buffer as through this handle. The view's
    /// updates of those rows reach the shared matrix only when the worker
    /// merges them ([`HotRows::merge`]). `hot` must have been made for a
    /// matrix of this row size ([`HotRows::of`]); with 0 rows the view is
    /// a plain alias.
    pub fn with_hot<'b>(&'b self, hot: &'b mut HotRows) -> Hogwild<'b> {
        self.no_private_rows();
        hot.check(self);
        let (hot_rows, hot_cols) = if hot.by_cols { (0, hot.cols) } else { (hot.rows, 0) };
        Hogwild { hot: hot.private.as_mut_ptr(), snap: hot.snapshot.as_mut_ptr(), hot_rows, hot_cols, ..self.shared_alias() }
    }

    /// Element (i, j), in the private copies for a hot column of a view by columns.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        // SAFETY: `elem` checks the bounds.
        unsafe { *self.elem(i, j) }
    }

    /// Start loading element (i, j) (as `get` resolves it) into the cache.
    #[inline]
    pub fn prefetch_at(&self, i: usize, j: usize) {
        // SAFETY: `elem` checks the bounds; the slice is one element of a live buffer.
        crate::simd::prefetch(unsafe { std::slice::from_raw_parts(self.elem(i, j), 1) });
    }

    /// Where element (i, j) lives (bounds checked).
    #[inline(always)]
    fn elem(&self, i: usize, j: usize) -> *mut f32 {
        assert!(i < self.rows && j < self.cols);
        if j < self.hot_cols {
            // SAFETY: the private columns are rows x hot_cols floats (`with_hot`).
            unsafe { self.hot.add(i * self.hot_cols + j) }
        } else {
            // SAFETY: in bounds (checked): row i's first float, in the
            // private rows for a hot row of a view by rows, then j floats on.
            unsafe { self.base().row(i as u32, self.cols).add(j) }
        }
    }

    /// Where the register kernels find this matrix's rows (the private
    /// copies of a worker's view included).
    #[inline]
    fn base(&self) -> RowBase {
        RowBase { shared: self.ptr, hot: self.hot, hot_rows: self.hot_rows as u32 }
    }

    /// The first float of row `i` (< rows), in the private copies for a
    /// hot row of a worker's view.
    #[inline(always)]
    fn row_ptr(&self, i: usize) -> *mut f32 {
        assert!(i < self.rows && self.hot_cols == 0, "row out of range, or a whole row of a view by columns");
        // SAFETY: i < rows, so i·cols lies inside the shared buffer, and for
        // i < hot_rows inside the private copies (hot_rows x cols floats,
        // `with_hot`).
        unsafe { self.base().row(i as u32, self.cols) }
    }

    /// Operations on several consecutive rows at once take the shared buffer
    /// as one slice: not for a worker's view with private rows.
    #[inline(always)]
    fn no_private_rows(&self) {
        assert!(self.hot_rows == 0 && self.hot_cols == 0, "a multi-row operation on a view with private rows");
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The update factor of row `i` (1 without `vectors_lockf`).
    #[inline]
    pub fn factor(&self, i: usize) -> f32 {
        if self.factor.is_empty() {
            1.0
        } else {
            self.factor[i % self.factor.len()]
        }
    }

    /// The whole matrix for reading (row-major).
    #[inline]
    pub fn as_slice(&self) -> &[f32] {
        self.no_private_rows();
        // SAFETY: the full buffer borrowed for 'a; concurrent Hogwild writers
        // may change values, never the allocation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.rows * self.cols) }
    }

    /// Row `i` for reading. Its values may change while the view lives
    /// (other threads' updates: Hogwild), never its memory.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        // SAFETY: `row_ptr` checks i < rows, so the row's cols floats lie
        // inside the buffer borrowed for 'a (or the private copies borrowed
        // with the view). Concurrent writers may change values under us
        // (Hogwild), never the allocation.
        unsafe { std::slice::from_raw_parts(self.row_ptr(i), self.cols) }
    }

    /// Row `i` as a mutable slice.
    ///
    /// # Safety
    /// While the returned slice lives, the calling thread must not create
    /// another view (`row`, `row_mut`, `as_slice`, an update method) of row
    /// `i` through this matrix or an [`alias`](Self::alias) of it. Other
    /// threads may update the row concurrently (the Hogwild contract).
    ///
    /// Safe code cannot call it (so cannot hold two `&mut` to one row):
    ///
    /// ```compile_fail
    /// let mut buf = vec![0f32; 4];
    /// let m = bidirmoe::hogwild::Hogwild::new(&mut buf, 2);
    /// let (a, b) = (m.row_mut(0), m.row_mut(0));
    /// a[0] = b[0];
    /// ```
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn row_mut(&self, i: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.row_ptr(i), self.cols)
    }

    /// Does `x` share memory with this matrix?
    #[inline]
    fn overlaps(&self, x: &[f32]) -> bool {
        let (b0, b1) = (x.as_ptr() as usize, x.as_ptr() as usize + x.len() * 4);
        let inside = |p: *mut f32, rows: usize| (p as usize) < b1 && b0 < p as usize + rows * self.cols * 4;
        inside(self.ptr, self.rows) || (self.hot_rows > 0 && (inside(self.hot, self.hot_rows) || inside(self.snap, self.hot_rows)))
    }

    /// `row[i] += a * factor(i) * x`, with `x` outside this matrix.
    #[inline]
    pub fn add_to_row(&self, i: usize, a: f32, x: &[f32]) {
        assert!(!self.overlaps(x), "update source lies inside the matrix it updates");
        let a = a * self.factor(i);
        if a == 0.0 && !self.factor.is_empty() {
            return; // a frozen row stays bit-identical
        }
        // SAFETY: `x` does not overlap the matrix (checked), and no other view
        // of row i is created by this thread while `r` lives (it dies at the
        // end of this statement).
        let r = unsafe { self.row_mut(i) };
        axpy(a, x, r);
    }

    /// [`add_to_row`](Self::add_to_row) for a row of `x.len()` blocks of
    /// `L` floats, inlined into the caller as whole-block arithmetic (for
    /// hot loops compiled for wide vectors). `x` lies outside this matrix.
    #[inline(always)]
    pub fn add_blocks<const L: usize>(&self, i: usize, a: f32, x: &[[f32; L]]) {
        assert!(!self.overlaps(x.as_flattened()), "update source lies inside the matrix it updates");
        assert_eq!(x.len() * L, self.cols);
        let a = a * self.factor(i);
        if a == 0.0 && !self.factor.is_empty() {
            return; // a frozen row stays bit-identical
        }
        // SAFETY: row i lies inside the buffer (`row_ptr` checks) and is x.len()
        // blocks of L floats (checked; f32's alignment is the blocks'); as
        // in `add_to_row`, `x` lies outside the matrix (checked) and the
        // view of row i dies at the end of this block.
        let r = unsafe { std::slice::from_raw_parts_mut(self.row_ptr(i) as *mut [f32; L], x.len()) };
        for (rb, xb) in r.iter_mut().zip(x) {
            // whole blocks in, whole blocks out: one vector operation each
            let (old, xv) = (*rb, *xb);
            *rb = std::array::from_fn(|k| a.mul_add(xv[k], old[k]));
        }
    }

    /// [`add_blocks`](Self::add_blocks) on several rows at once: `row[idx[e]]
    /// += a · x[e]` for every e, each `x[e]` a row of `N` blocks of `L`
    /// floats; the checks made once for the batch (a row index may repeat:
    /// its updates add up). `x` lies outside this matrix.
    #[inline(always)]
    pub fn add_blocks_at<const L: usize, const N: usize>(&self, idx: &[usize], a: f32, x: &[[[f32; L]; N]]) {
        if !self.factor.is_empty() {
            for (&i, xe) in idx.iter().zip(x) {
                self.add_blocks(i, a, xe);
            }
            return;
        }
        assert!(!self.overlaps(x.as_flattened().as_flattened()), "update source lies inside the matrix it updates");
        assert_eq!(N * L, self.cols);
        for (&i, xe) in idx.iter().zip(x) {
            // SAFETY: row i lies inside the buffer (`row_ptr` checks) and is N blocks
            // of L floats (checked; f32's alignment is the blocks'); `x`
            // lies outside the matrix (checked), and this view of row i is
            // the only one this thread holds; it dies at the end of the loop body.
            let r = unsafe { &mut *(self.row_ptr(i) as *mut [[f32; L]; N]) };
            for (rb, xb) in r.iter_mut().zip(xe) {
                let (old, xv) = (*rb, *xb);
                *rb = std::array::from_fn(|k| a.mul_add(xv[k], old[k]));
            }
        }
    }

    /// `row[i0 + r] += x[r]` for every r: consecutive rows of one block of
    /// `L` floats each, one check for them all. `x` lies outside this matrix.
    #[inline(always)]
    pub fn add_block_rows<const L: usize>(&self, i0: usize, x: &[[f32; L]]) {
        if !self.factor.is_empty() {
            for (r, xb) in x.iter().enumerate() {
                self.add_blocks(i0 + r, 1.0, std::slice::from_ref(xb));
            }
            return;
        }
        self.no_private_rows();
        assert!(!self.overlaps(x.as_flattened()), "update source lies inside the matrix it updates");
        assert!(L == self.cols && i0 + x.len() <= self.rows);
        // SAFETY: rows i0..i0 + x.len() lie inside the buffer (checked), each
        // one block of L floats (checked); `x` lies outside the matrix
        // (checked), and this view is the only one of those rows this
        // thread holds until the loop ends.
        let rows = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i0 * L) as *mut [f32; L], x.len()) };
        for (rb, xb) in rows.iter_mut().zip(x) {
            let (old, xv) = (*rb, *xb);
            *rb = std::array::from_fn(|k| old[k] + xv[k]);
        }
    }

    /// `row[i0 + r] += g[r] · x` for every r (a rank-one update of
    /// `g.len()` consecutive rows of `x.len()` blocks of `L` floats), as
    /// [`add_blocks`](Self::add_blocks) row by row.
    #[inline(always)]
    pub fn add_outer_blocks<const L: usize>(&self, i0: usize, g: &[f32], x: &[[f32; L]]) {
        self.no_private_rows();
        assert!(!self.overlaps(x.as_flattened()), "update source lies inside the matrix it updates");
        assert_eq!(x.len() * L, self.cols);
        assert!(i0 + g.len() <= self.rows);
        // SAFETY: rows i0..i0 + g.len() lie inside the buffer (checked), `x`
        // lies outside the matrix (checked), and this view is the only one
        // of those rows this thread holds until the loop ends.
        let rows = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i0 * self.cols), g.len() * self.cols) };
        for (i, (row, &gr)) in rows.chunks_exact_mut(x.len() * L).zip(g).enumerate() {
            let a = gr * self.factor(i0 + i);
            if a == 0.0 && !self.factor.is_empty() {
                continue; // a frozen row stays bit-identical
            }
            for (rb, xb) in row.chunks_exact_mut(L).zip(x) {
                let (old, xb) = (<[f32; L]>::try_from(&*rb).unwrap_or([0.0; L]), *xb);
                let new: [f32; L] = std::array::from_fn(|k| old[k] + a * xb[k]);
                rb.copy_from_slice(&new);
            }
        }
    }

    /// The word2vec pair update ([`exchange`](Self::exchange)) on `g.len()`
    /// consecutive rows of `N` blocks of `L` floats at once: returns
    /// `Σ_r g[r] · row[i0 + r]` (the rows before their update; by value,
    /// kept in registers when inlined) and sets `row[i0 + r] += g[r] ·
    /// factor · x` for every r. `x` lies outside this matrix.
    #[inline(always)]
    pub fn exchange_outer_blocks<const L: usize, const N: usize>(&self, i0: usize, g: &[f32], x: &[[f32; L]; N]) -> [[f32; L]; N] {
        self.no_private_rows();
        assert!(!self.overlaps(x.as_flattened()), "update source lies inside the matrix it updates");
        assert!(N * L == self.cols && i0 + g.len() <= self.rows);
        let mut grad = [[0.0; L]; N];
        // SAFETY: rows i0..i0 + g.len() lie inside the buffer (checked), each
        // N blocks of L floats (checked; f32's alignment is the blocks'), `x`
        // lies outside the matrix (checked), and this view is the only one
        // of those rows this thread holds until the loop ends.
        let rows = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i0 * self.cols) as *mut [[f32; L]; N], g.len()) };
        for (i, (row, &gr)) in rows.iter_mut().zip(g).enumerate() {
            let a = gr * self.factor(i0 + i);
            for ((rb, xb), gb) in row.iter_mut().zip(x).zip(grad.iter_mut()) {
                let (old, xv, gv) = (*rb, *xb, *gb);
                *gb = std::array::from_fn(|k| gr.mul_add(old[k], gv[k]));
                *rb = std::array::from_fn(|k| a.mul_add(xv[k], old[k]));
            }
        }
        grad
    }

    /// [`exchange_outer_blocks`](Self::exchange_outer_blocks) for blocks of
    /// 8 floats: without update factors, `simd::exchange_rows`'s kernel.
    #[inline(always)]
    pub fn exchange_outer_blocks8<const N: usize>(&self, i0: usize, g: &[f32], x: &[[f32; 8]; N]) -> [[f32; 8]; N] {
        self.no_private_rows();
        if !self.factor.is_empty() {
            return self.exchange_outer_blocks(i0, g, x);
        }
        assert!(!self.overlaps(x.as_flattened()), "update source lies inside the matrix it updates");
        assert!(N * 8 == self.cols && i0 + g.len() <= self.rows);
        // SAFETY: as in `exchange_outer_blocks`: rows i0..i0 + g.len() lie
        // inside the buffer (checked), each N blocks of 8 floats (checked),
        // `x` lies outside the matrix (checked), and this view is the only
        // one of those rows this thread holds until the kernel returns.
        let rows = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i0 * self.cols) as *mut [[f32; 8]; N], g.len()) };
        exchange_rows(rows, g, x)
    }

    /// The tabular lane step's masked columns of one row ([`masked_column`])
    /// on `buffers`, this matrix holding the output rows (`VB` blocks of 8
    /// floats each) and `bias`, if given, their biases (one block of 8 a
    /// row): checks once that neither carries update factors and that the
    /// buffers lie outside both; [`ColumnSteps::step`] then runs a column.
    pub fn column_steps<'s, const VB: usize>(&'s self, bias: Option<&'s Hogwild<'a>>, buffers: ColumnBuffers<'s, VB>) -> ColumnSteps<'s, 'a, VB> {
        self.no_private_rows();
        assert!(self.factor.is_empty() && VB * 8 == self.cols, "output rows of VB blocks, no update factors");
        let outside = |h: &Hogwild<'_>| buffers.slices().iter().all(|x| !h.overlaps(x));
        assert!(outside(self), "update source lies inside the matrix it updates");
        if let Some(b) = bias {
            assert!(b.factor.is_empty() && b.cols == 8, "biases in blocks of 8, no update factors");
            assert!(outside(b) && !b.overlaps(self.as_slice()), "update source lies inside the matrix it updates");
        }
        ColumnSteps { beta: self, bias, buffers }
    }

    /// Rows `range` for reading, one slice (row-major); Hogwild as [`row`](Self::row).
    #[inline]
    pub fn rows_of(&self, range: std::ops::Range<usize>) -> &[f32] {
        &self.as_slice()[range.start * self.cols..range.end * self.cols]
    }

    /// `row[i] = x` (whatever the update factor), with `x` outside this matrix.
    #[inline]
    pub fn set_row(&self, i: usize, x: &[f32]) {
        assert!(!self.overlaps(x), "update source lies inside the matrix it updates");
        assert_eq!(x.len(), self.cols);
        // SAFETY: `x` does not overlap the matrix (checked), and the mutable
        // view of row i is the only view this thread holds until it returns.
        let r = unsafe { self.row_mut(i) };
        r.copy_from_slice(x);
    }

    /// `row[i][j] += v * factor(i)`.
    #[inline]
    pub fn add_at(&self, i: usize, j: usize, v: f32) {
        let v = v * self.factor(i);
        // SAFETY: in bounds (`elem` checks); a single element store, no view kept.
        unsafe { *self.elem(i, j) += v };
    }

    /// The MoE expert's backward sweep on row `i`, in `c.len()` head blocks
    /// (`simd::dot_axpy2`): `dots[h] = g_h · x_h`, `row[i]_h += factor(i) *
    /// c[h] * g_h`, `other_h += c[h] * g_h`. `g`, `x`, `other` lie outside
    /// this matrix.
    #[inline]
    pub fn dot_add_blocks(&self, i: usize, c: &[f32], g: &[f32], x: &[f32], other: &mut [f32], dots: &mut [f32]) {
        assert!(!self.overlaps(g) && !self.overlaps(x) && !self.overlaps(other), "update source lies inside the matrix it updates");
        let f = self.factor(i);
        if f == 0.0 && !self.factor.is_empty() {
            // a frozen row stays bit-identical
            let s = g.len() / c.len().max(1);
            for (h, &ch) in c.iter().enumerate() {
                let r = h * s..(h + 1) * s;
                dots[h] = dot(&g[r.clone()], &x[r.clone()]);
                axpy(ch, &g[r.clone()], &mut other[r]);
            }
            return;
        }
        // SAFETY: `g`, `x` and `other` do not overlap the matrix (checked);
        // the mutable view of row i is the only view this thread holds of it
        // until the call returns.
        let r = unsafe { self.row_mut(i) };
        dot_axpy2(g, x, f, c, r, other, dots)
    }

    /// Score row `i` against `h` and update both (`simd::score_pair`):
    /// g = gfn(h · row[i]); unless g = 0, `grad += g * row[i]` (the row
    /// before the update), then `row[i] += g * factor(i) * h`. Returns g.
    /// `h` and `grad` lie outside this matrix.
    #[inline]
    pub fn score_exchange(&self, i: usize, h: &[f32], grad: &mut [f32], gfn: impl FnOnce(f32) -> f32) -> f32 {
        assert!(!self.overlaps(h) && !self.overlaps(grad), "update source lies inside the matrix it updates");
        let f = self.factor(i);
        // SAFETY: `h` and `grad` do not overlap the matrix (checked); the
        // mutable view of row i is the only view this thread holds of it
        // until the call returns.
        let r = unsafe { self.row_mut(i) };
        score_pair(h, r, grad, f, gfn)
    }

    /// `row[i] += factor(i) * Σ_k gs[k] * h_k` over the rows h_k of `h`
    /// (k in order, zero coefficients skipped; `simd::add_rows`), with `h`
    /// outside this matrix.
    #[inline]
    pub fn add_rows(&self, i: usize, h: &[f32], gs: &[f32]) {
        assert!(!self.overlaps(h), "update source lies inside the matrix it updates");
        let f = self.factor(i);
        if f == 0.0 && !self.factor.is_empty() {
            return; // a frozen row stays bit-identical
        }
        // SAFETY: `h` does not overlap the matrix (checked), and no other view
        // of row i is created by this thread while `r` lives.
        let r = unsafe { self.row_mut(i) };
        add_rows(r, h, gs, f);
    }

    /// CBOW's exact per-target update with this matrix as the input vectors
    /// and `out` as the output rows, in one register-resident kernel
    /// (`simd::cbow_target`): the hidden vector from the rows of `ctx` other
    /// than `ctx[skip]` (their mean when `mean`), scored against the rows
    /// `outs` of `out` in order with g = gfn(j, score), each output row and
    /// then each context row updated as `score_exchange` and `add_to_row`
    /// do, with the update factors of both matrices. Returns false, doing
    /// nothing, where no such kernel exists (`simd::register_level`): the
    /// caller then takes the separate kernels.
    pub fn cbow_target(&self, ctx: &[u32], skip: usize, out: &Hogwild<'_>, outs: &[u32], mean: bool, gfn: impl FnMut(usize, f32) -> f32) -> bool {
        let d = self.cols;
        let Some(lv) = register_level(d) else { return false };
        if out.cols != d {
            return false;
        }
        assert!(skip < ctx.len() && ctx.len() > 1, "a CBOW context needs a word besides the target");
        assert!(ctx.iter().all(|&w| (w as usize) < self.rows) && outs.iter().all(|&w| (w as usize) < out.rows), "row out of range");
        // SAFETY: lv is `register_level(d)`, a level the CPU has with a
        // kernel for d; every id indexes a row inside its matrix (checked), so
        // each row pointer starts d floats inside the buffer borrowed for 'a;
        // the context has a word besides the target (checked). The kernel
        // holds no reference into either matrix: it reads each row from memory
        // when it needs it and writes it back before the next step, so other
        // threads' updates (Hogwild) and `out` aliasing this matrix are as
        // harmless as with `score_exchange` / `add_to_row`.
        let rows = CbowRows { input: self.base(), ctx, skip, output: out.base(), outs, mean };
        unsafe { crate::simd::cbow_target(lv, d, &rows, |w| self.factor(w as usize), |w| out.factor(w as usize), gfn) };
        true
    }

    /// One BidirMoE target (slice heads, gate weights given) with this
    /// matrix as the words' value rows (alpha), in one register-resident
    /// kernel (`simd::moe_target`): the experts' values and mixture z (into
    /// `e.x`, `e.z`), the output rows `outs` of `out` scored against z with
    /// g = gfn(j, score) and updated as `score_exchange` does, then each
    /// expert's backward as `dot_add_blocks` does (alpha rows, `dvalues`
    /// rows of `values`' offsets, the dots into `e.dots`). Only where
    /// `has_moe_kernel(e.heads)`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_target(&self, e: &mut MoeExperts<'_>, values: &Hogwild<'_>, dvalues: &mut [f32], mask: Option<MoeMask<'_>>, out: &Hogwild<'_>, outs: &[u32], gfn: impl FnMut(usize, f32) -> f32) {
        let (d, h) = (self.cols, e.heads);
        assert!(self.factor.is_empty(), "moe_target with update factors (check has_moe_kernel)");
        let lv = moe_register_level(d, h).expect("moe_target without a kernel (check has_moe_kernel)");
        let (nc, n) = (e.words.len(), e.words.len() + mask.is_some() as usize);
        assert!(out.cols == d && values.cols == d && e.offsets.len() == nc, "row sizes differ");
        assert!(e.theta.len() >= h * n && e.x.len() >= n * d && e.z.len() >= d && e.dots.len() >= n * h && dvalues.len() == values.rows * d, "scratch too small");
        assert!(e.words.iter().all(|&w| (w as usize) < self.rows) && e.offsets.iter().all(|&o| (o as usize) < values.rows), "row out of range");
        assert!(outs.iter().all(|&w| (w as usize) < out.rows), "row out of range");
        let scratch: [&[f32]; 4] = [&*e.x, &*e.z, &*e.dots, &*dvalues];
        assert!(scratch.iter().all(|x| !self.overlaps(x) && !out.overlaps(x) && !values.overlaps(x)), "scratch lies inside a matrix");
        let dv = dvalues.as_mut_ptr();
        let mask = mask.map(|k| {
            assert!(k.value.len() == d && k.dvalue.len() == d, "mask expert rows are d floats");
            let (pos, dpos) = match k.pos {
                MaskPos::Zero(zero, dx) => {
                    assert!(zero.len() == d && dx.len() == d, "mask expert rows are d floats");
                    (zero.as_ptr(), dx.as_mut_ptr())
                }
                MaskPos::Value(p) => {
                    assert!(p < values.rows, "row out of range");
                    (values.row(p).as_ptr(), dv.wrapping_add(p * d))
                }
            };
            MaskRows { value: k.value.as_ptr(), pos, dvalue: k.dvalue.as_mut_ptr(), dpos }
        });
        let rows = MoeRows {
            alpha: self.base(),
            words: e.words,
            values: { values.no_private_rows(); values.ptr },
            offsets: e.offsets,
            dvalues: dv,
            mask,
            theta: e.theta,
            heads: h,
            x: e.x.as_mut_ptr(),
            z: e.z.as_mut_ptr(),
            dots: e.dots.as_mut_ptr(),
            output: out.base(),
            outs,
        };
        // SAFETY: lv is `moe_register_level(d, H)`, a level the CPU has with
        // a kernel for d and H heads (so H divides d); every word, offset and output
        // id indexes a row of its matrix (checked), and `dvalues` holds one d-row
        // per values row (checked), so every row pointer the kernel forms
        // starts d floats inside a live buffer (the mask expert's rows are d
        // floats, checked); theta, x, z and dots are large enough (checked),
        // borrowed mutably here and outside every matrix (checked). The kernel
        // holds no reference into any matrix: it reads a row when a step needs
        // it and writes it back before the next step, so repeated rows,
        // other threads' updates (Hogwild) and `out` aliasing this matrix are
        // as harmless as with `score_exchange` / `dot_add_blocks`.
        unsafe { crate::simd::moe_target(lv, d, &rows, |w| self.factor(w as usize), |w| out.factor(w as usize), gfn) };
    }

    /// Whether `moe_target` serves this matrix with `heads` heads: a
    /// register-resident kernel for its row size and heads
    /// (`simd::moe_register_level`), and no update factors (a frozen row
    /// takes `dot_add_blocks`' separate path).
    pub fn has_moe_kernel(&self, heads: usize) -> bool {
        moe_register_level(self.cols, heads).is_some() && self.factor.is_empty()
    }

    /// The output layer's update for the n = h.len() / cols hidden rows of
    /// `h` (skip-gram's window) against the rows `outs` of this matrix, in
    /// one register-resident kernel (`simd::window_target`): the same as
    /// `score_rows` into `grad` for every output row, then `add_rows`, with
    /// g = gfn(j, score). Returns false, doing nothing, where no such kernel
    /// exists or a row repeats in `outs` (the caller then takes the separate
    /// kernels, which score a repeated row twice before updating it).
    pub fn window_target(&self, h: &[f32], grad: &mut [f32], outs: &[u32], gfn: impl FnMut(usize, f32) -> f32) -> bool {
        let d = self.cols;
        let Some(lv) = register_level(d) else { return false };
        if outs.iter().enumerate().any(|(j, w)| outs[..j].contains(w)) {
            return false;
        }
        let n = h.len() / d;
        assert!(h.len() == n * d && grad.len() == n * d, "hidden rows and gradient are n x d");
        assert!(!self.overlaps(h) && !self.overlaps(grad), "update source lies inside the matrix it updates");
        assert!(outs.iter().all(|&w| (w as usize) < self.rows), "row out of range");
        // SAFETY: lv is `register_level(d)`, a level the CPU has with a
        // kernel for d; `h` and `grad` hold n x d floats (checked) outside this matrix
        // (checked), `grad` borrowed mutably; every id in `outs` is a row of
        // this matrix (checked) and none repeats (checked); rows are read
        // from memory and written back once each, as `add_rows` does.
        unsafe { crate::simd::window_target(lv, d, h.as_ptr(), grad.as_mut_ptr(), n, self.base(), outs, |w| self.factor(w as usize), gfn) };
        true
    }

    /// The word2vec pair update with row `i` as the output vector:
    /// `grad += g * row[i]` (the row before the update), then
    /// `row[i] += g * factor(i) * h`. `h` and `grad` lie outside this matrix.
    #[inline]
    pub fn exchange(&self, i: usize, g: f32, h: &[f32], grad: &mut [f32]) {
        assert!(!self.overlaps(h) && !self.overlaps(grad), "update source lies inside the matrix it updates");
        let f = self.factor(i);
        // SAFETY: `h` and `grad` do not overlap the matrix (checked); the
        // mutable view of row i is the only view this thread holds of it
        // until the call returns.
        let r = unsafe { self.row_mut(i) };
        if f == 1.0 {
            update_pair(g, h, r, grad);
        } else {
            axpy(g, r, grad);
            if f != 0.0 {
                axpy(g * f, h, r);
            }
        }
    }
}

/// One worker's private copies of the first `rows` rows of a shared matrix
/// (hot-row privatization). The most frequent words have the lowest ids, and
/// with several Hogwild workers their rows are the ones that every worker
/// writes all the time (as negatives in the output matrix, as context words
/// in the input matrix): each write by one core takes the cache line from the
/// other. A worker therefore trains on its own copies of those rows
/// ([`Hogwild::with_hot`]) and now and then merges them ([`HotRows::merge`]):
/// shared += private − snapshot (what it learned since the last merge), then
/// private = snapshot = shared (what every worker learned). Nothing is lost as
/// long as every worker merges before the shared values are read: the
/// trainer has them merge before a distributed sync and at their end.
pub struct HotRows {
    rows: usize,
    cols: usize,
    /// Private columns `0..cols` of every row (`of_cols`) rather than rows.
    by_cols: bool,
    private: Vec<f32>,
    snapshot: Vec<f32>,
}

impl HotRows {
    /// Private copies of rows `0..rows.min(m.rows())` of `m`, taken now.
    pub fn of(m: &Hogwild<'_>, rows: usize) -> HotRows {
        m.no_private_rows();
        let rows = rows.min(m.rows);
        let private = m.as_slice()[..rows * m.cols].to_vec();
        HotRows { rows, cols: m.cols, by_cols: false, snapshot: private.clone(), private }
    }

    /// Private copies of columns `0..cols.min(m.cols())` of every row of `m`
    /// (a matrix with one column per word, such as BidirMoE's gate scores).
    pub fn of_cols(m: &Hogwild<'_>, cols: usize) -> HotRows {
        m.no_private_rows();
        let cols = cols.min(m.cols);
        let private: Vec<f32> = m.as_slice().chunks_exact(m.cols.max(1)).flat_map(|r| r[..cols].iter().copied()).collect();
        HotRows { rows: m.rows, cols, by_cols: true, snapshot: private.clone(), private }
    }

    /// No private rows (a view with them is a plain alias).
    pub fn none() -> HotRows {
        HotRows { rows: 0, cols: 0, by_cols: false, private: Vec::new(), snapshot: Vec::new() }
    }

    /// Were these copies made from a matrix of `m`'s shape?
    fn check(&self, m: &Hogwild<'_>) {
        let fits = if self.by_cols { self.rows == m.rows && self.cols <= m.cols } else { self.rows <= m.rows && (self.rows == 0 || self.cols == m.cols) };
        assert!(fits, "private rows of another matrix");
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Fold this worker's updates of its private rows into `shared` (the
    /// matrix they were taken from) and take the shared rows as they are now:
    /// for each private row, shared += private − snapshot; private =
    /// snapshot = shared. Other workers may merge into the same rows at the
    /// same time (Hogwild: an element may lose one of two simultaneous adds).
    pub fn merge(&mut self, shared: &Hogwild<'_>) {
        shared.no_private_rows();
        self.check(shared);
        let c = self.cols;
        for (i, (p, s)) in self.private.chunks_exact_mut(c.max(1)).zip(self.snapshot.chunks_exact_mut(c.max(1))).enumerate() {
            // SAFETY: i < self.rows <= shared.rows (checked); the private
            // copies are this worker's own allocation, so the shared row's
            // mutable view overlaps neither, and it dies with this iteration.
            let r = unsafe { shared.row_mut(i) };
            // a row's private part: all of it, or its first `cols` columns
            for ((rj, pj), sj) in r[..c].iter_mut().zip(p.iter_mut()).zip(s.iter_mut()) {
                let v = *rj + (*pj - *sj);
                *rj = v;
                *pj = v;
                *sj = v;
            }
        }
    }
}

/// A row's masked columns on checked buffers (see [`Hogwild::column_steps`]).
pub struct ColumnSteps<'s, 'a, const VB: usize> {
    beta: &'s Hogwild<'a>,
    bias: Option<&'s Hogwild<'a>>,
    buffers: ColumnBuffers<'s, VB>,
}

impl<const VB: usize> ColumnSteps<'_, '_, VB> {
    /// Masked column `at` with output rows `i0..i0 + m` and biases (if any)
    /// in rows `b0..b0 + ⌈m/8⌉` of the bias matrix, both updated; returns
    /// [`masked_column`]'s answer.
    #[inline(always)]
    pub fn step(&mut self, i0: usize, m: usize, b0: usize, at: &ColumnAt) -> ([[f32; 8]; VB], f32) {
        assert!(i0 + m <= self.beta.rows);
        let bias = self.bias.map(|b| {
            let ng = m.div_ceil(8);
            assert!(b0 + ng <= b.rows);
            // SAFETY: rows b0..b0 + ng of the bias matrix lie inside its
            // buffer, one block of 8 floats each (checked here and in
            // `column_steps`), outside the output rows and the buffers
            // (checked in `column_steps`; neither allocation moves while
            // borrowed); this view is the only one of those rows this thread
            // holds until the kernel returns.
            unsafe { std::slice::from_raw_parts_mut(b.ptr.add(b0 * 8) as *mut [f32; 8], ng) }
        });
        // SAFETY: rows i0..i0 + m lie inside the buffer (checked), VB blocks
        // of 8 floats each (checked in `column_steps`; f32's alignment is the
        // blocks'); the buffers and the bias rows lie outside them (checked
        // there), and this view is the only one of those rows this thread
        // holds until the kernel returns.
        self.beta.no_private_rows();
        let rows = unsafe { std::slice::from_raw_parts_mut(self.beta.ptr.add(i0 * self.beta.cols) as *mut [[f32; 8]; VB], m) };
        masked_column(&mut self.buffers, at, rows, bias)
    }
}

/// What one shared write costs between two cores: the mean time, in
/// nanoseconds, for a value written by one thread to be seen and answered
/// by another, over `rounds` round trips of one cache line (the two threads
/// are wherever the OS puts them). Hogwild workers pay about this for every
/// row the other worker wrote since they last touched it. Same-die cores
/// answer in well under 100 ns; cores on different sockets (or a VM whose
/// virtual CPUs the host has put there) in several hundred. `None` if a
/// round trip stalled for over a second (a thread not scheduled).
pub fn line_round_trip_ns(rounds: u64) -> Option<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    #[repr(align(128))]
    struct Line(AtomicU64);
    let (line, gave_up) = (Line(AtomicU64::new(0)), AtomicBool::new(false));
    let limit = Duration::from_secs(1);
    // Spin until the line holds `want`; false once the other side gave up or a second passed.
    let wait = |want: u64| -> bool {
        let mut since = None;
        let mut spins = 0u32;
        while line.0.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(4096) {
                let t = *since.get_or_insert_with(Instant::now);
                if gave_up.load(Ordering::Relaxed) || t.elapsed() > limit {
                    gave_up.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    };
    let start = Instant::now();
    let answered = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..rounds {
                if !wait(2 * i + 1) {
                    return;
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
        });
        for i in 0..rounds {
            line.0.store(2 * i + 1, Ordering::Release);
            if !wait(2 * i + 2) {
                return false;
            }
        }
        true
    });
    (answered && rounds > 0).then(|| start.elapsed().as_nanos() as f64 / rounds as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round trip is a finite, positive time (two threads answered
    /// each other every round); no rounds measure nothing.
    #[test]
    fn line_round_trip_answers() {
        let t = line_round_trip_ns(2000).expect("both threads ran");
        assert!(t.is_finite() && t > 0.0, "{t}");
        assert_eq!(line_round_trip_ns(0), None);
    }

    #[test]
    fn rows_are_views_into_the_buffer() {
        let mut buf = vec![0f32; 12];
        {
            let m = Hogwild::new(&mut buf, 4);
            assert_eq!(m.rows(), 3);
            m.add_at(1, 2, 5.0);
            assert_eq!(m.row(1)[2], 5.0);
            m.add_to_row(2, 2.0, &[1.0, 2.0, 3.0, 4.0]);
        }
        assert_eq!(buf[6], 5.0);
        assert_eq!(&buf[8..], &[2.0, 4.0, 6.0, 8.0]);
    }

    /// Two workers' views with private first rows: their updates reach
    /// the shared matrix only at a merge, and then all of them (each
    /// worker's delta since its snapshot, added); rows past the hot ones
    /// are written in place.
    #[test]
    fn merged_private_rows_add_every_workers_updates() {
        let mut buf: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let m = Hogwild::new(&mut buf, 2);
        let (mut h1, mut h2) = (HotRows::of(&m, 2), HotRows::of(&m, 2));
        {
            let (v1, v2) = (m.with_hot(&mut h1), m.with_hot(&mut h2));
            v1.add_to_row(0, 1.0, &[1.0, 2.0]);
            v2.add_to_row(0, 2.0, &[1.0, 1.0]);
            v2.add_at(1, 1, 4.0);
            v1.add_to_row(3, 1.0, &[0.5, 0.5]);
            assert_eq!(v1.row(0), &[1.0, 3.0]);
            assert_eq!(v2.row(0), &[2.0, 3.0]);
        }
        assert_eq!(m.as_slice(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.5, 7.5]);
        h1.merge(&m);
        h2.merge(&m);
        assert_eq!(m.as_slice(), &[3.0, 5.0, 2.0, 7.0, 4.0, 5.0, 6.5, 7.5]);
        // after its merge a worker reads what both learned
        assert_eq!(m.with_hot(&mut h2).row(0), &[3.0, 5.0]);
    }

    #[test]
    fn exchange_reads_the_old_row_then_updates_it() {
        let mut buf = vec![1.0f32, 2.0, 3.0, 4.0];
        let m = Hogwild::new(&mut buf, 2);
        let mut grad = [0.0f32; 2];
        m.exchange(1, 0.5, &[10.0, 20.0], &mut grad);
        assert_eq!(grad, [1.5, 2.0]);
        assert_eq!(m.row(1), &[8.0, 14.0]);
    }

    /// The 8-float kernel (`simd::exchange_rows`, even and odd rows summed
    /// apart) against the row-by-row exchange, up to rounding.
    #[test]
    fn exchange_of_8_float_blocks_matches_the_row_exchange() {
        let start: Vec<f32> = (0..5 * 16).map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.125).collect();
        let x = [[0.5f32, -1.0, 2.0, 0.25, -3.0, 1.5, 0.75, -0.5], [1.0, 2.0, -0.25, 4.0, 0.5, -2.0, 3.0, 1.25]];
        let g = [0.5f32, -1.0, 2.0, 0.125, -0.75];
        let (mut a, mut b) = (start.clone(), start.clone());
        let mut grad_ref = [0f32; 16];
        {
            let m = Hogwild::new(&mut a, 16);
            for (r, &gr) in g.iter().enumerate() {
                m.exchange(r, gr, x.as_flattened(), &mut grad_ref);
            }
        }
        let grad = Hogwild::new(&mut b, 16).exchange_outer_blocks8(0, &g, &x);
        for (p, q) in a.iter().zip(&b).chain(grad_ref.iter().zip(grad.as_flattened())) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
        assert_ne!(a, start);
    }

    #[test]
    fn block_updates_match_the_row_updates() {
        let start: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let lock = [1.0f32, 0.0, 0.5];
        let x = [[1.0f32, -2.0, 0.5, 4.0], [3.0, 0.25, -1.0, 2.0]];
        let g = [0.5f32, -1.0, 2.0];
        // reference: exchange row by row, then add_to_row
        let (mut a, mut b) = (start.clone(), start.clone());
        let mut grad_ref = [0f32; 8];
        {
            let m = Hogwild::new(&mut a, 8).with_factor(&lock);
            for (r, &gr) in g.iter().enumerate() {
                m.exchange(r, gr, x.as_flattened(), &mut grad_ref);
            }
            m.add_to_row(0, 0.25, x.as_flattened());
        }
        let grad;
        {
            let m = Hogwild::new(&mut b, 8).with_factor(&lock);
            grad = m.exchange_outer_blocks(0, &g, &x);
            m.add_blocks(0, 0.25, &x);
        }
        assert_eq!(a, b);
        assert_eq!(&grad_ref, grad.as_flattened());
        let mut c = start.clone();
        {
            let m = Hogwild::new(&mut c, 8).with_factor(&lock);
            m.add_outer_blocks(0, &g, &x);
        }
        let mut d = start.clone();
        {
            let m = Hogwild::new(&mut d, 8).with_factor(&lock);
            for (r, &gr) in g.iter().enumerate() {
                m.add_to_row(r, gr, x.as_flattened());
            }
        }
        assert_eq!(c, d);
        assert_eq!(&c[8..16], &start[8..16]); // factor 0: frozen
    }

    #[test]
    fn factors_scale_and_freeze_rows() {
        let mut buf = vec![0f32; 6];
        let lock = [1.0f32, 0.0, 0.5];
        let m = Hogwild::new(&mut buf, 2).with_factor(&lock);
        for i in 0..3 {
            m.add_to_row(i, 1.0, &[2.0, 2.0]);
        }
        let mut grad = [0.0f32; 2];
        m.exchange(1, 1.0, &[7.0, 7.0], &mut grad);
        assert_eq!(m.as_slice(), &[2.0, 2.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "inside the matrix")]
    fn a_source_inside_the_matrix_is_refused() {
        let mut buf = vec![0f32; 4];
        let m = Hogwild::new(&mut buf, 2);
        // A view of row 0 used as the source of an update of row 1.
        m.add_to_row(1, 1.0, m.row(0));
    }

    #[test]
    #[should_panic]
    fn out_of_range_row_panics() {
        let mut buf = vec![0f32; 4];
        let m = Hogwild::new(&mut buf, 2);
        m.row(2);
    }
}
