//! Threads, work split, learning-rate schedule, progress and cancellation —
//! the same for every model.
//!
//! One call trains one epoch. Workers read their share of the corpus (their
//! byte range of a file, or jobs from a bounded queue fed by Python), drop
//! out-of-vocabulary words, subsample frequent ones and hand each sentence to
//! the model. The learning rate falls linearly from `alpha` to `min_alpha`
//! with the number of corpus words processed over the whole run, as in
//! word2vec. The calling thread wakes every `tick` to report progress and to
//! learn whether to stop (Ctrl-C).

use crate::corpus::{Cursor, FileSplit, MAX_SENTENCE_LEN};
use crate::idcache::IdCache;
use crate::models::{HotSpec, Model};
use crate::sampling::Rng;
use crate::vocab::Vocab;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A batch of sentences already mapped to vocabulary ids (OOV words dropped,
/// not yet subsampled), produced from Python iterables.
#[derive(Debug, Default, Clone)]
pub struct Job {
    pub ids: Vec<u32>,
    /// End offset in `ids` of each sentence.
    pub ends: Vec<u32>,
    /// Corpus tokens this job stands for, OOV included (drives the schedule).
    pub raw_words: u64,
    /// Tokens in the sentence being added.
    open: usize,
}

impl Job {
    /// Add one token of the current sentence; sentences are cut into
    /// MAX_SENTENCE_LEN-token chunks.
    #[inline]
    pub fn push_token(&mut self, vocab: &Vocab, tok: &str) {
        self.raw_words += 1;
        self.open += 1;
        if let Some(id) = vocab.tokens.get(tok.as_bytes()) {
            self.ids.push(id);
        }
        if self.open == MAX_SENTENCE_LEN {
            self.ends.push(self.ids.len() as u32);
            self.open = 0;
        }
    }

    /// Close the current sentence.
    pub fn end_sentence(&mut self) {
        if self.open > 0 {
            self.ends.push(self.ids.len() as u32);
            self.open = 0;
        }
    }
}

pub enum Source<'a> {
    File(&'a FileSplit),
    /// A file whose sentences' ids are kept between epochs (plain files:
    /// replayed where the cache has them; see `idcache`). The caller runs
    /// `IdCache::check` before an epoch if the vocabulary or file may have changed.
    Cached(&'a FileSplit, &'a IdCache),
    Queue(&'a Receiver<Job>),
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub workers: usize,
    pub alpha: f32,
    pub min_alpha: f32,
    /// Corpus words over the whole run (epochs x words per epoch): the schedule's length.
    pub total_words: u64,
    /// Corpus words already processed in this run before this epoch.
    pub words_before: u64,
    pub seed: u64,
    /// Epoch number (seeds the workers' RNGs so epochs differ).
    pub epoch: u64,
    pub want_loss: bool,
    pub tick: Duration,
    /// Stop the epoch once this many corpus words are done (0: the whole corpus).
    pub max_words: u64,
    /// Continue a stopped epoch: each worker's generator and schedule state
    /// (one entry per worker; empty: a fresh epoch). The corpus positions
    /// travel in the `FileSplit` (`FileSplit::resume`).
    pub resume: Vec<WorkerState>,
    /// Hot-row privatization with 2 or more workers (`models::HotSpec`;
    /// rows 0: plain Hogwild). One worker always trains the shared rows.
    pub hot: HotSpec,
}

/// What a worker needs, besides its corpus position, to continue exactly
/// where it stopped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerState {
    /// The worker's random generator (subsampling, windows, negatives).
    pub rng: u64,
    /// Its current learning rate and the corpus words since it last
    /// recomputed it (the rate is refreshed every `FLUSH` words).
    pub lr: f32,
    pub since_lr: u64,
}

/// Counters shared by the workers and read by the reporting thread.
#[derive(Debug, Default)]
pub struct Progress {
    pub raw_words: AtomicU64,
    pub effective_words: AtomicU64,
    pub examples: AtomicU64,
    pub loss: Mutex<f64>,
    pub cancel: AtomicBool,
    pub error: Mutex<Option<String>>,
    /// Each worker's corpus cursor and state when it finished (for checkpoints).
    pub workers: Mutex<Vec<(Cursor, WorkerState)>>,
    /// Data-parallel training over several processes (off by default).
    pub gate: SyncGate,
}

/// Where several processes train one model on shards of the corpus, each
/// process's workers stop together every `every` of its corpus words, so the
/// caller can average the parameters with the other processes while no
/// worker writes them. `scale` (the number of processes) and `offset` turn
/// this process's word count into the global one the learning rate follows:
/// global ≈ offset + scale × local, made exact at every sync
/// (`set_global_words`).
#[derive(Debug)]
pub struct SyncGate {
    every: u64,
    scale: u64,
    offset: AtomicI64,
    /// This process's corpus words of the epoch so far, counted per sentence
    /// by every worker (exact enough to sync every `every` words whatever
    /// the number of threads), and the count at which the next sync is due.
    seen: AtomicU64,
    next: AtomicU64,
    /// Set once a worker reaches `next`: every other worker parks after its sentence.
    due: AtomicBool,
    state: Mutex<GateState>,
    /// Workers wait here to be released; the calling thread waits here for them to park.
    cv: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    parked: usize,
    active: usize,
    generation: u64,
}

impl Default for SyncGate {
    fn default() -> Self {
        SyncGate::new(0, 1)
    }
}

impl SyncGate {
    /// A gate parking the workers every `every` local words (0: never), in a
    /// run of `scale` processes of about equal shards.
    pub fn new(every: u64, scale: u64) -> Self {
        SyncGate {
            every,
            scale: scale.max(1),
            offset: AtomicI64::new(0),
            seen: AtomicU64::new(0),
            next: AtomicU64::new(if every > 0 { every } else { u64::MAX }),
            due: AtomicBool::new(false),
            state: Mutex::new(GateState::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The global word count for `local` words done here.
    fn global(&self, local: u64) -> u64 {
        (self.offset.load(Ordering::Relaxed) + (self.scale * local) as i64).max(0) as u64
    }

    /// At a sync: all processes together have done `global` words of the
    /// epoch while this one did `local`.
    pub fn set_global_words(&self, global: u64, local: u64) {
        self.offset.store(global as i64 - (self.scale * local) as i64, Ordering::Relaxed);
    }

    /// A worker has read `raw` more corpus words: is a sync due?
    fn wants_park(&self, raw: u64) -> bool {
        if self.every == 0 {
            return false;
        }
        let seen = self.seen.fetch_add(raw, Ordering::Relaxed) + raw;
        self.due.load(Ordering::Relaxed) || seen >= self.next.load(Ordering::Relaxed)
    }

    /// A worker stops here until the calling thread has synced (or cancelled).
    fn park(&self) {
        self.due.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        let generation = st.generation;
        st.parked += 1;
        if st.parked == st.active {
            self.cv.notify_all();
        }
        while st.generation == generation {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A worker is done with its share of the epoch.
    fn leave(&self) {
        let mut st = self.lock();
        st.active -= 1;
        self.cv.notify_all();
    }

    /// Wait up to `wait`, or until every worker has left (at once if they
    /// have): the calling thread's nap between ticks, cut short at the
    /// epoch's end instead of running on past it.
    fn nap_until_all_left(&self, wait: Duration) {
        let st = self.lock();
        drop(self.cv.wait_timeout_while(st, wait, |s| s.active > 0).unwrap_or_else(|p| p.into_inner()));
    }

    /// Wait up to `wait` for every working worker to park; true when they have
    /// (and at least one is parked).
    fn all_parked(&self, wait: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .cv
            .wait_timeout_while(st, wait, |s| !(s.parked > 0 && s.parked == s.active))
            .unwrap_or_else(|p| p.into_inner());
        st.parked > 0 && st.parked == st.active
    }

    /// Park every worker after its current sentence, word count or not (the
    /// caller has work for a parked model: e.g. a sum that arrived early).
    pub fn request(&self) {
        self.due.store(true, Ordering::Relaxed);
    }

    /// Whether the word count has reached the next sync (else the workers
    /// parked only on `request`).
    pub fn due_by_words(&self) -> bool {
        self.seen.load(Ordering::Relaxed) >= self.next.load(Ordering::Relaxed)
    }

    /// Let the parked workers go on; after a sync due by the word count the
    /// next is due `every` words from now, after a requested park the word
    /// schedule stays.
    fn release(&self) {
        let mut st = self.lock();
        if self.due_by_words() {
            self.next.store(self.seen.load(Ordering::Relaxed).saturating_add(self.every), Ordering::Relaxed);
        }
        self.due.store(false, Ordering::Relaxed);
        st.parked = 0;
        st.generation += 1;
        self.cv.notify_all();
    }
}

impl Progress {
    pub fn loss(&self) -> f64 {
        *self.loss.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, msg: String) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(msg);
        }
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// A worker's running totals, flushed into `Progress` every FLUSH words.
struct Local {
    raw: u64,
    eff: u64,
    examples: u64,
    loss: f64,
}

const FLUSH: u64 = 10_000;

impl Local {
    fn flush(&mut self, p: &Progress) {
        p.raw_words.fetch_add(self.raw, Ordering::Relaxed);
        p.effective_words.fetch_add(self.eff, Ordering::Relaxed);
        p.examples.fetch_add(self.examples, Ordering::Relaxed);
        if self.loss != 0.0 {
            *p.loss.lock().unwrap_or_else(|e| e.into_inner()) += self.loss;
        }
        *self = Local { raw: 0, eff: 0, examples: 0, loss: 0.0 };
    }
}

struct Worker<'a, M: Model> {
    model: &'a M,
    vocab: &'a Vocab,
    cfg: &'a TrainConfig,
    progress: &'a Progress,
    rng: Rng,
    scratch: M::Scratch,
    ids: Vec<u32>,
    local: Local,
    lr: f32,
    /// Corpus words since the learning rate was last recomputed.
    since_lr: u64,
}

impl<M: Model> Worker<'_, M> {
    fn update_lr(&mut self) {
        let done = self.cfg.words_before + self.progress.gate.global(self.progress.raw_words.load(Ordering::Relaxed) + self.local.raw);
        let frac = if self.cfg.total_words > 0 { (done as f64 / self.cfg.total_words as f64).min(1.0) } else { 0.0 };
        self.lr = (self.cfg.alpha as f64 - (self.cfg.alpha - self.cfg.min_alpha) as f64 * frac) as f32;
        self.lr = self.lr.max(self.cfg.min_alpha);
    }

    /// Subsample the in-vocabulary ids in `self.ids` and train on them.
    fn train_ids(&mut self, raw: u64) {
        let keep = &self.vocab.keep;
        let rng = &mut self.rng;
        // Compact in place without a branch per word (keeping a frequent
        // word is a coin flip a branch predictor cannot learn): every id is
        // written to the next free place, which advances only if it is kept.
        let mut kept = 0;
        for r in 0..self.ids.len() {
            let id = self.ids[r];
            self.ids[kept] = id;
            kept += (keep[id as usize] >= rng.next_u32()) as usize;
        }
        self.ids.truncate(kept);
        if self.ids.len() > 1 {
            let (loss, ex) = self.model.train_sentence(&mut self.scratch, &self.ids, self.lr, &mut self.rng, self.cfg.want_loss);
            self.local.loss += loss;
            self.local.examples += ex;
        }
        self.local.eff += self.ids.len() as u64;
        self.local.raw += raw;
        self.model.sentence_done(&mut self.scratch, raw);
        self.since_lr += raw;
        if self.since_lr >= FLUSH {
            self.local.flush(self.progress);
            self.update_lr();
            self.since_lr = 0;
        }
    }

    fn over_limit(&self) -> bool {
        self.cfg.max_words > 0 && self.progress.raw_words.load(Ordering::Relaxed) + self.local.raw >= self.cfg.max_words
    }

    /// Train on a sentence given as its in-vocabulary ids and corpus words.
    /// Returns false when the run is cancelled.
    fn sentence_ids(&mut self, ids: &[u32], raw: u64) -> bool {
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.train_ids(raw);
        self.maybe_park(raw);
        !self.progress.cancel.load(Ordering::Relaxed) && !self.over_limit()
    }

    /// After a sentence of `raw` corpus words: at a sync point, hand over
    /// this worker's counts and wait for the sync.
    fn maybe_park(&mut self, raw: u64) {
        let gate = &self.progress.gate;
        if gate.wants_park(raw) && !self.progress.cancel.load(Ordering::Relaxed) {
            // the sync reads (and rewrites) the shared parameters: nothing
            // may stay private, and afterwards the worker takes them as the
            // sync left them (a second publish, with nothing new to add)
            self.model.publish(&mut self.scratch);
            self.local.flush(self.progress);
            gate.park();
            self.model.publish(&mut self.scratch);
            self.update_lr();
            self.since_lr = 0;
        }
    }

    fn job(&mut self, job: &Job) -> bool {
        let mut start = 0usize;
        let per_sentence = job.raw_words / job.ends.len().max(1) as u64;
        let mut raw_left = job.raw_words;
        for (k, &end) in job.ends.iter().enumerate() {
            self.ids.clear();
            self.ids.extend_from_slice(&job.ids[start..end as usize]);
            start = end as usize;
            let raw = if k + 1 == job.ends.len() { raw_left } else { per_sentence };
            raw_left -= raw;
            self.train_ids(raw);
            self.maybe_park(raw);
            if self.progress.cancel.load(Ordering::Relaxed) || self.over_limit() {
                return false;
            }
        }
        if job.ends.is_empty() {
            self.local.raw += job.raw_words;
            self.model.sentence_done(&mut self.scratch, job.raw_words);
        }
        true
    }

    fn run(&mut self, worker: usize, src: &Source, cursor: &mut Cursor) -> std::io::Result<()> {
        match self.cfg.resume.get(worker) {
            Some(st) if self.cfg.resume.len() == self.cfg.workers.max(1) => {
                self.lr = st.lr;
                self.since_lr = st.since_lr;
            }
            _ => self.update_lr(),
        }
        match src {
            Source::File(split) => split.for_worker_ids(worker, cursor, self.vocab, None, |ids, raw| self.sentence_ids(ids, raw))?,
            Source::Cached(split, cache) => {
                split.for_worker_ids(worker, cursor, self.vocab, Some(cache), |ids, raw| self.sentence_ids(ids, raw))?
            }
            Source::Queue(rx) => loop {
                if self.progress.cancel.load(Ordering::Relaxed) {
                    break;
                }
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(job) => {
                        if !self.job(&job) {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            },
        }
        self.model.publish(&mut self.scratch);
        self.model.end_worker(&mut self.scratch);
        self.local.flush(self.progress);
        Ok(())
    }
}

/// Train one epoch of `model`. `on_tick` runs on the calling thread about
/// every `cfg.tick` while workers train, and once at the end; returning false
/// cancels the epoch (workers stop after their current sentence).
/// Errors are worker I/O errors or panics, as messages.
pub fn run_epoch<M: Model>(
    model: &M,
    vocab: &Vocab,
    src: Source,
    cfg: &TrainConfig,
    progress: &Progress,
    on_tick: impl FnMut(&Progress) -> bool,
) -> Result<(), String> {
    run_epoch_synced(model, vocab, src, cfg, progress, on_tick, |_| true, || false)
}

/// `run_epoch` for data-parallel training: whenever `progress.gate` has
/// parked every working worker, `on_sync` runs on the calling thread (the
/// workers write no parameter meanwhile; `gate.due_by_words()` tells a sync
/// due by the word count from a requested one); returning false cancels the
/// epoch (the workers leave without training another sentence). While the
/// workers train, `on_poll` runs about every millisecond: true requests a
/// park (`SyncGate::request`).
#[allow(clippy::too_many_arguments)]
pub fn run_epoch_synced<M: Model>(
    model: &M,
    vocab: &Vocab,
    src: Source,
    cfg: &TrainConfig,
    progress: &Progress,
    mut on_tick: impl FnMut(&Progress) -> bool,
    mut on_sync: impl FnMut(&Progress) -> bool,
    mut on_poll: impl FnMut() -> bool,
) -> Result<(), String> {
    let workers = cfg.workers.max(1);
    let running = AtomicUsize::new(workers);
    progress.gate.lock().active = workers;
    *progress.workers.lock().unwrap_or_else(|p| p.into_inner()) =
        vec![(Cursor::default(), WorkerState { rng: 0, lr: cfg.alpha, since_lr: 0 }); workers];
    std::thread::scope(|scope| {
        for w in 0..workers {
            let (src, running) = (&src, &running);
            scope.spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| {
                    // A resumed epoch continues each worker's generator when the
                    // worker count is unchanged; otherwise the streams restart
                    // (salted, so they differ from the epoch's first streams).
                    let rng = match cfg.resume.get(w) {
                        Some(st) if cfg.resume.len() == workers => Rng::from_state(st.rng),
                        Some(_) => Rng::for_worker(cfg.seed ^ 0x5EED_F00D_4E5E_u64, cfg.epoch, w as u64),
                        None => Rng::for_worker(cfg.seed, cfg.epoch, w as u64),
                    };
                    let mut worker = Worker {
                        model,
                        vocab,
                        cfg,
                        progress,
                        rng,
                        scratch: if workers > 1 { model.worker_scratch(cfg.hot) } else { model.scratch() },
                        ids: Vec::with_capacity(MAX_SENTENCE_LEN),
                        local: Local { raw: 0, eff: 0, examples: 0, loss: 0.0 },
                        lr: cfg.alpha,
                        since_lr: 0,
                    };
                    let mut cursor = Cursor::default();
                    let r = worker.run(w, src, &mut cursor);
                    let st = WorkerState { rng: worker.rng.state(), lr: worker.lr, since_lr: worker.since_lr };
                    progress.workers.lock().unwrap_or_else(|p| p.into_inner())[w] = (cursor, st);
                    r
                }));
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => progress.fail(format!("error reading the corpus: {e}")),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        progress.fail(format!("internal error in a training worker: {msg}"));
                    }
                }
                running.fetch_sub(1, Ordering::Release);
                progress.gate.leave();
            });
        }
        let gate = &progress.gate;
        let nap = cfg.tick.min(Duration::from_millis(20)).max(Duration::from_millis(1));
        let poll = Duration::from_millis(2).min(nap);
        let mut last_tick = std::time::Instant::now();
        while running.load(Ordering::Acquire) > 0 {
            if gate.every == 0 {
                gate.nap_until_all_left(nap);
            } else if !gate.all_parked(poll) {
                if !gate.due.load(Ordering::Relaxed) && on_poll() {
                    gate.request();
                }
            } else {
                if !progress.cancel.load(Ordering::Relaxed) && !on_sync(progress) {
                    progress.cancel.store(true, Ordering::Relaxed);
                }
                gate.release();
            }
            if progress.cancel.load(Ordering::Relaxed) {
                gate.release(); // parked workers see the cancel and leave
            }
            if gate.every == 0 || last_tick.elapsed() >= nap {
                last_tick = std::time::Instant::now();
                if !on_tick(progress) {
                    progress.cancel.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    on_tick(progress);
    match progress.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::VocabSettings;
    use crossbeam_channel::bounded;

    /// Counts the sentences it trains and fails if one arrives while a sync runs.
    struct Probe<'a> {
        syncing: &'a AtomicBool,
        trained: AtomicU64,
    }

    impl crate::models::Model for Probe<'_> {
        type Scratch = ();
        fn scratch(&self) {}
        fn train_sentence(&self, _: &mut (), sent: &[u32], _: f32, _: &mut Rng, _: bool) -> (f64, u64) {
            assert!(!self.syncing.load(Ordering::SeqCst), "a worker trained during a sync");
            self.trained.fetch_add(sent.len() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(20));
            (0.0, 0)
        }
    }

    /// A two-word vocabulary and `n` queued jobs of one sentence "a b a b" each.
    fn abab_jobs(n: usize) -> (Vocab, Receiver<Job>) {
        let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
        let voc = Vocab::from_sorted(vec![("a".into(), 3), ("b".into(), 2)], &s);
        let (tx, rx) = bounded(n);
        for _ in 0..n {
            let mut job = Job::default();
            for t in ["a", "b", "a", "b"] {
                job.push_token(&voc, t);
            }
            job.end_sentence();
            tx.send(job).unwrap();
        }
        (voc, rx)
    }

    /// Train 12,000 words on 3 workers with a sync every 1000 words; `poll`
    /// is the calling thread's poll. Returns ((local words, due by words) at
    /// each sync, the gate's global count for 100 local words).
    fn synced_run(mut poll: impl FnMut() -> bool) -> (Vec<(u64, bool)>, u64) {
        let (voc, rx) = abab_jobs(3000);
        let cfg = TrainConfig {
            workers: 3, alpha: 0.025, min_alpha: 0.0001, total_words: 24_000, words_before: 0, seed: 1, epoch: 0,
            want_loss: false, tick: Duration::from_millis(5), max_words: 0, resume: Vec::new(), hot: HotSpec::default(),
        };
        let syncing = AtomicBool::new(false);
        let model = Probe { syncing: &syncing, trained: AtomicU64::new(0) };
        let progress = Progress { gate: SyncGate::new(1000, 2), ..Progress::default() };
        let mut syncs = Vec::new();
        let on_sync = |p: &Progress| {
            syncing.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            let local = p.raw_words.load(Ordering::Relaxed);
            syncs.push((local, p.gate.due_by_words()));
            p.gate.set_global_words(2 * local + 10, local);
            syncing.store(false, Ordering::SeqCst);
            true
        };
        run_epoch_synced(&model, &voc, Source::Queue(&rx), &cfg, &progress, |_| true, on_sync, &mut poll).unwrap();
        assert_eq!(model.trained.load(Ordering::Relaxed), 12_000);
        (syncs, progress.gate.global(100))
    }

    #[test]
    fn the_sync_gate_parks_every_worker_and_scales_the_word_count() {
        let (syncs, global) = synced_run(|| false);
        // About one sync per 1000 words; at each, every worker had handed in its words.
        assert!(syncs.len() >= 8 && syncs.len() <= 12, "{} syncs", syncs.len());
        assert!(syncs.iter().all(|&(_, by_words)| by_words));
        assert!(syncs.windows(2).all(|w| w[1].0 >= w[0].0 + 1000));
        assert_eq!(global, 210);
    }

    /// Holds back what it trains until `publish` (as private hot rows do).
    struct Hoarder {
        trained: AtomicU64,
        published: AtomicU64,
        worker_scratches: AtomicU64,
    }

    impl crate::models::Model for Hoarder {
        type Scratch = u64;
        fn scratch(&self) -> u64 {
            0
        }
        fn worker_scratch(&self, hot: HotSpec) -> u64 {
            assert_eq!(hot, HotSpec { rows: 3, every: 100 });
            self.worker_scratches.fetch_add(1, Ordering::Relaxed);
            0
        }
        fn train_sentence(&self, held: &mut u64, sent: &[u32], _: f32, _: &mut Rng, _: bool) -> (f64, u64) {
            *held += sent.len() as u64;
            self.trained.fetch_add(sent.len() as u64, Ordering::SeqCst);
            (0.0, 0)
        }
        fn publish(&self, held: &mut u64) {
            self.published.fetch_add(std::mem::take(held), Ordering::SeqCst);
        }
    }

    /// Workers of a multi-worker epoch get `worker_scratch`, and publish
    /// what they hold before every sync (which sees all that was trained)
    /// and at their end.
    #[test]
    fn workers_publish_before_a_sync_and_at_their_end() {
        let (voc, rx) = abab_jobs(1500);
        let cfg = TrainConfig {
            workers: 2, alpha: 0.025, min_alpha: 0.0001, total_words: 6000, words_before: 0, seed: 1, epoch: 0,
            want_loss: false, tick: Duration::from_millis(5), max_words: 0, resume: Vec::new(), hot: HotSpec { rows: 3, every: 100 },
        };
        let model = Hoarder { trained: AtomicU64::new(0), published: AtomicU64::new(0), worker_scratches: AtomicU64::new(0) };
        let progress = Progress { gate: SyncGate::new(500, 1), ..Progress::default() };
        let mut syncs = 0;
        let on_sync = |_: &Progress| {
            assert_eq!(model.published.load(Ordering::SeqCst), model.trained.load(Ordering::SeqCst), "a sync saw unpublished updates");
            syncs += 1;
            true
        };
        run_epoch_synced(&model, &voc, Source::Queue(&rx), &cfg, &progress, |_| true, on_sync, || false).unwrap();
        assert!(syncs >= 5, "{syncs} syncs");
        assert_eq!(model.worker_scratches.load(Ordering::Relaxed), 2);
        assert_eq!(model.published.load(Ordering::SeqCst), 6000);
    }

    #[test]
    fn a_requested_park_leaves_the_word_schedule_alone() {
        let mut asks = 0;
        let (syncs, _) = synced_run(|| {
            asks += 1;
            asks % 4 == 0 && asks <= 40 // now and then, as a sum arriving would
        });
        let by_words: Vec<u64> = syncs.iter().filter(|s| s.1).map(|s| s.0).collect();
        assert!(syncs.iter().any(|s| !s.1), "no requested park among {syncs:?}");
        assert!(by_words.len() >= 8 && by_words.len() <= 12, "{syncs:?}");
        assert!(by_words.windows(2).all(|w| w[1] >= w[0] + 1000), "{syncs:?}");
    }
}
