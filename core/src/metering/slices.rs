//! Slices: a process's share of a clinic's monthly allowance, reserved in Redis ahead of the
//! calls that will use it, so that most calls reserve their worst case without a round trip.
//!
//! A slice is a reservation like a call's (a field `r:<slice id>` in the clinic-month's hash,
//! with an expiry), only bigger: the reservation script grants it the call's worst case plus
//! room for about [`SLICE_CALLS`] more such calls, never more than an eighth of what the limit
//! still leaves (near the limit a slice holds exactly one call, as a call's own reservation
//! would). The calls that follow take their worst case out of the slice's free tokens here, in
//! memory; each call's settle takes its amount out of the slice's field in Redis, in the same
//! script that counts its usage. When the free tokens do not cover a call, its reservation goes
//! to Redis as a top-up that first gives back what was left free; one top-up at a time, calls
//! arriving meanwhile wait for it and take from what it brought. So that calls seldom have to
//! wait for one, a call that leaves the slice with less than [`AHEAD_CALLS`] such calls' worth
//! free starts a top-up ahead of need, in the background: the calls after it go on taking from
//! what is left while it is on its way, and find the slice refilled. One refused (the month is
//! nearly used up) is not tried again ahead until a call's own top-up has been granted.
//!
//! The budget stays exact: every call's worst case is reserved in Redis before the call, as a
//! part of some slice, so no number of calls and processes can take recorded use past the
//! limit. What changes is near the limit across processes: tokens another process holds free in
//! its slice count as reserved until it uses them or gives them back (after [`IDLE`] without a
//! call, or at shutdown), and a call there can be refused although the month is not used up.
//! A slice that Redis no longer holds (it expired, or Redis lost it in a restart) is retired
//! at the first settle that finds it gone, so calls stop relying on it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::tenancy::TenantId;
use crate::Month;

/// How many calls of the same worst case a slice is meant to cover (never more than an eighth
/// of what the limit leaves). Each top-up is a reservation in Redis, with a script of its own
/// under load (settles wait for company, a top-up does not): 128 calls per slice sends a
/// quarter of the top-ups 32 did.
pub(super) const SLICE_CALLS: i64 = 128;

/// A call that leaves a slice with less than this many calls' worth of free tokens tops it up
/// ahead of need.
pub(super) const AHEAD_CALLS: i64 = 16;

/// A slice without a call for this long is given back.
pub(super) const IDLE: Duration = Duration::from_secs(1);

/// What a reservation does: take the worst case from a slice here, or top the slice up in
/// Redis.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Taken from the slice's free tokens.
    Taken(Uuid),
    /// Taken from the slice's free tokens, which are running low: top the slice up ahead of
    /// need (without waiting for it), then tell [`Slices::topped_up_ahead`].
    TakenTopUpAhead(Uuid),
    /// Reserve in Redis for this slice, after giving back `back` tokens it holds free.
    TopUp { slice: Uuid, back: i64 },
    /// Another call is topping the slice up: wait for [`Slices::changed`], then take again.
    Wait,
}

#[derive(Debug)]
struct Slice {
    tenant: TenantId,
    month: Month,
    /// Reserved in Redis and not taken by any call.
    free: i64,
    /// Calls holding part of it, and top-ups on their way to Redis. A slice is given back only
    /// when none are left (giving it back frees everything it holds).
    pending: u32,
    /// When Redis gives it back by itself (ms since the epoch), as of the last top-up.
    expires_ms: i64,
    last_used: Instant,
    /// No longer taken from (Redis lost it, or a settle failed); given back once not pending.
    retired: bool,
    /// A top-up is on its way to Redis. One at a time: calls that arrive meanwhile wait for
    /// it (unless it is one ahead of need and they find enough free), so that a burst of calls
    /// does not reserve a slice each and leave most of it unused.
    topping_up: bool,
    /// A top-up ahead of need was refused: none is tried again until a call's own is granted.
    no_ahead: bool,
}

