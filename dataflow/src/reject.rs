//! Why an input was not counted. Counts are kept per [`Reason`]; the detail goes to the dead letters.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Larger than the 64 KiB limit. A line of a replayed file counts once however long it is.
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
    /// An empty or whitespace-only line of a replayed file. Counted, so that every line is
    /// accounted for, but not copied into the dead letters: there is nothing in it to fix.
    Blank,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
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
        Reason::Blank,
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
            Reason::Blank => "blank",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_with_its_serde_name() {
        let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for reason in Reason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert_eq!(Reason::Blank.as_str(), "blank");
    }
}
