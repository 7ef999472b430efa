//! The loader never panics, whatever it is given.

use proptest::prelude::*;
use s3db_run::manifest::{load_str, Format};

use crate::support::{fixture_env, repo};

fn load_both(text: &str) {
    for format in [Format::Yaml, Format::Toml] {
        let loaded = load_str("p", text.to_string(), format, &repo(), &fixture_env);
        // Rendering touches every span: it must not panic either.
        let _ = loaded.report.records();
        let _ = loaded.report.render_human(false);
    }
}

/// Values that look like manifest content: keys the model knows, scalars of every kind.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("version".to_string()),
        Just("database".to_string()),
        Just("connection".to_string()),
        Just("machines".to_string()),
        Just("states".to_string()),
        Just("initialState".to_string()),
        Just("on".to_string()),
        Just("jobs".to_string()),
        Just("schedule".to_string()),
        Just("action".to_string()),
        Just("backup".to_string()),
        Just("config".to_string()),
        Just("destinations".to_string()),
        "[a-zA-Z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "(\\$\\{[A-Z]{0,4}(:-|:\\?)?[a-z]{0,3}\\}?|[ -~]{0,12}|\\{\\{[a-z.]{0,8}\\}\\}|[0-9*/, ]{0,14})".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_both(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_documents_never_panic(doc in value()) {
        // JSON is YAML; the same tree also goes through TOML's serializer when it can.
        let json = serde_json::to_string(&doc).unwrap_or_default();
        load_str("p.yaml", json, Format::Yaml, &repo(), &fixture_env);
        if let Ok(toml) = toml::to_string(&doc) {
            load_str("p.toml", toml, Format::Toml, &repo(), &fixture_env);
        }
    }

    #[test]
    fn mutated_examples_never_panic(cut in 0usize..4000, len in 0usize..40, insert in "[ -~\\n:{}\\[\\]-]{0,8}") {
        let text = std::fs::read_to_string(repo().join("manifests/s3db.yaml")).unwrap_or_default();
        let start = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count().max(1)).unwrap_or(0);
        let end = text[start..].char_indices().map(|(i, _)| start + i).nth(len).unwrap_or(text.len());
        let mutated = format!("{}{}{}", &text[..start], insert, &text[end..]);
        load_both(&mutated);
    }
}
