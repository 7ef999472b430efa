//! The S3 backend on aws-sdk-s3. Conditional writes use `If-None-Match: *` and `If-Match`
//! (a 412 answer means another writer won); the SDK's standard retry mode retries 5xx and
//! throttling answers with exponential backoff and jitter; large bodies go up in parts.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::connection::{RequestPolicy, S3Location};
use super::memory::normalize_prefix;
use super::{
    validate_key, ETag, ListPage, Object, ObjectMeta, ObjectStore, PutMode, PutOptions,
    ServerSideEncryption, StoreError, StoreResult, UserMetadata,
};

/// Storage class and server-side encryption on a request builder that has them (put object,
/// create multipart upload): the SDK's builders share no trait, so this is a macro.
macro_rules! with_put_options {
    ($req:expr, $options:expr) => {{
        let mut req = $req;
        if let Some(class) = &$options.storage_class {
            req = req.storage_class(StorageClass::from(class.as_str()));
        }
        match &$options.server_side_encryption {
            Some(ServerSideEncryption::Aes256) => {
                req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            }
            Some(ServerSideEncryption::Kms { key_id }) => req
                .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
            None => req,
        }
    }};
}

/// Bodies at least this large are uploaded in parts (S3 allows 5 MiB parts at least).
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    location: S3Location,
    /// The timeouts and attempts in force (the location's, filled in with the defaults).
    policy: RequestPolicy,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store({})", self.describe())
    }
}

