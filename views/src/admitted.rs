//! What moves through the dataflow between admission and the per-user views: an admitted event
//! on its way to the worker that owns its user, and the engine's order of events.

use schema::event::{Event, Sym};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A short text stored inline (user ids and IP addresses rarely exceed it), so an admitted event
/// costs no allocation on its way to its user's worker.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text(SmallVec<[u8; 24]>);

impl Text {
    pub fn new(text: &str) -> Text {
        Text(SmallVec::from_slice(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("built from a str")
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Bits of [`ord`] for the position inside a partition (offset or line): 17.6 trillion.
const POSITION_BITS: u32 = 44;

/// The engine's order of events with equal times: by input partition (its rank among all input
/// partitions, sorted by topic and number), then by offset (Kafka) or line (file). `(ts, ord)`
/// orders a user's events the same way in every view, whatever the number of workers, processes
/// or partitions, and whatever the interleaving in which events reach the user's worker.
pub fn ord(rank: u32, position: u64) -> u64 {
    ((rank as u64) << POSITION_BITS) | (position & ((1 << POSITION_BITS) - 1))
}

/// An admitted event, as the per-user views need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admitted {
    pub event: Event,
    /// Its place among events with the same time (see [`ord`]).
    pub ord: u64,
    /// Hash of the producer's `session_id`, 0 without one.
    pub session_id: u64,
    /// Its path node (cleaned page or conversion event), `NONE` if it is not a path step.
    pub node: Sym,
    /// `(key, value)` symbols of `props`.
    pub props: SmallVec<[(Sym, Sym); 2]>,
    /// The producer's `user_id` (shown in lists of users, the key of per-user rules).
    pub user_id: Text,
    /// The client address, for per-IP rules: its symbol and text.
    pub ip: Option<(Sym, Text)>,
}
