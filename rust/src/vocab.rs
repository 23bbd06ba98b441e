//! Vocabulary: streaming counts with gensim's pruning, the final
//! frequency-ordered vocabulary, subsampling thresholds, the negative-sampling
//! table and the Huffman tree for hierarchical softmax.

use crate::corpus::{token_str, Cursor, FileSplit};
use crate::sampling::{keep_thresholds, AliasTable};
use rustc_hash::FxHashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Counts words while the corpus streams past; the corpus is never stored.
///
/// With `max_vocab_size`, whenever the table grows past it, every word seen
/// fewer than `min_reduce` times is dropped and `min_reduce` rises by one —
/// gensim's `prune_vocab` rule (counts of pruned words restart from zero).
#[derive(Debug, Default)]
pub struct VocabCounter {
    counts: FxHashMap<String, u64>,
    max_vocab_size: Option<usize>,
    min_reduce: u64,
    /// Every token seen, including pruned and later-discarded ones.
    pub total_words: u64,
    /// Sentences (or chunks of at most MAX_SENTENCE_LEN tokens) seen.
    pub sentences: u64,
    /// How many prunes happened.
    pub prunes: u64,
}

impl VocabCounter {
    pub fn new(max_vocab_size: Option<usize>) -> Self {
        VocabCounter { max_vocab_size, min_reduce: 1, ..Default::default() }
    }

    #[inline]
    pub fn add_token(&mut self, tok: &str) {
        self.total_words += 1;
        if let Some(c) = self.counts.get_mut(tok) {
            *c += 1;
        } else {
            self.counts.insert(tok.to_owned(), 1);
        }
    }

    /// Call at the end of each sentence: counts it and prunes if needed.
    pub fn end_sentence(&mut self) {
        self.end_sentence_with(&mut |_: &str, c: u64, m: u64| c >= m);
    }

