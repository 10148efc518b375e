//! The live traffic views as a differential function of the fact collection.
//!
//! Per-minute counts are exact in the diff of `Fact::Count` (ingestion consolidates each epoch), so
//! the count view only consolidates across workers. A user-minute is present once, whatever number
//! of workers saw the user, hence `distinct`. Sliding windows ("last 15 minutes", "active in the
//! last 5") are sums and unions over a few dozen minutes that the read model takes at query time
//! from one consistent snapshot: keeping them out of the dataflow avoids multiplying every update
//! by the window length (see ARCHITECTURE.md).

use differential_dataflow::VecCollection;

use schema::{Epoch, Fact, Row};

pub type Facts<'s> = VecCollection<'s, Epoch, Fact, isize>;
pub type Rows<'s> = VecCollection<'s, Epoch, Row, isize>;

pub fn traffic<'s>(facts: Facts<'s>) -> Rows<'s> {
    let counts = facts
        .clone()
        .flat_map(|fact| match fact {
            Fact::Count { dim, key, minute } => Some(Row::Count { dim, key, minute }),
            _ => None,
        })
        .consolidate();
    let user_minutes = facts
        .clone()
        .flat_map(|fact| match fact {
            Fact::UserMinute { minute, user } => Some((minute, user)),
            _ => None,
        })
        .distinct()
        .map(|(minute, user)| Row::UserMinute { minute, user });
    let names = facts
        .clone()
        .flat_map(|fact| match fact {
            Fact::Name { sym, text } => Some((sym, text)),
            _ => None,
        })
        .distinct()
        .map(|(sym, text)| Row::Name { sym, text });
    // Session, funnel, path, retention and per-key cells are consolidated per epoch by ingestion
    // and summed by the read model; an arrangement here would only re-sort them (a third of a
    // million session updates per million events, about one per-key count per event and rule
    // kind). An (ip, user) pair sent by two workers counts once there too (the users are a set).
    let bookkeeping = facts.flat_map(|fact| match fact {
        Fact::Session { hour, source, stat } => Some(Row::Session { hour, source, stat }),
        Fact::Funnel { funnel, key, day, stat } => Some(Row::Funnel { funnel, key, day, stat }),
        Fact::FunnelUser { funnel, step, entry_ts, user } => Some(Row::FunnelUser { funnel, step, entry_ts, user }),
        Fact::PathEdge { from, to } => Some(Row::PathEdge { from, to }),
        Fact::Retention { retention, key, cohort, stat } => Some(Row::Retention { retention, key, cohort, stat }),
        Fact::KeyText { sym, text, minute } => Some(Row::KeyText { sym, text, minute }),
        Fact::Keyed { kind, key, minute } => Some(Row::Keyed { kind, key, minute }),
        Fact::IpUser { minute, ip, user } => Some(Row::IpUser { minute, ip, user }),
        Fact::Clock { worker, head, watermark, idle } => Some(Row::Clock { worker, head, watermark, idle }),
        Fact::Accepted => Some(Row::Accepted),
        Fact::Reject { reason } => Some(Row::Reject { reason }),
        _ => None,
    });
    counts.concat(user_minutes).concat(names).concat(bookkeeping)
}

/// Every view of the engine, as one collection of rows.
pub fn all_views<'s>(facts: Facts<'s>) -> Rows<'s> {
    traffic(facts)
}
