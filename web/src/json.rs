//! Serde helpers for the JSON the API speaks: ids as decimal strings (a `u64` does not survive a
//! JavaScript number) and millisecond timestamps as RFC 3339 UTC strings with milliseconds.
//!
//! Each module here is meant for `#[serde(with = "...")]`.

use chrono::{DateTime, SecondsFormat, Utc};

/// Renders milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision
/// (`2024-05-01T12:00:00.250Z`); `None` if the value is outside chrono's range.
pub fn rfc3339_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch; `None` if it is not one or
/// lies before the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp_millis()).ok()
}

/// An id (anything `Display + FromStr`) as a decimal string.
pub mod id {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the id as a string.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize<T: Display, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Deserializes an id from a decimal string.
    ///
    /// # Errors
    /// If the value is not a string holding a decimal number.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            D::Error::custom(format!("invalid id `{text}`: expected a decimal string"))
        })
    }
}

/// An optional id as a decimal string or `null`.
pub mod opt_id {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the id as a string, or `null`.
    ///
    /// # Errors
    /// Only those of the serializer.
    pub fn serialize<T: Display, S: Serializer>(id: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }

    /// Deserializes an id from a decimal string, or `null`.
    ///
    /// # Errors
    /// If the value is neither `null` nor a string holding a decimal number.
    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                D::Error::custom(format!("invalid id `{text}`: expected a decimal string"))
            }),
        }
    }
}

/// Milliseconds since the epoch as an RFC 3339 string.
pub mod time {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the time as RFC 3339 UTC with milliseconds.
    ///
    /// # Errors
    /// If the time is outside the range chrono can represent.
    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        let text = super::rfc3339_ms(*ms)
            .ok_or_else(|| S::Error::custom(format!("timestamp {ms} ms is out of range")))?;
        s.serialize_str(&text)
    }

    /// Deserializes an RFC 3339 time.
    ///
    /// # Errors
    /// If the value is not an RFC 3339 string at or after the epoch.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_rfc3339_ms(&text)
            .ok_or_else(|| D::Error::custom(format!("invalid RFC 3339 time `{text}`")))
    }
}

/// Optional milliseconds since the epoch as an RFC 3339 string or `null`.
pub mod opt_time {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes the time as RFC 3339 UTC with milliseconds, or `null`.
    ///
    /// # Errors
    /// If the time is outside the range chrono can represent.
    pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => {
                let text = super::rfc3339_ms(*ms).ok_or_else(|| {
                    S::Error::custom(format!("timestamp {ms} ms is out of range"))
                })?;
                s.serialize_str(&text)
            }
            None => s.serialize_none(),
        }
    }

    /// Deserializes an RFC 3339 time, or `null`.
    ///
    /// # Errors
    /// If the value is neither `null` nor an RFC 3339 string at or after the epoch.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::parse_rfc3339_ms(&text)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("invalid RFC 3339 time `{text}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_with_milliseconds_and_z_and_parse_back() {
        assert_eq!(
            rfc3339_ms(1_714_564_800_250).as_deref(),
            Some("2024-05-01T12:00:00.250Z")
        );
        assert_eq!(rfc3339_ms(0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:00:00.250Z"),
            Some(1_714_564_800_250)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms(u64::MAX), None);
    }
}