    /// `end_sentence` with a rule deciding which words survive a prune:
    /// `keep(word, count, min_reduce)` (gensim passes its `trim_rule` here).
    pub fn end_sentence_with(&mut self, keep: &mut dyn FnMut(&str, u64, u64) -> bool) {
        self.sentences += 1;
        if let Some(max) = self.max_vocab_size {
            if self.counts.len() > max {
                let m = self.min_reduce;
                self.counts.retain(|w, c| keep(w, *c, m));
                self.min_reduce += 1;
                self.prunes += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Count one sentence of raw tokens, as a reader hands it over (a
    /// sentence without tokens is not counted).
    pub fn add_sentence_tokens(&mut self, it: &mut dyn Iterator<Item = &[u8]>) {
        let mut any = false;
        for t in it {
            self.add_token(&token_str(t));
            any = true;
        }
        if any {
            self.end_sentence();
        }
    }

    /// The table size past which the count prunes, if any.
    pub fn max_vocab_size(&self) -> Option<usize> {
        self.max_vocab_size
    }

    /// Add `other`'s counts and totals (see `merge`).
    pub fn absorb(&mut self, mut other: VocabCounter) {
        if other.counts.len() > self.counts.len() {
            // add the smaller table into the larger one
            std::mem::swap(&mut self.counts, &mut other.counts);
        }
        self.merge(other.counts, other.total_words, other.sentences);
        self.prunes += other.prunes;
    }

    pub fn raw_counts(&self) -> &FxHashMap<String, u64> {
        &self.counts
    }

    /// Add another counter's results (e.g. another process's shard of the
    /// corpus): counts of the same word add up, as do the totals. No prune
    /// runs here.
    pub fn merge(&mut self, words_counts: impl IntoIterator<Item = (String, u64)>, total_words: u64, sentences: u64) {
        for (w, c) in words_counts {
            *self.counts.entry(w).or_insert(0) += c;
        }
        self.total_words += total_words;
        self.sentences += sentences;
    }
}

/// Count the plain-text file `path` (with `shard = (rank, world)`: that
/// process's share of it, as `FileSplit::shard` cuts it) with `threads`
/// threads: each counts the whole lines of one part of it
/// (`FileSplit::shard_at_line_starts`) and the parts' counts are added up,
/// which gives the counts, token total and sentence count of one pass over
/// the file or the share. Without pruning only
/// (`max_vocab_size` prunes by the order the words arrive in, which only a
/// single pass has). The calling thread counts the first part and runs
/// `keep_going` about every million of its tokens; once that returns false
/// every thread stops and the result is `None` (an incomplete count).
pub fn count_file_parallel(path: &Path, shard: (u64, u64), threads: usize, keep_going: &mut dyn FnMut() -> bool) -> io::Result<Option<VocabCounter>> {
    let split = FileSplit::shard_at_line_starts(path, threads, shard.0, shard.1)?;
    let stop = AtomicBool::new(false);
    let count_part = |k: usize, check: &mut dyn FnMut(u64) -> bool| -> io::Result<VocabCounter> {
        let mut c = VocabCounter::new(None);
        let mut next_check = 1u64 << 20;
        split.for_worker(k, &mut Cursor::default(), |it| {
            c.add_sentence_tokens(it);
            if c.total_words >= next_check {
                next_check = c.total_words + (1 << 20);
                if !check(c.total_words) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            !stop.load(Ordering::Relaxed)
        })?;
        Ok(c)
    };
    let parts: Vec<io::Result<VocabCounter>> = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads.max(1)).map(|k| scope.spawn(move || count_part(k, &mut |_| true))).collect();
        let first = count_part(0, &mut |_| keep_going());
        if first.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        std::iter::once(first).chain(others.into_iter().map(|h| h.join().expect("a vocabulary counting thread panicked"))).collect()
    });
    let mut total = VocabCounter::new(None);
    for part in parts {
        total.absorb(part?);
    }
    Ok((!stop.load(Ordering::Relaxed)).then_some(total))
}

/// Settings for turning raw counts into a vocabulary.
#[derive(Clone, Debug)]
pub struct VocabSettings {
    pub min_count: u64,
    pub max_final_vocab: Option<usize>,
    pub sample: f64,
    pub ns_exponent: f64,
    pub hs: bool,
}

/// A finished vocabulary: words sorted by descending count.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub words: Vec<String>,
    pub counts: Vec<u64>,
    pub index: FxHashMap<String, u32>,
    /// The same mapping for raw token bytes (the corpus-file read path).
    pub tokens: TokenIndex,
    /// Per-word keep threshold for subsampling (see `sampling::keep_thresholds`).
    pub keep: Vec<u32>,
    pub negatives: AliasTable,
    pub huffman: Option<Huffman>,
    /// Tokens in the corpus (all of them, in or out of the vocabulary).
    pub total_words: u64,
    /// Sentences (chunks) in the corpus.
    pub sentences: u64,
    /// The min_count actually applied (raised by max_final_vocab).
    pub effective_min_count: u64,
}

impl Vocab {
    /// Apply min_count / max_final_vocab to the counts and build every table.
    pub fn from_counter(counter: &VocabCounter, s: &VocabSettings) -> Vocab {
        let mut items: Vec<(&String, u64)> = counter.counts.iter().map(|(w, &c)| (w, c)).collect();
        // Descending count; ties by word so the order never depends on hashing.
        items.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut min_count = s.min_count;
        if let Some(maxv) = s.max_final_vocab {
            // gensim: the smallest min_count that keeps at most max_final_vocab words.
            let calc = if maxv < items.len() { items[maxv].1 + 1 } else { 1 };
            min_count = min_count.max(calc);
        }
        let kept: Vec<(String, u64)> =
            items.into_iter().filter(|(_, c)| *c >= min_count).map(|(w, c)| (w.clone(), c)).collect();
        let mut v = Vocab::from_sorted(kept, s);
        v.total_words = counter.total_words;
        v.sentences = counter.sentences;
        v.effective_min_count = min_count;
        v
    }