impl S3Store {
    pub async fn connect(location: S3Location) -> Self {
        let policy = location.requests.or(RequestPolicy::DEFAULT);
        let mut timeouts = TimeoutConfig::builder();
        timeouts.set_connect_timeout(policy.connect_timeout);
        timeouts.set_read_timeout(policy.read_timeout);
        timeouts.set_operation_attempt_timeout(policy.attempt_timeout);
        timeouts.set_operation_timeout(policy.timeout);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard().with_max_attempts(policy.max_attempts.unwrap_or(1).max(1)),
            )
            .timeout_config(timeouts.build());
        // A region is required to sign requests even against S3-compatible servers.
        let region = location
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_string());
        loader = loader.region(aws_config::Region::new(region));
        if let Some((key, secret)) = &location.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                key.clone(),
                secret.expose().to_string(),
                None,
                None,
                "s3db-connection-string",
            ));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(location.force_path_style)
            .interceptor(super::s3_metrics::RequestMetrics);
        if let Some(endpoint) = &location.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(config.build()),
            bucket: location.bucket.clone(),
            prefix: normalize_prefix(&location.prefix),
            policy,
            location,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full key of a store key (the connection's prefix and the key).
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        let count = body.len().div_ceil(PART_SIZE);
        self.multipart(key, full, options, count, |i| {
            let end = ((i + 1) * PART_SIZE).min(body.len());
            let part = body.slice(i * PART_SIZE..end);
            async move { Ok(ByteStream::from(part)) }
        })
        .await
    }

    /// Uploads a local file as `key` (in parts when it is large), reading it part by part so
    /// memory stays bounded whatever its size.
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        validate_key(key)?;
        let full = self.full_key(key);
        let io =
            |e: std::io::Error| StoreError::backend("s3", key, format!("{}: {e}", path.display()));
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if size < MULTIPART_THRESHOLD as u64 {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| StoreError::backend("s3", key, e))?;
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                .body(body);
            req = with_put_options!(req, options);
            let out = req
                .send()
                .await
                .map_err(|e| self.sdk_error("PutObject", key, e))?;
            return etag(key, "PutObject", out.e_tag());
        }
        let part_size = PART_SIZE as u64;
        let count = usize::try_from(size.div_ceil(part_size)).unwrap_or(usize::MAX);
        self.multipart(key, &full, options, count, |i| {
            let offset = i as u64 * part_size;
            let length = part_size.min(size - offset);
            async move {
                ByteStream::read_from()
                    .path(path)
                    .offset(offset)
                    .length(aws_sdk_s3::primitives::Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| StoreError::backend("s3", key, e))
            }
        })
        .await
    }

    /// A GET of `key`; None when there is no such object.
    async fn get_object(
        &self,
        key: &str,
    ) -> StoreResult<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>> {
        validate_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out)),
            Err(e) if status(&e) == Some(404) || e.code() == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(self.sdk_error("GetObject", key, e)),
        }
    }

    /// Streams an object's body to `chunk`, piece by piece; false when the object is absent.
    pub async fn read_stream(
        &self,
        key: &str,
        mut chunk: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> StoreResult<bool> {
        let Some(out) = self.get_object(key).await? else {
            return Ok(false);
        };
        let mut body = out.body;
        while let Some(bytes) = body
            .try_next()
            .await
            .map_err(|e| StoreError::backend("s3", key, format!("reading the body failed: {e}")))?
        {
            chunk(&bytes).map_err(|e| StoreError::backend("s3", key, e))?;
        }
        Ok(true)
    }

    async fn multipart<F, Fut>(
        &self,
        key: &str,
        full: &str,
        options: &PutOptions,
        count: usize,
        part: F,
    ) -> StoreResult<ETag>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = StoreResult<ByteStream>>,
    {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full);
        create = with_put_options!(create, options);
        for (k, v) in &options.metadata {
            create = create.metadata(k, v);
        }
        let upload = create
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateMultipartUpload", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            for i in 0..count {
                let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
                let body = part(i).await?;
                let uploaded = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(uploaded.e_tag)
                        .build(),
                );
            }
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.sdk_error("CompleteMultipartUpload", key, e))?;
            etag(key, "CompleteMultipartUpload", done.e_tag())
        }
        .await;
        if result.is_err() {
            // Parts of an abandoned upload are billed until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// The ETag a response carried; none (or an empty one) is an error, never a version to compare.
fn etag(key: &str, operation: &'static str, value: Option<&str>) -> StoreResult<ETag> {
    match value {
        Some(v) if !v.is_empty() => Ok(ETag(v.to_string())),
        _ => Err(StoreError::MissingEtag {
            key: key.to_string(),
            operation,
        }),
    }
}

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

impl S3Store {
    /// An error naming the operation, the endpoint and, for a timeout, which limit ran out.
    fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let p = &self.policy;
        let attempts = p.max_attempts.unwrap_or(1);
        let tried = if attempts > 1 {
            format!(" ({attempts} attempts)")
        } else {
            String::new()
        };
        let message = match &e {
            SdkError::TimeoutError(_) => format!(
                "timed out{tried}: the operation took longer than {} (timeout)",
                seconds(p.timeout.unwrap_or_default())
            ),
            SdkError::DispatchFailure(f) if f.is_timeout() => format!(
                "timed out{tried}: no connection within {} (connectTimeout) or no answer within {} (readTimeout)",
                seconds(p.connect_timeout.unwrap_or_default()),
                seconds(p.read_timeout.unwrap_or_default())
            ),
            SdkError::DispatchFailure(f) if f.is_io() => {
                format!("the connection failed{tried}: {}", source_text(&e))
            }
            SdkError::ResponseError(_) => {
                format!("the answer could not be read{tried}: {}", source_text(&e))
            }
            _ => {
                let code = e.code().map(str::to_string);
                let text = match (&code, e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.clone(),
                    _ => source_text(&e),
                };
                let status = status(&e)
                    .map(|s| format!(" (HTTP {s})"))
                    .unwrap_or_default();
                format!("{text}{status}")
            }
        };
        self.failure(operation, key, message)
    }

    fn failure(&self, operation: &'static str, key: &str, message: String) -> StoreError {
        let endpoint = self
            .location
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3".to_string());
        StoreError::backend("s3", key, format!("{operation} on {endpoint}: {message}"))
    }
}

