//! The compact, decoded form of one event that every view reads.
//!
//! Strings are replaced by 64-bit xxh3 symbols so that the hot path moves integers, not text; the
//! text of each symbol travels once through the dataflow as a name cell so the read model can
//! show it. A collision between two distinct strings has probability ~n²/2⁶⁵ (about 3e-6 for ten
//! million distinct users), which we accept and document rather than pay for interning.

use serde::{Deserialize, Serialize};
use xxhash_rust::const_xxh3::xxh3_64 as const_xxh3;
use xxhash_rust::xxh3::xxh3_64;

pub use crate::time::{minute_of, minute_start_ms, Minute, MS_PER_MINUTE};

/// A hashed string (page, event name, breakdown value).
pub type Sym = u64;
/// A hashed `user_id`.
pub type UserId = u64;

/// The symbol used where an optional field is absent; shown as `(none)`.
pub const NONE: Sym = 0;
pub const NONE_TEXT: &str = "(none)";
pub const PAGE_VIEW: Sym = const_xxh3(b"page_view");

/// Hashes a string into a symbol; never returns [`NONE`] for a present value.
#[inline]
pub fn sym(text: &str) -> Sym {
    match xxh3_64(text.as_bytes()) {
        NONE => 1,
        h => h,
    }
}

/// A field value as a query or a definition gives it; empty or `(none)` (as answers show it)
/// means absent.
pub fn sym_or_none(text: &str) -> Sym {
    if text.is_empty() || text == NONE_TEXT {
        NONE
    } else {
        sym(text)
    }
}

/// One accepted event, as the views see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time, Unix epoch milliseconds.
    pub ts: i64,
    pub user: UserId,
    pub name: Sym,
    pub page: Sym,
    pub utm_source: Sym,
    pub device: Sym,
    pub country: Sym,
}

impl Event {
    pub fn is_page_view(&self) -> bool {
        self.name == PAGE_VIEW
    }
}