    /// Build from (word, count) pairs already in final order (e.g. a saved model).
    pub fn from_sorted(words_counts: Vec<(String, u64)>, s: &VocabSettings) -> Vocab {
        let (words, counts): (Vec<String>, Vec<u64>) = words_counts.into_iter().unzip();
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        let tokens = TokenIndex::new(&words);
        let keep = keep_thresholds(&counts, s.sample);
        let negatives = AliasTable::new(&counts, s.ns_exponent);
        let huffman = if s.hs && !counts.is_empty() { Some(Huffman::new(&counts)) } else { None };
        Vocab {
            words,
            counts,
            index,
            tokens,
            keep,
            negatives,
            huffman,
            total_words: 0,
            sentences: 0,
            effective_min_count: s.min_count,
        }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    #[inline]
    pub fn get(&self, w: &str) -> Option<u32> {
        self.index.get(w).copied()
    }

    /// Sum of the counts of the words kept.
    pub fn retained_words(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Word -> id lookup on raw token bytes, built for the read path: an
/// open-addressing table of (hash, id) over the words' UTF-8 bytes, so a
/// lookup is one hash, usually one probe and one short compare, with no UTF-8
/// validation unless the bytes miss and are not valid UTF-8 (then the
/// lossily-decoded token is looked up, matching how the vocabulary was counted).
#[derive(Debug, Clone)]
pub struct TokenIndex {
    slots: Vec<(u32, u32)>, // (hash tag, id + 1); id + 1 == 0 marks an empty slot
    mask: usize,
    arena: Vec<u8>,
    spans: Vec<(u32, u32)>, // per id: (start, end) in arena
}

/// `a == b` for slices of equal length, compared 8 bytes at a time inline
/// (most words are a few bytes: a call into memcmp costs more than the compare).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        if u64::from_le_bytes(x.try_into().unwrap_or([0; 8])) != u64::from_le_bytes(y.try_into().unwrap_or([0; 8])) {
            return false;
        }
    }
    ca.remainder().iter().zip(cb.remainder()).all(|(x, y)| x == y)
}

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    // FxHash-style multiply-rotate over 8-byte words, then a final mix.
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

impl TokenIndex {
    pub fn new(words: &[String]) -> Self {
        let cap = (words.len() * 2).next_power_of_two().max(16);
        let mut t = TokenIndex { slots: vec![(0, 0); cap], mask: cap - 1, arena: Vec::new(), spans: Vec::with_capacity(words.len()) };
        for (id, w) in words.iter().enumerate() {
            let start = t.arena.len() as u32;
            t.arena.extend_from_slice(w.as_bytes());
            t.spans.push((start, t.arena.len() as u32));
            let h = hash_bytes(w.as_bytes());
            let mut i = (h as usize) & t.mask;
            while t.slots[i].1 != 0 {
                i = (i + 1) & t.mask;
            }
            t.slots[i] = ((h >> 32) as u32, id as u32 + 1);
        }
        t
    }

