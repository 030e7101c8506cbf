//! IMDSv2 session-token bookkeeping, kept apart from HTTP so its timing rules are unit-tested
//! on tokio's paused clock.
//!
//! The rules: reuse a token until most of its TTL has passed, then fetch a new one before it can
//! expire under us; when none can be had and IMDSv1 is allowed, read without one for a while
//! instead of paying a failed token request (often a full timeout, when the hop limit drops the
//! answer) on every poll.

use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::time::Instant;

/// Fraction of the TTL after which a token is replaced. A tenth of the TTL is left as headroom
/// for clock drift between us and the metadata service and for requests already in flight.
const REFRESH_AT_FRACTION: f64 = 0.9;

#[derive(Debug, Clone, Default)]
pub(crate) enum TokenState {
    #[default]
    Unknown,
    Valid {
        value: HeaderValue,
        refresh_at: Instant,
    },
    /// No token could be had; requests go without one until `retry_at`.
    V1Until { retry_at: Instant },
}

/// What a request should do about its token right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenDecision {
    Use(HeaderValue),
    GoWithout,
    Fetch,
}

impl TokenState {
    pub(crate) fn decide(&self, now: Instant) -> TokenDecision {
        match self {
            Self::Valid { value, refresh_at } if now < *refresh_at => {
                TokenDecision::Use(value.clone())
            }
            Self::V1Until { retry_at } if now < *retry_at => TokenDecision::GoWithout,
            _ => TokenDecision::Fetch,
        }
    }

    pub(crate) fn fetched(value: HeaderValue, ttl: Duration, now: Instant) -> Self {
        Self::Valid {
            value,
            refresh_at: now + ttl.mul_f64(REFRESH_AT_FRACTION),
        }
    }

    /// Forget the token a request was refused with (401). A token that another request already
    /// replaced is left alone, so concurrent 401s cause one fetch, not five.
    pub(crate) fn invalidate(&mut self, used: Option<&HeaderValue>) {
        let stale = match (&*self, used) {
            (Self::Valid { value, .. }, Some(used)) => value == used,
            (Self::V1Until { .. }, None) => true,
            _ => false,
        };
        if stale {
            *self = Self::Unknown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_reused_then_refreshed_before_expiry() {
        let ttl = Duration::from_secs(100);
        let state = TokenState::fetched(hv("t1"), ttl, Instant::now());
        assert_eq!(state.decide(Instant::now()), TokenDecision::Use(hv("t1")));
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(state.decide(Instant::now()), TokenDecision::Use(hv("t1")));
        tokio::time::advance(Duration::from_secs(1)).await;
        // 90 s of a 100 s TTL: replace it while it is still valid on the server.
        assert_eq!(state.decide(Instant::now()), TokenDecision::Fetch);
    }

    #[tokio::test(start_paused = true)]
    async fn without_token_reads_go_v1_until_retry_time() {
        let state = TokenState::V1Until {
            retry_at: Instant::now() + Duration::from_secs(60),
        };
        assert_eq!(state.decide(Instant::now()), TokenDecision::GoWithout);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(state.decide(Instant::now()), TokenDecision::Fetch);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_drops_only_the_token_that_was_refused() {
        let now = Instant::now();
        let mut state = TokenState::fetched(hv("new"), Duration::from_secs(100), now);
        state.invalidate(Some(&hv("old")));
        assert_eq!(state.decide(now), TokenDecision::Use(hv("new")));
        state.invalidate(Some(&hv("new")));
        assert_eq!(state.decide(now), TokenDecision::Fetch);

        // A 401 on a tokenless read means tokens became required: try for one now.
        let mut v1 = TokenState::V1Until {
            retry_at: now + Duration::from_secs(60),
        };
        v1.invalidate(None);
        assert_eq!(v1.decide(now), TokenDecision::Fetch);
    }
}
