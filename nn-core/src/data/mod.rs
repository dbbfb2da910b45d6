//! Data sets and batching.
