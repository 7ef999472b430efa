//! The s3db.js record format, beside the native one: a database whose `s3db.json` s3db.js wrote
//! is read and written the way s3db.js 21 does, so s3db-run can run beside an s3db.js
//! application on the same prefix.

pub mod values;