    #[inline]
    fn find(&self, b: &[u8]) -> Option<u32> {
        let h = hash_bytes(b);
        let tag = (h >> 32) as u32;
        let mut i = (h as usize) & self.mask;
        loop {
            let (t, id1) = self.slots[i];
            if id1 == 0 {
                return None;
            }
            if t == tag {
                let (s, e) = self.spans[(id1 - 1) as usize];
                let w = &self.arena[s as usize..e as usize];
                if w.len() == b.len() && same_bytes(w, b) {
                    return Some(id1 - 1);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Id of a raw token (invalid UTF-8 replaced, as when counting).
    #[inline]
    pub fn get(&self, b: &[u8]) -> Option<u32> {
        match self.find(b) {
            Some(id) => Some(id),
            None if std::str::from_utf8(b).is_err() => self.find(String::from_utf8_lossy(b).as_bytes()),
            None => None,
        }
    }
}

/// Huffman codes and paths for hierarchical softmax (word2vec's CreateBinaryTree).
/// Inner nodes are numbered 0..V-2; `points[w]` are the inner nodes on the
/// path from the root to word w, `codes[w]` the branch bits taken.
#[derive(Debug, Clone)]
pub struct Huffman {
    pub codes: Vec<Vec<u8>>,
    pub points: Vec<Vec<u32>>,
}

impl Huffman {
    /// The optimal code for words with these counts, in any order (a
    /// vocabulary grown by `build_vocab(update=True)` appends new words after
    /// the old ones): built on the words sorted by descending count (stable,
    /// so a sorted vocabulary keeps word2vec's exact tree), then mapped back.
    pub fn new(counts: &[u64]) -> Huffman {
        if counts.windows(2).all(|w| w[0] >= w[1]) {
            return Self::from_descending(counts);
        }
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
        let sorted: Vec<u64> = order.iter().map(|&i| counts[i]).collect();
        let tree = Self::from_descending(&sorted);
        let mut codes = vec![Vec::new(); counts.len()];
        let mut points = vec![Vec::new(); counts.len()];
        for (k, (c, p)) in tree.codes.into_iter().zip(tree.points).enumerate() {
            codes[order[k]] = c;
            points[order[k]] = p;
        }
        Huffman { codes, points }
    }

    /// word2vec's two-queue construction; `counts` in descending order.
    fn from_descending(counts: &[u64]) -> Huffman {
        let v = counts.len();
        if v == 1 {
            // A single word needs no decisions: an empty path, probability 1
            // (word2vec's tree builder would loop forever here).
            return Huffman { codes: vec![vec![]], points: vec![vec![]] };
        }
        let mut count: Vec<u64> = Vec::with_capacity(2 * v);
        count.extend_from_slice(counts);
        count.resize(2 * v, u64::MAX);
        let mut binary = vec![0u8; 2 * v];
        let mut parent = vec![0usize; 2 * v];
        // Two queues: leaves from the rarest end (pos1 going down), inner nodes in creation order (pos2 up).
        let mut pos1 = v as isize - 1;
        let mut pos2 = v;
        for a in 0..v - 1 {
            let mut pick = |count: &Vec<u64>| -> usize {
                if pos1 >= 0 && count[pos1 as usize] < count[pos2] {
                    let m = pos1 as usize;
                    pos1 -= 1;
                    m
                } else {
                    let m = pos2;
                    pos2 += 1;
                    m
                }
            };
            let min1 = pick(&count);
            let min2 = pick(&count);
            count[v + a] = count[min1].saturating_add(count[min2]);
            parent[min1] = v + a;
            parent[min2] = v + a;
            binary[min2] = 1;
        }
        let root = 2 * v - 2;
        let mut codes = Vec::with_capacity(v);
        let mut points = Vec::with_capacity(v);
        for w in 0..v {
            let mut code = Vec::new();
            let mut path = Vec::new();
            let mut b = w;
            while b != root {
                code.push(binary[b]);
                b = parent[b];
                path.push((b - v) as u32);
            }
            code.reverse();
            path.reverse();
            codes.push(code);
            points.push(path);
        }
        Huffman { codes, points }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> VocabSettings {
        VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: true }
    }

    fn count(text: &str, max: Option<usize>) -> VocabCounter {
        let mut c = VocabCounter::new(max);
        for line in text.lines() {
            for t in line.split_whitespace() {
                c.add_token(t);
            }
            c.end_sentence();
        }
        c
    }

    #[test]
    fn counts_and_orders_by_frequency() {
        let c = count("a b b c c c\nc d", None);
        let v = Vocab::from_counter(&c, &settings());
        assert_eq!(v.words, vec!["c", "b", "a", "d"]);
        assert_eq!(v.counts, vec![4, 2, 1, 1]);
        assert_eq!(v.total_words, 8);
        assert_eq!(v.sentences, 2);
    }

    #[test]
    fn min_count_and_max_final_vocab() {
        let c = count("a b b c c c d d d d", None);
        let v = Vocab::from_counter(&c, &VocabSettings { min_count: 2, ..settings() });
        assert_eq!(v.words, vec!["d", "c", "b"]);
        let v = Vocab::from_counter(&c, &VocabSettings { max_final_vocab: Some(2), ..settings() });
        assert_eq!(v.words, vec!["d", "c"]);
        assert_eq!(v.effective_min_count, 3);
    }

    #[test]
    fn pruning_follows_gensims_rising_threshold() {
        // gensim: after a sentence, if len > max: drop count < min_reduce; min_reduce += 1.
        let text = "a a a b\nc\nd a\ne f";
        let c = count(text, Some(2));
        // Replay of gensim's algorithm by hand:
        // s1: {a:3,b:1} len 2 ok. s2: +c len 3 > 2 -> drop <1 (none), min_reduce=2.
        // s3: {a:4,b:1,c:1,d:1} > 2 -> drop <2 -> {a:4}, min_reduce=3.
        // s4: {a:4,e:1,f:1} > 2 -> drop <3 -> {a:4}.
        let mut keys: Vec<_> = c.raw_counts().iter().map(|(k, v)| (k.clone(), *v)).collect();
        keys.sort();
        assert_eq!(keys, vec![("a".to_string(), 4)]);
        assert_eq!(c.prunes, 3);
        assert_eq!(c.total_words, 9);
    }

    #[test]
    fn token_index_finds_every_word_and_nothing_else() {
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}x")).chain(["\u{fffd}bad".to_string(), String::new()]).collect();
        let t = TokenIndex::new(&words);
        for (i, w) in words.iter().enumerate() {
            assert_eq!(t.get(w.as_bytes()), Some(i as u32), "{w}");
        }
        assert_eq!(t.get(b"w5000x"), None);
        assert_eq!(t.get(b"w1"), None);
        // Invalid UTF-8 matches its lossy decoding, as counting does.
        assert_eq!(t.get(b"\xffbad"), Some(5000));
    }

    #[test]
    fn a_single_word_has_an_empty_huffman_path() {
        let h = Huffman::new(&[7]);
        assert!(h.codes[0].is_empty() && h.points[0].is_empty());
    }

    #[test]
    fn huffman_codes_are_prefix_free_and_frequent_words_short() {
        let counts = [50u64, 30, 10, 5, 3, 1, 1];
        let h = Huffman::new(&counts);
        for i in 0..counts.len() {
            assert_eq!(h.codes[i].len(), h.points[i].len());
            for j in 0..counts.len() {
                if i != j {
                    let (a, b) = (&h.codes[i], &h.codes[j]);
                    assert!(!(a.len() <= b.len() && &b[..a.len()] == a.as_slice()), "prefix");
                }
            }
            assert!(h.points[i].iter().all(|&p| (p as usize) < counts.len() - 1));
        }
        assert!(h.codes[0].len() <= h.codes[6].len());
        // Kraft equality for a full binary tree.
        let k: f64 = h.codes.iter().map(|c| 0.5f64.powi(c.len() as i32)).sum();
        assert!((k - 1.0).abs() < 1e-12);
        // Root is the last inner node, first on every path.
        assert!(h.points.iter().all(|p| p[0] as usize == counts.len() - 2));
    }

    /// A corpus file in a fresh directory.
    fn corpus_file(tag: &str, text: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bidirmoe-vocab-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.txt");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The counts of one pass, from the text itself: every line's tokens
    /// (split at ASCII blanks), in sentences of at most 10,000 tokens.
    fn count_serially(text: &[u8]) -> VocabCounter {
        let mut c = VocabCounter::new(None);
        for line in text.split(|&b| b == b'\n') {
            let tokens: Vec<&[u8]> = line.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty()).collect();
            for sentence in tokens.chunks(crate::corpus::MAX_SENTENCE_LEN) {
                for t in sentence {
                    c.add_token(std::str::from_utf8(t).unwrap());
                }
                c.end_sentence();
            }
        }
        c
    }

    /// Lines of random length from a small vocabulary, some of them longer
    /// than a sentence (10,000 tokens), blank, with CRLF ends, tabs and
    /// leading or trailing blanks; no line end at the very end.
    fn ragged_text(lines: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::sampling::Rng::new(seed);
        let mut text = Vec::new();
        for line in 0..lines {
            let len = match rng.below(50) {
                0 => 25_000 + rng.below(1000) as usize,
                1..=4 => 0,
                _ => rng.below(40) as usize,
            };
            if rng.below(8) == 0 {
                text.extend_from_slice(b"  ");
            }
            for k in 0..len {
                if k > 0 {
                    text.extend_from_slice([&b" "[..], b"\t", b"  "][rng.below(3) as usize]);
                }
                text.extend_from_slice(format!("w{}", rng.below(60)).as_bytes());
            }
            if line + 1 < lines {
                text.extend_from_slice(if rng.below(6) == 0 { b" \r\n" } else { b"\n" });
            }
        }
        text
    }

    /// The parallel count gives one pass's counts, token total and
    /// sentence count (lines longer than a sentence included), whatever
    /// the thread count, and its parts start at line starts.
    #[test]
    fn parallel_count_equals_one_pass() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("ragged", ragged_text(400, 7)),
            ("ragged2", ragged_text(60, 8)),
            ("oneline", ragged_text(1, 9)),
            ("tiny", b"a b".to_vec()),
            ("empty", Vec::new()),
            ("newlines", b"\n\n\nx\n\n".to_vec()),
        ];
        for (tag, text) in cases {
            let path = corpus_file(tag, &text);
            let want = count_serially(&text);
            assert!(tag == "empty" || want.total_words > 0);
            for threads in 1..=7 {
                let split = FileSplit::at_line_starts(&path, threads).unwrap();
                let FileSplit::Ranges { parts, .. } = &split else { panic!("a plain file splits by ranges") };
                let ranges: Vec<(u64, u64)> = parts.iter().map(|p| p[0]).collect();
                assert_eq!(ranges.len(), threads);
                assert_eq!(ranges[0].0, 0);
                assert_eq!(ranges[threads - 1].1, text.len() as u64, "{tag}: the parts end at the file's end");
                for w in ranges.windows(2) {
                    assert_eq!(w[0].1, w[1].0, "{tag}, {threads} threads: the parts are contiguous");
                }
                for &(s, e) in &ranges {
                    assert!(s <= e);
                    assert!(s == 0 || s == e || text[s as usize - 1] == b'\n', "{tag}, {threads} threads: a part starts at {s}, inside a line");
                }
                let got = count_file_parallel(&path, (0, 1), threads, &mut || true).unwrap().expect("not stopped");
                assert_eq!(got.total_words, want.total_words, "{tag}, {threads} threads: tokens");
                assert_eq!(got.sentences, want.sentences, "{tag}, {threads} threads: sentences");
                assert_eq!(got.counts, want.counts, "{tag}, {threads} threads: counts");
            }
        }
    }

    /// A process's share of the file (`shard`: the tokens that start in its
    /// byte range, a line cut by the range's ends ending a sentence there),
    /// counted in parallel, gives what one reader of the share counts; the
    /// shares' tokens add up to the file's.
    #[test]
    fn parallel_shard_count_equals_one_pass() {
        for (tag, text) in [("shard", ragged_text(300, 11)), ("shard1", ragged_text(1, 12)), ("shardnl", b"\n\nx y\n\nz\n".to_vec())] {
            let path = corpus_file(tag, &text);
            let n = text.len() as u64;
            let whole = count_serially(&text);
            for world in 1..=4u64 {
                let mut sum = VocabCounter::new(None);
                for rank in 0..world {
                    let (lo, hi) = (n * rank / world, n * (rank + 1) / world);
                    // From the text itself: per line, its tokens that start in
                    // [lo, hi), cut into sentences of at most 10,000 tokens.
                    let mut want = VocabCounter::new(None);
                    let mut off = 0usize;
                    for line in text.split_inclusive(|&b| b == b'\n') {
                        let mut i = 0;
                        let mut taken = 0usize;
                        while i < line.len() {
                            if line[i].is_ascii_whitespace() {
                                i += 1;
                                continue;
                            }
                            let s = i;
                            while i < line.len() && !line[i].is_ascii_whitespace() {
                                i += 1;
                            }
                            if (lo..hi).contains(&((off + s) as u64)) {
                                want.add_token(std::str::from_utf8(&line[s..i]).unwrap());
                                taken += 1;
                                if taken.is_multiple_of(crate::corpus::MAX_SENTENCE_LEN) {
                                    want.end_sentence();
                                }
                            }
                        }
                        if !taken.is_multiple_of(crate::corpus::MAX_SENTENCE_LEN) {
                            want.end_sentence();
                        }
                        off += line.len();
                    }
                    let mut one = VocabCounter::new(None);
                    FileSplit::shard(&path, 1, rank, world)
                        .unwrap()
                        .for_worker(0, &mut Cursor::default(), |it| {
                            one.add_sentence_tokens(it);
                            true
                        })
                        .unwrap();
                    assert_eq!((one.total_words, one.sentences, &one.counts), (want.total_words, want.sentences, &want.counts), "{tag}: one reader of shard {rank}/{world}");
                    for threads in 1..=5 {
                        let got = count_file_parallel(&path, (rank, world), threads, &mut || true).unwrap().expect("not stopped");
                        let at = format!("{tag}, shard {rank}/{world}, {threads} threads");
                        assert_eq!(got.total_words, want.total_words, "{at}: tokens");
                        assert_eq!(got.sentences, want.sentences, "{at}: sentences");
                        assert_eq!(got.counts, want.counts, "{at}: counts");
                        if threads == 3 {
                            sum.absorb(got);
                        }
                    }
                }
                assert_eq!((sum.total_words, &sum.counts), (whole.total_words, &whole.counts), "{tag}: the {world} shards add up to the file");
            }
            let err = count_file_parallel(&path, (2, 2), 2, &mut || true).unwrap_err();
            assert!(err.to_string().contains("rank 2 is not below world size 2"), "{err}");
        }
    }

    /// A false `keep_going` stops every thread, and no count comes back.
    #[test]
    fn parallel_count_stops_when_told() {
        let path = corpus_file("stop", "a b c d\n".repeat(700_000).as_bytes());
        let mut calls = 0;
        let got = count_file_parallel(&path, (0, 1), 2, &mut || {
            calls += 1;
            false
        })
        .unwrap();
        assert!(got.is_none());
        assert_eq!(calls, 1, "asked about every million tokens of the first part, once here");
        let mut calls = 0;
        let got = count_file_parallel(&path, (0, 1), 2, &mut || {
            calls += 1;
            true
        })
        .unwrap()
        .unwrap();
        assert_eq!((got.total_words, got.sentences, calls), (2_800_000, 700_000, 1));
    }
}
