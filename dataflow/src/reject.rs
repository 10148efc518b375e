//! Why an input was not counted. Counts are kept per [`Reason`]; the detail goes to the dead letters.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Larger than the 64 KiB limit.
    TooLarge,
    NotUtf8,
    InvalidJson,
    MissingField,
    WrongType,
    /// A string outside its length limits (`user_id` 1..256 bytes, `event` 1..128 bytes).
    InvalidField,
    /// `ts` is neither epoch milliseconds nor an RFC 3339 time.
    BadTs,
    /// `ts` before 2000-01-01 or more than a day in the future.
    TsOutOfRange,
    /// Older than the partition's watermark (newest event time minus the allowed lateness).
    TooLate,
    /// An `event_id` already counted: a producer retry.
    Duplicate,
    /// Dropped on purpose by an `[enrich]` filter rule (internal traffic, test users, bots).
    Filtered,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::TooLarge,
        Reason::NotUtf8,
        Reason::InvalidJson,
        Reason::MissingField,
        Reason::WrongType,
        Reason::InvalidField,
        Reason::BadTs,
        Reason::TsOutOfRange,
        Reason::TooLate,
        Reason::Duplicate,
        Reason::Filtered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotUtf8 => "not_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::InvalidField => "invalid_field",
            Reason::BadTs => "bad_ts",
            Reason::TsOutOfRange => "ts_out_of_range",
            Reason::TooLate => "too_late",
            Reason::Duplicate => "duplicate",
            Reason::Filtered => "filtered",
        }
    }
}

/// A reason with the detail a person needs to fix the producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}
