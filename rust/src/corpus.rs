//! Corpus files: plain or gzip text, tokens separated by ASCII whitespace,
//! one sentence per line. Lines of any length are cut into chunks of at most
//! `MAX_SENTENCE_LEN` tokens, so a file that is one huge line (text8) trains
//! like the same words in short lines. Invalid UTF-8 is replaced (U+FFFD),
//! never fatal.
//!
//! Plain files are split into byte ranges, one per worker; a token belongs to
//! the range its first byte lies in. Gzip streams cannot be split, so workers
//! take turns pulling whitespace-aligned blocks from one shared decoder.

use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

/// Longest sentence handed to a model; longer lines are cut (gensim's and
/// word2vec's MAX_SENTENCE_LEN is 10,000 / 1,000; we chunk rather than truncate).
pub const MAX_SENTENCE_LEN: usize = 10_000;

const BLOCK: usize = 1 << 20;
/// How far past a gzip block's end to look for the end of its line.
const LINE_SLACK: usize = 1 << 16;

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

/// How workers share one corpus file during an epoch.
pub enum FileSplit {
    /// Plain file: worker i reads bytes [bounds[i], bounds[i+1]).
    Ranges { path: std::path::PathBuf, bounds: Vec<u64> },
    /// Gzip: workers pull whitespace-aligned blocks from one decoder.
    Shared { stream: Mutex<Option<Box<dyn BufRead + Send>>> },
}

impl FileSplit {
    pub fn new(path: &Path, workers: usize) -> io::Result<FileSplit> {
        if is_gzip(path)? {
            return Ok(FileSplit::Shared { stream: Mutex::new(Some(open_stream(path)?)) });
        }
        let len = std::fs::metadata(path)?.len();
        let w = workers.max(1) as u64;
        let bounds = (0..=w).map(|i| len * i / w).collect();
        Ok(FileSplit::Ranges { path: path.to_path_buf(), bounds })
    }

    /// Run `f` on every sentence assigned to worker `i`. `f` returns false to stop early.
    pub fn for_worker<F: FnMut(&mut dyn Iterator<Item = &[u8]>) -> bool>(&self, i: usize, mut f: F) -> io::Result<()> {
        match self {
            FileSplit::Ranges { path, bounds } => {
                let (start, end) = (bounds[i], bounds[i + 1]);
                if start >= end {
                    return Ok(());
                }
                let mut file = File::open(path)?;
                let mut prev_is_space = true;
                if start > 0 {
                    file.seek(SeekFrom::Start(start - 1))?;
                    let mut b = [0u8; 1];
                    file.read_exact(&mut b)?;
                    prev_is_space = is_space(b[0]);
                }
                let mut r = SentenceReader::new(BufReader::with_capacity(BLOCK, file), start, end, prev_is_space);
                let mut go = true;
                while go && r.next_sentence(|it| go = f(it))? {}
                Ok(())
            }
            FileSplit::Shared { stream } => {
                let mut block = Vec::with_capacity(BLOCK + 4096);
                loop {
                    block.clear();
                    {
                        let mut guard = stream.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(s) = guard.as_mut() else { return Ok(()) };
                        let n = s.by_ref().take(BLOCK as u64).read_to_end(&mut block)?;
                        if n == 0 {
                            *guard = None;
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
                    }
                    let mut r = SentenceReader::whole(&block[..]);
                    let mut go = true;
                    while go && r.next_sentence(|it| go = f(it))? {}
                    if !go {
                        return Ok(());
                    }
                }
            }
        }
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

    #[test]
    fn gzip_and_plain_files_give_the_same_tokens_for_any_worker_count() {
        let dir = std::env::temp_dir().join(format!("bidirmoe-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = (0..300_000).map(|i| format!("w{} ", (i * 7919) % 1000)).collect();
        let plain = dir.join("c.txt");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.join("c.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        let expect: Vec<String> = text.split_whitespace().map(String::from).collect();
        for path in [&plain, &gz] {
            for workers in [1, 2, 3] {
                let split = FileSplit::new(path, workers).unwrap();
                let mut got = Vec::new();
                for w in 0..workers {
                    split
                        .for_worker(w, |it| {
                            got.extend(it.map(|t| token_str(t).into_owned()));
                            true
                        })
                        .unwrap();
                }
                let mut a = got.clone();
                let mut b = expect.clone();
                a.sort();
                b.sort();
                assert_eq!(a, b, "{path:?} workers={workers}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
