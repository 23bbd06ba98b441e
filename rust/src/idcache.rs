//! Vocabulary ids of a plain-text corpus kept between epochs.
//!
//! Every epoch of `corpus_file` training reads the same bytes and looks up
//! the same tokens again; that is about a tenth of CBOW's time. An `IdCache`
//! lives for one `train()` call: the first epoch records, per byte range a
//! worker reads, each sentence's in-vocabulary ids, its corpus word count and
//! the byte offset the reader reached after it; later epochs replay the
//! record instead of reading the file. The offsets are the ones the reader
//! itself reports, so a worker's cursor (what checkpoints store) moves exactly
//! as when it reads, and a stopped epoch continues at the same sentence.
//!
//! The records are capped in bytes: once the cap would be passed, ranges not
//! yet recorded are read from the file every epoch (what fits stays cached).
//! The cache is dropped when the vocabulary or a file changes.

use crate::vocab::Vocab;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One sentence of a record: the end of its ids in `Record::ids`, its corpus
/// words (out-of-vocabulary ones included) and the reader's byte offset after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sentence {
    end: usize,
    raw: u32,
    pos: u64,
}

const SENTENCE_BYTES: usize = std::mem::size_of::<Sentence>();

/// The sentences of the byte range `[start, end)` of one file, in order.
#[derive(Debug, Default)]
pub struct Record {
    start: u64,
    ids: Vec<u32>,
    sentences: Vec<Sentence>,
}

impl Record {
    fn bytes(&self) -> usize {
        self.ids.len() * 4 + self.sentences.len() * SENTENCE_BYTES
    }

    /// Call `f(ids, raw, pos)` for every sentence after the one that ended at
    /// byte `from` (from the first when `from` is the record's start); false
    /// when `from` is no sentence boundary of this record. Stops when `f`
    /// returns false.
    pub fn replay(&self, from: u64, mut f: impl FnMut(&[u32], u64, u64) -> bool) -> bool {
        let first = if from == self.start {
            0
        } else {
            match self.sentences.binary_search_by_key(&from, |s| s.pos) {
                Ok(k) => k + 1,
                Err(_) => return false,
            }
        };
        let mut begin = if first == 0 { 0 } else { self.sentences[first - 1].end };
        for s in &self.sentences[first..] {
            if !f(&self.ids[begin..s.end], s.raw as u64, s.pos) {
                break;
            }
            begin = s.end;
        }
        true
    }
}

/// What the records were made from: the vocabulary (by identity) and each
/// file's length and modification time.
#[derive(Default)]
struct Origin {
    vocab: Option<Arc<Vocab>>,
    files: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

/// Records of byte ranges, keyed by file and range end (a resumed epoch's
/// range ends where the full one does: its record replaces the other).
pub struct IdCache {
    cap: usize,
    used: AtomicUsize,
    /// Set once a record did not fit: no more recording this run.
    full: AtomicBool,
    records: Mutex<HashMap<(PathBuf, u64), Arc<Record>>>,
    origin: Mutex<Origin>,
}

impl IdCache {
    /// A cache holding at most `cap` bytes of records (0: never records).
    pub fn new(cap: usize) -> Self {
        IdCache {
            cap,
            used: AtomicUsize::new(0),
            full: AtomicBool::new(cap == 0),
            records: Mutex::new(HashMap::new()),
            origin: Mutex::new(Origin::default()),
        }
    }

