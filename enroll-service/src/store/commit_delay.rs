//! How long a group commit waits for more changes to join it.
//!
//! A group commit costs about the same for one change as for many: the log write, the
//! `fdatasync`, and waking the writer and then every caller. When changes arrive one at a time
//! but close together (devices that each bring their own connection), waiting briefly before
//! committing spreads that cost over more of them, as PostgreSQL's `commit_delay` does.
//! Waiting pays only while more changes are on the way: one caller committing change after
//! change (an operator's import, a script) would just be slowed down. So the writer stops
//! waiting after a few waits that gained nothing, waits again as soon as changes are seen
//! queuing up together, and otherwise tries once in a while whether load is back.

use std::time::Duration;

/// Waits in a row that gained nothing before the writer stops waiting.
const FRUITLESS_LIMIT: u32 = 4;
/// While it does not wait, one group in this many waits anyway, to notice that load is back.
const PROBE_EVERY: u32 = 32;

/// The writer's commit delay: when to wait, learnt from whether waiting paid off.
#[derive(Debug)]
pub(crate) struct CommitDelay {
    delay: Duration,
    fruitless: u32,
    since_probe: u32,
}

impl CommitDelay {
    /// Waits of `delay` (zero: never wait).
    pub(crate) const fn new(delay: Duration) -> Self {
        Self {
            delay,
            fruitless: 0,
            since_probe: 0,
        }
    }

    /// How long to wait before committing a group of `queued` changes, of at most `full`
    /// (`None`: commit at once).
    pub(crate) fn before_commit(&mut self, queued: usize, full: usize) -> Option<Duration> {
        if self.delay.is_zero() || queued >= full {
            return None;
        }
        // Changes that were already queuing up together say that others are on the way.
        if queued > 1 || self.fruitless < FRUITLESS_LIMIT {
            return Some(self.delay);
        }
        self.since_probe += 1;
        if self.since_probe >= PROBE_EVERY {
            self.since_probe = 0;
            return Some(self.delay);
        }
        None
    }

    /// After a wait: how many changes joined the group during it.
    pub(crate) const fn waited(&mut self, joined: usize) {
        self.fruitless = if joined == 0 {
            self.fruitless.saturating_add(1)
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(2);

    #[test]
    fn zero_never_waits() {
        let mut delay = CommitDelay::new(Duration::ZERO);
        for queued in [1, 2, 100] {
            assert_eq!(delay.before_commit(queued, 1024), None);
        }
    }

    #[test]
    fn a_full_group_commits_at_once() {
        let mut delay = CommitDelay::new(DELAY);
        assert_eq!(delay.before_commit(1024, 1024), None);
        assert_eq!(delay.before_commit(1023, 1024), Some(DELAY));
    }

    #[test]
    fn a_lone_writer_stops_being_delayed_but_is_probed_now_and_then() {
        let mut delay = CommitDelay::new(DELAY);
        let mut waits = 0;
        for _ in 0..(FRUITLESS_LIMIT + 10 * PROBE_EVERY) {
            if delay.before_commit(1, 1024).is_some() {
                waits += 1;
                delay.waited(0);
            }
        }
        // The first few, then one per probe interval.
        assert_eq!(waits, FRUITLESS_LIMIT + 10);
    }

    #[test]
    fn waits_that_pay_off_keep_it_waiting() {
        let mut delay = CommitDelay::new(DELAY);
        for _ in 0..1000 {
            assert_eq!(delay.before_commit(1, 1024), Some(DELAY));
            delay.waited(1);
        }
    }

    #[test]
    fn changes_queuing_together_bring_the_wait_back_at_once() {
        let mut delay = CommitDelay::new(DELAY);
        for _ in 0..FRUITLESS_LIMIT {
            delay.before_commit(1, 1024);
            delay.waited(0);
        }
        assert_eq!(
            delay.before_commit(1, 1024),
            None,
            "stopped after fruitless waits"
        );
        assert_eq!(delay.before_commit(3, 1024), Some(DELAY));
        delay.waited(2);
        assert_eq!(
            delay.before_commit(1, 1024),
            Some(DELAY),
            "waiting paid off again"
        );
    }
}
