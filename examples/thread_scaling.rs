//! Where two Hogwild workers lose time against one: trains a model on a
//! plain-text corpus with 1..N workers and prints the training time (the
//! vocabulary scan excluded), optionally with parts of the parameters made
//! private to each worker. A diagnostic, not a way to train: a worker with
//! private parameters trains its own model, so the result is no model at all;
//! what it shows is how much of the lost speed comes from the workers
//! sharing (writing) the same memory.
//!
//!     cargo run --release --example thread_scaling -- CORPUS MODEL WORKERS EPOCHS [PRIVATE]
//!
//! MODEL is cbow, sg, moe1 or moe4 (window mode, mask expert; d = 100,
//! window 5, negative 5, sample 1e-3, min_count 5, the exact per-target
//! update unless BATCH says otherwise, below). PRIVATE is a comma-separated set of
//!   in      each worker its own input vectors (syn0 / BidirMoE's alpha),
//!   out     each worker its own output vectors (syn1neg / beta),
//!   alpha   each worker its own input vectors only (not BidirMoE's salience),
//!   sal     each worker its own BidirMoE salience only,
//!   small   each worker its own BidirMoE gates and offset / mask values,
//!   uniform negatives drawn uniformly instead of by count^0.75 (no hot
//!           output rows among the negatives; the parameters stay shared),
//!   static  each worker reads its fixed half (third, ...) of the file,
//!           as before `FileSplit::balanced` (training takes chunks from
//!           one queue, so all workers finish together),
//!   hotH:M  the real, shared training with hot-row privatization
//!           (`models::HotSpec`: each worker keeps private copies of the
//!           H most frequent words' rows and merges every M examples),
//! or `none` (default): the real, shared training. The environment
//! variable BATCH sets `batch_targets` (default 1, the exact update; more
//! targets share one draw of negatives). It prints the cache-line
//! round trip between two threads before and after training
//! (`hogwild::line_round_trip_ns`: under 200 ns, cores sharing a cache), and per epoch the
//! wall time / when the first worker started / when the first finished /
//! when the last finished (seconds from the epoch's start).

use bidirmoe::corpus::FileSplit;
use bidirmoe::hogwild::Hogwild;
use bidirmoe::idcache::IdCache;
use bidirmoe::models::cbow::Cbow;
use bidirmoe::models::moe::{Gates, Moe};
use bidirmoe::models::skipgram::SkipGram;
use bidirmoe::models::{HotSpec, Model};
use bidirmoe::objective::{OutputLayer, OutputSpec};
use bidirmoe::sampling::Rng;
use bidirmoe::simd::SigmoidTable;
use bidirmoe::trainer::{run_epoch, Progress, Source, TrainConfig};
use bidirmoe::vocab::Vocab;
use common::{corpus_vocab, epoch_config};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

mod common;

const D: usize = 100;
const WINDOW: usize = 5;
const R: usize = 2 * WINDOW;

/// One worker's model among several (each worker takes the next one when
/// it makes its scratch).
struct PerWorker<M> {
    models: Vec<M>,
    next: AtomicUsize,
    /// When each worker of the current epoch started and finished.
    spans: Mutex<Vec<(Instant, Instant)>>,
}

impl<M> PerWorker<M> {
    fn new(models: Vec<M>) -> Self {
        PerWorker { models, next: AtomicUsize::new(0), spans: Mutex::new(Vec::new()) }
    }
}

impl<M: Model> Model for PerWorker<M> {
    type Scratch = (usize, M::Scratch, Instant);

    fn scratch(&self) -> Self::Scratch {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.models.len();
        (k, self.models[k].scratch(), Instant::now())
    }

    fn worker_scratch(&self, hot: HotSpec) -> Self::Scratch {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.models.len();
        (k, self.models[k].worker_scratch(hot), Instant::now())
    }

    fn publish(&self, sc: &mut Self::Scratch) {
        self.models[sc.0].publish(&mut sc.1)
    }

