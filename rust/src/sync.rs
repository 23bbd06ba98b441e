//! The arithmetic of one data-parallel sync round, fused into one pass per
//! parameter array (what `bidirmoe.torch.distributed` calls between its
//! all-reduces; no Python, no torch here).
//!
//! Every process keeps, next to each parameter array `param`, three buffers
//! of the same length:
//!
//! * `consensus`: the parameters as all processes agree on them (the start
//!   of the epoch plus every combined change received so far); identical,
//!   bit for bit, in every process;
//! * `own`: this process's change that is in flight (sent at the previous
//!   round, its sum not yet received);
//! * `wire`: the buffer the collective sums in place: this process's change
//!   on the way out, the sum over all processes on the way back.
//!
//! The invariant `param = consensus + own + (what this process trained
//! since the last round)` lets a round find its new change without a
//! snapshot: `new = param − consensus − own`. A round then folds the
//! received sum into the consensus (`consensus += scale × wire`, scale 1
//! for a sum of changes, 1/processes for a mean) and rewrites
//! `param = consensus + new`, which drops this process's own in-flight
//! change from `param` only to add it back inside the sum: the other
//! processes' changes arrive one round late and nothing is counted twice.
//! The wire is written only between the collective's wait and its next
//! start, so the backend never reads a buffer being written.

/// An element of the wire: f32, or bfloat16 (half the bytes to sum and
/// send; the rounding error stays in `param` and goes out with the next
/// round's change, since `own` holds exactly what was sent).
pub trait WireValue: Copy + Send {
    fn load(self) -> f32;
    fn store(x: f32) -> Self;
}

impl WireValue for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(x: f32) -> f32 {
        x
    }
}

