//! The database core on every backend: validation, ids, CRUD, operators, compare-and-swap,
//! listings with filters, partitions, and concurrent writers.

use indexmap::IndexMap;
use s3db_run::db::query::Filter;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::{Database, DbError, ListOptions};
use s3db_run::store::ETag;
use serde_json::{json, Map, Value};

use crate::per_backend;
use crate::support::Backend;

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn resources() -> IndexMap<String, StoredResource> {
    let mut r = IndexMap::new();
    r.insert(
        "orders".to_string(),
        StoredResource {
            attributes: [
                ("customer", "string|required|maxlength:20"),
                ("quantity", "number|required|min:1"),
                ("status", "string|default:new"),
                ("paid", "boolean"),
                ("day", "string"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            partitions: [
                (
                    "byStatus".to_string(),
                    [("status".to_string(), "string".to_string())]
                        .into_iter()
                        .collect(),
                ),
                (
                    "byMonth".to_string(),
                    [("day".to_string(), "string|maxlength:7".to_string())]
                        .into_iter()
                        .collect(),
                ),
            ]
            .into_iter()
            .collect(),
            timestamps: true,
        },
    );
    r.insert(
        "counters".to_string(),
        StoredResource {
            attributes: [("n".to_string(), "number".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    );
    r
}

async fn db(b: &Backend) -> Database {
    Database::connect(b.store.clone(), &resources())
        .await
        .expect("connect")
}

per_backend!(
    insert_get_exists_and_duplicate_ids,
    generated_ids_are_22_url_safe_characters,
    invalid_attribute_values_are_rejected_with_the_field_name,
    update_applies_operators_and_compare_and_swap,
    thirty_two_concurrent_increments_all_apply,
    upsert_inserts_then_updates,
    delete_and_delete_many,
    list_filters_with_limit_offset_and_count,
    partition_listing_follows_updates_and_ignores_stale_references,
    concurrent_connects_keep_every_resource,
);

async fn insert_get_exists_and_duplicate_ids(b: Backend) {
    let db = db(&b).await;
    let orders = db.resource("orders").unwrap();
    let r = orders
        .insert(obj(json!({ "customer": "ann", "quantity": 2 })), Some("o1"))
        .await
        .unwrap();
    assert_eq!(r.data["status"], "new", "default applied");
    assert!(r.data["createdAt"].is_string() && r.data["updatedAt"] == r.data["createdAt"]);
    let got = orders.get("o1").await.unwrap().expect("stored");
    assert_eq!(got.data, r.data);
    assert_eq!(got.etag, r.etag, "every read returns the record's etag");
    assert!(orders.exists("o1").await.unwrap());
    assert!(!orders.exists("o2").await.unwrap());
    assert!(orders.get("o2").await.unwrap().is_none());
    let dup = orders
        .insert(obj(json!({ "customer": "bob", "quantity": 1 })), Some("o1"))
        .await
        .unwrap_err();
    assert!(matches!(dup, DbError::AlreadyExists { .. }), "{dup}");
    assert_eq!(
        orders.get("o1").await.unwrap().unwrap().data["customer"],
        "ann"
    );
    let odd = orders
        .insert(
            obj(json!({ "customer": "cy", "quantity": 1 })),
            Some("a/b c?"),
        )
        .await
        .unwrap();
    assert_eq!(orders.get("a/b c?").await.unwrap().unwrap().data, odd.data);
    assert!(matches!(
        db.resource("nope"),
        Err(DbError::UnknownResource(_))
    ));
}

async fn generated_ids_are_22_url_safe_characters(b: Backend) {
    let db = db(&b).await;
    let counters = db.resource("counters").unwrap();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = counters.insert(obj(json!({ "n": 0 })), None).await.unwrap();
        assert_eq!(r.id.len(), 22);
        assert!(
            r.id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{}",
            r.id
        );
        ids.insert(r.id);
    }
    assert_eq!(ids.len(), 20);
}

async fn invalid_attribute_values_are_rejected_with_the_field_name(b: Backend) {
    let db = db(&b).await;
    let orders = db.resource("orders").unwrap();
    let cases = [
        (json!({ "quantity": 1 }), "customer", "required"),
        (
            json!({ "customer": "ann", "quantity": "two" }),
            "quantity",
            "number",
        ),
        (
            json!({ "customer": "ann", "quantity": 0 }),
            "quantity",
            "at least 1",
        ),
        (
            json!({ "customer": "a".repeat(21), "quantity": 1 }),
            "customer",
            "at most 20",
        ),
        (
            json!({ "customer": "ann", "quantity": 1, "paid": "yes" }),
            "paid",
            "boolean",
        ),
    ];
    for (data, field, says) in cases {
        match orders.insert(obj(data.clone()), None).await {
            Err(DbError::Validation {
                field: f, message, ..
            }) => {
                assert_eq!(f, field, "{data}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{data}: {other:?}"),
        }
    }
    assert_eq!(
        orders.count(None).await.unwrap(),
        0,
        "nothing invalid was written"
    );
    orders
        .insert(obj(json!({ "customer": "ann", "quantity": 1 })), Some("ok"))
        .await
        .unwrap();
    let bad = orders
        .update("ok", &obj(json!({ "quantity": { "$decrement": 1 } })), None)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, DbError::Validation { ref field, .. } if field == "quantity"),
        "{bad}"
    );
    assert_eq!(orders.get("ok").await.unwrap().unwrap().data["quantity"], 1);
}

async fn update_applies_operators_and_compare_and_swap(b: Backend) {
    let db = db(&b).await;
    let orders = db.resource("orders").unwrap();
    let r1 = orders
        .insert(obj(json!({ "customer": "ann", "quantity": 5 })), Some("o"))
        .await
        .unwrap();
    let r2 = orders
        .update(
            "o",
            &obj(json!({ "quantity": { "$increment": 2 }, "paid": true })),
            Some(&r1.etag),
        )
        .await
        .unwrap();
    assert_eq!(r2.data["quantity"], 7);
    assert_eq!(r2.data["paid"], true);
    assert_eq!(
        r2.data["customer"], "ann",
        "a partial update keeps other fields"
    );
    assert_ne!(r2.etag, r1.etag);
    let stale = orders
        .update("o", &obj(json!({ "quantity": 1 })), Some(&r1.etag))
        .await
        .unwrap_err();
    assert!(matches!(stale, DbError::Conflict { .. }), "{stale}");
    assert_eq!(orders.get("o").await.unwrap().unwrap().data["quantity"], 7);
    let missing = orders
        .update("none", &obj(json!({ "quantity": 1 })), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, DbError::NotFound { .. }));
    let bogus = ETag("\"bogus\"".into());
    assert!(matches!(
        orders.delete("o", Some(&bogus)).await,
        Err(DbError::Conflict { .. })
    ));
}

async fn thirty_two_concurrent_increments_all_apply(b: Backend) {
    let db = db(&b).await;
    let counters = db.resource("counters").unwrap();
    counters
        .insert(obj(json!({ "n": 0 })), Some("c"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = counters.clone();
            tokio::spawn(async move {
                c.update("c", &obj(json!({ "n": { "$increment": 1 } })), None)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("increment");
    }
    assert_eq!(counters.get("c").await.unwrap().unwrap().data["n"], 32);
}

async fn upsert_inserts_then_updates(b: Backend) {
    let db = db(&b).await;
    let orders = db.resource("orders").unwrap();
    let a = orders
        .upsert("u", obj(json!({ "customer": "ann", "quantity": 1 })))
        .await
        .unwrap();
    let b2 = orders
        .upsert("u", obj(json!({ "quantity": 3 })))
        .await
        .unwrap();
    assert_eq!(b2.data["customer"], "ann");
    assert_eq!(b2.data["quantity"], 3);
    assert_eq!(b2.data["createdAt"], a.data["createdAt"]);
    assert_eq!(orders.count(None).await.unwrap(), 1);
}

async fn delete_and_delete_many(b: Backend) {
    let db = db(&b).await;
    let counters = db.resource("counters").unwrap();
    for i in 0..5 {
        counters
            .insert(obj(json!({ "n": i })), Some(&format!("c{i}")))
            .await
            .unwrap();
    }
    assert!(counters.delete("c0", None).await.unwrap());
    assert!(!counters.delete("c0", None).await.unwrap(), "already gone");
    let ids: Vec<String> = ["c1", "c2", "missing"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(counters.delete_many(&ids).await.unwrap(), 2);
    assert_eq!(counters.ids().await.unwrap(), ["c3", "c4"]);
}

async fn list_filters_with_limit_offset_and_count(b: Backend) {
    let db = db(&b).await;
    let counters = db.resource("counters").unwrap();
    for i in 0..30 {
        counters
            .insert(
                obj(json!({ "n": i, "tag": if i % 3 == 0 { "fizz" } else { "plain" } })),
                Some(&format!("c{i:02}")),
            )
            .await
            .unwrap();
    }
    let ids = |rs: Vec<s3db_run::db::Record>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = counters.list(ListOptions::default()).await.unwrap();
    assert_eq!(all.len(), 30);
    let page = counters
        .list(ListOptions {
            limit: Some(5),
            offset: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(page), ["c10", "c11", "c12", "c13", "c14"]);
    let f = |v: Value| Some(Filter::parse(&v).unwrap());
    let big_fizz = counters
        .list(ListOptions {
            filter: f(json!({ "n": { "$gte": 20 }, "tag": "fizz" })),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(big_fizz), ["c21", "c24", "c27"]);
    let limited = counters
        .list(ListOptions {
            filter: f(json!({ "tag": { "$in": ["fizz"] } })),
            limit: Some(2),
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(limited), ["c03", "c06"]);
    assert_eq!(counters.count(None).await.unwrap(), 30);
    assert_eq!(
        counters.count(f(json!({ "tag": "fizz" }))).await.unwrap(),
        10
    );
    assert_eq!(
        counters
            .count(f(
                json!({ "n": { "$lt": 5 }, "missing": { "$exists": false } })
            ))
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        counters
            .count(f(json!({ "n": { "$ne": 0 } })))
            .await
            .unwrap(),
        29
    );
    assert_eq!(
        counters
            .delete_where(Filter::parse(&json!({ "tag": "fizz" })).unwrap())
            .await
            .unwrap(),
        10
    );
    assert_eq!(counters.count(None).await.unwrap(), 20);
}

async fn partition_listing_follows_updates_and_ignores_stale_references(b: Backend) {
    let db = db(&b).await;
    let orders = db.resource("orders").unwrap();
    for (id, status, day) in [
        ("a", "new", "2026-01-05"),
        ("b", "paid", "2026-01-20"),
        ("c", "new", "2026-02-01"),
    ] {
        orders
            .insert(
                obj(json!({ "customer": "x", "quantity": 1, "status": status, "day": day })),
                Some(id),
            )
            .await
            .unwrap();
    }
    let in_partition = |name: &str, field: &str, value: &str| {
        let orders = orders.clone();
        let opts = ListOptions {
            partition: Some((
                name.to_string(),
                vec![(field.to_string(), value.to_string())],
            )),
            ..Default::default()
        };
        async move {
            orders
                .list(opts)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(in_partition("byStatus", "status", "new").await, ["a", "c"]);
    assert_eq!(in_partition("byMonth", "day", "2026-01").await, ["a", "b"]);
    assert_eq!(
        in_partition("byMonth", "day", "2026-01-31").await,
        ["a", "b"],
        "values are cut like the keys"
    );
    orders
        .update("a", &obj(json!({ "status": "paid" })), None)
        .await
        .unwrap();
    assert_eq!(in_partition("byStatus", "status", "new").await, ["c"]);
    assert_eq!(in_partition("byStatus", "status", "paid").await, ["a", "b"]);
    // A reference left behind by a crashed writer points at a record that is not in the
    // partition: the listing checks and drops it.
    let stale = s3db_run::db::codec::partition_key(
        "orders",
        "byStatus",
        &[("status", "new".to_string())],
        "b",
    );
    b.store
        .put(
            &stale,
            bytes::Bytes::new(),
            s3db_run::store::PutMode::Overwrite,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(in_partition("byStatus", "status", "new").await, ["c"]);
    orders.delete("c", None).await.unwrap();
    assert!(in_partition("byStatus", "status", "new").await.is_empty());
    let bad = orders
        .list(ListOptions {
            partition: Some(("byColour".into(), vec![])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("no partition `byColour`"), "{bad}");
}

async fn concurrent_connects_keep_every_resource(b: Backend) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = b.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut declared = IndexMap::new();
            declared.insert(format!("res{i}"), StoredResource::default());
            Database::connect(store, &declared).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("connect");
    }
    let db = Database::connect(b.store.clone(), &IndexMap::new())
        .await
        .unwrap();
    let names = db.resource_names();
    for i in 0..8 {
        assert!(names.contains(&format!("res{i}")), "{names:?}");
    }
}
