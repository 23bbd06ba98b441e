//! Randomness used by training: a small fast per-thread RNG, word2vec/gensim
//! frequent-word subsampling, and the unigram^power table for negatives.

/// wyrand: a tiny, fast, statistically solid 64-bit generator. Each worker
/// owns one, seeded from the model seed, the epoch and the worker index, so a
/// run with one worker is reproducible bit for bit.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Scramble the seed through splitmix64 so nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng { state: z ^ (z >> 31) }
    }

    /// The generator's whole state (to checkpoint it).
    pub fn state(&self) -> u64 {
        self.state
    }

    /// A generator continuing from a saved `state()`.
    pub fn from_state(state: u64) -> Self {
        Rng { state }
    }

    /// Seed for worker `worker` in epoch `epoch` of a model seeded with `seed`.
    pub fn for_worker(seed: u64, epoch: u64, worker: u64) -> Self {
        Rng::new(seed ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F) ^ worker.wrapping_mul(0xE703_7ED1_A0B4_28DB))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xA076_1D64_78BD_642F);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xE703_7ED1_A0B4_28DB) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in 0..n (n > 0), by multiply-shift (Lemire), no modulo bias worth noting.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next_u32() as u64 * n as u64) >> 32) as u32
    }

    /// Uniform f32 in [0, 1).
    #[inline]
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

/// gensim's keep probability for a word seen `count` times, as a u32 threshold:
/// a word occurrence is kept when `threshold >= rng.next_u32()`.
///
/// `sample` < 1 is the share of `retained_total` (word2vec's meaning); `sample`
/// >= 1 means "downsample every word more frequent than `sample`" (gensim's
/// shorthand); `sample` == 0 disables subsampling.
pub fn keep_thresholds(counts: &[u64], sample: f64) -> Vec<u32> {
    let retained_total: u64 = counts.iter().sum();
    let threshold_count = if sample <= 0.0 {
        retained_total as f64
    } else if sample < 1.0 {
        sample * retained_total as f64
    } else {
        (sample * (3.0 + 5f64.sqrt()) / 2.0).floor()
    };
    counts
        .iter()
        .map(|&c| {
            let v = c.max(1) as f64;
            let p = ((v / threshold_count).sqrt() + 1.0) * (threshold_count / v);
            let p = if sample <= 0.0 { 1.0 } else { p.min(1.0) };
            (p * u32::MAX as f64) as u32
        })
        .collect()
}

/// Expected number of word occurrences kept by subsampling (gensim's
/// `downsample_total`), for reporting.
pub fn expected_kept(counts: &[u64], thresholds: &[u32]) -> f64 {
    counts.iter().zip(thresholds).map(|(&c, &t)| c as f64 * (t as f64 / u32::MAX as f64)).sum()
}

/// Walker/Vose alias table over `count^power`: O(1) draws of negative words
/// with exactly the unigram^power distribution, in 8 bytes per word (word2vec's
/// 1e8-entry table would be 400 MB and only approximates it).
#[derive(Clone, Debug)]
pub struct AliasTable {
    /// Per slot (acceptance threshold, alias word), side by side so that a
    /// draw touches one cache line, not one in each of two arrays.
    slots: Vec<(u32, u32)>,
}

impl AliasTable {
    pub fn new(counts: &[u64], power: f64) -> Self {
        let n = counts.len();
        if n == 0 {
            return AliasTable { slots: vec![] };
        }
        let weights: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = if total > 0.0 && total.is_finite() {
            weights.iter().map(|w| w * n as f64 / total).collect()
        } else {
            vec![1.0; n]
        };
        let mut prob = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let mut small: Vec<usize> = Vec::new();
        let mut large: Vec<usize> = Vec::new();
        for (i, &s) in scaled.iter().enumerate() {
            if s < 1.0 {
                small.push(i)
            } else {
                large.push(i)
            }
        }
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            prob[s] = (scaled[s] * u32::MAX as f64) as u32;
            alias[s] = l as u32;
            scaled[l] = (scaled[l] + scaled[s]) - 1.0;
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers (rounding) keep probability 1 of themselves.
        for i in small.into_iter().chain(large) {
            prob[i] = u32::MAX;
            alias[i] = i as u32;
        }
        AliasTable { slots: prob.into_iter().zip(alias).collect() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// One draw.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.slots.len() as u64) >> 32) as usize;
        let (prob, alias) = self.slots[i];
        // Select without a branch: which of the two a draw takes is a coin
        // flip for many slots, so a branch would be mispredicted often.
        let take_alias = ((r as u32) > prob) as u32;
        let i = i as u32;
        i ^ ((i ^ alias) & take_alias.wrapping_neg())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_matches_unigram_power_distribution() {
        let counts = [1000u64, 300, 50, 10, 1, 0, 7];
        let t = AliasTable::new(&counts, 0.75);
        let mut rng = Rng::new(3);
        let n = 2_000_000;
        let mut hist = [0u64; 7];
        for _ in 0..n {
            hist[t.sample(&mut rng) as usize] += 1;
        }
        let w: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(0.75)).collect();
        let tot: f64 = w.iter().sum();
        for i in 0..7 {
            let expect = w[i] / tot;
            let got = hist[i] as f64 / n as f64;
            assert!((got - expect).abs() < 0.002 + 0.01 * expect, "word {i}: {got} vs {expect}");
        }
        assert_eq!(hist[5], 0, "a zero-count word is never drawn");
    }

    #[test]
    fn keep_thresholds_follow_gensim_formula() {
        let counts = [10_000u64, 1000, 10, 1];
        let total: u64 = counts.iter().sum();
        let sample = 1e-3;
        let th = keep_thresholds(&counts, sample);
        for (i, &c) in counts.iter().enumerate() {
            let tc = sample * total as f64;
            let p = (((c as f64 / tc).sqrt() + 1.0) * (tc / c as f64)).min(1.0);
            assert!((th[i] as f64 / u32::MAX as f64 - p).abs() < 1e-6);
        }
        assert_eq!(keep_thresholds(&counts, 0.0), vec![u32::MAX; 4]);
    }

    #[test]
    fn rng_is_reproducible_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut h = [0u32; 10];
        for _ in 0..100_000 {
            h[a.below(10) as usize] += 1;
        }
        for c in h {
            assert!((c as i64 - 10_000).abs() < 500);
        }
    }
}
