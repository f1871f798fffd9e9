//! Bad input through the real path, one table of named cases per family: NDJSON lines and
//! input files through `fhirsync import` (the library's `run_import`), lines served by the
//! test server through a sync, and config files through the resolution `sync` and `daemon`
//! use. Each case states the behaviour decided for its kind and checks it: every valid
//! neighbour lands, the bad item is rejected with file, line and reason (or kept, or the run
//! refuses with a one-line reason before writing anything), no panic on any thread, and no hang
//! (each case runs under a timeout that fails it).
mod config;
mod files;
mod harness;
mod lines;
mod served;
