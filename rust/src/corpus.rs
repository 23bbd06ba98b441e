//! Corpus files: plain or gzip text, tokens separated by ASCII whitespace,
//! one sentence per line. Lines of any length are cut into chunks of at most
//! `MAX_SENTENCE_LEN` tokens, so a file that is one huge line (text8) trains
//! like the same words in short lines. Invalid UTF-8 is replaced (U+FFFD),
//! never fatal.
//!
//! Plain files are split into byte ranges, one per worker; a token belongs to
//! the range its first byte lies in. Training balances them
//! (`FileSplit::balanced`): with several workers the ranges are cut into
//! chunks that the workers take in file order from one queue, so a worker
//! that runs faster (or gets more of the CPU) reads more, and all finish
//! together. Gzip streams cannot be split, so workers take turns pulling
//! whitespace-aligned blocks from one shared decoder.

use crate::idcache::IdCache;
use crate::vocab::Vocab;
use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Longest sentence handed to a model; longer lines are cut (gensim's and
/// word2vec's MAX_SENTENCE_LEN is 10,000 / 1,000; we chunk rather than truncate).
pub const MAX_SENTENCE_LEN: usize = 10_000;

const BLOCK: usize = 1 << 20;
/// How far past a gzip block's end to look for the end of its line.
const LINE_SLACK: usize = 1 << 16;
/// A balanced split (`FileSplit::balanced`) cuts a file into about this
/// many chunks per worker, of `CHUNK_MIN` to `CHUNK_MAX` bytes: enough that
/// the last chunk taken is a small part of any worker's share, few enough
/// that each chunk is a long sequential read and cuts few sentences.
const CHUNKS_PER_WORKER: u64 = 32;
const CHUNK_MIN: u64 = 64 << 10;
const CHUNK_MAX: u64 = 16 << 20;

#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Token bytes as text, replacing invalid UTF-8 (no copy when valid).
#[inline]
pub fn token_str(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Splits a byte stream into sentences of tokens.
///
/// Reads from `reader`, whose first byte sits at absolute offset `start`, and
/// stops before the first token that starts at or after `end`. If `start > 0`
/// and `prev_is_space` is false, the partial token at the start belongs to the
/// previous range and is skipped.
pub struct SentenceReader<R: BufRead> {
    reader: R,
    pos: u64,
    end: u64,
    skip_partial: bool,
    tok: Vec<u8>,
    /// Token bytes of the current sentence, and their spans.
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
    finished: bool,
}

impl<R: BufRead> SentenceReader<R> {
    pub fn new(reader: R, start: u64, end: u64, prev_is_space: bool) -> Self {
        SentenceReader {
            reader,
            pos: start,
            end,
            skip_partial: start > 0 && !prev_is_space,
            tok: Vec::with_capacity(64),
            buf: Vec::with_capacity(1 << 16),
            spans: Vec::with_capacity(MAX_SENTENCE_LEN),
            finished: false,
        }
    }

    /// Whole stream.
    pub fn whole(reader: R) -> Self {
        Self::new(reader, 0, u64::MAX, true)
    }

    /// Byte offset reached (absolute).
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn push_token(tok: &mut Vec<u8>, buf: &mut Vec<u8>, spans: &mut Vec<(u32, u32)>) {
        let s = buf.len() as u32;
        buf.extend_from_slice(tok);
        spans.push((s, buf.len() as u32));
        tok.clear();
    }

    /// Calls `f` with the tokens of the next sentence (possibly empty for a
    /// blank line). Returns Ok(false) at the end of the range.
    pub fn next_sentence<F: FnMut(&mut dyn Iterator<Item = &[u8]>)>(&mut self, mut f: F) -> io::Result<bool> {
        if self.finished {
            return Ok(false);
        }
        self.buf.clear();
        self.spans.clear();
        let mut tok_start = self.pos; // absolute offset of the token being read
        loop {
            let (tok, buf, spans) = (&mut self.tok, &mut self.buf, &mut self.spans);
            let avail = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                // EOF
                if !self.tok.is_empty() && !self.skip_partial {
                    if tok_start < self.end {
                        Self::push_token(&mut self.tok, &mut self.buf, &mut self.spans);
                    }
                }
                self.tok.clear();
                self.finished = true;
                break;
            }
            let mut consumed = 0;
            let mut sentence_done = false;
            for &b in avail {
                consumed += 1;
                if is_space(b) {
                    if self.skip_partial {
                        self.skip_partial = false;
                        tok.clear();
                    } else if !tok.is_empty() {
                        if tok_start >= self.end {
                            tok.clear();
                            self.finished = true;
                            sentence_done = true;
                            break;
                        }
                        Self::push_token(tok, buf, spans);
                    }
                    if b == b'\n' || spans.len() >= MAX_SENTENCE_LEN {
                        sentence_done = true;
                        break;
                    }
                    // Past the end and between tokens: no token can start here for us.
                    if self.pos + consumed as u64 > self.end {
                        self.finished = true;
                        sentence_done = true;
                        break;
                    }
                } else {
                    if tok.is_empty() {
                        tok_start = self.pos + consumed as u64 - 1;
                    }
                    tok.push(b);
                }
            }
            self.pos += consumed as u64;
            self.reader.consume(consumed);
            if sentence_done {
                break;
            }
        }
        let buf = &self.buf;
        let mut it = self.spans.iter().map(|&(s, e)| &buf[s as usize..e as usize]);
        f(&mut it);
        Ok(true)
    }
}

/// A reader of the byte range `[start, end)` of the plain file `path`.
fn open_range(path: &Path, start: u64, end: u64) -> io::Result<SentenceReader<BufReader<File>>> {
    let mut file = File::open(path)?;
    let mut prev_is_space = true;
    if start > 0 {
        file.seek(SeekFrom::Start(start - 1))?;
        let mut b = [0u8; 1];
        file.read_exact(&mut b)?;
        prev_is_space = is_space(b[0]);
    }
    Ok(SentenceReader::new(BufReader::with_capacity(BLOCK, file), start, end, prev_is_space))
}

/// The in-vocabulary ids of a sentence's tokens into `ids` (cleared first);
/// returns the number of tokens.
fn ids_of(vocab: &Vocab, it: &mut dyn Iterator<Item = &[u8]>, ids: &mut Vec<u32>) -> u64 {
    ids.clear();
    let mut raw = 0;
    for t in it {
        raw += 1;
        if let Some(id) = vocab.tokens.get(t) {
            ids.push(id);
        }
    }
    raw
}

/// Is this a gzip file (by magic bytes, not the name)?
pub fn is_gzip(path: &Path) -> io::Result<bool> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// "bzip2" or "xz" if the file starts with that format's magic bytes (not read here).
pub fn unsupported_compression(path: &Path) -> io::Result<Option<&'static str>> {
    let mut f = File::open(path)?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic)?;
    Ok(if n >= 3 && &magic[..3] == b"BZh" {
        Some("bzip2")
    } else if n == 6 && magic == *b"\xfd7zXZ\x00" {
        Some("xz")
    } else {
        None
    })
}

