//! Retry policy: which outcomes are retried, and when.
//!
//! Exponential backoff with full-range jitter (±`jitter` of the delay),
//! capped at `max_delay`, or an explicit `schedule` of delays. A job is dead
//! once it has made `max_attempts` attempts (0 = no limit) or is older than
//! `max_age`. `Retry-After` is honoured but clamped between the scheduled
//! delay and twice it, so a hostile or confused target can neither make us
//! hammer it nor park a job for a year.

use std::time::Duration;

use http::StatusCode;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    /// Explicit delays before attempt 2, 3, ...; when non-empty it replaces
    /// the exponential backoff (the last delay repeats).
    pub schedule: Vec<Duration>,
    pub max_attempts: u32,
    pub max_age: Duration,
    /// Fraction of the delay added or removed at random (0.0 to 1.0).
    pub jitter: f64,
    /// Whether a 4xx other than 408/425/429 is retried (default: dead at once).
    pub retry_4xx: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            schedule: Vec::new(),
            max_attempts: 0,
            max_age: Duration::from_secs(3 * 24 * 3600),
            jitter: 0.2,
            retry_4xx: false,
        }
    }
}

/// How one attempt ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// May succeed later (connection error, timeout, 408/425/429/5xx).
    Transient,
    /// Will not succeed by retrying (other 4xx, unless `retry_4xx`).
    Permanent,
}

impl RetryPolicy {
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Success,
            408 | 425 | 429 | 500..=599 => Outcome::Transient,
            400..=499 if !self.retry_4xx => Outcome::Permanent,
            _ => Outcome::Transient,
        }
    }

    /// The delay before the next attempt, after `attempts` attempts (>= 1),
    /// without jitter.
    pub fn base_delay(&self, attempts: u32) -> Duration {
        if !self.schedule.is_empty() {
            let i = (attempts.max(1) as usize - 1).min(self.schedule.len() - 1);
            return self.schedule[i];
        }
        let exp = attempts.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The next delay: the base delay jittered, or `retry_after` clamped
    /// between the base delay and twice it. `rand01` is a uniform sample in
    /// [0, 1) (injected so tests are deterministic).
    pub fn next_delay(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        rand01: f64,
    ) -> Duration {
        let base = self.base_delay(attempts);
        if let Some(ra) = retry_after {
            return ra.clamp(base, base.saturating_mul(2));
        }
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + j * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// Whether another attempt may be made after `attempts` attempts for a
    /// job of age `age` whose next attempt would be after `delay`.
    pub fn may_retry(&self, attempts: u32, age: Duration, delay: Duration) -> bool {
        if self.max_attempts != 0 && attempts >= self.max_attempts {
            return false;
        }
        age + delay <= self.max_age
    }
}

/// Parses `Retry-After` (delay-seconds, or an HTTP date relative to `now`).
pub fn parse_retry_after(v: &http::HeaderValue, now: std::time::SystemTime) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            ..Default::default()
        };
        let d: Vec<u64> = (1..=6).map(|a| p.base_delay(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn schedule_replaces_backoff_and_last_delay_repeats() {
        let p = RetryPolicy {
            schedule: vec![Duration::from_secs(60), Duration::from_secs(300)],
            ..Default::default()
        };
        assert_eq!(p.base_delay(1), Duration::from_secs(60));
        assert_eq!(p.base_delay(2), Duration::from_secs(300));
        assert_eq!(p.base_delay(9), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(3, None, 0.5), Duration::from_secs(4));
        assert_eq!(
            p.next_delay(3, None, 0.0),
            Duration::from_secs(4).mul_f64(0.8)
        );
        assert!(p.next_delay(3, None, 0.999) <= Duration::from_secs(4).mul_f64(1.2));
    }

    #[test]
    fn retry_after_is_clamped_between_delay_and_twice_it() {
        let p = RetryPolicy::default(); // base after 3 attempts: 4s
        assert_eq!(
            p.next_delay(3, Some(Duration::from_secs(1)), 0.5),
            Duration::from_secs(4)
        );
        assert_eq!(
            p.next_delay(3, Some(Duration::from_secs(6)), 0.5),
            Duration::from_secs(6)
        );
        assert_eq!(
            p.next_delay(3, Some(Duration::from_secs(3600)), 0.5),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn classification() {
        let p = RetryPolicy::default();
        for (s, o) in [
            (200, Outcome::Success),
            (204, Outcome::Success),
            (408, Outcome::Transient),
            (425, Outcome::Transient),
            (429, Outcome::Transient),
            (503, Outcome::Transient),
            (400, Outcome::Permanent),
            (404, Outcome::Permanent),
            (301, Outcome::Transient),
        ] {
            assert_eq!(
                p.classify_status(StatusCode::from_u16(s).unwrap()),
                o,
                "{s}"
            );
        }
        let p = RetryPolicy {
            retry_4xx: true,
            ..p
        };
        assert_eq!(p.classify_status(StatusCode::NOT_FOUND), Outcome::Transient);
    }

    #[test]
    fn limits() {
        let p = RetryPolicy {
            max_attempts: 3,
            max_age: Duration::from_secs(100),
            ..Default::default()
        };
        assert!(p.may_retry(2, Duration::from_secs(10), Duration::from_secs(5)));
        assert!(!p.may_retry(3, Duration::from_secs(10), Duration::from_secs(5)));
        assert!(!p.may_retry(1, Duration::from_secs(99), Duration::from_secs(5)));
    }

    #[test]
    fn retry_after_forms() {
        let now = humantime::parse_rfc3339("1994-11-06T08:49:00Z").unwrap();
        let v = http::HeaderValue::from_static("120");
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(120)));
        let v = http::HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(37)));
        let v = http::HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(&v, now), None);
    }
}
