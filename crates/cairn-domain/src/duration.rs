//! Durations as the format writes them: `250ms`, `30s`, `5m`, `2h`, `1d`,
//! and sums such as `1h30m`.

use std::fmt;
use std::str::FromStr;

/// A span of time with millisecond precision, written `250ms`, `30s`, `1h30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

/// Why a duration string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a number and a unit.
    #[error("`{0}` is not a duration: write a number and a unit (ms, s, m, h, d), e.g. `30s` or `1h30m`")]
    Malformed(String),
    /// Longer than [`MAX_DURATION_MS`].
    #[error("`{0}` is longer than 365 days, the longest a duration may be")]
    TooLong(String),
}

/// The longest duration accepted: 365 days. Longer waits are almost always a typo.
pub const MAX_DURATION_MS: u64 = 365 * 86_400_000;

impl Duration {
    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(s * 1000)
    }

    /// The duration in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The duration as a standard library value, for timers.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError::Malformed(s.to_owned());
        let text = s.trim();
        if text.is_empty() {
            return Err(err());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            total = number
                .checked_mul(unit)
                .and_then(|ms| total.checked_add(ms))
                .filter(|ms| *ms <= MAX_DURATION_MS)
                .ok_or_else(|| DurationError::TooLong(s.trim().to_owned()))?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] =
            [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (size, unit) in UNITS {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_sums() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(text.parse::<Duration>().map(Duration::as_millis), Ok(ms), "{text}");
        }
    }

    #[test]
    fn refuses_malformed_and_huge() {
        for bad in ["", "5", "m", "5 m", "5x", "-5s", "1.5s", "99999999999999999999d", "400d", "5m junk"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
        // Too long is said as such, not as a malformed duration.
        let long = "400d".parse::<Duration>().expect_err("over the cap");
        assert_eq!(long.to_string(), "`400d` is longer than 365 days, the longest a duration may be");
        assert!("364d23h".parse::<Duration>().is_ok());
    }

    #[test]
    fn display_round_trips() {
        for text in ["250ms", "30s", "1h30m", "1d2h3m4s5ms", "0s"] {
            let d: Duration = text.parse().expect("valid");
            assert_eq!(d.to_string(), text);
        }
    }
}
