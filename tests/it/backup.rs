//! The backup plugin end to end: real files, real S3 (moto), real processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use s3db_run::hooks::builtins::BuiltinKind;
use s3db_run::hooks::{HookInput, HookKind};
use s3db_run::manifest::model::HookRef;
use s3db_run::plugins::backup::{Backup, BackupError, RestoreOptions};
use s3db_run::plugins::{BuildContext, Component};
use s3db_run::runtime::Runtime;
use s3db_run::store::{list_all, DynStore};

use crate::support::{s3, walk};

const RESOURCES: &str = r#"
  resources:
    users:
      attributes: { name: string|required, age: number }
      partitions: { byAge: { fields: { age: number } } }
      timestamps: true
    orders: { attributes: { total: number } }
"#;

/// A manifest in a folder of its own, with its database on fs, memory or S3.
struct Setup {
    dir: tempfile::TempDir,
    connection: String,
    backup_yaml: String,
    key: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Fs,
    Memory,
    S3,
}

impl Setup {
    async fn new(db: Db, backup_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let connection = match db {
            Db::Fs => format!("file://{}/data", dir.path().display()),
            Db::Memory => format!("memory://b{:x}/db", rand::random::<u64>()),
            Db::S3 => s3::connection_string().await,
        };
        Self {
            dir,
            connection,
            backup_yaml: backup_yaml.to_string(),
            key: "correct horse battery staple".into(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The runtime of the manifest; `declare` false leaves the resources out (a database that
    /// knows nothing, as after a disaster).
    async fn runtime(&self, declare: bool) -> Runtime {
        let text = format!(
            "version: 1\ndatabase:\n  connection: file://./unused\n{}\n{}",
            if declare { RESOURCES } else { "" },
            self.backup_yaml
        );
        let file = self.path("s3db.yaml");
        std::fs::write(&file, text).expect("write manifest");
        let key = self.key.clone();
        let env = move |name: &str| (name == "BACKUP_KEY").then(|| key.clone());
        let loaded = s3db_run::manifest::load_path(&file, None, &env).expect("read");
        let checked = loaded
            .manifest
            .unwrap_or_else(|| panic!("{:#?}", loaded.report.diagnostics));
        Runtime::build(&checked, Some(&self.connection))
            .await
            .expect("runtime")
    }
}

fn backup_of(rt: &Runtime) -> Backup {
    rt.backup().expect("backup plugin")
}

async fn seed(rt: &Runtime, users: usize, orders: usize) {
    use futures::StreamExt;
    let u = rt.db.resource("users").unwrap();
    let o = rt.db.resource("orders").unwrap();
    let users = (0..users).map(|i| {
        let data = json!({ "name": format!("user {i} {}", "x".repeat(i % 50)), "age": i % 7 });
        (u.clone(), data, format!("u{i:05}"))
    });
    let orders = (0..orders).map(|i| {
        let data = json!({ "total": i as f64 * 1.5 });
        (o.clone(), data, format!("o{i:05}"))
    });
    // 32 at a time, as the runner's own listings do: hundreds of connections at once make
    // the test server refuse some on a busy machine.
    futures::stream::iter(users.chain(orders))
        .for_each_concurrent(32, |(resource, data, id)| async move {
            resource
                .insert(data.as_object().unwrap().clone(), Some(&id))
                .await
                .unwrap();
        })
        .await;
}

/// Every record of every resource, by resource and id.
async fn snapshot(rt: &Runtime) -> BTreeMap<String, BTreeMap<String, Map<String, Value>>> {
    let mut out = BTreeMap::new();
    for name in ["users", "orders"] {
        let Ok(r) = rt.db.resource(name) else {
            continue;
        };
        let records = r.list(Default::default()).await.unwrap();
        out.insert(
            name.to_string(),
            records.into_iter().map(|r| (r.id, r.data)).collect(),
        );
    }
    out
}

/// Deletes every object of the database, `s3db.json` included.
async fn wipe(store: &DynStore) {
    for obj in list_all(store.as_ref(), "").await.unwrap() {
        store.delete(&obj.key, None).await.unwrap();
    }
    assert!(list_all(store.as_ref(), "").await.unwrap().is_empty());
}

fn fs_backup_yaml(extra: &str) -> String {
    format!("backup:\n  driver: filesystem\n  config: {{ path: \"./backups/{{date}}/\" }}\n{extra}")
}

fn s3_backup_yaml(extra: &str) -> String {
    format!("backup:\n  driver: s3\n  config: {{ path: \"backups/{{year}}/{{month}}/\" }}\n{extra}")
}

async fn full_backup_wipe_restore_gives_identical_records(db: Db, yaml: String) {
    let setup = Setup::new(db, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 300, 40).await;
    let before = snapshot(&rt).await;
    let by_age_before = in_age_3(&rt).await;
    assert_eq!(by_age_before, 43);
    let info = backup_of(&rt).backup("full", None).await.unwrap();
    assert_eq!(info.status, "completed");
    assert_eq!(info.records["users"], 300);
    assert_eq!(info.records["orders"], 40);

    wipe(rt.db.store()).await;
    // A runner that knows no resources: the definitions come from the archive.
    let fresh = setup.runtime(false).await;
    let listed = backup_of(&fresh).list_backups(None, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, info.id);
    let stats = backup_of(&fresh)
        .restore(&info.id, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(stats.records, 340);
    assert_eq!(stats.skipped, 0);
    assert_eq!(snapshot(&fresh).await, before);
    // Partition references were rebuilt too.
    assert_eq!(in_age_3(&fresh).await, by_age_before);
}

async fn in_age_3(rt: &Runtime) -> usize {
    rt.db
        .resource("users")
        .unwrap()
        .list(s3db_run::db::ListOptions {
            partition: Some(("byAge".into(), vec![("age".into(), "3".into())])),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_backup_wipe_restore_gives_identical_records_on_fs() {
    let enc = "  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\" }\n";
    full_backup_wipe_restore_gives_identical_records(Db::Fs, fs_backup_yaml(enc)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_backup_wipe_restore_gives_identical_records_on_s3() {
    let extra = "  compression: brotli\n  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\", keyDerivation: { algorithm: PBKDF2, iterations: 600000 } }\n";
    full_backup_wipe_restore_gives_identical_records(Db::S3, s3_backup_yaml(extra)).await;
}

/// Off-site copies: a database on the filesystem backs up to two S3 destinations, each with
/// its own connection string (its own bucket, prefix, endpoint and credentials), without any
/// AWS settings in the environment; each holds the whole backup under its prefix. The two are
/// two S3 servers (two moto_server processes) reached with different credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_destinations_name_their_own_connection() {
    let a = crate::support::s3::connection_string()
        .await
        .replace("/db?", "/offsite-a?");
    let (b_bucket, b) =
        crate::support::s3::second_connection_string("offsite-key", "offsite-s3cr3t").await;
    let b = b.replace("/db?", "/offsite-b?");
    assert_ne!(
        crate::support::s3::endpoint(),
        crate::support::s3::second_endpoint()
    );
    let yaml = format!(
        "backup:\n  driver: multi\n  config:\n    strategy: all\n    destinations:\n      - {{ driver: s3, config: {{ connection: \"{a}\", path: \"nightly/\" }} }}\n      - {{ driver: s3, config: {{ connection: \"{b}\" }} }}\n"
    );
    let setup = Setup::new(Db::Fs, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 20, 2).await;
    let before = snapshot(&rt).await;
    let info = backup_of(&rt).backup("full", None).await.unwrap();
    assert_eq!(info.destinations.len(), 2, "{:?}", info.destinations);
    let a_bucket = a
        .trim_start_matches("s3://testing:testing@")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut b_location = crate::support::s3::location(&b_bucket, "");
    b_location.endpoint = Some(crate::support::s3::second_endpoint());
    for (location, root) in [
        (
            crate::support::s3::location(&a_bucket, ""),
            "offsite-a/nightly/",
        ),
        (b_location, "offsite-b/backups/"),
    ] {
        let store = s3db_run::store::s3::S3Store::connect(location).await;
        let keys: Vec<String> = list_all(&store, "")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        for suffix in [".s3db-backup", ".index", ".meta.json", ".done"] {
            let want = format!("{root}{}{suffix}", info.id);
            assert!(keys.contains(&want), "{want} not in {keys:?}");
        }
    }
    for d in &info.destinations {
        assert!(
            !d.contains("testing") && !d.contains("offsite-s3cr3t"),
            "a credential in {d}"
        );
    }
    wipe(rt.db.store()).await;
    let fresh = setup.runtime(false).await;
    backup_of(&fresh)
        .restore(&info.id, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(snapshot(&fresh).await, before);
}

async fn incremental_chain_restores_exactly_the_final_state(db: Db, yaml: String) {
    let setup = Setup::new(db, &yaml).await;
    let rt = setup.runtime(true).await;
    let b = backup_of(&rt);
    seed(&rt, 60, 10).await;
    let full = b.backup("full", None).await.unwrap();
    let users = rt.db.resource("users").unwrap();
    let orders = rt.db.resource("orders").unwrap();
    users
        .update(
            "u00001",
            json!({ "name": "renamed" }).as_object().unwrap(),
            None,
        )
        .await
        .unwrap();
    users.delete("u00002", None).await.unwrap();
    orders.delete("o00003", None).await.unwrap();
    users
        .insert(
            json!({ "name": "new" }).as_object().unwrap().clone(),
            Some("n1"),
        )
        .await
        .unwrap();
    let inc1 = b.backup("incremental", None).await.unwrap();
    assert_eq!(inc1.kind, "incremental");
    assert_eq!(inc1.parent.as_deref(), Some(full.id.as_str()));
    assert_eq!(
        inc1.records["users"], 2,
        "only the changed and the new record"
    );
    assert_eq!(inc1.tombstones["users"], 1);
    assert_eq!(inc1.tombstones["orders"], 1);

    users
        .update("u00001", json!({ "age": 99 }).as_object().unwrap(), None)
        .await
        .unwrap();
    users.delete("n1", None).await.unwrap();
    users
        .insert(
            json!({ "name": "again" }).as_object().unwrap().clone(),
            Some("u00002"),
        )
        .await
        .unwrap();
    let inc2 = b.backup("incremental", None).await.unwrap();
    assert_eq!(inc2.parent.as_deref(), Some(inc1.id.as_str()));
    let expected = snapshot(&rt).await;

    wipe(rt.db.store()).await;
    let fresh = setup.runtime(false).await;
    let stats = backup_of(&fresh)
        .restore(
            &inc2.id,
            RestoreOptions {
                overwrite: true,
                resources: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        stats.chain,
        [full.id.clone(), inc1.id.clone(), inc2.id.clone()]
    );
    let got = snapshot(&fresh).await;
    assert_eq!(got, expected);
    assert!(!got["users"].contains_key("n1"), "deleted record came back");
    assert!(
        !got["orders"].contains_key("o00003"),
        "deleted record came back"
    );
    assert_eq!(got["users"]["u00001"]["age"], json!(99));

    // Restoring the middle of the chain gives that moment's state.
    wipe(fresh.db.store()).await;
    let again = setup.runtime(false).await;
    let stats = backup_of(&again)
        .restore(&inc1.id, RestoreOptions::default())
        .await
        .unwrap();
    // Into an empty database nothing is kept: inc1's two delete markers have no record to
    // keep, and are not reported as kept ones.
    assert_eq!(stats.skipped, 0, "{stats:?}");
    let mid = snapshot(&again).await;
    assert!(mid["users"].contains_key("n1"));
    assert!(!mid["users"].contains_key("u00002"));
    assert_eq!(mid["users"]["u00001"]["name"], json!("renamed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_chain_restores_exactly_the_final_state_on_fs() {
    incremental_chain_restores_exactly_the_final_state(
        Db::Fs,
        fs_backup_yaml("  compression: deflate\n"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_chain_restores_exactly_the_final_state_on_s3() {
    let enc = "  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\" }\n";
    incremental_chain_restores_exactly_the_final_state(Db::S3, s3_backup_yaml(enc)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_incremental_with_no_changes_reads_no_record_bodies() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 200, 20).await;
    let counting = std::sync::Arc::new(s3db_run::store::counting::CountingStore::new(
        rt.db.store().clone(),
    ));
    let counts = counting.counts.clone();
    let declared = Default::default();
    let db = s3db_run::db::Database::connect(counting, &declared)
        .await
        .unwrap();
    let m = s3db_run::manifest::load_path(&setup.path("s3db.yaml"), None, &|_: &str| None)
        .unwrap()
        .manifest
        .unwrap();
    let b = Backup::build(
        m.manifest.backup.as_ref().unwrap(),
        &BuildContext::for_manifest(&m.manifest, db.clone(), setup.dir.path()),
    )
    .await
    .unwrap();
    b.backup("full", None).await.unwrap();
    let (reads_full, _, _) = counts.snapshot();
    assert!(
        reads_full >= 220,
        "a full backup reads every record ({reads_full})"
    );
    let inc = b.backup("incremental", None).await.unwrap();
    let (reads, _, _) = counts.snapshot();
    let during = reads - reads_full;
    assert_eq!(inc.records.values().sum::<u64>(), 0);
    assert_eq!(inc.tombstones.values().sum::<u64>(), 0);
    // s3db.json and the lock, not one of the 220 records.
    assert!(
        during <= 4,
        "{during} reads during an unchanged incremental"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selective_backup_and_selective_restore() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 20, 5).await;
    let b = backup_of(&rt);
    let only_orders = b
        .backup("orders-only", Some(vec!["orders".into()]))
        .await
        .unwrap();
    assert_eq!(only_orders.resources, ["orders"]);
    assert!(only_orders.selective);
    assert!(only_orders.id.starts_with("orders-only-"));
    let full = b.backup("full", None).await.unwrap();
    wipe(rt.db.store()).await;
    let fresh = setup.runtime(false).await;
    let stats = backup_of(&fresh)
        .restore(
            &full.id,
            RestoreOptions {
                overwrite: false,
                resources: Some(vec!["users".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stats.records, 20);
    assert!(
        fresh.db.resource("orders").is_err(),
        "orders were not asked for"
    );
    let err = backup_of(&fresh)
        .restore(
            &only_orders.id,
            RestoreOptions {
                overwrite: false,
                resources: Some(vec!["users".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no resource `users`"), "{err}");
    // An unknown resource in a backup request is refused before anything runs.
    let err = b
        .backup("full", Some(vec!["nope".into()]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_without_overwrite_keeps_existing_records() {
    let setup = Setup::new(Db::Memory, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 10, 0).await;
    let b = backup_of(&rt);
    let full = b.backup("full", None).await.unwrap();
    let users = rt.db.resource("users").unwrap();
    users
        .update(
            "u00003",
            json!({ "name": "changed" }).as_object().unwrap(),
            None,
        )
        .await
        .unwrap();
    users.delete("u00004", None).await.unwrap();
    let stats = b
        .restore(&full.id, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!((stats.records, stats.skipped), (1, 9));
    assert_eq!(
        users.get("u00003").await.unwrap().unwrap().data["name"],
        json!("changed")
    );
    assert!(users.get("u00004").await.unwrap().is_some());
    let stats = b
        .restore(
            &full.id,
            RestoreOptions {
                overwrite: true,
                resources: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stats.records, 10);
    assert!(users.get("u00003").await.unwrap().unwrap().data["name"]
        .as_str()
        .unwrap()
        .starts_with("user 3"));
}

fn archive_of(dir: &Path) -> (PathBuf, PathBuf) {
    let mut archive = None;
    let mut meta = None;
    for entry in walk(dir) {
        let name = entry.to_string_lossy().to_string();
        if name.ends_with(".s3db-backup") {
            archive = Some(entry.clone());
        }
        if name.ends_with(".meta.json") {
            meta = Some(entry);
        }
    }
    (archive.expect("archive"), meta.expect("meta"))
}

/// Rewrites the metadata's SHA-256 and size to match a tampered archive, as an attacker with
/// write access to the destination would, so only the encryption stands in the way.
fn forge_metadata(archive: &Path, meta: &Path) {
    let bytes = std::fs::read(archive).unwrap();
    let mut m: Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    m["sha256"] = json!(format!("{:x}", Sha256::digest(&bytes)));
    m["size"] = json!(bytes.len());
    std::fs::write(meta, serde_json::to_vec(&m).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_archives_and_wrong_keys_fail_before_any_record_is_written() {
    let yaml = fs_backup_yaml(
        "  compression: none\n  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\" }\n",
    );
    let setup = Setup::new(Db::Fs, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 1500, 0).await;
    let full = backup_of(&rt).backup("full", None).await.unwrap();
    assert!(
        full.size > 4 * 64 * 1024,
        "several segments ({})",
        full.size
    );
    let (archive, meta) = archive_of(&setup.path("backups"));
    let pristine = std::fs::read(&archive).unwrap();
    let pristine_meta = std::fs::read(&meta).unwrap();
    // The key appears nowhere at the destination.
    for f in walk(&setup.path("backups")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(setup.key.len())
                .any(|w| w == setup.key.as_bytes()),
            "{} contains the key",
            f.display()
        );
    }
    wipe(rt.db.store()).await;

    let seg = 64 * 1024 + 16;
    let body_start = {
        let len = u32::from_be_bytes(pristine[8..12].try_into().unwrap()) as usize;
        12 + len
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "flipped byte",
            {
                let mut b = pristine.clone();
                b[body_start + seg + 100] ^= 1;
                b
            },
            true,
        ),
        (
            "flipped byte, metadata left alone",
            {
                let mut b = pristine.clone();
                b[body_start + 10] ^= 0x80;
                b
            },
            false,
        ),
        (
            "truncated at a segment boundary",
            pristine[..body_start + 2 * seg].to_vec(),
            true,
        ),
        (
            "truncated mid-segment",
            pristine[..pristine.len() - 7].to_vec(),
            true,
        ),
        (
            "swapped segments",
            {
                let mut b = pristine.clone();
                let (a, rest) = b[body_start..].split_at_mut(seg);
                a.swap_with_slice(&mut rest[..seg]);
                b
            },
            true,
        ),
    ];
    for (what, bytes, forge) in cases {
        std::fs::write(&archive, &bytes).unwrap();
        std::fs::write(&meta, &pristine_meta).unwrap();
        if forge {
            forge_metadata(&archive, &meta);
        }
        let fresh = setup.runtime(false).await;
        let err = backup_of(&fresh)
            .restore(&full.id, RestoreOptions::default())
            .await
            .expect_err(what);
        let text = err.to_string();
        assert!(
            text.contains("damaged") || text.contains("altered") || text.contains("truncated"),
            "{what}: {text}"
        );
        let objects = list_all(fresh.db.store().as_ref(), "resource=")
            .await
            .unwrap();
        assert!(
            objects.is_empty(),
            "{what}: {} objects written",
            objects.len()
        );
    }

    std::fs::write(&archive, &pristine).unwrap();
    std::fs::write(&meta, &pristine_meta).unwrap();
    let wrong = Setup {
        key: "wrong key".into(),
        ..setup
    };
    let with_wrong = wrong.runtime(false).await;
    let err = backup_of(&with_wrong)
        .restore(&full.id, RestoreOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("wrong encryption key"), "{text}");
    assert!(!text.contains("wrong key\""), "the key leaks: {text}");
    let objects = list_all(with_wrong.db.store().as_ref(), "resource=")
        .await
        .unwrap();
    assert!(objects.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_driver_with_a_failing_destination_under_each_strategy() {
    for (strategy, order, succeeds, holders) in [
        ("all", ["ok", "broken"], false, vec![]),
        ("any", ["ok", "broken"], true, vec!["ok"]),
        ("priority", ["broken", "ok"], true, vec!["ok"]),
        ("priority", ["ok", "other"], true, vec!["ok"]),
    ] {
        let dest = |name: &str| {
            format!(
                "      - {{ driver: filesystem, config: {{ path: \"./{name}/x/{{date}}/\" }} }}\n"
            )
        };
        let yaml = format!(
            "backup:\n  driver: multi\n  config:\n    strategy: {strategy}\n    destinations:\n{}{}",
            dest(order[0]),
            dest(order[1])
        );
        let setup = Setup::new(Db::Fs, &yaml).await;
        // A file where a folder must be: writing under it fails.
        std::fs::write(setup.path("broken"), b"not a folder").unwrap();
        let rt = setup.runtime(true).await;
        seed(&rt, 5, 1).await;
        let b = backup_of(&rt);
        let result = b.backup("full", None).await;
        assert_eq!(result.is_ok(), succeeds, "{strategy}: {result:?}");
        let completed: Vec<_> = b
            .list_backups(None, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.is_completed())
            .collect();
        assert_eq!(completed.len(), usize::from(succeeds), "{strategy}");
        for name in ["ok", "other"] {
            let has = setup.path(name).exists()
                && walk(&setup.path(name))
                    .iter()
                    .any(|p| p.to_string_lossy().ends_with(".done"));
            assert_eq!(has, holders.contains(&name), "{strategy} {order:?}: {name}");
        }
        if succeeds {
            let id = &completed[0].id;
            wipe(rt.db.store()).await;
            let fresh = setup.runtime(false).await;
            let stats = backup_of(&fresh)
                .restore(id, RestoreOptions::default())
                .await
                .unwrap();
            assert_eq!(stats.records, 6, "{strategy}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_applies_retention_and_dry_run_deletes_nothing() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("  retention: { daily: 1 }\n")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 3, 0).await;
    let b = backup_of(&rt);
    let first = b.backup("full", None).await.unwrap();
    let second = b.backup("incremental", None).await.unwrap();
    let third = b.backup("full", None).await.unwrap();
    let dry = b.prune(true).await.unwrap();
    assert_eq!(b.list_backups(None, None).await.unwrap().len(), 3);
    let kept: Vec<_> = dry
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(kept, std::slice::from_ref(&third.id));
    b.prune(false).await.unwrap();
    let left: Vec<_> = b
        .list_backups(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&third.id));
    assert!(matches!(
        b.status(&first.id).await,
        Err(BackupError::NotFound(_))
    ));
    assert!(matches!(
        b.status(&second.id).await,
        Err(BackupError::NotFound(_))
    ));
    // Deleting a full that an incremental needs is refused.
    let inc = b.backup("incremental", None).await.unwrap();
    let err = b.delete(&third.id).await.unwrap_err();
    assert!(err.to_string().contains(&inc.id), "{err}");
    b.delete(&inc.id).await.unwrap();
    b.delete(&third.id).await.unwrap();
    assert!(b.list_backups(None, None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_and_callbacks_report_each_step() {
    let yaml = format!(
        "actions:\n  record: {{ run: [\"/bin/sh\", \"-c\", \"cat >> events.jsonl; echo >> events.jsonl\"] }}\n{}",
        fs_backup_yaml("  onBackupStart: record\n  onBackupComplete: record\n  onRestoreComplete: record\n")
    );
    let setup = Setup::new(Db::Fs, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 2, 0).await;
    let b = backup_of(&rt);
    let mut events = b.subscribe();
    let info = b.backup("nightly", None).await.unwrap();
    b.restore(&info.id, RestoreOptions::default())
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Ok(e) = events.try_recv() {
        names.push(e.event);
    }
    assert_eq!(
        names,
        [
            "backup_start",
            "backup_complete",
            "restore_start",
            "restore_complete"
        ]
    );
    let log = std::fs::read_to_string(setup.path("events.jsonl")).unwrap();
    let docs: Vec<Value> = log
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["stats"]["backupId"], json!(info.id));
    assert_eq!(docs[1]["stats"]["size"], json!(info.size));
    assert_eq!(docs[2]["stats"]["records"], json!(0));
    assert_eq!(docs[2]["stats"]["skipped"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_runner_cannot_back_up_while_the_lock_is_held() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 400, 0).await;
    let other = setup.runtime(true).await;
    let (first, second) = (backup_of(&rt), backup_of(&other));
    let (mut ea, mut eb) = (first.subscribe(), second.subscribe());
    let (a, b) = tokio::join!(first.backup("full", None), second.backup("full", None));
    let names =
        |rx: &mut tokio::sync::broadcast::Receiver<s3db_run::plugins::backup::BackupEvent>| {
            let mut out = Vec::new();
            while let Ok(e) = rx.try_recv() {
                out.push(e.event);
            }
            out
        };
    let mut seen = [names(&mut ea), names(&mut eb)];
    seen.sort();
    // The refused one never started, and is no backup error (nothing failed: another runner
    // is backing up), so onBackupError does not page anyone.
    assert_eq!(
        seen,
        [Vec::<&str>::new(), vec!["backup_start", "backup_complete"]]
    );
    let locked = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(BackupError::Locked { .. })))
        .count();
    assert_eq!(locked, 1, "{a:?} / {b:?}");
    assert_eq!([&a, &b].iter().filter(|r| r.is_ok()).count(), 1);

    // Started by id (as the API does), a refused backup still has a status that says why.
    let ids = [Backup::new_id("full"), Backup::new_id("full")];
    let (a, b) = tokio::join!(
        first.backup_with_id(ids[0].clone(), "full", None),
        second.backup_with_id(ids[1].clone(), "full", None)
    );
    let (refused_by, refused_id) = if a.is_err() {
        (&first, &ids[0])
    } else {
        assert!(b.is_err());
        (&second, &ids[1])
    };
    let status = refused_by.status(refused_id).await.unwrap();
    assert_eq!(status.status, "failed");
    assert!(status.error.unwrap().contains("holds the lock"));
}

async fn backup_builtins(db: Db) {
    let yaml = format!(
        "actions:\n  nightly: {{ builtin: backup.run, with: {{ type: nightly, resources: [users] }} }}\n  tidy: {{ builtin: backup.prune, with: {{ dryRun: true }} }}\n{}",
        fs_backup_yaml("  retention: { daily: 1 }\n")
    );
    let setup = Setup::new(db, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 4, 2).await;
    let run = |name: &'static str| {
        let hooks = rt.hooks.clone();
        async move {
            let hook = hooks
                .resolve(&HookRef::Named(name.into()), BuiltinKind::Action)
                .unwrap();
            hooks
                .action(&hook, &HookInput::new(name.to_string(), HookKind::Job))
                .await
        }
    };
    let first = run("nightly").await.unwrap();
    assert_eq!(first["type"], json!("nightly"));
    assert_eq!(first["resources"], json!(["users"]));
    assert_eq!(first["records"]["users"], json!(4));
    let second = run("nightly").await.unwrap();
    let pruned = run("tidy").await.unwrap();
    assert_eq!(pruned["dryRun"], json!(true));
    let decisions = pruned["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["id"], second["id"]);
    assert_eq!(decisions[0]["keep"], json!(true));
    assert_eq!(decisions[1]["keep"], json!(false));
    assert_eq!(
        backup_of(&rt).list_backups(None, None).await.unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_builtins_run_and_prune_on_fs() {
    backup_builtins(Db::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_builtins_run_and_prune_on_memory() {
    backup_builtins(Db::Memory).await;
}

#[test]
fn a_backup_process_killed_midway_is_not_listed_as_completed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let setup = rt.block_on(async {
        let setup = Setup::new(Db::S3, &s3_backup_yaml("")).await;
        let runtime = setup.runtime(true).await;
        seed(&runtime, 1200, 0).await;
        setup
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["backup", "full", "-f"])
        .arg(setup.path("s3db.yaml"))
        .args(["--connection", &setup.connection])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(setup.path("backup.log")).unwrap())
        .spawn()
        .unwrap();
    // The archive is being written: the records are being read from S3.
    let temp = setup.path("tmp/backups");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the backup process ended ({status}) before it was killed:\n{}",
                std::fs::read_to_string(setup.path("backup.log")).unwrap_or_default()
            );
        }
        let writing = temp.exists()
            && walk(&temp)
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".s3db-backup"));
        if writing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    rt.block_on(async {
        let runtime = setup.runtime(true).await;
        let list = backup_of(&runtime).list_backups(None, None).await.unwrap();
        assert_eq!(list.len(), 1, "its metadata says it started");
        assert_ne!(list[0].status, "completed");
        let err = backup_of(&runtime)
            .restore(&list[0].id, RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Unusable { .. } | BackupError::Locked { .. }
            ),
            "{err}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_backup_ends_cancelled_and_is_never_completed() {
    let setup = Setup::new(Db::S3, &s3_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 600, 0).await;
    let b = backup_of(&rt);
    let mut events = b.subscribe();
    let task = tokio::spawn({
        let b = b.clone();
        async move { b.backup("full", None).await }
    });
    let t = std::time::Instant::now();
    while b.running().is_empty() {
        assert!(t.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    b.cancel_all();
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, BackupError::Cancelled(_)), "{err}");
    assert!(b.running().is_empty());
    let list = b.list_backups(None, None).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, "cancelled");
    let mut names = Vec::new();
    while let Ok(e) = events.try_recv() {
        names.push(e.event);
    }
    assert_eq!(names, ["backup_start", "backup_cancelled"]);
    // The lock was released: the next backup runs.
    assert!(b.backup("full", None).await.is_ok());
}

/// A backup process killed with SIGKILL leaves its temporary files behind; the next backup
/// (or prune, or start) removes them, and never the files of a backup still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_s_temporary_files_are_removed_by_the_next_one() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 3000, 0).await;
    let temp = setup.path("tmp/backups");
    let spooled = |temp: &Path| {
        std::fs::read_dir(temp)
            .into_iter()
            .flatten()
            .flatten()
            .any(|run| {
                std::fs::read_dir(run.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().ends_with(".s3db-backup"))
            })
    };
    // The plugins alive in this process (`rt`'s and this one): their folders must survive
    // every sweep.
    let live = backup_of(&setup.runtime(true).await);
    let live_folders: Vec<_> = std::fs::read_dir(&temp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(live_folders.len(), 2);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["backup", "full", "-f"])
        .arg(setup.path("s3db.yaml"))
        .args(["--connection", &setup.connection])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !spooled(&temp) {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never spooled"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(spooled(&temp), "the killed backup left its archive");
    // The killed backup still holds the database's backup lease (until it expires), so this
    // prune is refused; its temporary files go all the same.
    let (_, _, err) = cli(&setup, &["backup", "prune"]);
    assert!(err.contains("holds the lock"), "{err}");
    assert!(
        !spooled(&temp),
        "the next command left the killed backup's files"
    );
    assert!(
        live_folders.iter().all(|f| f.exists()),
        "a live plugin's folder was removed"
    );
    drop(live);
}

/// `backup check` verifies every backup at every destination without restoring it: metadata,
/// completion marker, index and archive hashes; `--read-data` (or `verify`) also reads every
/// archive back with the key. Each problem is reported per backup, and any makes it exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_check_finds_each_kind_of_damage() {
    let enc = "  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\", keyDerivation: { algorithm: PBKDF2, iterations: 1000 } }\n";
    let setup = Setup::new(Db::Fs, &fs_backup_yaml(enc)).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 20, 2).await;
    let b = backup_of(&rt);
    let sound = b.backup("full", None).await.unwrap();
    let hurt = b.backup("full", None).await.unwrap();
    let meta_hurt = b.backup("full", None).await.unwrap();
    let (code, out, err) = cli(&setup, &["backup", "check", "--read-data"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 checked") && out.contains("3 sound"),
        "{out}"
    );
    // The key is part of what only --read-data can check: the hashes hold with any key.
    let wrong = Setup {
        key: "not the key".into(),
        ..setup
    };
    let (code, _, _) = cli(&wrong, &["backup", "check"]);
    assert_eq!(code, 0);
    let (code, out, _) = cli(&wrong, &["backup", "verify", &sound.id]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not read back"), "{out}");
    let setup = Setup {
        key: "correct horse battery staple".into(),
        ..wrong
    };
    // One byte of one archive flipped, and one index: each reported on its backup, the other
    // backup still sound.
    let files = walk(&setup.path("backups"));
    let file = |suffix: &str| {
        files
            .iter()
            .find(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("{}{suffix}", hurt.id))
            })
            .unwrap()
            .clone()
    };
    let flip = |path: std::path::PathBuf| {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    };
    for suffix in [".s3db-backup", ".index", ".done"] {
        flip(file(suffix));
    }
    // And one byte of another backup's metadata.
    flip(
        files
            .iter()
            .find(|p| {
                p.to_string_lossy()
                    .ends_with(&format!("{}.meta.json", meta_hurt.id))
            })
            .unwrap()
            .clone(),
    );
    let (code, out, _) = cli(&setup, &["backup", "check", "--output", "json"]);
    assert_eq!(code, 1, "{out}");
    let reports: Vec<Value> = serde_json::from_str(&out).unwrap();
    let problems = |id: &str| {
        reports.iter().find(|r| r["id"] == id).unwrap()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(problems(&sound.id).is_empty(), "{reports:?}");
    let hurt_problems = problems(&hurt.id);
    assert!(
        hurt_problems
            .iter()
            .any(|p| p.contains("archive does not match")),
        "{hurt_problems:?}"
    );
    assert!(
        hurt_problems
            .iter()
            .any(|p| p.contains("index does not match")),
        "{hurt_problems:?}"
    );
    assert!(
        hurt_problems
            .iter()
            .any(|p| p.contains("completion marker does not match")),
        "{hurt_problems:?}"
    );
    assert!(!problems(&meta_hurt.id).is_empty(), "{reports:?}");
    // Only the named backup is checked.
    let (code, out, _) = cli(&setup, &["backup", "check", &sound.id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 checked"), "{out}");
    let (code, out, _) = cli(
        &setup,
        &["backup", "check", "full-2001-01-01T00-00-00-aaaaaa"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no destination holds it"), "{out}");
}

/// `backup diff A B` names the records added, changed and deleted between two backups, from
/// their indexes; `backup stats` sums sizes and counts, per resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_diff_and_stats_report_records_and_sizes() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 10, 2).await;
    let b = backup_of(&rt);
    let first = b.backup("full", None).await.unwrap();
    let users = rt.db.resource("users").unwrap();
    users.delete("u00001", None).await.unwrap();
    users
        .update("u00002", json!({ "age": 99 }).as_object().unwrap(), None)
        .await
        .unwrap();
    users
        .insert(
            json!({ "name": "new" }).as_object().unwrap().clone(),
            Some("n1"),
        )
        .await
        .unwrap();
    let second = b.backup("incremental", None).await.unwrap();
    let (code, out, err) = cli(
        &setup,
        &["backup", "diff", &first.id, &second.id, "--output", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let diff: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        diff["resources"],
        json!({ "users": { "added": ["n1"], "changed": ["u00002"], "deleted": ["u00001"] } })
    );
    let (code, out, _) = cli(&setup, &["backup", "diff", &first.id, &first.id]);
    assert_eq!(code, 0);
    assert!(out.contains("no record differs"), "{out}");
    let (code, out, err) = cli(&setup, &["backup", "stats", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["total"]["backups"], json!(2));
    assert_eq!(stats["total"]["bytes"], json!(first.size + second.size));
    let records: u64 = first.records.values().sum::<u64>() + second.records.values().sum::<u64>();
    assert_eq!(stats["total"]["records"], json!(records));
    let (code, _, err) = cli(&setup, &["backup", "stats", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("`nope` not found"), "{err}");
}

/// A restore reports its progress with a total (the chain's record counts), so a terminal shows
/// a bar, a rate and an ETA; it ends at its total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_progress_has_a_total() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 40, 5).await;
    let info = backup_of(&rt).backup("full", None).await.unwrap();
    wipe(rt.db.store()).await;
    let fresh = setup.runtime(false).await;
    let b = backup_of(&fresh);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    b.on_progress(std::sync::Arc::new({
        let seen = seen.clone();
        move |p| seen.lock().unwrap().push((p.phase, p.done, p.total))
    }));
    b.restore(&info.id, RestoreOptions::default())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let restore: Vec<_> = seen
        .iter()
        .filter(|(phase, _, _)| *phase == "restore")
        .collect();
    assert!(!restore.is_empty(), "{seen:?}");
    assert!(
        restore.iter().all(|(_, _, total)| *total == Some(45)),
        "{seen:?}"
    );
    assert_eq!(restore.last().unwrap().1, 45, "{seen:?}");
}

/// `restore --dry-run` verifies the backup and counts what a restore would write, keep and
/// delete, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_restore_counts_and_writes_nothing() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 10, 0).await;
    let info = backup_of(&rt).backup("full", None).await.unwrap();
    let users = rt.db.resource("users").unwrap();
    for id in ["u00001", "u00002", "u00003"] {
        users.delete(id, None).await.unwrap();
    }
    let before = snapshot(&rt).await;
    let (code, out, err) = cli(
        &setup,
        &["restore", &info.id, "--dry-run", "--output", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["dryRun"], json!(true));
    assert_eq!(stats["records"], json!(3), "{stats}");
    assert_eq!(stats["skipped"], json!(7), "{stats}");
    let (code, out, _) = cli(&setup, &["restore", &info.id, "--dry-run", "--overwrite"]);
    assert_eq!(code, 0);
    assert!(out.contains("would write 10 record(s), keep 0"), "{out}");
    assert_eq!(
        snapshot(&setup.runtime(true).await).await,
        before,
        "a dry run wrote"
    );
}

/// A backup whose metadata is damaged (one byte flipped) stays in the list, as `damaged` with
/// the reason, and restoring it says it is damaged, not that it does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_damaged_metadata_is_listed_as_damaged() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 5, 1).await;
    let b = backup_of(&rt);
    let info = b.backup("full", None).await.unwrap();
    let meta = walk(&setup.path("backups"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".meta.json"))
        .expect("metadata file");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&meta, bytes).unwrap();
    let list = b.list_backups(None, None).await.unwrap();
    assert_eq!(list.len(), 1, "the damaged backup vanished");
    assert_eq!(list[0].id, info.id);
    assert_eq!(list[0].status, "damaged");
    assert_eq!(list[0].label, "full");
    assert!(
        list[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("metadata cannot be read"),
        "{:?}",
        list[0].error
    );
    let err = b
        .restore(&info.id, RestoreOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains("not found"), "{err}");
    // Pruning never deletes it: its archive may be sound.
    let decisions = b.prune(false).await.unwrap();
    assert!(
        decisions.iter().any(|d| d.id == info.id && d.keep),
        "{decisions:?}"
    );
    assert_eq!(b.list_backups(None, None).await.unwrap().len(), 1);
}

/// Runs `s3db-run ARGS -f MANIFEST` in the setup's folder; (exit code, stdout, stderr).
fn cli(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(args)
        .arg("-f")
        .arg(setup.path("s3db.yaml"))
        .args(["--connection", &setup.connection])
        .env("BACKUP_KEY", &setup.key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The words after `backup` that name commands are commands, never labels: `backup list`
/// lists, `backup status ID` and `backup delete ID` act on a backup, and the reserved words and
/// labels too long for a file name are usage errors that take no backup. A completed backup
/// says where it went with the path's templates filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_words_are_never_backup_labels() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 3, 1).await;
    let (code, out, err) = cli(&setup, &["backup", "full"]);
    assert_eq!(code, 0, "{err}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        out.contains(&format!("stored at: filesystem:./backups/{today}/")),
        "{out}"
    );
    assert!(!out.contains("{date}"), "{out}");
    let listed = |setup: &Setup| {
        let (code, out, _) = cli(setup, &["backup", "list", "--output", "json"]);
        assert_eq!(code, 0);
        serde_json::from_str::<Vec<Value>>(&out).unwrap()
    };
    let list = listed(&setup);
    assert_eq!(list.len(), 1, "`backup list` lists and makes no backup");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let (code, out, _) = cli(&setup, &["backup", "status", &id]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["id"],
        json!(id)
    );
    let (code, out, _) = cli(&setup, &["backup", "info"]);
    assert_eq!(code, 0, "{out}");
    for words in [
        &["backup", "diff"][..],
        &["backup", "diff", "one"],
        &["backup", "restore"],
        &["backup", "status"],
        &["backup", "delete"],
    ] {
        let (code, _, err) = cli(&setup, words);
        assert_eq!(code, 2, "{words:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let long = "x".repeat(300);
    let (code, _, err) = cli(&setup, &["backup", &long]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the most is 64"), "{err}");
    assert_eq!(listed(&setup).len(), 1, "none of these took a backup");
    let (code, out, err) = cli(&setup, &["backup", "delete", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("deleted {id}")), "{out}");
    assert!(listed(&setup).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_and_restore_commands_work_end_to_end() {
    let yaml = fs_backup_yaml(
        "  encryption: { algorithm: AES-256-GCM, key: \"${BACKUP_KEY}\" }\n  retention: { daily: 1 }\n",
    );
    let setup = Setup::new(Db::Fs, &yaml).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 30, 3).await;

    let (code, out, err) = cli(&setup, &["backup", "full", "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let full: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(full["records"]["users"], json!(30));
    let id = full["id"].as_str().unwrap().to_string();
    let (code, out, _) = cli(&setup, &["backup", "incremental"]);
    assert_eq!(code, 0);
    assert!(out.contains("completed: incremental 0 record(s)"), "{out}");
    assert!(out.contains(&format!("parent: {id}")), "{out}");

    let (code, out, _) = cli(&setup, &["backup", "--list", "--output", "json"]);
    assert_eq!(code, 0);
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], json!(id));
    let (code, out, _) = cli(&setup, &["backup", "--list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains(&id), "{out}");
    let (code, out, _) = cli(&setup, &["backup", "--status", &id]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["status"],
        json!("completed")
    );
    let (code, _, err) = cli(&setup, &["backup", "--status", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("backup `nope` not found"), "{err}");
    let (code, out, _) = cli(&setup, &["backup", "--info"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["driver"],
        json!("filesystem")
    );

    // Prune keeps the newest (an incremental) and its full.
    let (code, out, _) = cli(&setup, &["backup", "prune", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("2 kept, 0 would delete"), "{out}");
    assert!(out.contains("needed by"), "{out}");

    wipe(rt.db.store()).await;
    let (code, out, err) = cli(&setup, &["restore", &id, "--resources", "users"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30 record(s) written"), "{out}");
    let fresh = setup.runtime(true).await;
    assert_eq!(snapshot(&fresh).await["users"].len(), 30);
    assert_eq!(snapshot(&fresh).await["orders"].len(), 0);

    // The key never reaches the output, even when it is wrong.
    let wrong = Setup {
        key: "not the key".into(),
        ..setup
    };
    let (code, out, err) = cli(&wrong, &["restore", &id]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong encryption key"), "{err}");
    assert!(!out.contains("not the key") && !err.contains("not the key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backups_default_to_a_folder_of_their_database_outside_its_prefix() {
    let setup = Setup::new(Db::S3, "backup: { driver: s3 }\n").await;
    let rt = setup.runtime(true).await;
    seed(&rt, 3, 0).await;
    let info = backup_of(&rt).backup("full", None).await.unwrap();
    let bucket = setup
        .connection
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let root = s3db_run::store::s3::S3Store::connect(s3::location(&bucket, "")).await;
    let keys: Vec<String> = list_all(&root, "backups/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert!(
        keys.contains(&format!("backups/db/{}.done", info.id)),
        "{keys:?}"
    );
    // Nothing of the backup is inside the database's prefix.
    let inside = list_all(rt.db.store().as_ref(), "").await.unwrap();
    assert!(inside.iter().all(|m| !m.key.contains(&info.id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_over_a_damaged_index_becomes_a_full_backup() {
    let setup = Setup::new(Db::Fs, &fs_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 5, 1).await;
    let b = backup_of(&rt);
    b.backup("full", None).await.unwrap();
    let index = walk(&setup.path("backups"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".index"))
        .unwrap();
    std::fs::write(&index, b"garbage").unwrap();
    let inc = b.backup("incremental", None).await.unwrap();
    assert_eq!((inc.kind.as_str(), inc.parent.as_deref()), ("full", None));
    assert_eq!(inc.records["users"], 5);
    // And the next incremental builds on it.
    let next = b.backup("incremental", None).await.unwrap();
    assert_eq!(next.parent.as_deref(), Some(inc.id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_waits_for_a_running_backup_then_cancels_it_after_the_grace_period() {
    let setup = Setup::new(Db::S3, &s3_backup_yaml("")).await;
    let rt = std::sync::Arc::new(setup.runtime(true).await);
    seed(&rt, 600, 0).await;
    let b = backup_of(&rt);
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = tokio::spawn({
        let (rt, stop) = (rt.clone(), stop.clone());
        async move { rt.run(stop, std::time::Duration::from_millis(200)).await }
    });
    let task = tokio::spawn({
        let b = b.clone();
        async move { b.backup("full", None).await }
    });
    while b.running().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.cancel();
    runner.await.unwrap();
    // The runner returned only once the backup had ended: cancelled, not completed.
    assert!(b.running().is_empty());
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, BackupError::Cancelled(_)), "{err}");
    let list = b.list_backups(None, None).await.unwrap();
    assert_eq!(list[0].status, "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_backup_releases_its_lock_and_its_running_entry() {
    let setup = Setup::new(Db::S3, &s3_backup_yaml("")).await;
    let rt = setup.runtime(true).await;
    seed(&rt, 600, 0).await;
    let b = backup_of(&rt);
    let task = tokio::spawn({
        let b = b.clone();
        async move { b.backup("full", None).await }
    });
    // Under way: its metadata is at the destination.
    while b.list_backups(None, None).await.unwrap().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A job cancelled by its overlap policy, or an API client gone: the future is dropped.
    task.abort();
    let _ = task.await;
    assert!(b.running().is_empty());
    let t = std::time::Instant::now();
    loop {
        match b.backup("full", None).await {
            Ok(_) => break,
            Err(BackupError::Locked { .. }) if t.elapsed() < std::time::Duration::from_secs(5) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the lock was not released: {e}"),
        }
    }
    let list = b.list_backups(None, None).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].status, "interrupted", "{:?}", list[1]);
}

#[test]
fn a_missing_key_file_is_a_coded_error_with_its_path_and_a_help_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        "version: 1\ndatabase: { connection: \"file://./data\" }\nbackup:\n  driver: filesystem\n  config: { path: ./backups/ }\n  encryption: { algorithm: AES-256-GCM, keyFile: ./nokey }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["backup", "full"])
        .current_dir(dir.path())
        .env_remove("S3DB_CONNECTION")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error[backup::key_file_unreadable]"),
        "{stderr}"
    );
    assert!(stderr.contains("key file nokey: no such file"), "{stderr}");
    assert!(!stderr.contains("./"), "an untidy path: {stderr}");
    assert!(stderr.contains("help: "), "{stderr}");
    assert!(!dir.path().join("backups").exists());
}
