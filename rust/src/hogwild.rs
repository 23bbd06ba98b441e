//! Lock-free shared parameter matrices (Hogwild!, Niu et al. 2011).
//!
//! Worker threads read and update rows of the same matrix without locks. Two
//! threads may touch the same row at once; a lost or torn `f32` update is
//! harmless for SGD on sparse problems like word2vec, which is the whole
//! argument of Hogwild and what word2vec, gensim and fastText all do. What
//! must never happen is an out-of-bounds access or a dangling pointer: rows
//! are bounds-checked and the matrix borrows its storage for its lifetime.

use std::marker::PhantomData;

/// A row-major `rows x cols` f32 matrix shared by all worker threads.
pub struct Hogwild<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from an exclusive borrow held for 'a, so the data
// outlives every use; concurrent unsynchronised row updates are the intended
// Hogwild semantics (see module doc): element writes are plain f32 stores that
// cannot produce an invalid value or touch memory outside the buffer.
unsafe impl Send for Hogwild<'_> {}
unsafe impl Sync for Hogwild<'_> {}

impl<'a> Hogwild<'a> {
    /// Wrap `data` (length `rows * cols`).
    pub fn new(data: &'a mut [f32], cols: usize) -> Self {
        let rows = if cols == 0 { 0 } else { data.len() / cols };
        assert_eq!(rows * cols, data.len(), "matrix buffer is not rows x cols");
        Hogwild { ptr: data.as_mut_ptr(), rows, cols, _borrow: PhantomData }
    }

    /// A second handle on the same matrix, for tied parameters (attention's
    /// `tie_output`: beta = rho). Two handles alias exactly as two Hogwild
    /// threads do, which is the contract of this type.
    pub fn alias(&self) -> Hogwild<'a> {
        Hogwild { ptr: self.ptr, rows: self.rows, cols: self.cols, _borrow: PhantomData }
    }

    /// An empty matrix (a model part that is switched off).
    pub fn empty() -> Self {
        Hogwild { ptr: std::ptr::NonNull::dangling().as_ptr(), rows: 0, cols: 0, _borrow: PhantomData }
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole matrix for reading (row-major).
    #[inline]
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: the full buffer borrowed for 'a; concurrent Hogwild writers
        // may change values, never the allocation.
        unsafe { std::slice::from_raw_parts(self.ptr, self.rows * self.cols) }
    }

    /// Row `i` for reading.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.rows);
        // SAFETY: i < rows, so [i*cols, (i+1)*cols) lies inside the buffer
        // borrowed for 'a. Concurrent writers may change values under us
        // (Hogwild), never the allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.add(i * self.cols), self.cols) }
    }

    /// Row `i` for updating, shared with other threads by design (Hogwild).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub fn row_mut(&self, i: usize) -> &mut [f32] {
        assert!(i < self.rows);
        // SAFETY: as in `row`: in bounds of a buffer that outlives 'a. Aliasing
        // with other threads' updates is the documented Hogwild trade-off.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.cols), self.cols) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_views_into_the_buffer() {
        let mut buf = vec![0f32; 12];
        {
            let m = Hogwild::new(&mut buf, 4);
            assert_eq!(m.rows(), 3);
            m.row_mut(1)[2] = 5.0;
            assert_eq!(m.row(1)[2], 5.0);
        }
        assert_eq!(buf[6], 5.0);
    }

    #[test]
    #[should_panic]
    fn out_of_range_row_panics() {
        let mut buf = vec![0f32; 4];
        let m = Hogwild::new(&mut buf, 2);
        m.row(2);
    }
}
