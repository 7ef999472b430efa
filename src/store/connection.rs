//! Connection strings: `s3://[KEY:SECRET@]BUCKET/prefix?region=…&endpoint=…&forcePathStyle=true`,
//! `file://PATH` and `memory://BUCKET/prefix`. Parsing and opening live here; credentials never
//! leave this module in printable form (Display and Debug redact them).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{fs::FsStore, memory::MemoryStore, s3::S3Store, DynStore, StoreError};
use crate::types::Secret;

/// Where an S3 database lives and how to reach it. `Debug` shows no credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Access key id and secret; None uses the standard AWS credential chain.
    pub credentials: Option<(String, Secret)>,
    /// Timeouts and attempts; what the string leaves unset comes from the manifest, then the
    /// defaults.
    pub requests: RequestPolicy,
}

impl fmt::Debug for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// How long an S3 request may take and how often it is tried. Every field is optional so that
/// the connection string, the manifest and the defaults can each give some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Opening a connection.
    pub connect_timeout: Option<Duration>,
    /// From sending a request to the first byte of its answer.
    pub read_timeout: Option<Duration>,
    /// One attempt, the answer's body included.
    pub attempt_timeout: Option<Duration>,
    /// The whole operation, retries included.
    pub timeout: Option<Duration>,
    /// Attempts per operation (1 = no retries).
    pub max_attempts: Option<u32>,
}

impl RequestPolicy {
    pub const DEFAULT: RequestPolicy = RequestPolicy {
        connect_timeout: Some(Duration::from_secs(3)),
        read_timeout: Some(Duration::from_secs(10)),
        attempt_timeout: Some(Duration::from_secs(30)),
        timeout: Some(Duration::from_secs(60)),
        max_attempts: Some(5),
    };

    /// The connection string's parameter names, in order.
    pub const PARAMETERS: [&'static str; 5] = [
        "connectTimeout",
        "readTimeout",
        "attemptTimeout",
        "timeout",
        "maxAttempts",
    ];

    /// This policy, with what it leaves unset taken from `other`.
    pub fn or(self, other: RequestPolicy) -> RequestPolicy {
        RequestPolicy {
            connect_timeout: self.connect_timeout.or(other.connect_timeout),
            read_timeout: self.read_timeout.or(other.read_timeout),
            attempt_timeout: self.attempt_timeout.or(other.attempt_timeout),
            timeout: self.timeout.or(other.timeout),
            max_attempts: self.max_attempts.or(other.max_attempts),
        }
    }

