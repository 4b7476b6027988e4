//! What every controller's reconcile shares: its error, and the one error
//! policy that retries a failed reconcile.

pub mod error;
pub mod retry;

pub use error::Error;
