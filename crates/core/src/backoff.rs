//! The one backoff policy of every retry loop: the wait doubles from its first value up to a
//! cap, optionally spread by ±20 % (many nodes retrying one API server, or many drains one
//! budget, must not retry in lockstep; a node's own metadata service has no herd to spread).
//! Each loop keeps its own stop rule; this only says how long to wait.

use std::time::Duration;

/// A doubling, capped wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    /// The spread: ±this fraction.
    jitter: f64,
    current: Duration,
}

impl Backoff {
    /// Waits of `first`, `2 × first`, ... never more than `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap,
            jitter: 0.0,
            current: first,
        }
    }

    /// The same, each wait spread by ±20 %.
    pub const fn jittered(self) -> Self {
        Self {
            jitter: 0.2,
            ..self
        }
    }

    /// The wait the next retry would take, before any spread.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// The wait before the next retry (spread by `unit`, a random number in `[0, 1)`, when
    /// jittered); the one after is twice as long, up to the cap.
    pub fn wait_with(&mut self, unit: f64) -> Duration {
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        // Never a panic on a huge wait: one that cannot be spread is taken as it is.
        let wait = if self.jitter == 0.0 {
            self.current
        } else {
            Duration::try_from_secs_f64(self.current.as_secs_f64() * factor).unwrap_or(self.current)
        };
        self.current = self.current.saturating_mul(2).min(self.cap);
        wait
    }

    /// [`Self::wait_with`] with a random spread.
    pub fn wait(&mut self) -> Duration {
        let unit = if self.jitter > 0.0 {
            fastrand::f64()
        } else {
            0.5
        };
        self.wait_with(unit)
    }

    /// Back to the first wait (the call worked).
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(MS(200), MS(1000));
        let waits: Vec<Duration> = (0..5).map(|_| b.wait()).collect();
        assert_eq!(waits, [MS(200), MS(400), MS(800), MS(1000), MS(1000)]);
        b.reset();
        assert_eq!(b.peek(), MS(200));
    }

    #[test]
    fn the_spread_stays_within_twenty_percent() {
        let mut b = Backoff::new(MS(1000), MS(1000)).jittered();
        assert_eq!(b.wait_with(0.0), MS(800));
        assert_eq!(b.wait_with(0.5), MS(1000));
        assert!(b.wait_with(1.0) <= MS(1200));
        for _ in 0..100 {
            let w = b.wait();
            assert!(w >= MS(800) && w <= MS(1200), "{w:?}");
        }
    }

    #[test]
    fn a_huge_cap_never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..200 {
            b.wait();
        }
        assert_eq!(b.peek(), Duration::MAX);
    }
}