    fn train_sentence(&self, sc: &mut Self::Scratch, sent: &[u32], lr: f32, rng: &mut Rng, want_loss: bool) -> (f64, u64) {
        self.models[sc.0].train_sentence(&mut sc.1, sent, lr, rng, want_loss)
    }

    fn sentence_done(&self, sc: &mut Self::Scratch, raw: u64) {
        self.models[sc.0].sentence_done(&mut sc.1, raw)
    }

    fn end_worker(&self, sc: &mut Self::Scratch) {
        self.models[sc.0].end_worker(&mut sc.1);
        self.spans.lock().unwrap().push((sc.2, Instant::now()));
    }
}

/// The parameter matrices of one copy of the model, as (length, columns).
const SYN0: usize = 0;
const BETA: usize = 1;
const SALIENCE: usize = 2;
const OFFSET_GATE: usize = 3;
const OFFSET_VALUE: usize = 4;
const MASK_GATE: usize = 5;
const MASK_VALUE: usize = 6;

fn shapes(v: usize, heads: usize) -> [(usize, usize); 7] {
    [(v * D, D), (v * D, D), (heads * v, v), (heads * R, R), (R * D, D), (heads, heads), (D, D)]
}

/// One copy's buffers: the input vectors random (as word2vec starts them), the rest zero.
fn buffers(v: usize, heads: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(1);
    shapes(v, heads)
        .iter()
        .enumerate()
        .map(|(k, &(len, _))| if k == SYN0 { (0..len).map(|_| (rng.unit_f32() - 0.5) / D as f32).collect() } else { vec![0.0; len] })
        .collect()
}

