//! The s3db.js record format, beside the native one: a database whose `s3db.json` s3db.js wrote
//! is read and written the way s3db.js 21 does, so s3db-run can run beside an s3db.js
//! application on the same prefix.

pub mod encoders;
pub mod packed;
pub mod record;
pub mod rules;
pub mod schema;
pub mod values;

pub use schema::{is_s3dbjs, JsResource};

/// The passphrase s3db.js seals `secret` values with when none is configured.
pub const DEFAULT_PASSPHRASE: &str = "secret";
