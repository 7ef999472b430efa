//! What only the S3 backend has: multipart uploads of large bodies, storage classes and
//! server-side encryption, and connection strings with credentials.

use bytes::Bytes;
use s3db_run::store::s3::{S3Store, MULTIPART_THRESHOLD};
use s3db_run::store::{Connection, ObjectStore, PutMode, PutOptions, ServerSideEncryption};

use crate::support::s3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_uploaded_in_parts_and_read_back_whole() {
    let bucket = s3::bucket_name();
    let store = S3Store::connect(s3::location(&bucket, "p")).await;
    s3db_run::store::s3::ensure_bucket(store.client(), &bucket)
        .await
        .unwrap();
    let body: Vec<u8> = (0..MULTIPART_THRESHOLD + 3 * 1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect();
    let etag = store
        .put(
            "big/archive",
            Bytes::from(body.clone()),
            PutMode::Overwrite,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        etag.as_str().contains('-'),
        "a multipart ETag names its part count: {etag}"
    );
    let got = store.get("big/archive").await.unwrap().expect("stored");
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_and_server_side_encryption_are_sent() {
    let bucket = s3::bucket_name();
    let store = S3Store::connect(s3::location(&bucket, "")).await;
    s3db_run::store::s3::ensure_bucket(store.client(), &bucket)
        .await
        .unwrap();
    let options = PutOptions {
        storage_class: Some("STANDARD_IA".into()),
        server_side_encryption: Some(ServerSideEncryption::Aes256),
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    store
        .put("k", Bytes::from_static(b"{}"), PutMode::Create, &options)
        .await
        .unwrap();
    let head = store
        .client()
        .head_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_opens_the_bucket_and_never_shows_its_secret() {
    let url = s3::connection_string().await;
    let conn: Connection = url.parse().unwrap();
    let store = conn.open(std::path::Path::new(".")).await.unwrap();
    store
        .put(
            "hello",
            Bytes::from_static(b"world"),
            PutMode::Overwrite,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get("hello").await.unwrap().unwrap().body,
        Bytes::from_static(b"world")
    );
    let shown = format!("{} {:?} {conn} {conn:?}", store.describe(), store);
    assert!(!shown.contains("testing:testing"), "{shown}");
    assert!(shown.contains("***@"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_key_and_the_cause_without_credentials() {
    let url = format!(
        "s3://AKIAEXAMPLE:supersecret@no-such-bucket-{:x}/db?region=us-east-1&endpoint={}&forcePathStyle=true",
        rand::random::<u32>(),
        s3::endpoint()
    );
    let store = url
        .parse::<Connection>()
        .unwrap()
        .open(std::path::Path::new("."))
        .await
        .unwrap();
    let err = store
        .put(
            "x",
            Bytes::new(),
            PutMode::Overwrite,
            &PutOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(
        !err.contains("supersecret") && !err.contains("AKIAEXAMPLE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_returns_no_etag_is_an_error_not_an_empty_version() {
    use crate::support::proxy::{self, Fault};
    let bucket = s3::bucket_name();
    let direct = S3Store::connect(s3::location(&bucket, "p")).await;
    s3db_run::store::s3::ensure_bucket(direct.client(), &bucket)
        .await
        .unwrap();
    direct
        .put(
            "a",
            Bytes::from_static(b"1"),
            PutMode::Overwrite,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let mut location = s3::location(&bucket, "p");
    location.endpoint = Some(proxy::start(s3::endpoint(), Fault::StripEtag).await);
    let lax = S3Store::connect(location).await;
    let put = lax
        .put(
            "b",
            Bytes::from_static(b"2"),
            PutMode::Create,
            &PutOptions::default(),
        )
        .await
        .unwrap_err();
    let get = lax.get("a").await.unwrap_err();
    let head = lax.head("a").await.unwrap_err();
    let list = lax.list("", None, 100).await.unwrap_err();
    for (operation, e) in [
        ("PutObject", put),
        ("GetObject", get),
        ("HeadObject", head),
        ("ListObjectsV2", list),
    ] {
        assert!(
            matches!(&e, s3db_run::store::StoreError::MissingEtag { operation: op, .. } if *op == operation),
            "{operation}: {e}"
        );
        assert!(e.to_string().contains("no ETag"), "{e}");
    }
}
