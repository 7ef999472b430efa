//! Mutated manifests, from a fixed seed and a bounded count: what `validate` does (load, the JSON
//! records, the human rendering) never panics on the damage files really meet: lines deleted,
//! duplicated and swapped, characters flipped, huge values, deep nesting, a BOM, CRLF line ends,
//! NUL bytes, lines past 65,535 columns. The slowest case is printed: a figure for the notes,
//! not a threshold (the machines are shared).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use s3db_run::manifest::{load_str, Format};

use crate::support::{fixture_env, repo};

const SEED: u64 = 0x5eed_0014;
const CASES: usize = 1500;

/// Every manifest the repository ships, valid and invalid: the starting points.
fn seeds() -> Vec<(String, Format, String)> {
    let mut out = Vec::new();
    for dir in ["manifests", "examples", "tests/fixtures/invalid"] {
        collect(&repo().join(dir), &mut out);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn collect(dir: &Path, out: &mut Vec<(String, Format, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
            continue;
        }
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            Some("toml") => Format::Toml,
            _ => continue,
        };
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push((path.display().to_string(), format, text));
        }
    }
}

const FLIPS: &[char] = &[
    ':', '{', '}', '[', ']', '-', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '\t',
    ' ', '\n', '$', '=', ',', 'é', '😀', '\u{0}', '\u{feff}',
];

/// One mutation of `text`, and its name.
fn mutate(rng: &mut StdRng, text: &str) -> (String, &'static str) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let pick = |rng: &mut StdRng, n: usize| rng.random_range(0..n.max(1));
    let joined = |lines: &[String]| lines.join("\n") + "\n";
    match rng.random_range(0..11) {
        0 => {
            let at = pick(rng, lines.len());
            lines.remove(at);
            (joined(&lines), "line deleted")
        }
        1 => {
            let at = pick(rng, lines.len());
            let line = lines[at].clone();
            lines.insert(at, line);
            (joined(&lines), "line duplicated")
        }
        2 => {
            let (a, b) = (pick(rng, lines.len()), pick(rng, lines.len()));
            lines.swap(a, b);
            (joined(&lines), "lines swapped")
        }
        3 => {
            let chars: Vec<char> = text.chars().collect();
            let mut chars = if chars.is_empty() { vec![' '] } else { chars };
            for _ in 0..rng.random_range(1..4) {
                let at = pick(rng, chars.len());
                chars[at] = FLIPS[pick(rng, FLIPS.len())];
            }
            (chars.into_iter().collect(), "characters flipped")
        }
        4 => {
            let size = [70_000, 100_000, 300_000, 1_000_000][pick(rng, 4)];
            let at = pick(rng, lines.len());
            let line = &lines[at];
            let huge = "x".repeat(size);
            lines[at] = match line.find(": ") {
                Some(colon) => format!("{}: {huge}", &line[..colon]),
                None => format!("{line}{huge}"),
            };
            (joined(&lines), "huge value")
        }
        5 => {
            let depth = rng.random_range(20..400);
            let nested = if rng.random_bool(0.5) {
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth))
            };
            let at = pick(rng, lines.len());
            let line = &lines[at];
            lines[at] = match line.find(": ") {
                Some(colon) => format!("{}: {nested}", &line[..colon]),
                None => format!("deep: {nested}"),
            };
            (joined(&lines), "deep nesting")
        }
        6 => (format!("\u{feff}{text}"), "BOM"),
        7 => (text.replace('\n', "\r\n"), "CRLF"),
        8 => {
            let mut s = text.to_string();
            let at = (0..=s.len())
                .filter(|i| s.is_char_boundary(*i))
                .nth(pick(rng, s.chars().count() + 1))
                .unwrap_or(0);
            s.insert(at, '\0');
            (s, "NUL")
        }
        9 => {
            // Past 65,535 columns with the meaning kept where the line is a flow mapping, then
            // something broken further along the same line.
            let at = pick(rng, lines.len());
            let line = lines[at].replacen(", ", &format!(",{} ", " ".repeat(70_000)), 1);
            lines[at] = format!("{line}, bogus: [");
            (joined(&lines), "wide line")
        }
        _ => {
            let at = pick(rng, lines.len());
            let line = lines[at].clone();
            lines[at] = format!("{line} São Paulo: {{ ${{UNSET_VAR}}: 3x }}");
            (joined(&lines), "unicode and interpolation")
        }
    }
}

struct Outcome {
    panics: Vec<String>,
    slowest: (Duration, String),
}

fn run_case(name: &str, format: Format, text: String, outcome: &mut Outcome) {
    let size = text.len();
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let loaded = load_str(name, text, format, &repo(), &fixture_env);
        let _ = loaded.report.records();
        let _ = loaded.report.render_human(false);
    }));
    let took = started.elapsed();
    if let Err(panic) = result {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        outcome.panics.push(format!("{name}: {message}"));
    }
    if took > outcome.slowest.0 {
        outcome.slowest = (took, format!("{name} ({size} bytes)"));
    }
}

#[test]
fn mutated_manifests_never_panic() {
    let seeds = seeds();
    assert!(
        seeds.len() > 20,
        "found only {} seed manifests",
        seeds.len()
    );
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut outcome = Outcome {
        panics: Vec::new(),
        slowest: (Duration::ZERO, String::new()),
    };
    for case in 0..CASES {
        let (file, format, text) = &seeds[case % seeds.len()];
        let mut text = text.clone();
        let mut names = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let (mutated, name) = mutate(&mut rng, &text);
            text = mutated;
            names.push(name);
        }
        let name = format!("case {case}: {file} with {}", names.join(", "));
        run_case(&name, *format, text, &mut outcome);
    }
    println!(
        "fuzz: {CASES} cases, {} panics, slowest {:?}: {}",
        outcome.panics.len(),
        outcome.slowest.0,
        outcome.slowest.1
    );
    assert!(
        outcome.panics.is_empty(),
        "{} of {CASES} mutated manifests panicked, e.g.:\n{}",
        outcome.panics.len(),
        outcome.panics[..outcome.panics.len().min(5)].join("\n")
    );
}

#[test]
fn a_diagnostic_past_column_65535_renders() {
    let wide = "a".repeat(70_000);
    let text = format!(
        "{{\"version\": 1, \"database\": {{\"connection\": \"file://./d\"}}, \"x\": \"{wide}\", \"bogus\": 1}}\n"
    );
    let loaded = load_str("wide.yaml", text, Format::Yaml, &repo(), &fixture_env);
    let records = loaded.report.records();
    let bogus = records
        .iter()
        .find(|r| r.message.contains("bogus"))
        .expect("the unknown key is reported");
    assert!(bogus.column > 70_000, "{bogus:?}");
    let human = loaded.report.render_human(false);
    assert!(
        human.contains(&format!("wide.yaml:1:{}", bogus.column)),
        "{}",
        &human[..human.len().min(2000)]
    );
    assert!(
        human.len() < 10_000,
        "the excerpt is a window, not the whole line"
    );
}
