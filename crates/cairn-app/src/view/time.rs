//! Times as people read them at a terminal: how long something took
//! ([`duration`], [`between`]) and how long ago it was ([`ago`]). Both take
//! the times they compare, so they never read a clock. JSON keeps absolute
//! times ([`super::iso_time`]); these are for tables and summaries.

use cairn_domain::state::Timestamp;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// How long `ms` milliseconds are, in at most two units, rounded down:
/// `850ms`, `2.4s` (tenths under 10 s), `12s`, `3m10s`, `2h05m`, `3d04h`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..SECOND => format!("{ms}ms"),
        SECOND..10_000 => format!("{}.{}s", ms / SECOND, ms % SECOND / 100),
        10_000..MINUTE => format!("{}s", ms / SECOND),
        MINUTE..HOUR => format!("{}m{:02}s", ms / MINUTE, ms % MINUTE / SECOND),
        HOUR..DAY => format!("{}h{:02}m", ms / HOUR, ms % HOUR / MINUTE),
        _ => format!("{}d{:02}h", ms / DAY, ms % DAY / HOUR),
    }
}

/// How long from `from` to `to`, as [`duration`] says it (`0ms` when `to`
/// is before `from`).
pub fn between(from: Timestamp, to: Timestamp) -> String {
    duration(to.0.saturating_sub(from.0))
}

/// How long before `now` `then` was, in its largest whole unit: `just now`
/// (under a second), `12s ago`, `5m ago`, `2h ago`, `3d ago`. A time after
/// `now` (another machine's clock) reads `in 5m`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let (ms, future) = if then.0 > now.0 { (then.0 - now.0, true) } else { (now.0 - then.0, false) };
    let unit = match ms {
        0..SECOND => return "just now".to_owned(),
        SECOND..MINUTE => format!("{}s", ms / SECOND),
        MINUTE..HOUR => format!("{}m", ms / MINUTE),
        HOUR..DAY => format!("{}h", ms / HOUR),
        _ => format!("{}d", ms / DAY),
    };
    if future { format!("in {unit}") } else { format!("{unit} ago") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_at_most_two_units() {
        let cases = [
            (0, "0ms"),
            (850, "850ms"),
            (999, "999ms"),
            (1_000, "1.0s"),
            (2_460, "2.4s"),
            (9_999, "9.9s"),
            (12_000, "12s"),
            (59_999, "59s"),
            (60_000, "1m00s"),
            (190_000, "3m10s"),
            (3_599_999, "59m59s"),
            (2 * HOUR + 5 * MINUTE + 59_000, "2h05m"),
            (DAY - 1, "23h59m"),
            (3 * DAY + 4 * HOUR, "3d04h"),
        ];
        for (ms, text) in cases {
            assert_eq!(duration(ms), text, "{ms} ms");
        }
        assert_eq!(between(Timestamp(5_000), Timestamp(195_000)), "3m10s");
        assert_eq!(between(Timestamp(5_000), Timestamp(1_000)), "0ms", "a clock that went back");
    }

    #[test]
    fn ago_is_relative_to_the_now_it_is_given() {
        let now = Timestamp(1_795_409_501_123);
        let before = |ms: u64| ago(Timestamp(now.0 - ms), now);
        assert_eq!(before(0), "just now");
        assert_eq!(before(999), "just now");
        assert_eq!(before(12_000), "12s ago");
        assert_eq!(before(5 * MINUTE + 59_000), "5m ago");
        assert_eq!(before(2 * HOUR + 1), "2h ago");
        assert_eq!(before(3 * DAY + 23 * HOUR), "3d ago");
        assert_eq!(before(400 * DAY), "400d ago");
        assert_eq!(ago(Timestamp(now.0 + 5 * MINUTE), now), "in 5m");
    }
}
