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
//! update). PRIVATE is a comma-separated set of
//!   in      each worker its own input vectors (syn0 / BidirMoE's alpha),
//!   out     each worker its own output vectors (syn1neg / beta),
//!   small   each worker its own BidirMoE gates and offset / mask values,
//!   uniform negatives drawn uniformly instead of by count^0.75 (no hot
//!           output rows among the negatives; the parameters stay shared),
//! or `none` (default): the real, shared training. Per epoch it prints the
//! wall time / when the first worker started / when the first finished /
//! when the last finished (seconds from the epoch's start).

use bidirmoe::corpus::{for_each_sentence, token_str, FileSplit};
use bidirmoe::hogwild::Hogwild;
use bidirmoe::idcache::IdCache;
use bidirmoe::models::cbow::Cbow;
use bidirmoe::models::moe::{Gates, Moe};
use bidirmoe::models::skipgram::SkipGram;
use bidirmoe::models::Model;
use bidirmoe::objective::{OutputLayer, OutputSpec};
use bidirmoe::sampling::Rng;
use bidirmoe::simd::SigmoidTable;
use bidirmoe::trainer::{run_epoch, Progress, Source, TrainConfig};
use bidirmoe::vocab::{Vocab, VocabCounter, VocabSettings};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Every parameter buffer of one copy of the model.
struct Buffers {
    syn0: Vec<f32>,
    beta: Vec<f32>,
    salience: Vec<f32>,
    offset_gate: Vec<f32>,
    offset_value: Vec<f32>,
    mask_gate: Vec<f32>,
    mask_value: Vec<f32>,
}

impl Buffers {
    fn new(v: usize, heads: usize) -> Self {
        let mut rng = Rng::new(1);
        Buffers {
            syn0: (0..v * D).map(|_| (rng.unit_f32() - 0.5) / D as f32).collect(),
            beta: vec![0.0; v * D],
            salience: vec![0.0; heads * v],
            offset_gate: vec![0.0; heads * R],
            offset_value: vec![0.0; R * D],
            mask_gate: vec![0.0; heads],
            mask_value: vec![0.0; D],
        }
    }
}

/// Hogwild handles on one copy's buffers.
struct Handles<'a> {
    syn0: Hogwild<'a>,
    beta: Hogwild<'a>,
    salience: Hogwild<'a>,
    offset_gate: Hogwild<'a>,
    offset_value: Hogwild<'a>,
    mask_gate: Hogwild<'a>,
    mask_value: Hogwild<'a>,
}

impl<'a> Handles<'a> {
    fn of(b: &'a mut Buffers, v: usize, heads: usize) -> Self {
        Handles {
            syn0: Hogwild::new(&mut b.syn0, D),
            beta: Hogwild::new(&mut b.beta, D),
            salience: Hogwild::new(&mut b.salience, v),
            offset_gate: Hogwild::new(&mut b.offset_gate, R),
            offset_value: Hogwild::new(&mut b.offset_value, D),
            mask_gate: Hogwild::new(&mut b.mask_gate, heads),
            mask_value: Hogwild::new(&mut b.mask_value, D),
        }
    }
}

