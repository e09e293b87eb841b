//! The drain signal every task selects on: cancelled once, seen by all.

pub use tokio_util::sync::CancellationToken as Shutdown;
