//! The layers hold: data flows one way (manifest → runtime → plugins → db → store), and
//! everything may use `types`. The lower layers name nothing above them; this test reads their
//! sources, so a new import across the line fails here rather than in review.

use std::path::Path;

use crate::support::repo;

/// Each layer, and the top-level modules of the crate its files may name.
const LAYERS: &[(&str, &[&str])] = &[
    ("src/types", &["types"]),
    ("src/store", &["types", "store"]),
    ("src/db", &["types", "store", "db"]),
];

const MODULES: &[&str] = &[
    "api", "cli", "db", "hooks", "manifest", "plugins", "runtime", "store", "types",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn store_db_and_types_name_nothing_above_them() {
    let mut crossings = Vec::new();
    for (layer, allowed) in LAYERS {
        let mut files = Vec::new();
        rust_files(&repo().join(layer), &mut files);
        assert!(!files.is_empty(), "{layer} has no sources");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for module in MODULES.iter().filter(|m| !allowed.contains(m)) {
                    if code.contains(&format!("crate::{module}"))
                        || code.contains(&format!("s3db_run::{module}"))
                    {
                        crossings.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
                // `super::super::` from a layer's own submodule reaches the crate root.
                if code.contains("super::super::") {
                    crossings.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "lower layers import from above:\n{}",
        crossings.join("\n")
    );
}

/// Files stay small enough to read whole: a file past this has more than one concern.
const MOST_LINES: usize = 900;

#[test]
fn no_source_file_is_over_900_lines() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MOST_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these along their seams:\n{}",
        long.join("\n")
    );
}