/// Open a plain or gzip file for sequential reading.
pub fn open_stream(path: &Path) -> io::Result<Box<dyn BufRead + Send>> {
    let gz = is_gzip(path)?;
    let f = File::open(path)?;
    if gz {
        Ok(Box::new(BufReader::with_capacity(BLOCK, MultiGzDecoder::new(BufReader::with_capacity(BLOCK, f)))))
    } else {
        Ok(Box::new(BufReader::with_capacity(BLOCK, f)))
    }
}

/// Call `f` on every sentence of the whole file.
pub fn for_each_sentence<F: FnMut(&mut dyn Iterator<Item = &[u8]>)>(path: &Path, mut f: F) -> io::Result<()> {
    let mut r = SentenceReader::whole(open_stream(path)?);
    while r.next_sentence(&mut f)? {}
    Ok(())
}

/// The byte ranges one worker still has to read in the current epoch, first
/// one first: absolute offsets in a plain file, or in the decompressed stream
/// of a gzip file. The first range's start moves past every sentence the
/// worker has handed over, so a stopped epoch can continue exactly there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub pending: Vec<(u64, u64)>,
    /// Of a split into pieces (`FileSplit::Pieces`): the piece being read
    /// (the worker is done with the ones before it).
    pub piece: usize,
}

impl Cursor {
    fn advance(&mut self, to: u64) {
        if let Some(first) = self.pending.first_mut() {
            first.0 = to;
        }
    }

    fn finish_first(&mut self) {
        if !self.pending.is_empty() {
            self.pending.remove(0);
        }
    }
}

/// Where a stopped epoch got to: what every worker had still to read and,
/// for gzip, the first decompressed byte no worker had taken yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitState {
    pub gzip: bool,
    /// Size of the file on disk (compressed size for gzip), to refuse a
    /// resume on a file that changed.
    pub file_len: u64,
    pub stream_offset: u64,
    /// Gzip: blocks the decoder has handed out (how blocks are dealt to processes).
    pub blocks: u64,
    pub workers: Vec<Vec<(u64, u64)>>,
    /// Gzip: the decoder has reached the end of the stream.
    pub ended: bool,
    /// Of a split into pieces: each piece's state, in order (then `workers`
    /// is only every worker's ranges of all pieces together, for a look).
    pub pieces: Vec<SplitState>,
}

/// One part of a corpus of several files: a byte range of a plain file
/// (cut between tokens), or a whole file (plain or gzip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Range(std::path::PathBuf, u64, u64),
    Whole(std::path::PathBuf),
}

impl Piece {
    pub fn path(&self) -> &Path {
        match self {
            Piece::Range(p, ..) | Piece::Whole(p) => p,
        }
    }
}

/// A gzip decoder shared by the workers, and how many decompressed bytes it
/// has handed out.
pub struct SharedStream {
    reader: Option<Box<dyn BufRead + Send>>,
    offset: u64,
    /// Blocks cut so far; block k belongs to process `k % deal.1 == deal.0`
    /// (one process: (0, 1), every block).
    blocks: u64,
    deal: (u64, u64),
}

/// Byte ranges of a plain file that any worker may take, in order: each
/// is handed out once (`take`).
#[derive(Debug, Default)]
pub struct ChunkQueue {
    chunks: Vec<(u64, u64)>,
    next: AtomicUsize,
}

impl ChunkQueue {
    /// The next chunk no worker has taken yet.
    fn take(&self) -> Option<(u64, u64)> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        self.chunks.get(k).copied()
    }

    /// The chunks no worker has taken.
    fn untaken(&self) -> &[(u64, u64)] {
        &self.chunks[self.next.load(Ordering::Relaxed).min(self.chunks.len())..]
    }
}

/// The ranges `ranges` (sorted by start) of the plain file `path` cut into
/// chunks for `workers` workers (see `CHUNKS_PER_WORKER`), every byte in
/// exactly one chunk. Each cut inside a range moves to the start of the
/// next line when one starts within half a chunk (and `LINE_SLACK` bytes),
/// so chunks split no line of an ordinary corpus; otherwise (a file that
/// is one long line, or a read error) it stays, between two tokens or
/// inside one, which the reader handles as any range's ends.
fn chunks_of(path: &Path, ranges: &[(u64, u64)], workers: usize) -> Vec<(u64, u64)> {
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let size = (total / (CHUNKS_PER_WORKER * workers as u64)).clamp(CHUNK_MIN, CHUNK_MAX);
    let slack = (size / 2).min(LINE_SLACK as u64);
    let mut file = File::open(path).ok().map(BufReader::new);
    // The first line start in [at, at + slack], if the file can tell.
    let mut line_start = |at: u64| file.as_mut().and_then(|f| first_line_start(f, at, at + slack + 1).ok().flatten());
    let mut out = Vec::new();
    for &(mut s, e) in ranges {
        while s < e {
            // no chunk smaller than half a chunk at a range's end
            let mut cut = if e - s < size + size / 2 { e } else { s + size };
            if cut < e {
                cut = line_start(cut).unwrap_or(cut);
            }
            out.push((s, cut));
            s = cut;
        }
    }
    out
}

/// Process `rank`'s share of a plain file of `file_len` bytes split between
/// `world` processes: the byte range [rank / world, (rank + 1) / world) of it.
fn shard_bytes(file_len: u64, rank: u64, world: u64) -> io::Result<(u64, u64)> {
    let world = world.max(1);
    if rank >= world {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("rank {rank} is not below world size {world}")));
    }
    Ok((file_len * rank / world, file_len * (rank + 1) / world))
}

/// The first line start in `[from, to)` of `file` (`from` >= 1: a line
/// starts at `from` when the byte before it ends a line), if any.
fn first_line_start(file: &mut BufReader<File>, from: u64, to: u64) -> io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(from - 1))?;
    let mut at = from - 1; // the offset of the buffer's first byte
    while at + 1 < to {
        let buf = file.fill_buf()?;
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min((to - 1 - at) as usize);
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(at + i as u64 + 1));
        }
        file.consume(n);
        at += n as u64;
    }
    Ok(None)
}

/// How workers share one corpus file during an epoch.
pub enum FileSplit {
    /// Plain file: worker i reads its byte ranges `parts[i]` in order, then
    /// takes chunks from `queue` until none is left (a balanced split; an
    /// unbalanced one has an empty queue).
    Ranges { path: std::path::PathBuf, file_len: u64, parts: Vec<Vec<(u64, u64)>>, queue: ChunkQueue },
    /// Gzip: workers first finish their `fragments` (what a stopped epoch
    /// left of its blocks: absolute start and bytes), then pull
    /// whitespace-aligned blocks from one decoder.
    Shared { file_len: u64, stream: Mutex<SharedStream>, fragments: Vec<Vec<(u64, Vec<u8>)>> },
    /// Several pieces (`Piece`) read one after another: every worker reads
    /// its share of a piece (as above), then goes on to the next piece.
    Pieces { parts: Vec<FileSplit> },
}