fn train<M: Model>(m: &PerWorker<M>, voc: &Vocab, path: &Path, workers: usize, epochs: u64) -> (u64, Vec<[f64; 4]>) {
    let progress = Progress::default();
    let cache = IdCache::new(1 << 30); // as train(corpus_file=...): later epochs replay the ids
    let mut times = Vec::new();
    for epoch in 0..epochs {
        let split = FileSplit::new(path, workers).expect("corpus");
        let cfg = TrainConfig {
            workers,
            alpha: 0.025,
            min_alpha: 1e-4,
            total_words: voc.total_words * epochs,
            words_before: voc.total_words * epoch,
            seed: 1,
            epoch,
            want_loss: false,
            tick: Duration::from_millis(500),
            max_words: 0,
            resume: Vec::new(),
        };
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
        eprintln!("usage: thread_scaling CORPUS cbow|sg|moe1|moe4 WORKERS EPOCHS [in,out,small,uniform|none]");
        std::process::exit(2);
    }
    let path = Path::new(&args[1]);
    let model = args[2].as_str();
    let workers: usize = args[3].parse().expect("WORKERS");
    let epochs: u64 = args[4].parse().expect("EPOCHS");
    let private = args.get(5).map(String::as_str).unwrap_or("none");
    let has = |flag: &str| private.split(',').any(|f| f == flag);
    for f in private.split(',') {
        if !["in", "out", "small", "uniform", "none"].contains(&f) {
            eprintln!("unknown PRIVATE flag {f}");
            std::process::exit(2);
        }
    }
    let mut counter = VocabCounter::new(None);
    for_each_sentence(path, |toks| {
        for t in toks {
            counter.add_token(&token_str(t));
        }
        counter.end_sentence();
    })
    .expect("corpus");
    let ns_exponent = if has("uniform") { 0.0 } else { 0.75 };
    let settings = VocabSettings { min_count: 5, max_final_vocab: None, sample: 1e-3, ns_exponent, hs: false };
    let voc = Vocab::from_counter(&counter, &settings);
    let v = voc.len();
    let heads = match model {
        "moe4" => 4,
        _ => 1,
    };
    let copies = if has("in") || has("out") || has("small") { workers } else { 1 };
    let mut buffers: Vec<Buffers> = (0..copies).map(|_| Buffers::new(v, heads)).collect();
    let handles: Vec<Handles> = buffers.iter_mut().map(|b| Handles::of(b, v, heads)).collect();
    // Worker k's handle on a matrix: its own copy where that part is private, else copy 0.
    let pick = |k: usize, private: bool| if private { k.min(copies - 1) } else { 0 };
    let spec = OutputSpec { negative: 5, hs: false, softmax: false };
    let out_of = |k: usize| OutputLayer {
        beta: handles[pick(k, has("out"))].beta.alias(),
        syn1: Hogwild::empty(),
        bias: None,
        spec,
        vocab: &voc,
        sig: SigmoidTable::new(),
    };
    let syn0_of = |k: usize| handles[pick(k, has("in"))].syn0.alias();
    let ks = 0..workers;
    let (targets, times) = match model {
        "cbow" => {
            let models = ks.map(|k| Cbow { syn0: syn0_of(k), out: out_of(k), window: WINDOW, shrink: true, cbow_mean: true, batch: 1 }).collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs)
        }
        "sg" => {
            let models = ks.map(|k| SkipGram { syn0: syn0_of(k), out: out_of(k), window: WINDOW, shrink: true, batch: 1 }).collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs)
        }
        "moe1" | "moe4" => {
            let models = ks
                .map(|k| {
                    let s = &handles[pick(k, has("small"))];
                    Moe {
                        alpha: syn0_of(k),
                        gates: Gates::Window { salience: handles[pick(k, has("in"))].salience.alias(), offset_gate: s.offset_gate.alias() },
                        offset_value: s.offset_value.alias(),
                        mask_gate: s.mask_gate.alias(),
                        mask_value: s.mask_value.alias(),
                        out: out_of(k),
                        heads,
                        full: false,
                        window: WINDOW,
                        shrink: true,
                        batch: 1,
                    }
                })
                .collect();
            train(&PerWorker::new(models), &voc, path, workers, epochs)
        }
        other => {
            eprintln!("unknown model {other}");
            std::process::exit(2);
        }
    };
    let total: f64 = times.iter().map(|t| t[0]).sum();
    let words = voc.total_words * epochs;
    // Per epoch: wall time, and when (from the epoch's start) the first
    // worker started, the first finished and the last finished.
    let per_epoch: Vec<String> = times.iter().map(|t| format!("{:.3}/{:.3}/{:.3}/{:.3}", t[0], t[1], t[2], t[3])).collect();
    println!(
        "model={model} workers={workers} private={private} targets={targets} seconds={total:.3} words_per_s={:.3}M epochs_s=[{}]",
        words as f64 / total / 1e6,
        per_epoch.join(",")
    );
}