/// A process's slices (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Slices {
    inner: Mutex<Inner>,
    /// Told when a top-up ends (granted, refused or failed).
    pub changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    current: crate::FastMap<(TenantId, Month), Uuid>,
    slices: crate::FastMap<Uuid, Slice>,
}

impl Slices {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `amount` from the clinic-month's slice if it has that much free and more than
    /// `fresh_ms` left before it expires; else says which slice to top up (a new one when there
    /// is none) and takes its free tokens, to be given back in that top-up.
    pub fn take(
        &self,
        tenant: TenantId,
        month: Month,
        amount: i64,
        now_ms: i64,
        fresh_ms: i64,
    ) -> Take {
        let mut inner = self.lock();
        let now = Instant::now();
        if let Some(id) = inner.current.get(&(tenant, month)).copied() {
            if let Some(s) = inner.slices.get_mut(&id) {
                let fresh = s.expires_ms - now_ms > fresh_ms;
                if s.free >= amount && fresh {
                    s.pending += 1;
                    s.last_used = now;
                    s.free -= amount;
                    if !s.topping_up && !s.no_ahead && s.free < amount.saturating_mul(AHEAD_CALLS) {
                        // The top-up holds the slice too until it is done.
                        s.pending += 1;
                        s.topping_up = true;
                        return Take::TakenTopUpAhead(id);
                    }
                    return Take::Taken(id);
                }
                if s.topping_up {
                    return Take::Wait;
                }
                s.pending += 1;
                s.last_used = now;
                s.topping_up = true;
                let back = std::mem::take(&mut s.free);
                return Take::TopUp { slice: id, back };
            }
        }
        let id = Uuid::new_v4();
        inner.current.insert((tenant, month), id);
        inner.slices.insert(
            id,
            Slice {
                tenant,
                month,
                free: 0,
                pending: 1,
                expires_ms: 0,
                last_used: now,
                retired: false,
                topping_up: true,
                no_ahead: false,
            },
        );
        Take::TopUp { slice: id, back: 0 }
    }

    /// A top-up for a call of `amount` was granted `granted` (at least `amount`) until
    /// `expires_ms`: the call holds `amount`, the rest is free.
    pub fn granted(&self, slice: Uuid, amount: i64, granted: i64, expires_ms: i64) {
        if let Some(s) = self.lock().slices.get_mut(&slice) {
            s.free += (granted - amount).max(0);
            s.expires_ms = s.expires_ms.max(expires_ms);
            s.topping_up = false;
            s.no_ahead = false;
        }
        self.changed.notify_waiters();
    }

    /// A top-up ahead of need ([`Take::TakenTopUpAhead`]) is done: `granted` tokens until
    /// `expires_ms` are free now, or, with `None`, it was refused or failed and none is tried
    /// ahead again until a call's own top-up is granted.
    pub fn topped_up_ahead(&self, slice: Uuid, granted: Option<(i64, i64)>) {
        if let Some(s) = self.lock().slices.get_mut(&slice) {
            s.pending = s.pending.saturating_sub(1);
            s.topping_up = false;
            match granted {
                // A slice retired meanwhile keeps what it was granted in Redis until it is
                // given back whole.
                Some((granted, expires_ms)) if !s.retired => {
                    s.free += granted.max(0);
                    s.expires_ms = s.expires_ms.max(expires_ms);
                }
                Some(_) => {}
                None => s.no_ahead = true,
            }
        }
        self.changed.notify_waiters();
    }

    /// A top-up was refused or failed: the call holds nothing of the slice.
    pub fn not_granted(&self, slice: Uuid) {
        if let Some(s) = self.lock().slices.get_mut(&slice) {
            s.pending = s.pending.saturating_sub(1);
            s.topping_up = false;
        }
        self.changed.notify_waiters();
    }