/// Cut the ranges `pending` (in order) into `parts` lists of about equal
/// bytes. A cut may fall inside a token: a token belongs to the range its
/// first byte lies in, so every token is still read exactly once.
fn redistribute(pending: &[(u64, u64)], parts: usize) -> Vec<Vec<(u64, u64)>> {
    let ranges: Vec<(u64, u64)> = pending.iter().copied().filter(|(s, e)| s < e).collect();
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    let parts = parts.max(1);
    let mut out = vec![Vec::new(); parts];
    let (mut k, mut done) = (0usize, 0u64);
    for (mut s, e) in ranges {
        while s < e {
            // Bytes still owed to part k before the next part starts.
            let quota = (total * (k as u64 + 1) / parts as u64).saturating_sub(done);
            if quota == 0 && k + 1 < parts {
                k += 1;
                continue;
            }
            let take = if k + 1 == parts { e - s } else { quota.min(e - s) };
            out[k].push((s, s + take));
            s += take;
            done += take;
        }
    }
    out
}

impl FileSplit {
    pub fn new(path: &Path, workers: usize) -> io::Result<FileSplit> {
        Self::shard(path, workers, 0, 1)
    }

    /// Process `rank` of `world`'s share of the file, split between its
    /// `workers`: a plain file's `rank`-th byte range of `world` equal ones,
    /// or every `world`-th block of a gzip stream (starting with block
    /// `rank`; a gzip stream cannot be entered in the middle, so each
    /// process decodes it all but reads only its blocks).
    pub fn shard(path: &Path, workers: usize, rank: u64, world: u64) -> io::Result<FileSplit> {
        let file_len = std::fs::metadata(path)?.len();
        let share = shard_bytes(file_len, rank, world)?;
        if is_gzip(path)? {
            let stream = SharedStream { reader: Some(open_stream(path)?), offset: 0, blocks: 0, deal: (rank, world) };
            return Ok(FileSplit::Shared { file_len, stream: Mutex::new(stream), fragments: vec![Vec::new(); workers.max(1)] });
        }
        Ok(FileSplit::Ranges { path: path.to_path_buf(), file_len, parts: redistribute(&[share], workers), queue: ChunkQueue::default() })
    }

    /// Continue a stopped epoch: every worker reads what `state` says was
    /// left (its own ranges if the worker count is unchanged, otherwise the
    /// remaining bytes cut evenly), then, for gzip, the rest of the stream.
    pub fn resume(path: &Path, workers: usize, state: &SplitState) -> io::Result<FileSplit> {
        Self::resume_shard(path, workers, state, (0, 1))
    }

