//! Snapshot parts of one worker: every stateful operator serialises its state at the same labels,
//! so that the runtime can write one consistent snapshot per worker.
//!
//! A label `s` (a multiple of `every`, or [`FINAL`]) stands for "after every epoch up to and
//! including `s`". Every worker uses the same labels, and each operator takes its part when it has
//! processed every epoch up to `s` and none after it, so the parts of all workers at one label
//! together are the state of the whole engine after epoch `s`: the inputs' positions at `s` plus
//! the state they produced.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The label of the state after all input (the engine is stopping).
pub const FINAL: u64 = u64::MAX;

#[derive(Default)]
struct Inner {
    every: u64,
    parts: BTreeMap<u64, BTreeMap<&'static str, Vec<u8>>>,
    /// Labels this worker skips (its writer was still busy with the previous one): its
    /// operators do not serialise their state for them.
    skipped: std::collections::BTreeSet<u64>,
}

/// Shared by the operators of one worker and its runtime loop.
#[derive(Clone, Default)]
pub struct Snapshots(Rc<RefCell<Inner>>);

impl Snapshots {
    /// Snapshots every `every` epochs (0: never).
    pub fn new(every: u64) -> Snapshots {
        Snapshots(Rc::new(RefCell::new(Inner { every, ..Inner::default() })))
    }

    /// The labels in `[from, upto)`, or [`FINAL`] when `upto` is `None` (the input has ended),
    /// without the skipped ones.
    pub fn labels(&self, from: u64, upto: Option<u64>) -> Vec<u64> {
        let inner = self.0.borrow();
        if inner.every == 0 {
            return Vec::new();
        }
        match upto {
            None => vec![FINAL],
            Some(upto) => {
                let first = from.div_ceil(inner.every).max(1) * inner.every;
                (first..upto).step_by(inner.every as usize).filter(|l| !inner.skipped.contains(l)).collect()
            }
        }
    }

    /// This worker skips `label` (decided when its inputs pass it, before any operator can).
    pub fn skip(&self, label: u64) {
        let mut inner = self.0.borrow_mut();
        inner.skipped.insert(label);
        // Operators have passed every label well before this one.
        let keep = label.saturating_sub(inner.every.saturating_mul(64));
        inner.skipped = inner.skipped.split_off(&keep);
    }

    /// Records `part` of the state for every label in `[*taken, upto)` (or [`FINAL`]) and moves
    /// `taken` on. `state` is called once, only if some label is due.
    pub fn take(&self, part: &'static str, taken: &mut u64, upto: Option<u64>, state: impl FnOnce() -> Vec<u8>) {
        if upto.is_some_and(|u| u <= *taken) || *taken == FINAL {
            return;
        }
        let labels = self.labels(*taken, upto);
        *taken = upto.unwrap_or(FINAL);
        if labels.is_empty() {
            return;
        }
        let bytes = state();
        let mut inner = self.0.borrow_mut();
        for label in labels {
            inner.parts.entry(label).or_default().insert(part, bytes.clone());
        }
    }

    /// Adds a part the runtime took itself (the inputs' positions).
    pub fn put(&self, label: u64, part: &'static str, bytes: Vec<u8>) {
        self.0.borrow_mut().parts.entry(label).or_default().insert(part, bytes);
    }

    /// The oldest label whose parts are all present, removed (with every older incomplete one).
    pub fn complete(&self, parts: &[&str]) -> Option<(u64, BTreeMap<&'static str, Vec<u8>>)> {
        let mut inner = self.0.borrow_mut();
        let label = *inner.parts.iter().find(|(_, p)| parts.iter().all(|n| p.contains_key(n)))?.0;
        // Nothing comes after FINAL (a saturating `label + 1` would keep FINAL itself for later).
        let later = match label.checked_add(1) {
            Some(next) => inner.parts.split_off(&next),
            None => BTreeMap::new(),
        };
        let mut done = std::mem::replace(&mut inner.parts, later);
        done.remove(&label).map(|p| (label, p))
    }

    pub fn every(&self) -> u64 {
        self.0.borrow().every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_taken_once_per_label_and_complete_in_order() {
        let s = Snapshots::new(10);
        assert_eq!(s.labels(0, Some(35)), vec![10, 20, 30]);
        assert_eq!(s.labels(10, Some(11)), vec![10]);
        assert!(s.labels(11, Some(20)).is_empty());
        let (mut a, mut b) = (0, 0);
        s.take("a", &mut a, Some(25), || vec![1]);
        s.take("a", &mut a, Some(25), || panic!("already taken"));
        s.put(10, "in", vec![0]);
        s.put(20, "in", vec![0]);
        assert!(s.complete(&["in", "a", "b"]).is_none());
        s.take("b", &mut b, Some(21), || vec![2]);
        let (label, parts) = s.complete(&["in", "a", "b"]).unwrap();
        assert_eq!((label, parts["a"].clone(), parts["b"].clone()), (10, vec![1], vec![2]));
        assert_eq!(s.complete(&["in", "a", "b"]).unwrap().0, 20);
        s.take("a", &mut a, None, || vec![9]);
        assert_eq!(a, FINAL);
    }

    #[test]
    fn the_final_label_completes_like_any_other() {
        let s = Snapshots::new(10);
        let mut a = 0;
        s.put(10, "in", vec![0]);
        s.take("a", &mut a, Some(11), || vec![1]);
        s.put(FINAL, "in", vec![2]);
        s.take("a", &mut a, None, || vec![3]);
        assert_eq!(s.complete(&["in", "a"]).unwrap().0, 10);
        let (label, parts) = s.complete(&["in", "a"]).expect("the final label is complete");
        assert_eq!((label, parts["in"].clone(), parts["a"].clone()), (FINAL, vec![2], vec![3]));
        assert!(s.complete(&["in", "a"]).is_none());
    }
}
