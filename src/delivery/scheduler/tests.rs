//! Unit tests of the scheduler (`delivery/scheduler.rs`).

use super::*;

fn job(id: u64, push: &str, due: DateTime<Utc>) -> Job {
    Job {
        id,
        push: push.into(),
        event_id: format!("e{id}"),
        attempt: 1,
        accepted_at: due,
        first_attempt_at: None,
        due_at: due,
        event: None,
    }
}

fn by_push(limit: usize) -> impl FnMut(&Job) -> TargetSlot {
    move |j: &Job| TargetSlot {
        key: Arc::from(j.push.as_str()),
        limit,
    }
}

#[test]
fn due_jobs_come_out_in_due_order_and_delayed_ones_when_due() {
    let now = Utc::now();
    let mut s = Scheduler::new(100, 10);
    s.add([
        job(1, "a", now + chrono::Duration::seconds(5)),
        job(2, "a", now),
        job(3, "a", now - chrono::Duration::seconds(1)),
    ]);
    let ids: Vec<u64> = std::iter::from_fn(|| s.next(now, by_push(10)).map(|j| j.id)).collect();
    assert_eq!(ids, [3, 2]);
    assert_eq!(
        s.next_due().map(|t| t.timestamp_millis()),
        Some((now + chrono::Duration::seconds(5)).timestamp_millis())
    );
    assert_eq!(
        s.next(now + chrono::Duration::seconds(5), by_push(10))
            .map(|j| j.id),
        Some(1)
    );
}

#[test]
fn known_jobs_are_never_taken_twice_until_forgotten() {
    let now = Utc::now();
    let mut s = Scheduler::new(100, 10);
    s.add([job(1, "a", now)]);
    let taken = s.next(now, by_push(10)).unwrap();
    // A refill that reads the store while the job is in flight, and
    // again after it finished but before its completion is stored.
    assert_eq!(s.add([job(1, "a", now)]), 0);
    s.finished(taken.id, None);
    assert_eq!(s.add([job(1, "a", now)]), 0);
    assert!(s.next(now, by_push(10)).is_none());
    s.forget([(1, 1)]);
    assert!(!s.knows(1));
}

#[test]
fn an_earlier_attempt_stored_does_not_forget_a_later_one() {
    let now = Utc::now();
    let mut s = Scheduler::new(100, 10);
    s.add([job(1, "a", now)]);
    let mut first = s.next(now, by_push(10)).unwrap();
    first.attempt = 2;
    s.finished(1, Some(first));
    let second = s.next(now, by_push(10)).unwrap();
    s.finished(second.id, None);
    // The first attempt's completion reaches the store only now, while
    // the second's is still on its way: the job stays known, so a
    // refill cannot take it again from the store.
    s.forget([(1, 1)]);
    assert!(s.knows(1));
    assert_eq!(s.add([job(1, "a", now)]), 0);
    s.forget([(1, 2)]);
    assert!(!s.knows(1));
}

#[test]
fn a_full_memory_of_later_jobs_makes_room_for_a_due_one() {
    let now = Utc::now();
    let tomorrow = now + chrono::Duration::days(1);
    let mut s = Scheduler::new(3, 10);
    s.begin_refill();
    s.end_refill(true);
    s.add([
        job(1, "a", tomorrow),
        job(2, "a", tomorrow),
        job(3, "a", tomorrow),
    ]);
    assert_eq!(s.add([job(4, "b", now)]), 1, "due now: it takes a place");
    assert!(!s.knows(3), "the latest waiting job went back to the store");
    assert!(s.overflowed());
    assert_eq!(
        s.add([job(5, "a", tomorrow + chrono::Duration::days(1))]),
        0,
        "a later job stays in the store"
    );
    assert_eq!(s.next(now, by_push(10)).map(|j| j.id), Some(4));
}