    /// `resume` for process `deal.0` of `deal.1` (see `shard`): `state` is
    /// what this process had left.
    pub fn resume_shard(path: &Path, workers: usize, state: &SplitState, deal: (u64, u64)) -> io::Result<FileSplit> {
        let workers = workers.max(1);
        let file_len = std::fs::metadata(path)?.len();
        let gzip = is_gzip(path)?;
        if gzip != state.gzip || file_len != state.file_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the corpus file is not the one the checkpoint was taken on ({} bytes{}, checkpoint: {} bytes{})",
                    file_len,
                    if gzip { ", gzip" } else { "" },
                    state.file_len,
                    if state.gzip { ", gzip" } else { "" }
                ),
            ));
        }
        let all: Vec<(u64, u64)> = state.workers.iter().flatten().copied().filter(|(s, e)| s < e).collect();
        let parts = if state.workers.len() == workers {
            state.workers.clone()
        } else if gzip {
            // Fragments are read as whole blocks: hand them out whole.
            let mut parts = vec![Vec::new(); workers];
            for (k, &r) in all.iter().enumerate() {
                parts[k % workers].push(r);
            }
            parts
        } else {
            redistribute(&all, workers)
        };
        if !gzip {
            if all.iter().any(|&(_, e)| e > file_len) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "checkpoint ranges lie past the end of the corpus file"));
            }
            return Ok(FileSplit::Ranges { path: path.to_path_buf(), file_len, parts, queue: ChunkQueue::default() });
        }
        // Gzip: decode up to the stream offset, keeping the bytes of the
        // unfinished fragments (they all lie before it).
        let mut wanted: Vec<(u64, u64)> = all.clone();
        wanted.sort_unstable();
        let mut reader = open_stream(path)?;
        let mut got: Vec<(u64, Vec<u8>)> = Vec::with_capacity(wanted.len());
        let mut pos = 0u64;
        for &(s, e) in &wanted {
            if e > state.stream_offset || s < pos {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "inconsistent gzip checkpoint ranges"));
            }
            io::copy(&mut reader.by_ref().take(s - pos), &mut io::sink())?;
            let mut bytes = Vec::with_capacity((e - s) as usize);
            reader.by_ref().take(e - s).read_to_end(&mut bytes)?;
            if bytes.len() as u64 != e - s {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the gzip stream ends before the checkpoint's position"));
            }
            got.push((s, bytes));
            pos = e;
        }
        let skipped = io::copy(&mut reader.by_ref().take(state.stream_offset - pos), &mut io::sink())?;
        if skipped != state.stream_offset - pos {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the gzip stream ends before the checkpoint's position"));
        }
        let mut fragments: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); workers];
        for (i, part) in parts.iter().enumerate() {
            for &(s, e) in part {
                if s >= e {
                    continue;
                }
                let k = got.iter().position(|(fs, _)| *fs == s).expect("every range was decoded");
                fragments[i].push(std::mem::take(&mut got[k]));
            }
        }
        let stream = SharedStream { reader: Some(reader), offset: state.stream_offset, blocks: state.blocks, deal };
        Ok(FileSplit::Shared { file_len, stream: Mutex::new(stream), fragments })
    }

    /// The state to continue from, given every worker's cursor at the stop.
    pub fn state(&self, cursors: &[Cursor]) -> SplitState {
        let mut workers: Vec<Vec<(u64, u64)>> = cursors.iter().map(|c| c.pending.iter().copied().filter(|(s, e)| s < e).collect()).collect();
        match self {
            FileSplit::Ranges { file_len, queue, .. } => {
                // The chunks no worker took are still owed: dealt in turn
                // after every worker's own ranges.
                if !workers.is_empty() {
                    let n = workers.len();
                    for (k, &c) in queue.untaken().iter().enumerate() {
                        workers[k % n].push(c);
                    }
                }
                SplitState { gzip: false, file_len: *file_len, workers, ..SplitState::default() }
            }
            FileSplit::Shared { file_len, stream, .. } => {
                let st = stream.lock().unwrap_or_else(|p| p.into_inner());
                SplitState {
                    gzip: true,
                    file_len: *file_len,
                    stream_offset: st.offset,
                    blocks: st.blocks,
                    workers,
                    ended: st.reader.is_none(),
                    pieces: Vec::new(),
                }
            }
            FileSplit::Pieces { parts } => {
                // A worker is done with the pieces before its cursor's and
                // has not begun those after it (it still owes its share).
                let pieces: Vec<SplitState> = parts
                    .iter()
                    .enumerate()
                    .map(|(q, part)| {
                        let at: Vec<Cursor> = cursors
                            .iter()
                            .enumerate()
                            .map(|(i, c)| match q.cmp(&c.piece) {
                                std::cmp::Ordering::Less => Cursor::default(),
                                std::cmp::Ordering::Equal => c.clone(),
                                std::cmp::Ordering::Greater => Cursor { pending: part.share_of(i), piece: 0 },
                            })
                            .collect();
                        part.state(&at)
                    })
                    .collect();
                let workers = (0..cursors.len())
                    .map(|i| pieces.iter().flat_map(|p| p.workers.get(i).cloned().unwrap_or_default()).collect())
                    .collect();
                SplitState { workers, pieces, ..SplitState::default() }
            }
        }
    }

    /// The plain files this split reads by byte range.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            FileSplit::Ranges { path, .. } => vec![path],
            FileSplit::Shared { .. } => Vec::new(),
            FileSplit::Pieces { parts } => parts.iter().flat_map(|p| p.paths()).collect(),
        }
    }

    /// This split balanced between its workers: with two or more, every
    /// worker's byte ranges of a plain file (of each plain piece) go, cut
    /// into chunks (about `CHUNKS_PER_WORKER` per worker), into one queue
    /// that the workers take from in file order, so the one that runs
    /// fastest reads the most and all finish within about a chunk of each
    /// other. One worker keeps its ranges as they are (the same sentences,
    /// in the same order); gzip streams are shared block by block already.
    pub fn balanced(self) -> Self {
        match self {
            FileSplit::Ranges { path, file_len, parts, queue } if parts.len() >= 2 => {
                let mut all: Vec<(u64, u64)> = parts.iter().flatten().chain(queue.untaken()).copied().filter(|(s, e)| s < e).collect();
                all.sort_unstable();
                // adjacent ranges (the workers' shares of a fresh split) as one
                let mut joined: Vec<(u64, u64)> = Vec::with_capacity(all.len());
                for (s, e) in all {
                    match joined.last_mut() {
                        Some(last) if last.1 == s => last.1 = e,
                        _ => joined.push((s, e)),
                    }
                }
                let all = joined;
                let queue = ChunkQueue { chunks: chunks_of(&path, &all, parts.len()), next: AtomicUsize::new(0) };
                FileSplit::Ranges { path, file_len, parts: vec![Vec::new(); parts.len()], queue }
            }
            FileSplit::Pieces { parts } => FileSplit::Pieces { parts: parts.into_iter().map(FileSplit::balanced).collect() },
            other => other,
        }
    }

    /// What worker `i` reads of a split it has not begun.
    fn share_of(&self, i: usize) -> Vec<(u64, u64)> {
        match self {
            FileSplit::Ranges { parts, .. } => parts.get(i).cloned().unwrap_or_default(),
            FileSplit::Shared { fragments, .. } => {
                fragments.get(i).map(|v| v.iter().map(|(s, b)| (*s, s + b.len() as u64)).collect()).unwrap_or_default()
            }
            FileSplit::Pieces { .. } => Vec::new(),
        }
    }

    /// The plain file `path` in `workers` ranges that start and end at line
    /// starts, one per worker (no queue): the k-th cut is the first line
    /// start at or after k / `workers` of the file. A range a line runs
    /// across is empty (a file of one line is one worker's). Each worker
    /// then reads whole lines, cut into sentences exactly as one pass over
    /// the file cuts them, which counting the vocabulary in parallel needs
    /// (`vocab::count_file_parallel`); training uses `new` / `balanced`.
    pub fn at_line_starts(path: &Path, workers: usize) -> io::Result<FileSplit> {
        Self::shard_at_line_starts(path, workers, 0, 1)
    }

    /// `at_line_starts` within process `rank`'s share of the file (`shard`,
    /// plain files): the first range starts where the share starts, the
    /// last ends where it ends, and the cuts between them are line starts,
    /// so the workers read together exactly the lines one reader of the
    /// share reads.
    pub fn shard_at_line_starts(path: &Path, workers: usize, rank: u64, world: u64) -> io::Result<FileSplit> {
        let workers = workers.max(1) as u64;
        let file_len = std::fs::metadata(path)?.len();
        let (lo, hi) = shard_bytes(file_len, rank, world)?;
        let mut file = BufReader::with_capacity(1 << 16, File::open(path)?);
        // From the last cut back: the first line start in the k-th of
        // `workers` even slices of the share, else the next cut's (so every
        // byte is searched once).
        let mut cuts = vec![hi; workers as usize + 1];
        cuts[0] = lo;
        for k in (1..workers).rev() {
            let (from, to) = (lo + (hi - lo) * k / workers, lo + (hi - lo) * (k + 1) / workers);
            let next = cuts[k as usize + 1];
            cuts[k as usize] = if from == 0 { 0 } else { first_line_start(&mut file, from, to)?.unwrap_or(next) };
        }
        let parts = cuts.windows(2).map(|c| vec![(c[0], c[1].max(c[0]))]).collect();
        Ok(FileSplit::Ranges { path: path.to_path_buf(), file_len, parts, queue: ChunkQueue::default() })
    }

    /// Several pieces (files or byte ranges of plain files, see `Piece`),
    /// read in order, each split between `workers` as a file is
    /// (`FileSplit::new`; a range piece: its own bytes only).
    pub fn pieces(pieces: &[Piece], workers: usize) -> io::Result<FileSplit> {
        let parts = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Whole(path) => Self::new(path, workers),
                Piece::Range(path, start, end) => {
                    let file_len = std::fs::metadata(path)?.len();
                    if is_gzip(path)? {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a gzip file cannot be read from a byte range: give it whole",
                        ));
                    }
                    if start > end || *end > file_len {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("byte range [{start}, {end}) does not lie in the file ({file_len} bytes)"),
                        ));
                    }
                    Ok(FileSplit::Ranges {
                        path: path.clone(),
                        file_len,
                        parts: redistribute(&[(*start, *end)], workers),
                        queue: ChunkQueue::default(),
                    })
                }
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FileSplit::Pieces { parts })
    }

    /// Continue a stopped epoch over `pieces` (`pieces`): each piece as
    /// `resume` continues a file, from its part of `state`; a piece every
    /// worker had finished is not read again.
    pub fn resume_pieces(pieces: &[Piece], workers: usize, state: &SplitState) -> io::Result<FileSplit> {
        if state.pieces.len() != pieces.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the checkpoint was taken on {} piece(s) of the corpus, not {} (another corpus, or another number of processes)",
                    state.pieces.len(),
                    pieces.len()
                ),
            ));
        }
        let parts = pieces
            .iter()
            .zip(&state.pieces)
            .map(|(piece, st)| {
                let done = st.workers.iter().all(|w| w.iter().all(|(s, e)| s >= e)) && (!st.gzip || st.ended);
                if !done {
                    return Self::resume(piece.path(), workers, st);
                }
                // Nothing of it is left (a gzip stream is not decoded again),
                // but it must still be the file the checkpoint was taken on.
                let path = piece.path();
                let file_len = std::fs::metadata(path)?.len();
                if file_len != st.file_len || is_gzip(path)? != st.gzip {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not the file the checkpoint was taken on", path.display()),
                    ));
                }
                Ok(FileSplit::Ranges { path: path.to_path_buf(), file_len, parts: Vec::new(), queue: ChunkQueue::default() })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FileSplit::Pieces { parts })
    }

    /// Run `f` on every sentence assigned to worker `i`, keeping `cursor` at
    /// the first byte not yet handed to `f`. `f` returns false to stop early.
    pub fn for_worker<F: FnMut(&mut dyn Iterator<Item = &[u8]>) -> bool>(
        &self,
        i: usize,
        cursor: &mut Cursor,
        mut f: F,
    ) -> io::Result<()> {
        let stopped = std::cell::Cell::new(false);
        let mut g = |it: &mut dyn Iterator<Item = &[u8]>| {
            let go = f(it);
            stopped.set(!go);
            go
        };
        self.for_each_part(cursor, |part, cursor| {
            part.for_worker_in(i, cursor, &mut g)?;
            Ok(!stopped.get())
        })
    }

    /// `for_worker` handing `f` each sentence as its in-vocabulary ids and
    /// its corpus words. With a `cache`, the ranges of plain files are
    /// replayed from its records where it has them, else read and recorded.
    pub fn for_worker_ids<F: FnMut(&[u32], u64) -> bool>(
        &self,
        i: usize,
        cursor: &mut Cursor,
        vocab: &Vocab,
        cache: Option<&IdCache>,
        mut f: F,
    ) -> io::Result<()> {
        let stopped = std::cell::Cell::new(false);
        let mut g = |ids: &[u32], raw: u64| {
            let go = f(ids, raw);
            stopped.set(!go);
            go
        };
        let mut ids = Vec::with_capacity(MAX_SENTENCE_LEN);
        self.for_each_part(cursor, |part, cursor| {
            match (part, cache) {
                (FileSplit::Ranges { path, parts, queue, .. }, Some(cache)) => {
                    let mine = parts.get(i).map(|v| &v[..]).unwrap_or(&[]);
                    Self::mine_then_queue(mine, queue, cursor, |c| Self::pending_cached(path, c, vocab, cache, &mut ids, &mut g))?
                }
                _ => part.for_worker_in(i, cursor, |it| {
                    let raw = ids_of(vocab, it, &mut ids);
                    g(&ids, raw)
                })?,
            }
            Ok(!stopped.get())
        })
    }

    /// Run `run` on each part of a split of pieces from the cursor's piece on
    /// (on the split itself if it is one file) until it returns false.
    fn for_each_part(
        &self,
        cursor: &mut Cursor,
        mut run: impl FnMut(&FileSplit, &mut Cursor) -> io::Result<bool>,
    ) -> io::Result<()> {
        let FileSplit::Pieces { parts } = self else { return run(self, cursor).map(|_| ()) };
        let first = cursor.piece;
        for (q, part) in parts.iter().enumerate().skip(first) {
            cursor.piece = q;
            if !run(part, cursor)? {
                break;
            }
        }
        Ok(())
    }

    /// A worker's own byte ranges `mine` of a plain file, then the chunks
    /// it takes from `queue` one at a time: `read` reads the cursor's
    /// pending ranges and returns false when the worker stopped.
    fn mine_then_queue(mine: &[(u64, u64)], queue: &ChunkQueue, cursor: &mut Cursor, mut read: impl FnMut(&mut Cursor) -> io::Result<bool>) -> io::Result<()> {
        cursor.pending = mine.to_vec();
        while read(cursor)? {
            let Some(c) = queue.take() else { break };
            cursor.pending.push(c);
        }
        Ok(())
    }

    /// The cursor's pending ranges of the plain file `path` as ids: each
    /// range replayed from `cache` if recorded (from the cursor's position
    /// on), else read, looked up and recorded; false when `f` stopped.
    fn pending_cached<F: FnMut(&[u32], u64) -> bool>(path: &Path, cursor: &mut Cursor, vocab: &Vocab, cache: &IdCache, ids: &mut Vec<u32>, f: &mut F) -> io::Result<bool> {
        while let Some(&(start, end)) = cursor.pending.first() {
            if start >= end {
                cursor.finish_first();
                continue;
            }
            let mut go = true;
            if let Some(rec) = cache.get(path, start, end) {
                rec.replay(start, |ids, raw, pos| {
                    go = f(ids, raw);
                    cursor.advance(pos);
                    go
                });
            } else {
                let mut r = open_range(path, start, end)?;
                let mut rec = cache.recorder(start, end);
                let mut raw = 0;
                while r.next_sentence(|it| raw = ids_of(vocab, it, ids))? {
                    if let Some(rec) = rec.as_mut() {
                        rec.push(ids, raw, r.position());
                    }
                    go = f(ids, raw);
                    cursor.advance(r.position());
                    if !go {
                        break;
                    }
                }
                if go {
                    if let Some(rec) = rec {
                        rec.finish(path, end);
                    }
                }
            }
            if !go {
                return Ok(false);
            }
            cursor.finish_first();
        }
        Ok(true)
    }

    /// `for_worker` on a split of one file.
    fn for_worker_in<F: FnMut(&mut dyn Iterator<Item = &[u8]>) -> bool>(
        &self,
        i: usize,
        cursor: &mut Cursor,
        mut f: F,
    ) -> io::Result<()> {
        match self {
            FileSplit::Pieces { .. } => Err(io::Error::new(io::ErrorKind::InvalidInput, "pieces cannot hold pieces")),
            FileSplit::Ranges { path, parts, queue, .. } => {
                let mine = parts.get(i).map(|v| &v[..]).unwrap_or(&[]);
                Self::mine_then_queue(mine, queue, cursor, |cursor| {
                    while let Some(&(start, end)) = cursor.pending.first() {
                        if start >= end {
                            cursor.finish_first();
                            continue;
                        }
                        let mut r = open_range(path, start, end)?;
                        let mut go = true;
                        while r.next_sentence(|it| go = f(it))? {
                            cursor.advance(r.position());
                            if !go {
                                return Ok(false);
                            }
                        }
                        cursor.finish_first();
                    }
                    Ok(true)
                })
            }
            FileSplit::Shared { stream, fragments, .. } => {
                let mine = fragments.get(i).map(|v| &v[..]).unwrap_or(&[]);
                cursor.pending = mine.iter().map(|(s, b)| (*s, s + b.len() as u64)).collect();
                for (s, bytes) in mine {
                    if !Self::read_block(bytes, *s, cursor, &mut f)? {
                        return Ok(());
                    }
                }
                let mut block = Vec::with_capacity(BLOCK + 4096);
                loop {
                    block.clear();
                    let start;
                    let mine;
                    {
                        let mut guard = stream.lock().unwrap_or_else(|p| p.into_inner());
                        let shared = &mut *guard;
                        let Some(s) = shared.reader.as_mut() else { return Ok(()) };
                        let n = s.by_ref().take(BLOCK as u64).read_to_end(&mut block)?;
                        if n == 0 {
                            shared.reader = None;
                            return Ok(());
                        }
                        // Extend to the end of the line (if one ends within LINE_SLACK
                        // bytes), else to the next whitespace, so no token — and no
                        // ordinary line — is split between blocks.
                        if n == BLOCK && block[block.len() - 1] != b'\n' {
                            let mut extra = 0usize;
                            loop {
                                let buf = s.fill_buf()?;
                                if buf.is_empty() {
                                    break;
                                }
                                let stop = if extra < LINE_SLACK {
                                    buf.iter().position(|&b| b == b'\n').map(|p| p + 1)
                                } else {
                                    buf.iter().position(|&b| is_space(b))
                                };
                                match stop {
                                    Some(p) => {
                                        block.extend_from_slice(&buf[..p]);
                                        s.consume(p);
                                        break;
                                    }
                                    None => {
                                        let l = buf.len();
                                        block.extend_from_slice(buf);
                                        s.consume(l);
                                        extra += l;
                                    }
                                }
                            }
                        }
                        start = shared.offset;
                        shared.offset += block.len() as u64;
                        mine = shared.blocks % shared.deal.1 == shared.deal.0;
                        shared.blocks += 1;
                    }
                    if !mine {
                        continue; // another process's block
                    }
                    cursor.pending = vec![(start, start + block.len() as u64)];
                    if !Self::read_block(&block, start, cursor, &mut f)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Hand the sentences of one in-memory block (starting at absolute offset
    /// `start`, cursor's first range) to `f`; false when `f` asked to stop.
    fn read_block<F: FnMut(&mut dyn Iterator<Item = &[u8]>) -> bool>(
        bytes: &[u8],
        start: u64,
        cursor: &mut Cursor,
        f: &mut F,
    ) -> io::Result<bool> {
        let mut r = SentenceReader::whole(bytes);
        let mut go = true;
        while r.next_sentence(|it| go = f(it))? {
            cursor.advance(start + r.position());
            if !go {
                return Ok(false);
            }
        }
        cursor.finish_first();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sentences_of(data: &[u8], start: u64, end: u64) -> Vec<Vec<String>> {
        let prev_is_space = start == 0 || is_space(data[start as usize - 1]);
        let mut r = SentenceReader::new(&data[start as usize..], start, end, prev_is_space);
        let mut out = Vec::new();
        while r
            .next_sentence(|it| out.push(it.map(|t| token_str(t).into_owned()).collect::<Vec<_>>()))
            .unwrap()
        {}
        out.retain(|s: &Vec<String>| !s.is_empty());
        out
    }

    #[test]
    fn splits_lines_and_whitespace() {
        let s = sentences_of(b"a bb\tc\r\n\n  d  e\nf", 0, u64::MAX);
        assert_eq!(s, vec![vec!["a", "bb", "c"], vec!["d", "e"], vec!["f"]]);
    }

    #[test]
    fn long_lines_are_chunked() {
        let n = MAX_SENTENCE_LEN * 2 + 17;
        let line: String = (0..n).map(|i| format!("w{} ", i % 13)).collect();
        let s = sentences_of(line.as_bytes(), 0, u64::MAX);
        assert_eq!(s.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![MAX_SENTENCE_LEN, MAX_SENTENCE_LEN, 17]);
        assert_eq!(s[1][0], format!("w{}", MAX_SENTENCE_LEN % 13));
    }

    #[test]
    fn byte_ranges_partition_the_tokens_exactly() {
        let text: String = (0..500).map(|i| if i % 37 == 0 { format!("tok{i}\n") } else { format!("tok{i} ") }).collect();
        let data = text.as_bytes();
        let all: Vec<String> = sentences_of(data, 0, u64::MAX).concat();
        for parts in 1..9u64 {
            let len = data.len() as u64;
            let mut got = Vec::new();
            for i in 0..parts {
                let (s, e) = (len * i / parts, len * (i + 1) / parts);
                got.extend(sentences_of(data, s, e).concat());
            }
            assert_eq!(got, all, "parts={parts}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let s = sentences_of(b"ok \xff\xfebad fine", 0, u64::MAX);
        assert_eq!(s[0][1], "\u{fffd}\u{fffd}bad");
    }

    /// `text` written as a plain and a gzip file in a fresh directory.
    fn plain_and_gzip(tag: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("bidirmoe-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("c.txt");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.join("c.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        (dir, plain, gz)
    }

    /// `lines` lines, line i of `len(i)` tokens "{tag}{i}_{k}" (every token its own).
    fn numbered_lines(tag: char, lines: usize, len: impl Fn(usize) -> usize) -> String {
        let mut text = String::new();
        for line in 0..lines {
            for k in 0..len(line) {
                text.push_str(&format!("{tag}{line}_{k} "));
            }
            text.push('\n');
        }
        text
    }

    /// Every token the split's workers read, worker by worker.
    fn tokens_of(split: &FileSplit, workers: usize) -> Vec<String> {
        let mut got = Vec::new();
        for w in 0..workers {
            split
                .for_worker(w, &mut Cursor::default(), |it| {
                    got.extend(it.map(|t| token_str(t).into_owned()));
                    true
                })
                .unwrap();
        }
        got
    }

    #[test]
    fn gzip_and_plain_files_give_the_same_tokens_for_any_worker_count() {
        let text: String = (0..300_000).map(|i| format!("w{} ", (i * 7919) % 1000)).collect();
        let (dir, plain, gz) = plain_and_gzip("corpus", &text);
        let expect: Vec<String> = text.split_whitespace().map(String::from).collect();
        for path in [&plain, &gz] {
            for workers in [1, 2, 3] {
                let got = tokens_of(&FileSplit::new(path, workers).unwrap(), workers);
                let mut a = got.clone();
                let mut b = expect.clone();
                a.sort();
                b.sort();
                assert_eq!(a, b, "{path:?} workers={workers}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Processes' shards (plain: byte ranges; gzip: blocks dealt in turn),
    /// each split between threads, read every token of the file exactly once
    /// together, and every process gets a share.
    #[test]
    fn process_shards_cover_the_file_exactly_once() {
        // About 3.4 MB: several 1 MiB gzip blocks to deal out.
        let text: String = (0..600_000).map(|i| format!("s{} ", (i * 7919) % 5000)).collect();
        let (dir, plain, gz) = plain_and_gzip("shard", &text);
        let mut expect: Vec<String> = text.split_whitespace().map(String::from).collect();
        expect.sort();
        for path in [&plain, &gz] {
            for (world, workers) in [(2u64, 1usize), (3, 2)] {
                let mut all = Vec::new();
                for rank in 0..world {
                    let mine = tokens_of(&FileSplit::shard(path, workers, rank, world).unwrap(), workers);
                    assert!(!mine.is_empty(), "{path:?}: rank {rank} of {world} read nothing");
                    all.extend(mine);
                }
                all.sort();
                assert_eq!(all, expect, "{path:?} world={world} workers={workers}");
            }
        }
        assert!(FileSplit::shard(&plain, 1, 2, 2).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Let worker `w` read `sentences(w)` sentences (one after another),
    /// collecting their tokens; the state they stopped in.
    fn stop_workers(split: &FileSplit, workers: usize, sentences: impl Fn(usize) -> usize, got: &mut Vec<String>) -> SplitState {
        let mut cursors = Vec::new();
        for w in 0..workers {
            let mut cursor = Cursor::default();
            let mut left = sentences(w);
            split
                .for_worker(w, &mut cursor, |it| {
                    got.extend(it.map(|t| token_str(t).into_owned()));
                    left -= 1;
                    left > 0
                })
                .unwrap();
            cursors.push(cursor);
        }
        split.state(&cursors)
    }

    /// Stop every worker after a few sentences, resume with another worker
    /// count, and check that each token is read exactly once overall.
    #[test]
    fn a_stopped_epoch_resumes_exactly_where_each_worker_stopped() {
        // Long lines (some over MAX_SENTENCE_LEN) and several gzip blocks.
        let text = numbered_lines('t', 2_600, |line| if line % 500 == 7 { MAX_SENTENCE_LEN + 123 } else { 40 + line % 70 });
        let (dir, plain, gz) = plain_and_gzip("resume", &text);
        let mut expect: Vec<String> = text.split_whitespace().map(String::from).collect();
        expect.sort();
        for path in [&plain, &gz] {
            for (workers, later) in [(1, 1), (2, 2), (3, 1), (1, 3), (2, 5)] {
                let split = FileSplit::new(path, workers).unwrap();
                let mut got = Vec::new();
                let state = stop_workers(&split, workers, |w| 5 + 3 * w, &mut got);
                assert!(state.workers.iter().any(|p| !p.is_empty()), "{path:?}: stopped before the end");
                let rest = FileSplit::resume(path, later, &state).unwrap();
                for w in 0..later {
                    rest.for_worker(w, &mut Cursor::default(), |it| {
                        got.extend(it.map(|t| token_str(t).into_owned()));
                        true
                    })
                    .unwrap();
                }
                got.sort();
                assert_eq!(got.len(), expect.len(), "{path:?} workers={workers}->{later}");
                assert!(got == expect, "{path:?} workers={workers}->{later}: tokens differ");
            }
        }
        // A changed file is refused.
        let split = FileSplit::new(&plain, 1).unwrap();
        let mut state = split.state(&[Cursor { pending: vec![(10, 20)], piece: 0 }]);
        state.file_len += 1;
        assert!(FileSplit::resume(&plain, 1, &state).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Pieces of several files (byte ranges of a plain file cut between
    /// tokens, a whole gzip file) read in order give their tokens in order;
    /// an epoch stopped in any piece resumes exactly, with any worker count.
    #[test]
    fn pieces_read_in_order_and_resume_exactly() {
        let text = numbered_lines('p', 3_000, |line| 30 + line % 50);
        let (dir, plain, gz) = plain_and_gzip("pieces", &text);
        let cut = text[..text.len() / 3].rfind('\n').unwrap() as u64 + 1;
        let len = text.len() as u64;
        // The plain file's tail, the whole gzip file, the plain file's head.
        let pieces = vec![Piece::Range(plain.clone(), cut, len), Piece::Whole(gz.clone()), Piece::Range(plain.clone(), 0, cut)];
        let words = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        let mut expect = words(&text[cut as usize..]);
        expect.extend(words(&text));
        expect.extend(words(&text[..cut as usize]));
        assert_eq!(tokens_of(&FileSplit::pieces(&pieces, 1).unwrap(), 1), expect);
        let mut sorted = expect.clone();
        sorted.sort();
        for (workers, later, stop_after) in [(1, 1, 5), (1, 1, 2_000), (1, 1, 4_500), (2, 2, 1_500), (3, 1, 700), (1, 3, 3_100)] {
            let split = FileSplit::pieces(&pieces, workers).unwrap();
            let mut got = Vec::new();
            let state = stop_workers(&split, workers, |w| stop_after + w, &mut got);
            assert_eq!(state.pieces.len(), 3);
            let rest = FileSplit::resume_pieces(&pieces, later, &state).unwrap();
            got.extend(tokens_of(&rest, later));
            if workers == 1 && later == 1 {
                assert!(got == expect, "stop after {stop_after}: tokens differ from the pieces' in order");
            } else {
                got.sort();
                assert!(got == sorted, "workers={workers}->{later}: tokens differ");
            }
        }
        // Another number of pieces, a range past the end or into a gzip file are refused.
        let state = FileSplit::pieces(&pieces, 1).unwrap().state(&[Cursor::default()]);
        assert!(FileSplit::resume_pieces(&pieces[..2], 1, &state).is_err());
        assert!(FileSplit::pieces(&[Piece::Range(plain.clone(), 0, len + 1)], 1).is_err());
        assert!(FileSplit::pieces(&[Piece::Range(gz.clone(), 0, 10)], 1).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Each worker's sentences as (ids, corpus words), stopping worker `w`
    /// after `stop(w)` sentences; the state they stopped in.
    fn ids_of_workers(
        split: &FileSplit,
        workers: usize,
        vocab: &Vocab,
        cache: Option<&IdCache>,
        stop: impl Fn(usize) -> usize,
    ) -> (Vec<Vec<(Vec<u32>, u64)>>, SplitState) {
        let (mut out, mut cursors) = (Vec::new(), Vec::new());
        for w in 0..workers {
            let (mut got, mut cursor) = (Vec::new(), Cursor::default());
            split
                .for_worker_ids(w, &mut cursor, vocab, cache, |ids, raw| {
                    got.push((ids.to_vec(), raw));
                    got.len() < stop(w)
                })
                .unwrap();
            out.push(got);
            cursors.push(cursor);
        }
        (out, split.state(&cursors))
    }

    /// Replayed from the id cache, every worker gets the sentences, and
    /// stops in the state, that reading the files gives; an epoch stopped
    /// while replaying resumes exactly.
    #[test]
    fn the_id_cache_replays_what_reading_gives() {
        use crate::vocab::VocabSettings;
        let mut text = String::new();
        for line in 0..1_500 {
            let n = if line % 400 == 3 { MAX_SENTENCE_LEN + 77 } else { line % 60 };
            for k in 0..n {
                text.push_str(&format!("w{} ", (k * 31 + line) % 500));
            }
            text.push('\n');
        }
        let (dir, plain, gz) = plain_and_gzip("idcache", &text);
        let cut = text[..text.len() / 2].rfind(' ').unwrap() as u64 + 1;
        let len = text.len() as u64;
        let pieces = vec![Piece::Range(plain.clone(), cut, len), Piece::Whole(gz), Piece::Range(plain.clone(), 0, cut)];
        // Words w0..w299 are in the vocabulary, the rest are not.
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
        let vocab = Vocab::from_sorted((0..300).map(|i| (format!("w{i}"), 1000 - i as u64)).collect(), &s);
        let all = |_: usize| usize::MAX;
        // A split reads a gzip stream once: every pass takes a fresh one.
        let fresh = |workers: usize| FileSplit::pieces(&pieces, workers).unwrap();
        for workers in [1, 2, 3] {
            let (read, _) = ids_of_workers(&fresh(workers), workers, &vocab, None, all);
            assert!(read.iter().flatten().any(|(ids, raw)| (ids.len() as u64) < *raw), "no OOV word dropped");
            let cache = IdCache::new(1 << 30);
            for pass in 0..2 {
                let (got, _) = ids_of_workers(&fresh(workers), workers, &vocab, Some(&cache), all);
                assert!(got == read, "workers={workers} pass {pass}: the cache changed the sentences");
            }
            // Both plain ranges of every worker are recorded; the gzip piece is read.
            assert_eq!(cache.len(), 2 * workers);
            for stop_after in [1, 7, 40, 900, 2_600] {
                let stop = |w: usize| stop_after + 5 * w;
                let (_, at_read) = ids_of_workers(&fresh(workers), workers, &vocab, None, stop);
                let (_, at_cached) = ids_of_workers(&fresh(workers), workers, &vocab, Some(&cache), stop);
                assert_eq!(at_read, at_cached, "workers={workers}: stopped at another place");
                let rest = FileSplit::resume_pieces(&pieces, workers, &at_cached).unwrap();
                let (tail, _) = ids_of_workers(&rest, workers, &vocab, Some(&cache), all);
                for w in 0..workers {
                    let k = stop(w).min(read[w].len());
                    assert!(tail[w] == read[w][k..], "workers={workers} worker {w}: resumed elsewhere");
                }
            }
        }
        // A cap too small for any range: nothing is kept, every pass reads.
        let small = IdCache::new(1000);
        let (read, _) = ids_of_workers(&fresh(2), 2, &vocab, None, all);
        for _ in 0..2 {
            assert!(ids_of_workers(&fresh(2), 2, &vocab, Some(&small), all).0 == read);
        }
        assert_eq!((small.len(), small.bytes()), (0, 0));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A balanced split (`FileSplit::balanced`): workers reading at once
    /// read every token exactly once; its chunks start at line starts where
    /// the file has lines; one worker reads as before, in order; an epoch
    /// stopped anywhere (chunks untaken, chunks half read) resumes exactly,
    /// with any worker count; the id cache replays what reading gives.
    #[test]
    fn balanced_splits_read_every_token_once_and_resume_exactly() {
        use crate::vocab::VocabSettings;
        let text = numbered_lines('b', 4_000, |line| if line % 900 == 11 { MAX_SENTENCE_LEN + 50 } else { 20 + line % 90 });
        let one_line = text.replace('\n', " ");
        let (dir, plain, _) = plain_and_gzip("balanced", &text);
        let flat = dir.join("flat.txt");
        std::fs::write(&flat, &one_line).unwrap();
        let mut expect: Vec<String> = text.split_whitespace().map(String::from).collect();
        expect.sort();
        let read_all = |split: &FileSplit, workers: usize| -> Vec<String> {
            let got = Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for w in 0..workers {
                    let (split, got) = (&split, &got);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        split.for_worker(w, &mut Cursor::default(), |it| {
                            mine.extend(it.map(|t| token_str(t).into_owned()));
                            true
                        })
                        .unwrap();
                        got.lock().unwrap().extend(mine);
                    });
                }
            });
            let mut got = got.into_inner().unwrap();
            got.sort();
            got
        };
        for (path, lines) in [(&plain, true), (&flat, false)] {
            // One worker: unchanged, the file's tokens in order.
            assert_eq!(tokens_of(&FileSplit::new(path, 1).unwrap().balanced(), 1), tokens_of(&FileSplit::new(path, 1).unwrap(), 1));
            for workers in [2, 3, 5] {
                let split = FileSplit::new(path, workers).unwrap().balanced();
                let FileSplit::Ranges { parts, queue, .. } = &split else { panic!("a plain file splits into ranges") };
                assert!(parts.iter().all(|p| p.is_empty()) && queue.chunks.len() >= 2 * workers, "{workers} workers: {} chunks", queue.chunks.len());
                let starts: Vec<u64> = queue.chunks.iter().map(|c| c.0).collect();
                assert!(queue.chunks.windows(2).all(|w| w[0].1 == w[1].0) && starts[0] == 0, "chunks tile the file");
                if lines {
                    // inside a line only where it is longer than the slack (the long lines)
                    let b = text.as_bytes();
                    let line_len = |c: usize| b[c..].iter().position(|&x| x == b'\n').unwrap() + c - b[..c].iter().rposition(|&x| x == b'\n').map_or(0, |p| p + 1);
                    for &c in &starts { assert!(c == 0 || b[c as usize - 1] == b'\n' || line_len(c as usize) > 30_000, "chunk at {c} starts inside a short line ({} bytes), workers={workers}", line_len(c as usize)); }
                    assert!(starts.iter().filter(|&&c| c > 0 && b[c as usize - 1] == b'\n').count() * 2 > starts.len(), "most chunks start lines");
                }
                assert!(read_all(&split, workers) == expect, "{path:?} workers={workers}: tokens differ");
                // Stopped after a few sentences each (sequentially: worker 0
                // takes the first chunk, worker 1 the next, ...), resumed.
                for later in [1, 2, 3] {
                    let split = FileSplit::new(path, workers).unwrap().balanced();
                    let mut got = Vec::new();
                    let state = stop_workers(&split, workers, |w| 3 + 2 * w, &mut got);
                    assert!(state.workers.iter().flatten().count() > workers, "{path:?}: the untaken chunks are owed");
                    let rest = FileSplit::resume(path, later, &state).unwrap().balanced();
                    let mut rest_got = read_all(&rest, later);
                    got.append(&mut rest_got);
                    got.sort();
                    assert_eq!(got.len(), expect.len(), "{path:?} workers={workers}->{later}");
                    assert!(got == expect, "{path:?} workers={workers}->{later}: tokens differ");
                }
            }
        }
        // The id cache records the chunks and replays them.
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
        let vocab = Vocab::from_sorted((0..90).map(|k| (format!("b7_{k}"), 1000 - k as u64)).collect(), &s);
        let sorted = |mut v: Vec<Vec<(Vec<u32>, u64)>>| {
            let mut all: Vec<(Vec<u32>, u64)> = v.drain(..).flatten().collect();
            all.sort();
            all
        };
        let fresh = || FileSplit::new(&plain, 3).unwrap().balanced();
        let read = sorted(ids_of_workers(&fresh(), 3, &vocab, None, |_| usize::MAX).0);
        let cache = IdCache::new(1 << 30);
        for pass in 0..2 {
            let got = sorted(ids_of_workers(&fresh(), 3, &vocab, Some(&cache), |_| usize::MAX).0);
            assert!(got == read, "pass {pass}: the cache changed the sentences");
        }
        let FileSplit::Ranges { queue, .. } = fresh() else { unreachable!() };
        assert_eq!(cache.len(), queue.chunks.len(), "every chunk recorded");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn redistribute_keeps_every_byte_once() {
        let pending = [(5u64, 17u64), (30, 31), (40, 90)];
        for parts in 1..7 {
            let out = redistribute(&pending, parts);
            assert_eq!(out.len(), parts);
            let mut bytes: Vec<u64> = out.iter().flatten().flat_map(|&(s, e)| s..e).collect();
            bytes.sort();
            let expect: Vec<u64> = pending.iter().flat_map(|&(s, e)| s..e).collect();
            assert_eq!(bytes, expect, "parts={parts}");
        }
    }
}
