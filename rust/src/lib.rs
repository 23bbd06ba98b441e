//! bidirmoe's Rust core: word2vec-style streaming SGD.
//!
//! The modules hold the logic and know nothing about Python. With the
//! `python` feature (what maturin builds) `python/` defines the
//! `bidirmoe._core` extension module: it only converts types, releases the
//! GIL around heavy work and maps errors to Python exceptions.

pub mod batches;
pub mod corpus;
pub mod hogwild;
pub mod idcache;
pub mod models;
pub mod objective;
pub mod sampling;
pub mod simd;
pub mod sync;
pub mod trainer;
pub mod vocab;

#[cfg(feature = "python")]
mod python;
