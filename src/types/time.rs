//! The one way instants are written: RFC 3339 in UTC with milliseconds (`2026-01-31T03:00:00.000Z`).
//! Stored records, the transition log, job history, leases and the API all use it, so stored
//! times sort as text and compare across every writer.

use chrono::{DateTime, SecondsFormat, Utc};

/// `t` as RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, as `rfc3339` writes it.
pub fn now_rfc3339() -> String {
    rfc3339(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_sort_as_text() {
        let a = DateTime::parse_from_rfc3339("2026-01-31T03:00:00.5Z")
            .unwrap()
            .to_utc();
        let b = DateTime::parse_from_rfc3339("2026-01-31T03:00:01Z")
            .unwrap()
            .to_utc();
        assert_eq!(rfc3339(a), "2026-01-31T03:00:00.500Z");
        assert!(rfc3339(a) < rfc3339(b));
    }
}
