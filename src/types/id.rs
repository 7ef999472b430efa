//! Identifiers: one random generator and the newtypes that own each stored id format. The
//! formats are those earlier versions wrote (backup names, history keys, state keys), so what
//! is already stored stays readable; only the random parts now come from one place.

use std::fmt;

use chrono::{DateTime, Utc};

/// The alphabet of the random parts of names: lower-case letters and digits are safe in S3
/// keys, in file names on case-insensitive filesystems and in URLs without escaping.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The alphabet of record ids: nanoid's URL-safe 64 characters, as s3db.js generates them.
const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The one random generator: `len` characters drawn uniformly from `alphabet`.
fn random_from(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// A random token of `len` lower-case letters and digits (about 5.17 bits each).
pub fn token(len: usize) -> String {
    random_from(ALPHABET, len)
}

/// A new record id: 22 URL-safe characters (132 random bits), the form s3db.js uses, so ids
/// from any number of writers never meet.
pub fn record_id() -> String {
    random_from(URL_SAFE, 22)
}

/// Who holds a lease or runs a probe: the host, the process and a random part, so two runners
/// on one host (or a restarted one) never share a holder name.
pub fn holder(host: &str) -> String {
    format!("{host}/{}/{}", std::process::id(), token(6))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A backup: `LABEL-YYYY-MM-DDTHH-MM-SS-xxxxxx` (the label is `full`, `incremental` or the
    /// user's), sortable by time within a label and safe as a file name.
    BackupId
);

impl BackupId {
    pub fn new(label: &str, at: DateTime<Utc>) -> Self {
        Self(format!(
            "{label}-{}-{}",
            at.format("%Y-%m-%dT%H-%M-%S"),
            token(6)
        ))
    }

    /// The label and start time in a stored id (to the second), when it has the form.
    pub fn parse(id: &str) -> Option<(&str, DateTime<Utc>)> {
        let cut = id.len().checked_sub(27)?;
        let (label, rest) = (id.get(..cut)?, id.get(cut..)?);
        let time = rest.strip_prefix('-')?.get(..19)?;
        let at = chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%dT%H-%M-%S").ok()?;
        (!label.is_empty()).then(|| (label, at.and_utc()))
    }
}

id_type!(
    /// A restore started over the API: `restore-YYYYMMDDTHHMMSS-xxxxxxxx`.
    RestoreId
);

impl RestoreId {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(format!(
            "restore-{}-{}",
            at.format("%Y%m%dT%H%M%S"),
            token(8)
        ))
    }
}

id_type!(
    /// A job run, the key of its history record: `JOB:SLOT` for a scheduled slot (so every
    /// runner derives the same id and the create-only claim decides who runs it), or
    /// `JOB:manual-TIME-xxxxxxxx` for a run started by hand.
    RunId
);

impl RunId {
    pub fn slot(job: &str, slot: DateTime<Utc>) -> Self {
        Self(format!("{job}:{}", super::time::rfc3339(slot)))
    }

    pub fn manual(job: &str, at: DateTime<Utc>) -> Self {
        Self(format!(
            "{job}:manual-{}-{}",
            super::time::rfc3339(at),
            token(8)
        ))
    }

    /// A stored id's job and time. Job names may hold `:` and so may times: the job is the
    /// shortest prefix whose remainder is a run time.
    pub fn split(id: &str) -> Option<(&str, DateTime<Utc>)> {
        id.match_indices(':')
            .find_map(|(i, _)| Self::time_of(&id[i + 1..]).map(|t| (&id[..i], t)))
    }

    /// The time after a run id's `JOB:` prefix: the slot, or a manual run's start.
    pub fn time_of(rest: &str) -> Option<DateTime<Utc>> {
        let time = match rest.strip_prefix("manual-") {
            Some(manual) => manual.get(..24)?,
            None => rest,
        };
        DateTime::parse_from_rfc3339(time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

id_type!(
    /// An entity of a state machine, the key of its state record: `MACHINE:ENTITY`.
    EntityKey
);

impl EntityKey {
    pub fn new(machine: &str, entity: &str) -> Self {
        Self(format!("{machine}:{entity}"))
    }

    /// The key of the entity's transition number `seq` (zero-padded so keys sort in order).
    pub fn log(&self, seq: u64) -> String {
        format!("{}:{seq:012}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tokens_use_the_one_alphabet_and_do_not_repeat() {
        let a = token(25);
        assert_eq!(a.len(), 25);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        let r = record_id();
        assert_eq!(r.len(), 22);
        assert!(r.bytes().all(|b| URL_SAFE.contains(&b)));
        assert_ne!(record_id(), record_id());
    }

    #[test]
    fn run_ids_round_trip_their_job_and_time() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 0).unwrap();
        for job in ["nightly", "a:b", "x:2026"] {
            let slot = RunId::slot(job, at);
            assert_eq!(RunId::split(slot.as_str()), Some((job, at)));
            let manual = RunId::manual(job, at);
            assert_eq!(RunId::split(manual.as_str()), Some((job, at)));
            assert_ne!(manual, RunId::manual(job, at));
        }
    }

    #[test]
    fn stored_formats_are_unchanged() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 5).unwrap();
        let b = BackupId::new("full", at);
        assert!(b.as_str().starts_with("full-2026-03-01T12-30-05-"), "{b}");
        assert_eq!(BackupId::parse(b.as_str()), Some(("full", at)));
        let custom = BackupId::new("weekly-snap_1", at);
        assert_eq!(
            BackupId::parse(custom.as_str()),
            Some(("weekly-snap_1", at))
        );
        assert_eq!(BackupId::parse("nonsense"), None);
        assert_eq!(b.as_str().len(), "full-2026-03-01T12-30-05-".len() + 6);
        let r = RestoreId::new(at);
        assert!(r.as_str().starts_with("restore-20260301T123005-"), "{r}");
        let e = EntityKey::new("orders", "o1");
        assert_eq!(e.as_str(), "orders:o1");
        assert_eq!(e.log(7), "orders:o1:000000000007");
        assert_eq!(
            RunId::slot("j", at).as_str(),
            format!("j:{}", crate::types::time::rfc3339(at))
        );
    }
}
