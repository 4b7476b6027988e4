//! Durations as people write them in the custom resources (`90s`, `1h30m`),
//! decoded so that one unusable value never stops a watch.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration written the Go way (`90s`, `5m`, `1h30m`), as in metav1.Duration.
///
/// Decoding never fails: a value the schema refuses today but an older
/// schema let in decodes as unusable, [`crate::validation`] reports it, and
/// [`Duration::as_std`] clamps it, so one bad object can neither stop the
/// watch of all the others nor overflow a timer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Duration(Result<std::time::Duration, BadDuration>);

/// Why a written duration cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadDuration {
    #[error("not a duration such as 90s, 5m or 1h30m")]
    Malformed,
    #[error("longer than any setting allows ({LONGEST_TEXT})")]
    TooLong,
}

/// Go duration syntax without a sign: up to four number-unit pairs, each
/// number at most nine digits (so no parse can overflow).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)){1,4}$";
/// The longest text of a duration.
pub const DURATION_MAX_LENGTH: usize = 40;
/// The longest duration any field allows; far below what timers accept
/// (about two years), and what an unusable value is clamped to.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
const LONGEST_TEXT: &str = "8784h";

impl Duration {
    /// Reads a Go duration; what the schema's pattern refuses is unusable.
    pub fn parse(text: &str) -> Self {
        Duration(parse(text))
    }

    /// The duration, or why it cannot be used.
    pub fn checked(&self) -> Result<std::time::Duration, BadDuration> {
        self.0
    }

    /// The duration for timers and arithmetic, never beyond [`LONGEST`]
    /// (an unusable value, which validation has already reported, counts as
    /// that longest one: the safe side for cooldowns and windows).
    pub fn as_std(&self) -> std::time::Duration {
        self.0.unwrap_or(LONGEST).min(LONGEST)
    }

    /// A duration from whole seconds.
    pub fn from_secs(seconds: u64) -> Self {
        Duration(Ok(std::time::Duration::from_secs(seconds)))
    }
}

fn parse(text: &str) -> Result<std::time::Duration, BadDuration> {
    let well_formed = text.len() <= DURATION_MAX_LENGTH
        && !text.is_empty()
        && text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .split(|c: char| !c.is_ascii_digit())
            .all(|digits| digits.len() <= 9)
        && text
            .split(|c: char| c.is_ascii_digit() || c == '.')
            .filter(|unit| !unit.is_empty())
            .count()
            <= 4;
    if !well_formed {
        return Err(BadDuration::Malformed);
    }
    let parsed: kube::core::Duration = text.parse().map_err(|_| BadDuration::Malformed)?;
    if parsed.is_negative() {
        return Err(BadDuration::Malformed);
    }
    let value: std::time::Duration = parsed.into();
    if value > LONGEST {
        return Err(BadDuration::TooLong);
    }
    Ok(value)
}

impl FromStr for Duration {
    type Err = BadDuration;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text).map(|value| Duration(Ok(value)))
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Ok(value) => serializer.collect_str(&kube::core::Duration::from(value)),
            // Never written back: what it was is not known any more.
            Err(bad) => Err(serde::ser::Error::custom(bad)),
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Go duration such as 90s, 5m or 1h30m")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
                Ok(Duration::parse(text))
            }

            // Not a string at all: unusable, not undecodable.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }

            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Duration, E> {
                Ok(Duration(Err(BadDuration::Malformed)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(value) => fmt::Debug::fmt(&value, f),
            Err(bad) => write!(f, "<{bad}>"),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "maxLength": DURATION_MAX_LENGTH,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// A duration as people say it in a message: "15 minutes", "1 hour 5
/// minutes", "40 seconds" (the two largest units; what is smaller is left
/// out).
pub fn spoken(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    let units = [
        (secs / 86_400, "day"),
        (secs % 86_400 / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    let said: Vec<String> = units
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if said.is_empty() {
        "0 seconds".to_owned()
    } else {
        said.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_spoken_as_people_say_them() {
        let said = |secs: u64| spoken(std::time::Duration::from_secs(secs));
        assert_eq!(said(900), "15 minutes");
        assert_eq!(said(60), "1 minute");
        assert_eq!(said(40), "40 seconds");
        assert_eq!(said(3600), "1 hour");
        assert_eq!(said(3900), "1 hour 5 minutes");
        assert_eq!(said(3605), "1 hour");
        assert_eq!(said(90), "1 minute 30 seconds");
        assert_eq!(said(86_400 + 7200), "1 day 2 hours");
        assert_eq!(said(0), "0 seconds");
    }

    #[test]
    fn durations_read_the_go_way_and_never_overflow() {
        let secs = |text: &str| Duration::parse(text).checked().map(|d| d.as_secs_f64());
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("250ms"), Ok(0.25));
        assert_eq!(secs("0s"), Ok(0.0));
        assert_eq!(secs("8784h"), Ok(8784.0 * 3600.0));
        // Too long for any field, and beyond what timers take.
        assert_eq!(secs("8785h"), Err(BadDuration::TooLong));
        assert_eq!(secs("999999999h"), Err(BadDuration::TooLong));
        // Numbers that would overflow the parser are refused before it runs.
        for malformed in [
            "99999999999999999999h",
            "1e300h",
            "",
            "5 minutes",
            "-5m",
            "5",
            "h",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
        ] {
            assert_eq!(
                secs(malformed),
                Err(BadDuration::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn an_unusable_duration_decodes_and_is_clamped() {
        let read = |json: serde_json::Value| serde_json::from_value::<Duration>(json).unwrap();
        let huge = read(serde_json::json!("99999999999999999999h"));
        assert_eq!(huge.checked(), Err(BadDuration::Malformed));
        assert_eq!(huge.as_std(), LONGEST, "the safe side: as long as allowed");
        assert_eq!(
            read(serde_json::json!(300)).checked(),
            Err(BadDuration::Malformed)
        );
        assert!(serde_json::to_value(huge).is_err(), "never written back");
        let five = read(serde_json::json!("5m"));
        assert_eq!(
            serde_json::to_value(five).unwrap(),
            serde_json::json!("300s")
        );
    }
}