    /// A call gave its `amount` back unused (it failed): free again, unless the slice is
    /// retired (then the amount stays in Redis until the slice is given back whole).
    pub fn released(&self, slice: Uuid, amount: i64) {
        if let Some(s) = self.lock().slices.get_mut(&slice) {
            s.pending = s.pending.saturating_sub(1);
            if !s.retired {
                s.free += amount;
            }
        }
    }

    /// A call was settled (its amount left the slice in Redis). `gone`: Redis no longer holds
    /// the slice, or the settle failed; the slice is retired either way.
    pub fn settled(&self, slice: Uuid, gone: bool) {
        let mut inner = self.lock();
        if let Some(s) = inner.slices.get_mut(&slice) {
            s.pending = s.pending.saturating_sub(1);
        }
        if gone {
            retire(&mut inner, slice);
        }
    }

    /// No call takes from `slice` any more (a settle failed; the call still holds its part
    /// until it is counted live, then [`Slices::settled`]).
    pub fn retire(&self, slice: Uuid) {
        retire(&mut self.lock(), slice);
    }

    /// Removes and returns the slices to give back: those no call holds and that are retired or
    /// were not used for `idle` (every one of them, with `idle` zero).
    pub fn idle(&self, idle: Duration) -> Vec<(Uuid, TenantId, Month)> {
        let mut inner = self.lock();
        let now = Instant::now();
        let done: Vec<Uuid> = inner
            .slices
            .iter()
            .filter(|(_, s)| {
                s.pending == 0 && (s.retired || now.duration_since(s.last_used) >= idle)
            })
            .map(|(id, _)| *id)
            .collect();
        done.into_iter()
            .filter_map(|id| {
                let s = inner.slices.remove(&id)?;
                let key = (s.tenant, s.month);
                if inner.current.get(&key) == Some(&id) {
                    inner.current.remove(&key);
                }
                Some((id, s.tenant, s.month))
            })
            .collect()
    }

    /// Whether this process holds any slice.
    pub fn any(&self) -> bool {
        !self.lock().slices.is_empty()
    }
}