/// The innermost cause of an SDK error, without the SDK's debug dump.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// For [`ensure_bucket`], which has no store yet.
fn plain_sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let text = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => source_text(&e),
    };
    StoreError::backend("s3", key, text)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        super::Connection::S3(self.location.clone()).to_string()
    }

    fn s3_location(&self) -> Option<S3Location> {
        Some(self.location.clone())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let Some(out) = self.get_object(key).await? else {
            return Ok(None);
        };
        let etag = etag(key, "GetObject", out.e_tag())?;
        let metadata: UserMetadata = out
            .metadata()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // The SDK's timeouts end when the answer's headers arrive; a body that stalls after
        // them is bounded here.
        let limit = self
            .policy
            .attempt_timeout
            .unwrap_or(Duration::from_secs(30));
        let body = match tokio::time::timeout(limit, out.body.collect()).await {
            Ok(Ok(body)) => body.into_bytes(),
            Ok(Err(e)) => {
                return Err(self.failure(
                    "GetObject",
                    key,
                    format!("reading the answer failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(self.failure(
                    "GetObject",
                    key,
                    format!(
                        "the answer's body stalled for {} (attemptTimeout)",
                        seconds(limit)
                    ),
                ))
            }
        };
        Ok(Some(Object {
            meta: ObjectMeta {
                key: key.to_string(),
                etag,
                size: body.len() as u64,
            },
            body,
            metadata,
        }))
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        validate_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                etag: etag(key, "HeadObject", out.e_tag())?,
                size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
            })),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.sdk_error("HeadObject", key, e)),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        validate_key(key)?;
        let full = self.full_key(key);
        if mode == PutMode::Overwrite && body.len() >= MULTIPART_THRESHOLD {
            return self.put_multipart(key, &full, body, options).await;
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .content_length(i64::try_from(body.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(body));
        req = match &mode {
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(etag) => req.if_match(etag.as_str()),
            PutMode::Overwrite => req,
        };
        if let Some(ct) = &options.content_type {
            req = req.content_type(ct);
        }
        for (k, v) in &options.metadata {
            req = req.metadata(k, v);
        }
        req = with_put_options!(req, options);
        match req.send().await {
            Ok(out) => etag(key, "PutObject", out.e_tag()),
            // 409 is S3's answer when two conditional writes of one key race.
            Err(e) if matches!(status(&e), Some(412) | Some(409)) => Err(match mode {
                PutMode::Create => StoreError::AlreadyExists {
                    key: key.to_string(),
                },
                _ => StoreError::PreconditionFailed {
                    key: key.to_string(),
                },
            }),
            Err(e) if status(&e) == Some(404) && matches!(mode, PutMode::Update(_)) => {
                Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.sdk_error("PutObject", key, e)),
        }
    }

    async fn delete(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()> {
        validate_key(key)?;
        let mut req = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if let Some(etag) = if_match {
            req = req.if_match(etag.as_str());
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(412) => Err(StoreError::PreconditionFailed {
                key: key.to_string(),
            }),
            Err(e) if status(&e) == Some(404) => {
                if if_match.is_some() {
                    Err(StoreError::NotFound {
                        key: key.to_string(),
                    })
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(self.sdk_error("DeleteObject", key, e)),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .set_continuation_token(token.map(str::to_string))
            .max_keys(i32::try_from(max_keys.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| self.sdk_error("ListObjectsV2", prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?.strip_prefix(&self.prefix)?.to_string();
                Some(
                    etag(&key, "ListObjectsV2", o.e_tag()).map(|etag| ObjectMeta {
                        size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                        key,
                        etag,
                    }),
                )
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_string)
        } else {
            None
        };
        Ok(ListPage { objects, next })
    }
}

/// Creates the bucket if it does not exist (for tests and first runs against a fresh server).
pub async fn ensure_bucket(client: &Client, bucket: &str) -> StoreResult<()> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.code(),
                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(plain_sdk_error(bucket, e)),
    }
}