/// A bfloat16 value, as its bits (the upper 16 bits of an f32; torch's
/// `bfloat16` viewed as `int16`).
impl WireValue for u16 {
    #[inline(always)]
    fn load(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
    /// Round to nearest, ties to even (NaN stays NaN: its quiet bit is set).
    #[inline(always)]
    fn store(x: f32) -> u16 {
        let b = x.to_bits();
        if x.is_nan() {
            return ((b >> 16) | 0x40) as u16;
        }
        ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// One round over one piece of a parameter array (all four slices of equal
/// length). `recv`: the wire holds the sum of the previous round's changes
/// (fold it into the consensus). `send`: put this round's change on the
/// wire (and remember it as in flight); otherwise the change stays pending
/// in `param` for a later round and nothing is in flight.
pub fn exchange<W: WireValue>(
    param: &mut [f32],
    consensus: &mut [f32],
    own: &mut [f32],
    wire: &mut [W],
    scale: f32,
    recv: bool,
    send: bool,
) {
    check_lengths(param.len(), consensus.len(), own.len(), wire.len());
    match (recv, send) {
        (true, true) => exchange_with::<W, true, true>(param, consensus, own, wire, scale),
        (true, false) => exchange_with::<W, true, false>(param, consensus, own, wire, scale),
        (false, true) => exchange_with::<W, false, true>(param, consensus, own, wire, scale),
        (false, false) => exchange_with::<W, false, false>(param, consensus, own, wire, scale),
    }
}

/// Monomorphised per flag pair so the loop has no branch and vectorises.
#[inline(always)]
fn exchange_with<W: WireValue, const RECV: bool, const SEND: bool>(
    param: &mut [f32],
    consensus: &mut [f32],
    own: &mut [f32],
    wire: &mut [W],
    scale: f32,
) {
    let it = param
        .iter_mut()
        .zip(consensus.iter_mut())
        .zip(own.iter_mut())
        .zip(wire.iter_mut());
    for (((p, c), o), w) in it {
        let new = *p - *c - *o;
        if RECV {
            *c += scale * w.load();
        }
        *p = *c + new;
        if SEND {
            let q = W::store(new);
            *o = q.load();
            *w = q;
        } else {
            *o = 0.0;
        }
    }
}

/// The end of a blocking round (every change was sent and the wire holds
/// their sum): `consensus += scale × wire`, and `param` becomes the
/// consensus exactly, so every process holds the same parameters.
pub fn adopt<W: WireValue>(param: &mut [f32], consensus: &mut [f32], own: &mut [f32], wire: &[W], scale: f32) {
    check_lengths(param.len(), consensus.len(), own.len(), wire.len());
    let it = param
        .iter_mut()
        .zip(consensus.iter_mut())
        .zip(own.iter_mut())
        .zip(wire.iter());
    for (((p, c), o), w) in it {
        *c += scale * w.load();
        *p = *c;
        *o = 0.0;
    }
}

fn check_lengths(p: usize, c: usize, o: usize, w: usize) {
    assert!(
        p == c && p == o && p == w,
        "sync buffers of unequal lengths: {p}, {c}, {o}, {w}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes, three rounds and a blocking end, against the plain
    /// bookkeeping (f64): each ends with the start plus every change of both.
    #[test]
    fn delayed_rounds_add_every_change_once_and_end_identical() {
        let n = 37;
        let start: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut p = [start.clone(), start.clone()];
        let mut c = [start.clone(), start.clone()];
        let mut o = [vec![0.0f32; n], vec![0.0f32; n]];
        let mut w = [vec![0.0f32; n], vec![0.0f32; n]];
        let mut total = vec![0.0f64; n];
        let change =
            |r: usize, k: usize, i: usize| ((r * 7 + k * 3 + i) as f32 * 0.11).cos() * 0.01;
        let reduce = |w: &mut [Vec<f32>; 2]| {
            let s: Vec<f32> = w[0].iter().zip(&w[1]).map(|(a, b)| a + b).collect();
            w[0].copy_from_slice(&s);
            w[1].copy_from_slice(&s);
        };
        for k in 0..3 {
            for r in 0..2 {
                for i in 0..n {
                    p[r][i] += change(r, k, i); // training between rounds
                    total[i] += change(r, k, i) as f64;
                }
                exchange(&mut p[r], &mut c[r], &mut o[r], &mut w[r], 1.0, k > 0, true);
            }
            reduce(&mut w);
        }
        for r in 0..2 {
            exchange(&mut p[r], &mut c[r], &mut o[r], &mut w[r], 1.0, true, true);
        }
        reduce(&mut w);
        for r in 0..2 {
            let wr = w[r].clone();
            adopt(&mut p[r], &mut c[r], &mut o[r], &wr, 1.0);
        }
        assert_eq!(p[0], p[1]);
        for i in 0..n {
            let want = start[i] as f64 + total[i];
            assert!(
                (p[0][i] as f64 - want).abs() < 1e-5,
                "{i}: {} vs {want}",
                p[0][i]
            );
            assert_eq!(o[0][i], 0.0);
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_the_error_pending() {
        for (x, want) in [(1.0f32, 1.0f32), (1.0 + 1.0 / 512.0, 1.0), (1.0 + 3.0 / 512.0, 1.0 + 4.0 / 512.0), (-2.5e-3, -2.502_441_4e-3)] {
            assert_eq!(<u16 as WireValue>::store(x).load(), want, "{x}");
        }
        assert!(<u16 as WireValue>::store(f32::NAN).load().is_nan());
        assert_eq!(<u16 as WireValue>::store(f32::INFINITY).load(), f32::INFINITY);
        // The part of the change the wire could not carry stays in param - consensus - own.
        let start = 1.0f32 + 1.0 / 1000.0;
        let (mut p, mut c, mut o, mut w) = (vec![start], vec![1.0f32], vec![0.0f32], vec![0u16]);
        exchange(&mut p, &mut c, &mut o, &mut w, 1.0, false, true);
        let (new, sent) = (start - 1.0, w[0].load());
        assert_eq!(o[0], sent);
        assert!(sent != new && (sent - new).abs() < new * 0.004);
        // p = 1 + new exactly up to p's own rounding (one ulp of 1.0).
        assert!(((p[0] - c[0] - o[0]) - (new - sent)).abs() <= f32::EPSILON);
    }

    #[test]
    fn a_piece_not_sent_keeps_its_change_pending() {
        let (mut p, mut c, mut o, mut w) = (
            vec![1.5f32; 4],
            vec![1.0f32; 4],
            vec![0.25f32; 4],
            vec![2.0f32; 4],
        );
        exchange(&mut p, &mut c, &mut o, &mut w, 0.5, true, false);
        // new = 1.5 - 1 - 0.25 = 0.25; consensus 1 + 0.5 * 2 = 2; nothing in flight.
        assert_eq!((p[0], c[0], o[0], w[0]), (2.25, 2.0, 0.0, 2.0));
    }
}
