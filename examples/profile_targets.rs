//! Cost per trained target of one model, without Python in the way: reads a
//! plain-text corpus, builds the vocabulary (min_count 5, sample 1e-3),
//! trains `epochs` epochs with one worker (d = 100, window 5, negative 5)
//! and prints the number of trained targets and the wall time.
//!
//!     cargo run --release --example profile_targets -- CORPUS MODEL BATCH EPOCHS [LEVEL]
//!
//! LEVEL (optional: avx512, avx2, scalar) forces the vector kernels' level.
//!
//! MODEL is cbow, sg, moe1 or moe4 (BidirMoE, window mode, mask expert, 1 or
//! 4 heads), or cbowhs / sghs (hierarchical softmax instead of negatives).
//! Run it under `valgrind --tool=cachegrind` with EPOCHS = 1 and EPOCHS = 0:
//! the difference of the two counts, divided by the targets, is the
//! per-target cost of training alone (see README, "The cost per trained target").

use bidirmoe::corpus::FileSplit;
use bidirmoe::hogwild::Hogwild;
use bidirmoe::idcache::IdCache;
use bidirmoe::models::cbow::Cbow;
use bidirmoe::models::moe::{Gates, Moe};
use bidirmoe::models::skipgram::SkipGram;
use bidirmoe::models::Model;
use bidirmoe::objective::{OutputLayer, OutputSpec};
use bidirmoe::sampling::Rng;
use bidirmoe::simd::{force_level, level_name, Level, SigmoidTable};
use bidirmoe::trainer::{run_epoch, Progress, Source};
use bidirmoe::vocab::Vocab;
use common::{corpus_vocab, epoch_config};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

mod common;

const D: usize = 100;
const WINDOW: usize = 5;

fn train<M: Model>(m: &M, voc: &Vocab, path: &Path, epochs: u64) -> (u64, f64) {
    let progress = Progress::default();
    // As `train(corpus_file=...)` does: epochs after the first replay the ids.
    let cache = IdCache::new(1 << 30);
    let t = Instant::now();
    for epoch in 0..epochs {
        let split = FileSplit::new(path, 1).expect("corpus");
        let cfg = epoch_config(voc, 1, epochs, epoch);
        run_epoch(m, voc, Source::Cached(&split, &cache), &cfg, &progress, |_| true).expect("epoch");
    }
    (progress.examples.load(Ordering::Relaxed), t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 6 {
        eprintln!("usage: profile_targets CORPUS cbow|sg|moe1|moe4|cbowhs|sghs BATCH EPOCHS [avx512|avx2|scalar]");
        std::process::exit(2);
    }
    if let Some(l) = args.get(5) {
        let level = match l.as_str() {
            "avx512" => Level::Avx512,
            "avx2" => Level::Avx2Fma,
            "scalar" => Level::Scalar,
            other => {
                eprintln!("unknown level {other}");
                std::process::exit(2);
            }
        };
        if !force_level(Some(level)) {
            eprintln!("this CPU lacks {l}");
            std::process::exit(2);
        }
    }
    let path = Path::new(&args[1]);
    let (model, batch): (&str, usize) = (&args[2], args[3].parse().expect("BATCH"));
    let epochs: u64 = args[4].parse().expect("EPOCHS");
    let (model, hs) = match model.strip_suffix("hs") {
        Some(m) => (m, true),
        None => (model, false),
    };
    let voc = corpus_vocab(path, 0.75, hs);
    let v = voc.len();
    let mut rng = Rng::new(1);
    let mut syn0: Vec<f32> = (0..v * D).map(|_| (rng.unit_f32() - 0.5) / D as f32).collect();
    // The output matrix: negative sampling's beta, or the tree's inner nodes.
    let mut beta = vec![0f32; v * D];
    let spec = OutputSpec { negative: if hs { 0 } else { 5 }, hs, softmax: false };
    let (b, s1) = if hs { (Hogwild::empty(), Hogwild::new(&mut beta, D)) } else { (Hogwild::new(&mut beta, D), Hogwild::empty()) };
    let out = OutputLayer { beta: b, syn1: s1, bias: None, spec, vocab: &voc, sig: SigmoidTable::new() };
    let syn0h = Hogwild::new(&mut syn0, D);
    let (targets, secs) = match model {
        "cbow" => train(&Cbow { syn0: syn0h, out, window: WINDOW, shrink: true, cbow_mean: true, batch }, &voc, path, epochs),
        "sg" => train(&SkipGram { syn0: syn0h, out, window: WINDOW, shrink: true, batch }, &voc, path, epochs),
        "moe1" | "moe4" => {
            let h = if model == "moe1" { 1 } else { 4 };
            let r = 2 * WINDOW;
            let (mut sal, mut og, mut ov) = (vec![0f32; h * v], vec![0f32; h * r], vec![0f32; r * D]);
            let (mut mg, mut mv) = (vec![0f32; h], vec![0f32; D]);
            let m = Moe {
                alpha: syn0h,
                gates: Gates::Window { salience: Hogwild::new(&mut sal, v), offset_gate: Hogwild::new(&mut og, r) },
                offset_value: Hogwild::new(&mut ov, D),
                mask_gate: Hogwild::new(&mut mg, h),
                mask_value: Hogwild::new(&mut mv, D),
                out,
                heads: h,
                full: false,
                window: WINDOW,
                shrink: true,
                batch,
            };
            train(&m, &voc, path, epochs)
        }
        other => {
            eprintln!("unknown model {other}");
            std::process::exit(2);
        }
    };
    // FNV-1a over the bits of both trained matrices: two builds that train
    // bit-identical vectors print the same checksum.
    let checksum = syn0.iter().chain(&beta).fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
    println!(
        "model={model} batch={batch} epochs={epochs} vocab={v} targets={targets} seconds={secs:.3} level={} checksum={checksum:016x}",
        level_name()
    );
}
