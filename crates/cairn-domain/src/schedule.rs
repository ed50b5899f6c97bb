//! Triggers (`on:`): what starts runs of a workflow under `cairn serve`,
//! besides a person. A schedule is a 5-field cron expression read in UTC;
//! its ticks are computed here, on the run's millisecond timestamps.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::event::Timestamp;

/// `on:` of a workflow.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Triggers {
    /// Starts a run at each tick, with the inputs' defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// `POST /api/v1/hooks/{workflow}` starts a run, its JSON body the inputs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub webhook: bool,
}

/// A cron schedule: minute, hour, day of month, month, day of week, in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: croner::Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl Schedule {
    /// Reads a cron expression of exactly 5 fields (`0 9 * * 1-5`); ranges,
    /// lists, steps and names (`MON`, `JAN`) as cron has them. Why not, in
    /// words, otherwise.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "`{text}` has {fields} fields: a schedule has 5 (minute hour day-of-month month day-of-week), read in UTC, e.g. `0 9 * * 1-5`"
            ));
        }
        let cron =
            croner::Cron::from_str(text).map_err(|e| format!("`{text}` is not a cron schedule: {e}"))?;
        Ok(Self { text: text.to_owned(), cron })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let after = self.cron.find_next_occurrence(&utc(t)?, false).ok()?;
        millis(after)
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let before = self.cron.find_previous_occurrence(&utc(t)?, true).ok()?;
        millis(before)
    }
}

fn utc(t: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(t.0).ok()?)
}

fn millis(t: DateTime<Utc>) -> Option<Timestamp> {
    u64::try_from(t.timestamp_millis()).ok().map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T09:30:00Z, a Tuesday.
    const TUESDAY_0930: u64 = 1_796_117_400_000;
    const HOUR: u64 = 3_600_000;

    #[test]
    fn ticks_are_read_in_utc_after_and_at_or_before_a_time() {
        let weekdays_at_nine = Schedule::parse("0 9 * * 1-5").expect("valid");
        let t = Timestamp(TUESDAY_0930);
        assert_eq!(weekdays_at_nine.latest_at_or_before(t), Some(Timestamp(TUESDAY_0930 - HOUR / 2)));
        assert_eq!(weekdays_at_nine.next_after(t), Some(Timestamp(TUESDAY_0930 - HOUR / 2 + 24 * HOUR)));
        // A tick is its own latest, and not its own next.
        let nine = Timestamp(TUESDAY_0930 - HOUR / 2);
        assert_eq!(weekdays_at_nine.latest_at_or_before(nine), Some(nine));
        assert_eq!(weekdays_at_nine.next_after(nine), Some(Timestamp(nine.0 + 24 * HOUR)));
        // Friday 09:00 is followed by Monday 09:00.
        let friday = Timestamp(nine.0 + 3 * 24 * HOUR);
        assert_eq!(weekdays_at_nine.next_after(friday), Some(Timestamp(friday.0 + 3 * 24 * HOUR)));
    }

    #[test]
    fn a_schedule_has_five_fields_that_parse() {
        for (text, said) in [
            ("0 9 * *", "has 4 fields: a schedule has 5"),
            ("0 0 9 * * 1", "has 6 fields"),
            ("61 9 * * *", "`61 9 * * *` is not a cron schedule"),
            ("0 9 * * MOO", "is not a cron schedule"),
        ] {
            let error = Schedule::parse(text).expect_err(text);
            assert!(error.contains(said), "{text}: {error}");
        }
        assert!(Schedule::parse("*/15 8-18 * JAN-MAR MON,FRI").is_ok());
    }
}
