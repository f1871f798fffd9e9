//! One module per subcommand. Each exposes `Args` (clap) and `async fn run(Args, LogMode)`.
pub mod daemon;
pub mod demo;
pub mod encode;
pub mod export;
pub mod health;
pub mod import;
pub mod maintain;
pub mod query;
pub mod serve_test;
pub mod status;
pub mod sync;
