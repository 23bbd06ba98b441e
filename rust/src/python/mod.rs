//! The `bidirmoe._core` extension module (built with the `python` feature).
//! It only converts types, releases the GIL around heavy work and maps errors
//! to Python exceptions; the logic lives in the crate's other modules.
//! Split by concern: `arrays` (numpy parameter checks and borrows), `input`
//! (corpus files and Python iterables), `schedule` (the epoch driver shared by
//! every model), `vocab`, `stream` (batches for torch), and one small file
//! per model (`word2vec`, `moe`, `attention`, `tabular`).

mod arrays;
mod attention;
mod input;
mod moe;
mod schedule;
mod stream;
mod sync;
mod tabular;
mod vocab;
mod word2vec;

use crate::corpus;
use crate::sampling::Rng;
use crate::simd;
use crate::trainer::{run_epoch, Job, Progress, Source, TrainConfig};
use crate::vocab::{Vocab, VocabSettings};
use crossbeam_channel::bounded;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::time::Duration;

/// The SIMD kernel level in use ("avx512f", "avx2+fma", "neon" or "scalar").
#[pyfunction]
pub(crate) fn simd_level() -> &'static str {
    simd::level_name()
}

/// Force a SIMD level ("scalar", "avx2+fma", "avx512f", "neon") or None for
/// automatic; returns False if the CPU lacks it.
#[pyfunction]
#[pyo3(signature = (level=None))]
pub(crate) fn force_simd(level: Option<&str>) -> PyResult<bool> {
    let l = match level {
        None => None,
        Some("scalar") => Some(simd::Level::Scalar),
        Some("avx2+fma") => Some(simd::Level::Avx2Fma),
        Some("avx512f") => Some(simd::Level::Avx512),
        Some("neon") => Some(simd::Level::Neon),
        Some(o) => return Err(PyValueError::new_err(format!("unknown SIMD level {o:?}"))),
    };
    Ok(simd::force_level(l))
}

/// Benchmark diagnostic: the median over `repeats` of the mean cache-line
/// round trip between two threads, in ns (`hogwild::line_round_trip_ns`),
/// GIL released; None if every repeat stalled.
#[pyfunction]
#[pyo3(signature = (rounds=100_000, repeats=3))]
pub(crate) fn _line_round_trip_ns(py: Python<'_>, rounds: u64, repeats: usize) -> Option<f64> {
    let mut got: Vec<f64> = py.allow_threads(|| (0..repeats).filter_map(|_| crate::hogwild::line_round_trip_ns(rounds)).collect());
    got.sort_by(f64::total_cmp);
    got.get(got.len() / 2).copied()
}

/// Test hook: run a training epoch whose model panics inside a worker
/// thread, to show the panic surfaces as a RuntimeError (never an abort).
#[pyfunction]
pub(crate) fn _panic_in_worker(py: Python<'_>) -> PyResult<()> {
    struct Boom;
    impl crate::models::Model for Boom {
        type Scratch = ();
        fn scratch(&self) {}
        fn train_sentence(&self, _: &mut (), _: &[u32], _: f32, _: &mut Rng, _: bool) -> (f64, u64) {
            panic!("deliberate test panic")
        }
    }
    let s = VocabSettings { min_count: 1, max_final_vocab: None, sample: 0.0, ns_exponent: 0.75, hs: false };
    let voc = Vocab::from_sorted(vec![("a".into(), 3), ("b".into(), 2)], &s);
    let (tx, rx) = bounded(2);
    let mut job = Job::default();
    for t in ["a", "b", "a"] {
        job.push_token(&voc, t);
    }
    job.end_sentence();
    tx.send(job).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    drop(tx);
    let cfg = TrainConfig {
        workers: 2, alpha: 0.025, min_alpha: 0.0001, total_words: 3, words_before: 0, seed: 1, epoch: 0,
        want_loss: false, tick: Duration::from_millis(10), max_words: 0, resume: Vec::new(), hot: Default::default(),
    };
    let progress = Progress::default();
    py.allow_threads(|| run_epoch(&Boom, &voc, Source::Queue(&rx), &cfg, &progress, |_| true))
        .map_err(PyRuntimeError::new_err)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<vocab::VocabCounter>()?;
    m.add_class::<vocab::PyVocab>()?;
    m.add_class::<input::JobQueue>()?;
    m.add_class::<input::PyIdCache>()?;
    m.add_class::<stream::PyBatchStream>()?;
    m.add_function(wrap_pyfunction!(word2vec::train_epoch, m)?)?;
    m.add_function(wrap_pyfunction!(word2vec::train_sentence_ns, m)?)?;
    m.add_function(wrap_pyfunction!(moe::train_epoch_moe, m)?)?;
    m.add_function(wrap_pyfunction!(moe::moe_step, m)?)?;
    m.add_function(wrap_pyfunction!(moe::moe_batch_step, m)?)?;
    m.add_function(wrap_pyfunction!(attention::train_epoch_attention, m)?)?;
    m.add_function(wrap_pyfunction!(attention::attention_step, m)?)?;
    m.add_function(wrap_pyfunction!(tabular::tabular_fit, m)?)?;
    m.add_function(wrap_pyfunction!(tabular::tabular_predict, m)?)?;
    m.add_function(wrap_pyfunction!(tabular::tabular_step, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_exchange, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_adopt, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(force_simd, m)?)?;
    m.add_function(wrap_pyfunction!(_line_round_trip_ns, m)?)?;
    m.add_function(wrap_pyfunction!(input::read_corpus_file, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_in_worker, m)?)?;
    m.add("MAX_SENTENCE_LEN", corpus::MAX_SENTENCE_LEN)?;
    Ok(())
}
