//! Replay protection for signed Slack requests. A signature is HMAC-SHA256 over
//! `v0:{timestamp}:{body}`, so it names one request exactly; Slack sends each request once (an
//! Events API retry is a new delivery with a new timestamp, hence a new signature). The guard
//! remembers the signature of every request that verified, for as long as its timestamp keeps it
//! fresh (5 minutes either way of the clock), and refuses the same signature a second time.
//!
//! Only signatures that already verified are offered to the guard (see `verify::verified`), so
//! forged requests cannot fill it: every entry is a request that someone holding the signing
//! secret (that is, Slack) signed within the window.

use std::collections::{BTreeSet, HashSet};

use parking_lot::Mutex;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use crate::verify::Refusal;

/// How many signatures the guard holds at most: 100k requests in 5 minutes is over 300 signed
/// requests a second, far beyond what one workspace's slash commands and buttons send.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A signature without its `v0=` prefix: 32 bytes of HMAC-SHA256.
type Key = [u8; 32];

/// Signatures of accepted requests, each kept until its timestamp is out of the window.
pub struct ReplayGuard {
    window_s: i64,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    keys: HashSet<Key>,
    /// The same keys ordered by request timestamp: the oldest are let go first.
    by_time: BTreeSet<(i64, Key)>,
    /// The latest `now` the guard was asked at. Entries are let go by it, so a clock that steps
    /// back cannot make a forgotten request fresh again: anything older than this minus the
    /// window is refused as stale whatever the clock says now.
    latest_now: i64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard over Slack's window (`MAX_TIMESTAMP_AGE_SECONDS`) holding at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            window_s: SlackEventSignatureVerifier::MAX_TIMESTAMP_AGE_SECONDS,
            capacity,
            seen: Mutex::new(Seen { latest_now: i64::MIN, ..Seen::default() }),
        }
    }

    /// Admits the request signed `signature` at `timestamp` (seconds) once: the first call records
    /// it, later ones within the window are refused as `Replayed`. Call it only after the
    /// signature verified. Checking and recording happen under one lock, so of two identical
    /// requests arriving together exactly one is admitted.
    pub fn admit(&self, signature: &str, timestamp: i64, now_s: i64) -> Result<(), Refusal> {
        // A verified signature is always `v0=` and 64 lowercase hex digits (the verifier compares
        // bytes exactly); anything else did not verify, so it is refused rather than remembered.
        let key = key(signature).ok_or(Refusal::Forged)?;
        let mut seen = self.seen.lock();
        seen.latest_now = seen.latest_now.max(now_s);
        let horizon = seen.latest_now.saturating_sub(self.window_s);
        // Let go of every request whose timestamp is out of the window.
        while let Some(&(ts, k)) = seen.by_time.first() {
            if ts >= horizon {
                break;
            }
            seen.by_time.pop_first();
            seen.keys.remove(&k);
        }
        if timestamp < horizon || timestamp.saturating_sub(now_s) > self.window_s {
            return Err(Refusal::Stale);
        }
        if seen.keys.contains(&key) {
            return Err(Refusal::Replayed);
        }
        // Full: refuse the new request rather than forget an old one. Forgetting a signature whose
        // timestamp is still fresh would let that request be replayed, which is the very attack
        // this guard stops; refusing costs a legitimate command an error message, and only under a
        // load (over `capacity` signed requests in 5 minutes) no workspace sends. Only verified
        // requests are recorded, so no one without the signing secret can fill the set.
        if seen.keys.len() >= self.capacity {
            return Err(Refusal::TooMany(self.capacity));
        }
        seen.keys.insert(key);
        seen.by_time.insert((timestamp, key));
        Ok(())
    }

    /// How many signatures are held now.
    pub fn len(&self) -> usize {
        self.seen.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 32 bytes of a `v0=<64 lowercase hex digits>` signature.
fn key(signature: &str) -> Option<Key> {
    let hex = signature.strip_prefix("v0=")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut key = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_132_800;

    /// A well-formed signature, different for every `n`.
    fn sig(n: u64) -> String {
        format!("v0={:064x}", n)
    }

    #[test]
    fn the_same_request_twice_is_refused_the_second_time() {
        let guard = ReplayGuard::default();
        assert_eq!(guard.admit(&sig(1), NOW, NOW), Ok(()));
        assert_eq!(guard.admit(&sig(1), NOW, NOW + 1), Err(Refusal::Replayed));
        assert_eq!(guard.admit(&sig(2), NOW, NOW + 1), Ok(()), "another request at the same second");
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn a_signature_is_remembered_for_the_whole_window_and_let_go_after_it() {
        let guard = ReplayGuard::default();
        // Signed 5 minutes in the past and 5 minutes in the future (clock skew either way).
        assert_eq!(guard.admit(&sig(1), NOW - 300, NOW), Ok(()));
        assert_eq!(guard.admit(&sig(2), NOW + 300, NOW), Ok(()));
        assert_eq!(guard.admit(&sig(1), NOW - 300, NOW), Err(Refusal::Replayed));
        // sig(2) stays acceptable to the timestamp check until NOW + 600, so it is kept until then.
        assert_eq!(guard.admit(&sig(2), NOW + 300, NOW + 600), Err(Refusal::Replayed));
        assert_eq!(guard.len(), 1, "sig(1) let go once out of the window");
        assert_eq!(guard.admit(&sig(3), NOW + 700, NOW + 1000), Ok(()));
        assert_eq!(guard.len(), 1, "sig(2) let go too");
        // Once let go, the old timestamp is refused as stale, never admitted again.
        assert_eq!(guard.admit(&sig(1), NOW - 300, NOW + 1000), Err(Refusal::Stale));
    }

    #[test]
    fn a_clock_stepping_back_does_not_reopen_forgotten_requests() {
        let guard = ReplayGuard::default();
        assert_eq!(guard.admit(&sig(1), NOW, NOW), Ok(()));
        assert_eq!(guard.admit(&sig(2), NOW + 400, NOW + 400), Ok(()));
        assert_eq!(guard.len(), 1, "sig(1) let go");
        // The clock steps back 10 minutes: sig(1)'s timestamp looks fresh again, but it was forgotten.
        assert_eq!(guard.admit(&sig(1), NOW, NOW - 200), Err(Refusal::Stale));
        assert_eq!(guard.admit(&sig(3), NOW + 100, NOW - 200), Ok(()), "fresh for both clocks");
    }

    #[test]
    fn when_full_new_requests_are_refused_and_old_ones_still_are_not_forgotten() {
        let guard = ReplayGuard::new(3);
        for n in 0..3 {
            assert_eq!(guard.admit(&sig(n), NOW + n as i64, NOW), Ok(()));
        }
        assert_eq!(guard.admit(&sig(9), NOW, NOW), Err(Refusal::TooMany(3)));
        assert_eq!(guard.admit(&sig(0), NOW, NOW), Err(Refusal::Replayed), "a replay is still named as one");
        assert_eq!(guard.len(), 3);
        // Room again once the oldest leave the window.
        assert_eq!(guard.admit(&sig(9), NOW + 301, NOW + 301), Ok(()));
        assert_eq!(guard.len(), 3, "sig(0) left, sig(9) came");
    }

    #[test]
    fn malformed_signatures_are_never_remembered() {
        let guard = ReplayGuard::default();
        let upper = format!("v0={:064X}", 0xabc);
        let long = format!("{}0", sig(1));
        for bad in ["", "v0=", "v0=abc", "v1=0000", &upper, &long, &sig(1)[1..]] {
            assert_eq!(guard.admit(bad, NOW, NOW), Err(Refusal::Forged), "{bad:?}");
        }
        assert!(guard.is_empty());
        assert_eq!(key(&sig(0x0102)).unwrap()[30..], [1, 2]);
    }
}
