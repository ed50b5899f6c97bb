//! What every front shows, built once: the run JSON and summary, event
//! lines, listings, plans. The CLI prints these and the server will
//! serialize the same values, so a run reads the same everywhere.

pub mod event;
pub mod list;
pub mod plan;
pub mod run;

use std::time::{Duration, UNIX_EPOCH};

use cairn_domain::state::Timestamp;

/// RFC 3339 in UTC with milliseconds (`2026-11-23T04:31:41.123Z`): the one
/// time format of everything cairn prints.
pub fn iso_time(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

/// `1.5s`, `250ms`, `2m3s`: how long something took.
pub fn elapsed(from: Timestamp, to: Timestamp) -> String {
    let ms = to.0.saturating_sub(from.0);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => cairn_domain::duration::Duration::from_millis(ms).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_match_the_calendar() {
        assert_eq!(iso_time(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(Timestamp(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_time(Timestamp(1_795_409_501_123)), "2026-11-23T04:51:41.123Z");
    }
}