    /// Bytes the records hold now.
    pub fn bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Ranges recorded.
    pub fn len(&self) -> usize {
        self.lock_records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock_records(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, u64), Arc<Record>>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before an epoch over `paths` with `vocab`: forget every record if the
    /// vocabulary is another or a file changed since it was recorded.
    pub fn check(&self, vocab: &Arc<Vocab>, paths: &[&Path]) {
        let mut origin = self.origin.lock().unwrap_or_else(|p| p.into_inner());
        let now: Vec<_> =
            paths.iter().map(|&p| (p, std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok())))).collect();
        let stale = origin.vocab.as_ref().is_some_and(|v| !Arc::ptr_eq(v, vocab))
            || now.iter().any(|(p, now)| match (origin.files.get(*p), now) {
                (Some(was), Some(now)) => was != now,
                (None, Some(_)) => false,
                (_, None) => true,
            });
        if stale {
            self.lock_records().clear();
            self.used.store(0, Ordering::Relaxed);
            self.full.store(self.cap == 0, Ordering::Relaxed);
            origin.files.clear();
        }
        // What the records now come from (a file seen for the first time included).
        for (p, now) in now {
            if let Some(now) = now {
                origin.files.insert(p.to_path_buf(), now);
            }
        }
        origin.vocab = Some(vocab.clone());
    }

    /// The record of `path`'s range `[start, end)`, if `start` is its start or one of its sentence boundaries.
    pub fn get(&self, path: &Path, start: u64, end: u64) -> Option<Arc<Record>> {
        let rec = self.lock_records().get(&(path.to_path_buf(), end))?.clone();
        let inside = rec.start == start || rec.sentences.binary_search_by_key(&start, |s| s.pos).is_ok();
        inside.then_some(rec)
    }

