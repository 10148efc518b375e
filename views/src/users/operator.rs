//! The per-user views as one keyed timely operator: events arrive exchanged by user (a user's
//! events reach one worker whatever partition they were read from), control records arrive on
//! every worker; each epoch is processed once both inputs have passed it, in epoch order, so
//! definitions and the engine's clock apply at the same point of the stream on every worker.
//! Only touched users are visited; nothing is re-read per key.

use std::cell::Cell as Shared;
use std::collections::BTreeMap;
use std::rc::Rc;

use schema::cells::Cell;
use schema::Epoch;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::{UserStateSizes, Users};
use crate::admitted::Admitted;
use crate::control::{Control, EngineTime};
use crate::snapshot::Snapshots;
use crate::store::{hashed, Hashed};

/// What the operator received for one epoch.
struct Epochs {
    cap: Capability<Epoch>,
    events: Vec<Admitted>,
    controls: Vec<Control>,
}

/// Builds the operator over `users` (fresh or restored). Its state goes into `snapshots` at
/// their labels; `sizes` reports the state's size after every epoch.
pub fn users<'s>(
    events: StreamVec<'s, Epoch, Admitted>,
    control: StreamVec<'s, Epoch, Control>,
    users: Users,
    snapshots: Snapshots,
    sizes: Rc<Shared<UserStateSizes>>,
) -> StreamVec<'s, Epoch, (Hashed, i64)> {
    let by_user = Exchange::new(|a: &Admitted| a.event.user);
    events.binary_frontier(control, by_user, Pipeline, "Users", move |_, _| {
        let mut held = Some(users);
        let mut pending: BTreeMap<Epoch, Epochs> = BTreeMap::new();
        let mut time = EngineTime::default();
        let mut taken = 0u64;
        let mut out: Vec<(Cell, i64)> = Vec::new();
        move |(events, events_frontier), (control, control_frontier), output| {
            let port = output.output_index();
            events.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(port) else { return };
                let slot = pending.entry(*cap.time()).or_insert_with(|| Epochs {
                    cap: cap.clone(),
                    events: Vec::new(),
                    controls: Vec::new(),
                });
                data.for_each(|batch| slot.events.append(batch));
            });
            control.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(port) else { return };
                let slot = pending.entry(*cap.time()).or_insert_with(|| Epochs {
                    cap: cap.clone(),
                    events: Vec::new(),
                    controls: Vec::new(),
                });
                data.for_each(|batch| slot.controls.append(batch));
            });
            let Some(users) = held.as_mut() else { return };
            let complete = |t: &Epoch| !events_frontier.less_equal(t) && !control_frontier.less_equal(t);
            while let Some(entry) = pending.first_entry().filter(|e| complete(e.key())) {
                let (t, epoch) = entry.remove_entry();
                let snapshot = || bincode::serialize(users.state()).expect("serialisable");
                snapshots.take("users", &mut taken, Some(t), snapshot);
                let mut next_time = None;
                for c in &epoch.controls {
                    match c {
                        Control::Defs(defs) => users.set_defs(defs, &mut out),
                        Control::Page(sym, text) => users.add_page(*sym, text),
                        Control::Time(t) => next_time = Some(*t),
                    }
                }
                let horizon = users.horizon(&time);
                for e in &epoch.events {
                    users.add(e, horizon, &mut out);
                }
                time = next_time.unwrap_or(time);
                users.end_epoch(&time, &mut out);
                if !out.is_empty() {
                    output.session(&epoch.cap).give_iterator(hashed(&mut out));
                }
                sizes.set(users.sizes());
            }
            // Everything before the frontier is processed: the state stands for every label up to
            // it (or for the end of input once both inputs are closed).
            let upto = match (events_frontier.frontier().first(), control_frontier.frontier().first()) {
                (None, None) => None,
                (a, b) => Some(*a.into_iter().chain(b).min().expect("one is open")),
            };
            snapshots.take("users", &mut taken, upto, || bincode::serialize(users.state()).expect("serialisable"));
            if upto.is_none() {
                // The input has ended: free the state off this thread (it can be gigabytes).
                crate::drop_elsewhere(held.take());
            }
        }
    })
}
