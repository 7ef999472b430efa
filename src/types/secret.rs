//! Secrets that never print, and the redaction of credentials in URL-like strings.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

/// A secret value (API token, encryption key). It prints as `***` everywhere: Debug, Display and
/// serialization, so it cannot leak through logs, errors, the API or `diff`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Replaces `user:password@` in a URL-like string by `***@`.
pub fn redact_userinfo(s: &str) -> String {
    match userinfo_range(s) {
        Some(range) => format!("{}***{}", &s[..range.start], &s[range.end..]),
        None => s.to_string(),
    }
}

/// Where the credentials of a URL-like string are: from after the scheme's `:` and slashes to
/// the last `@` before the query. Deliberately loose: a secret may hold an unencoded `/` (AWS
/// secrets do) and a mistyped separator (`s3:/`, `s3:`) must not reveal it either.
pub fn userinfo_range(s: &str) -> Option<std::ops::Range<usize>> {
    let query = s.find(['?', '#']).unwrap_or(s.len());
    let at = s[..query].rfind('@')?;
    let start = s[..at]
        .find(':')
        .map(|colon| colon + 1 + s[colon + 1..].bytes().take_while(|b| *b == b'/').count())
        .filter(|start| *start <= at)
        .unwrap_or(0);
    Some(start..at)
}