#[test]
fn a_busy_target_does_not_hold_global_slots() {
    let now = Utc::now();
    // 2 global slots; target "slow" takes 1 at a time.
    let mut s = Scheduler::new(100, 2);
    s.add([
        job(1, "slow", now),
        job(2, "slow", now),
        job(3, "fast", now),
    ]);
    let limit_one_for_slow = |j: &Job| TargetSlot {
        key: Arc::from(j.push.as_str()),
        limit: if j.push == "slow" { 1 } else { 10 },
    };
    assert_eq!(s.next(now, limit_one_for_slow).map(|j| j.id), Some(1));
    // Job 2 waits for "slow"; job 3 gets the second global slot.
    assert_eq!(s.next(now, limit_one_for_slow).map(|j| j.id), Some(3));
    assert!(s.next(now, limit_one_for_slow).is_none(), "2 in flight");
    s.finished(3, None);
    assert!(
        s.next(now, limit_one_for_slow).is_none(),
        "job 2 still waits for its target"
    );
    s.finished(1, None);
    assert_eq!(s.next(now, limit_one_for_slow).map(|j| j.id), Some(2));
}

#[test]
fn retries_come_back_delayed_and_the_cap_overflows_to_the_store() {
    let now = Utc::now();
    let mut s = Scheduler::new(2, 10);
    assert!(s.wants_refill(), "starts by reading the store");
    s.begin_refill();
    s.end_refill(true);
    assert!(!s.overflowed());
    assert_eq!(
        s.add([job(1, "a", now), job(2, "a", now), job(3, "a", now)]),
        2
    );
    assert!(s.overflowed());
    assert!(!s.wants_refill(), "full");
    let mut j = s.next(now, by_push(10)).unwrap();
    j.due_at = now + chrono::Duration::seconds(30);
    j.attempt = 2;
    s.finished(j.id, Some(j));
    assert_eq!(s.next(now, by_push(10)).map(|j| j.id), Some(2));
    assert!(
        s.wants_refill(),
        "half drained while jobs wait in the store"
    );
    let later = s.next(now + chrono::Duration::seconds(30), by_push(10));
    assert_eq!(later.map(|j| (j.id, j.attempt)), Some((1, 2)));
}

#[test]
fn riders_take_no_slot_and_end_like_other_jobs() {
    let now = Utc::now();
    let mut s = Scheduler::new(100, 2);
    s.add((1..=6).map(|i| job(i, if i == 3 { "b" } else { "a" }, now)));
    s.add([job(7, "a", now + chrono::Duration::seconds(60))]);
    let lead = s.next(now, by_push(1)).unwrap();
    assert_eq!(lead.id, 1);
    // Job 2 waits for `a`'s one slot; it rides along all the same.
    assert_eq!(s.next(now, by_push(1)).map(|j| j.id), Some(3));
    let riders = s.take_riders(now, 3, |j| j.push == "a");
    assert_eq!(riders.iter().map(|j| j.id).collect::<Vec<_>>(), [2, 4, 5]);
    assert_eq!(s.in_flight(), 5, "riders count as in flight");
    assert!(s.next(now, by_push(1)).is_none(), "slots are full");
    for r in &riders {
        s.finished(r.id, None);
    }
    assert_eq!(s.in_flight(), 2, "riders held no slot");
    s.finished(lead.id, None);
    s.finished(3, None);
    assert_eq!(s.next(now, by_push(1)).map(|j| j.id), Some(6));
    assert!(s.take_riders(now, 10, |_| true).is_empty(), "7 is not due");
    s.forget([(2, 1), (4, 1)]);
    assert!(!s.knows(2) && !s.knows(4) && s.knows(5));
    // A rider put back (shutdown) is queued again.
    let rider = s.take_riders(now + chrono::Duration::seconds(60), 1, |_| true);
    assert_eq!(rider.len(), 1);
    s.put_back(rider.into_iter().next().unwrap());
    assert_eq!(s.in_flight(), 1);
}
