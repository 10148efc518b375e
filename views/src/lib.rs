//! The views: one folder per view, each its state machines and the timely operators that run
//! them (traffic counts, sessions, funnels, paths, retention, per-key counts), over the schema's
//! events and cells. Per-user views run in one keyed operator after an exchange by user
//! ([`users`]); every view's cells meet in the cells operator ([`store`]), which consolidates
//! them across workers and lets them go with their windows. No Kafka, no HTTP, no read model.

pub mod admitted;
pub mod control;
pub mod funnels;
pub mod keys;
pub mod paths;
pub mod retention;
pub mod sessions;
pub mod snapshot;
pub mod store;
pub mod traffic;
pub mod userlog;
pub mod users;

/// Drops a large value on a thread of its own: a worker that is done should not spend seconds
/// freeing its state while the process waits for it (a replay exits right after).
pub fn drop_elsewhere<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new().name("drop".into()).spawn(move || drop(value));
}