    /// Sets a parameter from the connection string `whole`.
    fn set(&mut self, name: &str, value: &str, whole: &str) -> Result<bool, ConnectionError> {
        let duration = || {
            value
                .parse::<crate::types::Duration>()
                .map(|d| d.as_std())
                .map_err(|e| ConnectionError::new(whole, format!("{name}: {e}")))
        };
        match name {
            "connectTimeout" => self.connect_timeout = Some(duration()?),
            "readTimeout" => self.read_timeout = Some(duration()?),
            "attemptTimeout" => self.attempt_timeout = Some(duration()?),
            "timeout" => self.timeout = Some(duration()?),
            "maxAttempts" => {
                self.max_attempts = Some(value.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(
                    || {
                        ConnectionError::new(
                            whole,
                            format!("maxAttempts is a whole number of at least 1, not `{value}`"),
                        )
                    },
                )?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Connection {
    S3(S3Location),
    File(PathBuf),
    Memory { bucket: String, prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connection string `{redacted}`: {reason}")]
pub struct ConnectionError {
    pub redacted: String,
    pub reason: String,
}

impl ConnectionError {
    /// An error about the connection string `whole`, shown without its credentials.
    fn new(whole: &str, reason: impl Into<String>) -> Self {
        ConnectionError {
            redacted: crate::types::redact_userinfo(whole),
            reason: reason.into(),
        }
    }
}

impl FromStr for Connection {
    type Err = ConnectionError;

    fn from_str(s: &str) -> Result<Self, ConnectionError> {
        let fail = |reason: &str| ConnectionError::new(s, reason);
        if let Some(rest) = s.strip_prefix("file://") {
            if rest.is_empty() {
                return Err(fail(
                    "a file:// connection needs a folder, e.g. file://./data",
                ));
            }
            return Ok(Connection::File(PathBuf::from(decode(rest))));
        }
        if let Some(rest) = s.strip_prefix("memory://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail(
                    "a memory:// connection needs a bucket name, e.g. memory://test/db",
                ));
            }
            return Ok(Connection::Memory {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let Some(rest) = s.strip_prefix("s3://") else {
            return Err(fail("use s3://, file:// or memory://"));
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        // The credentials end at the last `@`: an AWS secret may hold an unencoded `/`.
        let (userinfo, main) = match main.rsplit_once('@') {
            Some((u, m)) => (Some(u), m),
            None => (None, main),
        };
        let (bucket, path) = main.split_once('/').unwrap_or((main, ""));
        if bucket.is_empty() {
            return Err(fail(
                "an s3:// connection needs a bucket, e.g. s3://my-bucket/prefix",
            ));
        }
        if !valid_bucket_name(bucket) {
            return Err(fail(&format!(
                "`{bucket}` is not a bucket name (3 to 63 lower-case letters, digits, `.` and `-`)"
            )));
        }
        let credentials = match userinfo {
            None => None,
            Some(u) => {
                let (key, secret) = u
                    .split_once(':')
                    .ok_or_else(|| fail("credentials are written KEY:SECRET@bucket"))?;
                Some((decode(key), Secret::new(decode(secret))))
            }
        };
        let mut location = S3Location {
            bucket: bucket.to_string(),
            prefix: path.trim_matches('/').to_string(),
            region: None,
            endpoint: None,
            force_path_style: false,
            credentials,
            requests: RequestPolicy::default(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "region" => location.region = Some(v),
                "endpoint" => {
                    check_endpoint(&v, s)?;
                    location.endpoint = Some(v);
                }
                "forcePathStyle" => {
                    location.force_path_style = match v.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(fail("forcePathStyle is true or false")),
                    }
                }
                other => match location.requests.set(other, &v, s) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(fail(&format!(
                        "unknown parameter `{other}` (known: region, endpoint, forcePathStyle, {})",
                        RequestPolicy::PARAMETERS.join(", ")
                    )))
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        Ok(Connection::S3(location))
    }
}

/// S3's bucket naming rules, loosely: enough to catch a prefix or credentials in the bucket's
/// place, not to second-guess a server that allows more (underscores on some S3-compatibles).
fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// An endpoint is an absolute http(s) URL with a host; anything else fails at the first request
/// with an SDK error far from the manifest, so it is refused here.
fn check_endpoint(endpoint: &str, whole: &str) -> Result<(), ConnectionError> {
    let parsed = url::Url::parse(endpoint).map_err(|e| {
        ConnectionError::new(whole, format!("endpoint `{endpoint}` is not a URL ({e}); write it as http://HOST:PORT or https://HOST"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConnectionError::new(
            whole,
            format!("endpoint `{endpoint}` is not an http:// or https:// URL with a host"),
        ));
    }
    Ok(())
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connection::File(p) => write!(f, "file://{}", p.display()),
            Connection::Memory { bucket, prefix } => write!(f, "memory://{bucket}/{prefix}"),
            Connection::S3(l) => {
                f.write_str("s3://")?;
                if l.credentials.is_some() {
                    f.write_str("***@")?;
                }
                write!(f, "{}/{}", l.bucket, l.prefix)?;
                let mut sep = '?';
                for (k, v) in [("region", &l.region), ("endpoint", &l.endpoint)] {
                    if let Some(v) = v {
                        write!(f, "{sep}{k}={v}")?;
                        sep = '&';
                    }
                }
                if l.force_path_style {
                    write!(f, "{sep}forcePathStyle=true")?;
                    sep = '&';
                }
                let r = &l.requests;
                let durations = [
                    ("connectTimeout", r.connect_timeout),
                    ("readTimeout", r.read_timeout),
                    ("attemptTimeout", r.attempt_timeout),
                    ("timeout", r.timeout),
                ];
                for (k, v) in durations {
                    if let Some(v) = v {
                        write!(f, "{sep}{k}={}ms", v.as_millis())?;
                        sep = '&';
                    }
                }
                if let Some(n) = r.max_attempts {
                    write!(f, "{sep}maxAttempts={n}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Connection({self})")
    }
}

impl Connection {
    /// Opens the store. Relative `file://` paths start at `base_dir` (the manifest's folder).
    pub async fn open(&self, base_dir: &Path) -> Result<DynStore, StoreError> {
        Ok(match self {
            Connection::File(path) => {
                let root = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                Arc::new(FsStore::open(root)?)
            }
            Connection::Memory { bucket, prefix } => Arc::new(MemoryStore::open(bucket, prefix)),
            Connection::S3(location) => Arc::new(S3Store::connect(location.clone()).await),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let c: Connection = "s3://AKIA:se%2Fcret@bucket/db/app?region=eu-west-1&endpoint=http://127.0.0.1:9000&forcePathStyle=true"
            .parse()
            .unwrap();
        let Connection::S3(l) = &c else { panic!("s3") };
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "db/app");
        assert_eq!(l.region.as_deref(), Some("eu-west-1"));
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(l.force_path_style);
        let (key, secret) = l.credentials.as_ref().unwrap();
        assert_eq!((key.as_str(), secret.expose()), ("AKIA", "se/cret"));
        assert!(
            matches!("file://./data".parse::<Connection>().unwrap(), Connection::File(p) if p == Path::new("./data"))
        );
        assert!(
            matches!("memory://b/p".parse::<Connection>().unwrap(), Connection::Memory { bucket, prefix } if bucket == "b" && prefix == "p")
        );
    }

    #[test]
    fn credentials_never_print() {
        let c: Connection = "s3://AKIA:s3cr3t@bucket/p".parse().unwrap();
        let shown = format!("{c} {c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("AKIA"),
            "{shown}"
        );
        let e = "s3://AKIA:s3cr3t@bucket/p?bogus=1"
            .parse::<Connection>()
            .unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_secret_with_a_slash_is_still_a_secret() {
        let c: Connection = "s3://AKIA:ab/cd+ef@bucket/p".parse().unwrap();
        let Connection::S3(l) = &c else { panic!("s3") };
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "p"));
        assert_eq!(l.credentials.as_ref().unwrap().1.expose(), "ab/cd+ef");
    }

    #[test]
    fn malformed_strings_never_show_their_secret() {
        for bad in [
            "s3:/KEY:SUPERSECRET@bucket/p",
            "s3:KEY:SUPERSECRET@bucket/p",
            "s3://KEY:SUPERSECRET@",
            "s3://KEY:SUPER/SECRET@bucket/p?bogus=1",
            "S3://KEY:SUPERSECRET@bucket/p",
        ] {
            let e = bad.parse::<Connection>().unwrap_err().to_string();
            assert!(!e.contains("SUPER"), "{bad} → {e}");
            assert!(e.contains("***@"), "{bad} → {e}");
        }
    }

    #[test]
    fn request_settings_parse_and_round_trip() {
        let c: Connection =
            "s3://bkt/p?readTimeout=1500ms&timeout=5s&maxAttempts=2&connectTimeout=1s"
                .parse()
                .unwrap();
        let Connection::S3(l) = &c else { panic!("s3") };
        assert_eq!(l.requests.read_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(l.requests.timeout, Some(Duration::from_secs(5)));
        assert_eq!(l.requests.max_attempts, Some(2));
        assert_eq!(l.requests.attempt_timeout, None);
        assert_eq!(c.to_string().parse::<Connection>().unwrap(), c);
        let merged = l.requests.or(RequestPolicy::DEFAULT);
        assert_eq!(
            merged.attempt_timeout,
            RequestPolicy::DEFAULT.attempt_timeout
        );
        assert_eq!(merged.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_malformed_strings() {
        for bad in [
            "s3://b/p?timeout=soon",
            "s3://b/p?maxAttempts=0",
            "ftp://x",
            "s3://",
            "s3://key@bucket",
            "memory://",
            "file://",
            "s3://b?forcePathStyle=maybe",
            "s3://KEY:SECRET@",
            "s3://KEY:SECRET@/prefix",
            "s3://bucket/p?endpoint=notaurl",
            "s3://bucket/p?endpoint=ftp://host",
            "s3://bucket/p?endpoint=http://",
        ] {
            assert!(bad.parse::<Connection>().is_err(), "{bad}");
        }
    }
}
