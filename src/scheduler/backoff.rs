//! The retry schedule: exponential backoff between `retry_min` and `retry_max`, with jitter so
//! that messages deferred together do not come back together, and never past the moment the
//! message expires (so that it expires at its lifetime, not one retry interval later). Pure.

use std::time::Duration;

/// The delay before the next attempt, after `attempts` attempts (≥ 1) have failed.
/// `jitter` is a number in [0, 1) that spreads the delay over ±15 %.
pub fn retry_delay(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(32);
    let base = min.saturating_mul(1u32 << exp.min(31)).min(max);
    let factor = 0.85 + 0.30 * jitter.clamp(0.0, 1.0);
    base.mul_f64(factor).clamp(min, max)
}

/// When to try a message next: `delay` after `now_ms`, but no later than the moment it
/// expires (`received_at_ms + lifetime`), so that the claim that finds it expired comes at
/// its lifetime, whatever the retry schedule or a down primary's hold would say. A message
/// already expired is due at once.
pub fn next_attempt_at(
    now_ms: i64,
    delay: Duration,
    received_at_ms: i64,
    lifetime: Duration,
) -> i64 {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let expires = received_at_ms.saturating_add(ms(lifetime));
    now_ms.saturating_add(ms(delay)).min(expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn doubles_from_min_up_to_max() {
        assert_eq!(retry_delay(1, MIN, MAX, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(2, MIN, MAX, 0.5), Duration::from_secs(120));
        assert_eq!(retry_delay(4, MIN, MAX, 0.5), Duration::from_secs(480));
        assert_eq!(retry_delay(7, MIN, MAX, 0.5), MAX);
        assert_eq!(retry_delay(1000, MIN, MAX, 0.5), MAX);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for i in 0..100 {
            let j = f64::from(i) / 100.0;
            let d = retry_delay(3, MIN, MAX, j);
            assert!(
                d >= Duration::from_secs(204) && d <= Duration::from_secs(276),
                "{d:?}"
            );
            assert!(retry_delay(1, MIN, MAX, j) >= MIN);
            assert!(retry_delay(50, MIN, MAX, j) <= MAX);
        }
        assert_ne!(retry_delay(3, MIN, MAX, 0.1), retry_delay(3, MIN, MAX, 0.9));
    }

    #[test]
    fn the_schedule_never_passes_the_expiry() {
        // The case: lifetime 45 s, retry_max 1 m: the attempt after the first is at
        // the expiry (45 s after reception), not a minute after the first attempt.
        let lifetime = Duration::from_secs(45);
        let received = 1_000_000;
        let first_attempt = received + 200;
        let delay = retry_delay(1, Duration::from_secs(60), Duration::from_secs(60), 0.5);
        assert_eq!(
            next_attempt_at(first_attempt, delay, received, lifetime),
            received + 45_000
        );
        // Every attempt of a whole schedule, defaults (1 m to 1 h, 30 days) and short ones,
        // any jitter: never after the expiry, and never later than the backoff says.
        for (min, max, lifetime) in [
            (MIN, MAX, Duration::from_secs(30 * 86_400)),
            (
                Duration::from_secs(1),
                Duration::from_secs(60),
                Duration::from_secs(4),
            ),
            (
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(45),
            ),
        ] {
            let expires = received + lifetime.as_millis() as i64;
            for i in 0..20 {
                let jitter = f64::from(i) / 20.0;
                let mut now = received;
                for attempts in 1..=2000 {
                    let delay = retry_delay(attempts, min, max, jitter);
                    let next = next_attempt_at(now, delay, received, lifetime);
                    assert!(
                        next <= expires,
                        "attempt {attempts}: {next} after {expires}"
                    );
                    assert!(next <= now + delay.as_millis() as i64);
                    if next == expires {
                        break;
                    }
                    assert!(next > now, "the schedule moves on");
                    now = next;
                }
            }
        }
    }

    #[test]
    fn an_expired_message_is_due_at_once() {
        let lifetime = Duration::from_secs(60);
        assert_eq!(next_attempt_at(500_000, MAX, 0, lifetime), 60_000);
        assert_eq!(next_attempt_at(i64::MAX - 5, MAX, 0, lifetime), 60_000);
        assert_eq!(
            next_attempt_at(0, MAX, i64::MAX - 5, lifetime),
            MAX.as_millis() as i64,
            "no overflow"
        );
    }
}
