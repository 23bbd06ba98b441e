//! What the profiling examples share: the vocabulary of a corpus file and
//! the trainer's configuration for one of several epochs.

use bidirmoe::corpus::{for_each_sentence, token_str};
use bidirmoe::trainer::TrainConfig;
use bidirmoe::vocab::{Vocab, VocabCounter, VocabSettings};
use std::path::Path;
use std::time::Duration;

/// The vocabulary of the plain-text corpus at `path` (min_count 5, sample
/// 1e-3, negatives drawn by count^`ns_exponent`; a Huffman tree when `hs`).
pub fn corpus_vocab(path: &Path, ns_exponent: f64, hs: bool) -> Vocab {
    let mut counter = VocabCounter::new(None);
    for_each_sentence(path, |toks| {
        for t in toks {
            counter.add_token(&token_str(t));
        }
        counter.end_sentence();
    })
    .expect("corpus");
    Vocab::from_counter(&counter, &VocabSettings { min_count: 5, max_final_vocab: None, sample: 1e-3, ns_exponent, hs })
}

/// Epoch `epoch` of `epochs` over `voc`'s corpus with `workers` workers
/// (alpha 0.025 down to 1e-4, seed 1, no loss).
pub fn epoch_config(voc: &Vocab, workers: usize, epochs: u64, epoch: u64) -> TrainConfig {
    TrainConfig {
        workers,
        alpha: 0.025,
        min_alpha: 1e-4,
        total_words: voc.total_words * epochs,
        words_before: voc.total_words * epoch,
        seed: 1,
        epoch,
        want_loss: false,
        tick: Duration::from_secs(1),
        max_words: 0,
        resume: Vec::new(),
        hot: Default::default(),
    }
}