    /// Start recording a range `[start, end)` (None when the cache is full).
    pub fn recorder(&self, start: u64, end: u64) -> Option<Recorder<'_>> {
        if self.full.load(Ordering::Relaxed) {
            return None;
        }
        // A word takes at least two bytes (itself and a space): room for the
        // most ids the range can hold (within the cap, and at most 64 MiB)
        // up front, so the vector is not copied to grow; pages it does not
        // fill are never touched, and `finish` gives them back.
        let most = (end.saturating_sub(start) / 2 + 1).min((self.cap / 4) as u64).min(1 << 24) as usize;
        let rec = Record { start, ids: Vec::with_capacity(most), sentences: Vec::new() };
        Some(Recorder { cache: self, rec: Some(rec), reserved: 0 })
    }

    /// Take `n` more bytes from the cap; false (and the cache is full) when they do not fit.
    fn reserve(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.cap {
            self.used.fetch_sub(n, Ordering::Relaxed);
            self.full.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A record being made while a worker reads a range; dropped unfinished
/// (a stopped epoch, or past the cap) it gives its bytes back.
pub struct Recorder<'a> {
    cache: &'a IdCache,
    rec: Option<Record>,
    reserved: usize,
}

impl Recorder<'_> {
    /// Add the next sentence read (its ids, corpus words and the reader's offset after it).
    pub fn push(&mut self, ids: &[u32], raw: u64, pos: u64) {
        let Some(rec) = self.rec.as_mut() else { return };
        let need = rec.bytes() + ids.len() * 4 + SENTENCE_BYTES;
        // Reserve ahead, doubling, so that the shared counter is touched rarely.
        if need > self.reserved {
            let more = need.max(2 * self.reserved).max(1 << 16) - self.reserved;
            if !self.cache.reserve(more) {
                self.rec = None;
                self.cache.release(std::mem::take(&mut self.reserved));
                return;
            }
            self.reserved += more;
        }
        rec.ids.extend_from_slice(ids);
        rec.sentences.push(Sentence { end: rec.ids.len(), raw: raw as u32, pos });
    }

    /// The range was read to its `end`: keep the record (replacing one with the same end).
    pub fn finish(mut self, path: &Path, end: u64) {
        let Some(mut rec) = self.rec.take() else { return };
        rec.ids.shrink_to_fit();
        rec.sentences.shrink_to_fit();
        let reserved = std::mem::take(&mut self.reserved);
        self.cache.release(reserved - rec.bytes().min(reserved));
        let old = self.cache.lock_records().insert((path.to_path_buf(), end), Arc::new(rec));
        if let Some(old) = old {
            self.cache.release(old.bytes());
        }
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.cache.release(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cache: &IdCache, path: &Path, start: u64, sentences: &[(&[u32], u64, u64)], end: u64) {
        let mut r = cache.recorder(start, end).expect("room");
        for &(ids, raw, pos) in sentences {
            r.push(ids, raw, pos);
        }
        r.finish(path, end);
    }

    fn replayed(rec: &Record, from: u64) -> Option<Vec<(Vec<u32>, u64, u64)>> {
        let mut out = Vec::new();
        rec.replay(from, |ids, raw, pos| {
            out.push((ids.to_vec(), raw, pos));
            true
        })
        .then_some(out)
    }

    #[test]
    fn a_record_replays_from_its_start_or_any_sentence_boundary() {
        let cache = IdCache::new(1 << 20);
        let p = Path::new("/nonexistent/c.txt");
        record(&cache, p, 10, &[(&[1, 2], 3, 20), (&[], 2, 25), (&[7], 1, 30)], 40);
        let rec = cache.get(p, 10, 40).unwrap();
        let all = replayed(&rec, 10).unwrap();
        assert_eq!(all, vec![(vec![1, 2], 3, 20), (vec![], 2, 25), (vec![7], 1, 30)]);
        assert_eq!(replayed(&rec, 25).unwrap(), all[2..].to_vec());
        assert_eq!(replayed(&rec, 30).unwrap(), vec![]);
        assert!(replayed(&rec, 22).is_none());
        assert!(cache.get(p, 22, 40).is_none() && cache.get(p, 10, 41).is_none());
        assert!(cache.get(p, 20, 40).is_some());
        assert_eq!(cache.bytes(), rec.bytes());
    }

    #[test]
    fn the_cap_is_kept_and_unfinished_records_give_their_bytes_back() {
        let p = Path::new("/nonexistent/c.txt");
        let cache = IdCache::new(200_000);
        let ids: Vec<u32> = (0..10_000).collect();
        // 4 x 40 kB fits, the fifth range does not: it is not kept, nor is any range after it.
        for k in 0..6u64 {
            if let Some(mut r) = cache.recorder(k * 100, k * 100 + 100) {
                r.push(&ids, 10_000, k * 100 + 50);
                r.finish(p, k * 100 + 100);
            }
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.bytes() <= 200_000);
        assert!(cache.recorder(0, 100).is_none());
        // A record dropped unfinished (a stopped epoch) returns what it reserved.
        let cache = IdCache::new(1 << 20);
        {
            let mut r = cache.recorder(0, 100).unwrap();
            r.push(&ids, 10_000, 50);
        }
        assert_eq!((cache.bytes(), cache.len()), (0, 0));
        // A range recorded again (same end) replaces the old record.
        record(&cache, p, 0, &[(&ids, 10_000, 50)], 100);
        let once = cache.bytes();
        record(&cache, p, 0, &[(&ids, 10_000, 50)], 100);
        assert_eq!((cache.bytes(), cache.len()), (once, 1));
    }

    #[test]
    fn another_vocabulary_or_a_changed_file_empties_the_cache() {
        use crate::vocab::VocabSettings;
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
        let v1 = Arc::new(Vocab::from_sorted(vec![("a".into(), 3)], &s));
        let v2 = Arc::new(Vocab::from_sorted(vec![("a".into(), 3)], &s));
        let dir = std::env::temp_dir().join(format!("bidirmoe-idcache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.txt");
        std::fs::write(&p, "a a a\n").unwrap();
        let cache = IdCache::new(1 << 20);
        cache.check(&v1, &[&p]);
        record(&cache, &p, 0, &[(&[0, 0, 0], 3, 6)], 6);
        cache.check(&v1, &[&p]);
        assert_eq!(cache.len(), 1);
        cache.check(&v2, &[&p]);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        record(&cache, &p, 0, &[(&[0, 0, 0], 3, 6)], 6);
        std::fs::write(&p, "a a a a\n").unwrap();
        cache.check(&v2, &[&p]);
        assert_eq!(cache.len(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