fn retire(inner: &mut Inner, slice: Uuid) {
    let Some(s) = inner.slices.get_mut(&slice) else {
        return;
    };
    if s.retired {
        return;
    }
    s.retired = true;
    s.free = 0;
    let key = (s.tenant, s.month);
    if inner.current.get(&key) == Some(&slice) {
        inner.current.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH: i64 = 1_000;

    fn clinic() -> (TenantId, Month) {
        (TenantId(Uuid::new_v4()), Month::now())
    }

    #[test]
    fn calls_take_from_the_slice_until_it_runs_short() {
        let s = Slices::default();
        let (t, m) = clinic();
        let Take::TopUp { slice, back: 0 } = s.take(t, m, 100, 0, FRESH) else {
            panic!("a first call tops up a new slice");
        };
        s.granted(slice, 100, 350, 10_000);
        // Running low, the slice is topped up ahead of need; that one is refused (the month is
        // nearly used up), and none is tried ahead again.
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::TakenTopUpAhead(slice));
        s.topped_up_ahead(slice, None);
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        // 50 left free: the next call tops the slice up and gives them back in the same step.
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::TopUp { slice, back: 50 });
        // Near its expiry a slice is topped up (which renews it) rather than taken from.
        s.granted(slice, 100, 4_000, 10_000);
        assert_eq!(
            s.take(t, m, 100, 9_500, FRESH),
            Take::TopUp { slice, back: 3_900 }
        );
    }

    #[test]
    fn a_slice_running_low_is_topped_up_ahead_of_need() {
        let s = Slices::default();
        let (t, m) = clinic();
        let Take::TopUp { slice, .. } = s.take(t, m, 100, 0, FRESH) else {
            panic!()
        };
        // 31 calls' worth free: 15 calls take from it...
        s.granted(slice, 100, 3_200, 10_000);
        for _ in 0..15 {
            assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        }
        // ...and the one that leaves less than 16 calls' worth starts a top-up ahead of need.
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::TakenTopUpAhead(slice));
        // While it is on its way, calls go on taking what is left, and start no other...
        for _ in 0..15 {
            assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        }
        // ...until nothing is: then they wait for it, and take from what it brought.
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Wait);
        s.topped_up_ahead(slice, Some((3_200, 20_000)));
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        // It renewed the slice too: not stale at 9,500 (its first grant's expiry was 10,000).
        assert_eq!(s.take(t, m, 100, 9_500, FRESH), Take::Taken(slice));
        // The slice is held by its calls and by a top-up ahead on its way: given back only
        // when none is left.
        let Take::TopUp { slice: other, .. } = s.take(t, m, 30_000, 0, FRESH) else {
            panic!("a call bigger than what is free tops up")
        };
        assert_eq!(other, slice);
        s.not_granted(slice);
        for _ in 0..34 {
            s.settled(slice, false);
        }
        assert_eq!(s.idle(Duration::ZERO), vec![(slice, t, m)]);
    }

    #[test]
    fn calls_wait_for_a_top_up_in_flight() {
        let s = Slices::default();
        let (t, m) = clinic();
        let Take::TopUp { slice, .. } = s.take(t, m, 100, 0, FRESH) else {
            panic!()
        };
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Wait);
        s.granted(slice, 100, 300, 10_000);
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::TakenTopUpAhead(slice));
        // A top-up ahead of need is waited for too, by a call that finds too little free...
        assert_eq!(s.take(t, m, 150, 0, FRESH), Take::Wait);
        // ...and, refused, lets it try its own.
        s.topped_up_ahead(slice, None);
        let Take::TopUp { slice, back: 100 } = s.take(t, m, 150, 0, FRESH) else {
            panic!()
        };
        // So does a call's own top-up, refused.
        assert_eq!(s.take(t, m, 150, 0, FRESH), Take::Wait);
        s.not_granted(slice);
        assert!(matches!(
            s.take(t, m, 150, 0, FRESH),
            Take::TopUp { back: 0, .. }
        ));
    }

    #[test]
    fn a_slice_is_given_back_only_when_no_call_holds_it() {
        let s = Slices::default();
        let (t, m) = clinic();
        let Take::TopUp { slice, .. } = s.take(t, m, 100, 0, FRESH) else {
            panic!()
        };
        s.granted(slice, 100, 3_300, 10_000);
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        assert!(s.idle(Duration::ZERO).is_empty(), "two calls hold it");
        s.settled(slice, false);
        s.released(slice, 100);
        assert_eq!(s.idle(Duration::from_secs(60)), vec![]);
        assert_eq!(s.idle(Duration::ZERO), vec![(slice, t, m)]);
        assert!(!s.any());
        // The next call starts a new slice.
        assert!(
            matches!(s.take(t, m, 100, 0, FRESH), Take::TopUp { back: 0, slice: n } if n != slice)
        );
    }

    #[test]
    fn a_slice_redis_lost_is_retired_and_calls_go_to_redis() {
        let s = Slices::default();
        let (t, m) = clinic();
        let Take::TopUp { slice, .. } = s.take(t, m, 100, 0, FRESH) else {
            panic!()
        };
        s.granted(slice, 100, 10_000, 10_000);
        assert_eq!(s.take(t, m, 100, 0, FRESH), Take::Taken(slice));
        s.settled(slice, true);
        // Not taken from again: a new slice.
        let Take::TopUp {
            slice: next,
            back: 0,
        } = s.take(t, m, 100, 0, FRESH)
        else {
            panic!("a retired slice is not taken from");
        };
        assert_ne!(next, slice);
        // The retired one is given back once its last call is done, without waiting.
        s.released(slice, 100);
        assert_eq!(s.idle(Duration::from_secs(60)), vec![(slice, t, m)]);
        s.not_granted(next);
        assert_eq!(s.idle(Duration::ZERO), vec![(next, t, m)]);
    }
}