fn train<M: Model>(m: &PerWorker<M>, voc: &Vocab, path: &Path, workers: usize, epochs: u64, hot: HotSpec, balanced: bool) -> (u64, Vec<[f64; 4]>) {
    let progress = Progress::default();
    let cache = IdCache::new(1 << 30); // as train(corpus_file=...): later epochs replay the ids
    let mut times = Vec::new();
    for epoch in 0..epochs {
        let split = FileSplit::new(path, workers).expect("corpus");
        let split = if balanced { split.balanced() } else { split };
        let cfg = TrainConfig { hot, ..epoch_config(voc, workers, epochs, epoch) };
        m.spans.lock().unwrap().clear();
        let t = Instant::now();
        run_epoch(m, voc, Source::Cached(&split, &cache), &cfg, &progress, |_| true).expect("epoch");
        let total = t.elapsed().as_secs_f64();
        let spans = m.spans.lock().unwrap();
        let first_start = spans.iter().map(|s| s.0 - t).min().unwrap_or_default().as_secs_f64();
        let first_end = spans.iter().map(|s| s.1 - t).min().unwrap_or_default().as_secs_f64();
        let last_end = spans.iter().map(|s| s.1 - t).max().unwrap_or_default().as_secs_f64();
        times.push([total, first_start, first_end, last_end]);
    }
    (progress.examples.load(Ordering::Relaxed), times)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 6 {
        eprintln!("usage: thread_scaling CORPUS cbow|sg|moe1|moe4 WORKERS EPOCHS [in,alpha,sal,out,small,uniform,static,hotH:M|none]");
        std::process::exit(2);
    }
    let path = Path::new(&args[1]);
    let model = args[2].as_str();
    let workers: usize = args[3].parse().expect("WORKERS");
    let epochs: u64 = args[4].parse().expect("EPOCHS");
    let private = args.get(5).map(String::as_str).unwrap_or("none");
    let has = |flag: &str| private.split(',').any(|f| f == flag);
    let mut hot = HotSpec::default();
    for f in private.split(',') {
        if let Some((h, m)) = f.strip_prefix("hot").and_then(|x| x.split_once(':')) {
            hot = HotSpec { rows: h.parse().expect("hotH:M"), every: m.parse().expect("hotH:M") };
            continue;
        }
        if !["in", "out", "small", "uniform", "static", "none", "sal", "alpha"].contains(&f) {
            eprintln!("unknown PRIVATE flag {f}");
            std::process::exit(2);
        }
    }
    let voc = corpus_vocab(path, if has("uniform") { 0.0 } else { 0.75 }, false);
    // how far apart the OS has put two threads, before and after training (`hogwild::line_round_trip_ns`)
    let trip_before = bidirmoe::hogwild::line_round_trip_ns(100_000);
    let v = voc.len();
    let heads = match model {
        "moe4" => 4,
        _ => 1,
    };
    let copies = if has("in") || has("out") || has("small") || has("sal") || has("alpha") { workers } else { 1 };
    let mut copies_of: Vec<Vec<Vec<f32>>> = (0..copies).map(|_| buffers(v, heads)).collect();
    let handles: Vec<Vec<Hogwild>> = copies_of
        .iter_mut()
        .map(|c| c.iter_mut().zip(shapes(v, heads)).map(|(b, (_, cols))| Hogwild::new(b, cols)).collect())
        .collect();
    // Worker k's handle on matrix `which`: its own copy where that part is private, else copy 0's.
    let mat = |k: usize, private: bool, which: usize| handles[if private { k.min(copies - 1) } else { 0 }][which].alias();
    let spec = OutputSpec { negative: 5, hs: false, softmax: false };
    let out_of = |k: usize| OutputLayer {
        beta: mat(k, has("out"), BETA),
        syn1: Hogwild::empty(),
        bias: None,
        spec,
        vocab: &voc,
        sig: SigmoidTable::new(),
    };
    let syn0_of = |k: usize| mat(k, has("in") || has("alpha"), SYN0);
    let ks = 0..workers;
    // Targets per mini-batch (the `batch_targets` option): env BATCH, default 1.
    let batch: usize = std::env::var("BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(1);
    let (targets, times) = match model {
        "cbow" => {
            let models = ks.map(|k| Cbow { syn0: syn0_of(k), out: out_of(k), window: WINDOW, shrink: true, cbow_mean: true, batch }).collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs, hot, !has("static"))
        }
        "sg" => {
            let models = ks.map(|k| SkipGram { syn0: syn0_of(k), out: out_of(k), window: WINDOW, shrink: true, batch }).collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs, hot, !has("static"))
        }
        "moe1" | "moe4" => {
            let models = ks
                .map(|k| {
                    let small = |which| mat(k, has("small"), which);
                    Moe {
                        alpha: syn0_of(k),
                        gates: Gates::Window { salience: mat(k, has("in") || has("sal"), SALIENCE), offset_gate: small(OFFSET_GATE) },
                        offset_value: small(OFFSET_VALUE),
                        mask_gate: small(MASK_GATE),
                        mask_value: small(MASK_VALUE),
                        out: out_of(k),
                        heads,
                        full: false,
                        window: WINDOW,
                        shrink: true,
                        batch,
                    }
                })
                .collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs, hot, !has("static"))
        }
        other => {
            eprintln!("unknown model {other}");
            std::process::exit(2);
        }
    };
    let total: f64 = times.iter().map(|t| t[0]).sum();
    let trip_after = bidirmoe::hogwild::line_round_trip_ns(100_000);
    let words = voc.total_words * epochs;
    // Per epoch: wall time, and when (from the epoch's start) the first
    // worker started, the first finished and the last finished.
    let per_epoch: Vec<String> = times.iter().map(|t| format!("{:.3}/{:.3}/{:.3}/{:.3}", t[0], t[1], t[2], t[3])).collect();
    println!(
        "model={model} batch={batch} workers={workers} private={private} targets={targets} seconds={total:.3} words_per_s={:.3}M round_trip_ns={}/{} epochs_s=[{}]",
        words as f64 / total / 1e6,
        trip_before.map_or("-".into(), |t| format!("{t:.0}")),
        trip_after.map_or("-".into(), |t| format!("{t:.0}")),
        per_epoch.join(",")
    );
}
