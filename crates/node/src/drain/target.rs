//! What a drain plans against, on the monotonic clock, and when it gives up on it.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A drain whose deadline has already passed (a notice that came late: the instance is
/// stopping now) still gets this long from its start to get the pods out, with 1 s of grace.
pub const LATE_WINDOW: Duration = Duration::from_secs(15);

/// What the drain plans against, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Grace periods fit before this.
    pub deadline: Instant,
    /// The instance is gone at this moment whatever happens: a pod not yet out (its budget
    /// refuses, its evictions fail) is deleted in time for its grace to fit before it.
    pub hard: Option<Instant>,
}

impl Target {
    /// The drain gives up at this moment.
    pub fn ends(&self) -> Instant {
        self.hard.map_or(self.deadline, |h| h.max(self.deadline))
    }

    /// What grace periods must fit before, at `now`: the deadline, or once it has passed the
    /// hard deadline still ahead.
    pub fn grace_until(&self, now: Instant) -> Instant {
        if now < self.deadline {
            self.deadline
        } else {
            self.hard.unwrap_or(self.deadline)
        }
    }

    /// A fixed target (a drain by hand, tests): `hard` makes the deadline hard.
    pub fn fixed(deadline: Instant, hard: bool) -> watch::Receiver<Option<Target>> {
        watch::channel(Some(Target {
            deadline,
            hard: hard.then_some(deadline),
        }))
        .1
    }
}

/// When a drain gives up on its target as it moves. An instance whose hard deadline had
/// already passed when the target was set (a notice that came late: the instance is stopping
/// now) still gets `LATE_WINDOW` from that moment: trying costs nothing on a machine going away.
/// A target that merely reaches its deadline as time passes gets no more; nor does a soft
/// deadline, which is a promise to whoever set it.
#[derive(Debug, Default)]
pub struct GiveUp {
    seen: Option<Target>,
    floor: Option<Instant>,
}

impl GiveUp {
    pub fn at(&mut self, t: &Target, now: Instant) -> Instant {
        if self.seen != Some(*t) {
            self.seen = Some(*t);
            if t.hard.is_some() && t.ends() <= now + Duration::from_secs(1) {
                self.floor = Some(self.floor.unwrap_or(now + LATE_WINDOW));
            }
        }
        match (t.hard, self.floor) {
            (Some(_), Some(floor)) => t.ends().max(floor),
            _ => t.ends(),
        }
    }
}

/// The monotonic moment of a wall-clock time.
pub fn instant_of(at: jiff::Timestamp) -> Instant {
    let left = at.duration_since(jiff::Timestamp::now());
    match Duration::try_from(left) {
        Ok(d) => Instant::now() + d,
        Err(_) => Instant::now()
            .checked_sub(Duration::try_from(-left).unwrap_or_default())
            .unwrap_or_else(Instant::now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(now: Instant, in_secs: i64, hard: bool) -> Target {
        let at = if in_secs >= 0 {
            now + Duration::from_secs(in_secs as u64)
        } else {
            now - Duration::from_secs((-in_secs) as u64)
        };
        Target {
            deadline: at,
            hard: hard.then_some(at),
        }
    }

    #[test]
    fn a_late_hard_target_gets_the_late_window_once() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut g = GiveUp::default();
        let late = target(now, -5, true);
        assert_eq!(g.at(&late, now), now + LATE_WINDOW);
        // Asked again later, the window does not slide.
        assert_eq!(g.at(&late, now + Duration::from_secs(3)), now + LATE_WINDOW);
        // Another late target later keeps the first window.
        let later = target(now, -1, true);
        assert_eq!(
            g.at(&later, now + Duration::from_secs(4)),
            now + LATE_WINDOW
        );
        // A target further out than the window ends on its own.
        let far = target(now, 60, true);
        assert_eq!(g.at(&far, now + Duration::from_secs(5)), far.ends());
    }

    #[test]
    fn a_target_reaching_its_deadline_or_a_soft_one_gets_no_window() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut g = GiveUp::default();
        let t = target(now, 3, true);
        assert_eq!(g.at(&t, now), t.ends());
        assert_eq!(g.at(&t, now + Duration::from_secs(10)), t.ends());
        let mut g = GiveUp::default();
        let soft = target(now, -5, false);
        assert_eq!(g.at(&soft, now), soft.ends());
    }
}
