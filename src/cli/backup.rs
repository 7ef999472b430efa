//! `s3db-run backup …`: the backup plugin from the command line, with the manifest's `backup:`
//! section.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::exit;
use crate::plugins::backup::{Backup, BackupInfo};

pub use super::Output;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  s3db-run backup full\n  s3db-run backup incremental\n  s3db-run backup weekly-snapshot --resources users,orders\n  s3db-run backup list --output json\n  s3db-run backup status full-2024-03-15T14-30-45-abc123\n  s3db-run backup delete full-2024-03-15T14-30-45-abc123\n  s3db-run backup info\n  s3db-run backup prune --dry-run\n  s3db-run backup check --read-data\n\nThe words list, status, delete, info, prune, check and verify are commands (as are the flags\n--list, --status, --delete and --info), as are stats and diff; restore is `s3db-run restore`.\nNone is ever a label."
)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    /// `full`, `incremental`, any other label (a full backup with that name), or a command:
    /// `list`, `status ID`, `delete ID`, `info`, `prune`, `check [ID…]`, `verify [ID…]`,
    /// `stats [ID…]`, `diff OLDER NEWER`.
    #[arg(value_name = "TYPE")]
    pub kind: Option<String>,
    /// The backup id of `status` and `delete`; the backups `check` looks at (all when none).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// With `check`: also decrypt and parse every archive (what `verify` does).
    #[arg(long)]
    pub read_data: bool,
    /// Only these resources (comma-separated): a selective backup.
    #[arg(long, value_delimiter = ',')]
    pub resources: Option<Vec<String>>,
    /// List the backups at the destinations, newest first.
    #[arg(long, conflicts_with_all = ["status", "delete", "kind"])]
    pub list: bool,
    /// With --list: at most this many.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --list: only ids starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Show one backup's status.
    #[arg(long, value_name = "ID", conflicts_with_all = ["delete", "kind"])]
    pub status: Option<String>,
    /// Delete one backup from every destination.
    #[arg(long, value_name = "ID", conflicts_with = "kind")]
    pub delete: Option<String>,
    /// Show the destinations (getStorageInfo).
    #[arg(long, conflicts_with = "kind")]
    pub info: bool,
    /// With `prune`: show what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `human`, or `json` for scripts.
    #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
    pub output: Output,
}

pub(super) async fn plugin(target: &super::DatabaseArgs) -> Result<Backup, u8> {
    let (_, rt) = target.runtime().await?;
    rt.backup().ok_or_else(|| {
        eprintln!(
            "error: {} has no `backup:` section",
            target.manifest.display()
        );
        exit::INVALID
    })
}

/// Progress on a terminal, nothing otherwise (logs and CI stay clean): each phase with its
/// count and rate, and with a bar and ETA when its total is known (a restore's records).
pub(super) fn progress(backup: &Backup) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let b = bar.clone();
    let phase = std::sync::Mutex::new("");
    backup.on_progress(Arc::new(move |p| {
        let mut last = phase.lock().unwrap_or_else(|e| e.into_inner());
        if *last != p.phase {
            *last = p.phase;
            // A new phase: its own rate and ETA, from zero.
            b.reset();
            let template = match p.total {
                Some(_) => "{msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, ETA {eta})",
                None => "{spinner} {msg}: {human_pos} ({per_sec})",
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(p.phase);
        }
        if let Some(total) = p.total {
            b.set_length(total.max(p.done));
        }
        b.set_position(p.done);
    }));
    Some(bar)
}

fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_info(b: &BackupInfo) {
    let records: u64 = b.records.values().sum();
    println!(
        "{:<48} {:<11} {:<10} {:>10} {:>9}  {}",
        b.id,
        b.status,
        b.kind,
        human_size(b.size),
        records,
        b.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
}

/// The command words after `backup` turned into their flags, so `backup list` lists and never
/// makes a backup labelled `list`; a reserved word without its command is a usage error.
fn normalize(args: &BackupArgs) -> Result<BackupArgs, String> {
    let mut args = args.clone();
    let Some(word) = args.kind.clone() else {
        return Ok(args);
    };
    let ids = std::mem::take(&mut args.ids);
    let needs_id = |what: &str| {
        match &ids[..] {
        [id] => Ok(id.clone()),
        [] => Err(format!("`backup {what}` needs a backup id: `s3db-run backup {what} ID` (ids: `s3db-run backup list`)")),
        _ => Err(format!("`backup {what}` takes one backup id")),
    }
    };
    match word.as_str() {
        "list" => {
            args.list = true;
            args.kind = None;
        }
        "info" => {
            args.info = true;
            args.kind = None;
        }
        "status" => {
            args.status = Some(needs_id("status")?);
            args.kind = None;
        }
        "delete" => {
            args.delete = Some(needs_id("delete")?);
            args.kind = None;
        }
        "restore" => return Err(
            "restoring is its own command: `s3db-run restore ID` (see `s3db-run restore --help`)"
                .into(),
        ),
        "check" | "verify" => {
            args.ids = ids;
            args.read_data |= word == "verify";
            return Ok(args);
        }
        "diff" => {
            if ids.len() != 2 {
                return Err(
                    "`backup diff` takes two backup ids: `s3db-run backup diff OLDER NEWER`".into(),
                );
            }
            args.ids = ids;
            return Ok(args);
        }
        "stats" => {
            args.ids = ids;
            return Ok(args);
        }
        _ => {}
    }
    if let (Some(extra), Some(_)) = (ids.first(), &args.kind) {
        if args.status.is_none() && args.delete.is_none() {
            return Err(format!(
                "unexpected `{extra}`: only `status`, `delete` and `check` take backup ids"
            ));
        }
    }
    Ok(args)
}

pub fn run_backup(args: &BackupArgs) -> u8 {
    let args = match normalize(args) {
        Ok(a) => a,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::USAGE;
        }
    };
    let args = &args;
    super::block_on(async {
        let backup = match plugin(&args.target).await {
            Ok(b) => b,
            Err(code) => return code,
        };
        let json_out = args.output == Output::Json;
        let fail = |e: &dyn std::fmt::Display| {
            eprintln!("error: {e}");
            exit::INVALID
        };
        if args.info {
            println!(
                "{}",
                serde_json::to_string_pretty(&backup.storage_info().await).unwrap_or_default()
            );
            return exit::OK;
        }
        if args.list {
            return match backup
                .list_backups(args.limit, args.prefix.as_deref())
                .await
            {
                Ok(list) if json_out => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&list).unwrap_or_default()
                    );
                    exit::OK
                }
                Ok(list) => {
                    println!(
                        "{:<48} {:<11} {:<10} {:>10} {:>9}  STARTED",
                        "ID", "STATUS", "KIND", "SIZE", "RECORDS"
                    );
                    list.iter().for_each(print_info);
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        if let Some(id) = &args.status {
            return match backup.status(id).await {
                Ok(info) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&info).unwrap_or_default()
                    );
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        if let Some(id) = &args.delete {
            return match backup.delete(id).await {
                Ok(()) => {
                    println!("deleted {id}");
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        let Some(kind) = &args.kind else {
            eprintln!("error: say what to do: `backup full`, `backup incremental`, `backup list`, `backup status ID` or `backup prune`");
            return exit::USAGE;
        };
        if kind == "stats" {
            return match backup.list_backups(None, None).await {
                Ok(list) => {
                    let chosen: Vec<_> = list
                        .into_iter()
                        .filter(|b| args.ids.is_empty() || args.ids.contains(&b.id))
                        .collect();
                    if let Some(missing) = args
                        .ids
                        .iter()
                        .find(|id| !chosen.iter().any(|b| &b.id == *id))
                    {
                        return fail(&format!("backup `{missing}` not found"));
                    }
                    let bytes: u64 = chosen.iter().map(|b| b.size).sum();
                    let records: u64 = chosen.iter().flat_map(|b| b.records.values()).sum();
                    if json_out {
                        let backups: Vec<_> = chosen
                            .iter()
                            .map(|b| {
                                json!({
                                    "id": b.id, "kind": b.kind, "status": b.status, "size": b.size,
                                    "records": b.records, "tombstones": b.tombstones,
                                    "parent": b.parent, "compression": b.compression,
                                    "encrypted": b.encrypted, "durationMs": b.duration_ms,
                                })
                            })
                            .collect();
                        let out = json!({
                            "backups": backups,
                            "total": { "backups": chosen.len(), "bytes": bytes, "records": records },
                        });
                        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    } else {
                        for b in &chosen {
                            print_info(b);
                            for (name, n) in &b.records {
                                let gone = b.tombstones.get(name).copied().unwrap_or(0);
                                println!("    {name}: {n} record(s), {gone} deleted");
                            }
                        }
                        println!(
                            "{} backup(s), {}, {records} record(s)",
                            chosen.len(),
                            human_size(bytes)
                        );
                    }
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        if kind == "diff" {
            let (from, to) = (&args.ids[0], &args.ids[1]);
            return match backup.diff(from, to).await {
                Ok(diff) if json_out => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&diff).unwrap_or_default()
                    );
                    exit::OK
                }
                Ok(diff) => {
                    println!("from {from} to {to}:");
                    if diff.resources.is_empty() {
                        println!("  no record differs");
                    }
                    for (name, d) in &diff.resources {
                        println!(
                            "  {name}: {} added, {} changed, {} deleted",
                            d.added.len(),
                            d.changed.len(),
                            d.deleted.len()
                        );
                        for (sign, ids) in [("+", &d.added), ("~", &d.changed), ("-", &d.deleted)] {
                            for id in ids {
                                println!("    {sign} {id}");
                            }
                        }
                    }
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        if kind == "check" || kind == "verify" {
            return match backup.check(&args.ids, args.read_data).await {
                Ok(reports) => {
                    let bad = reports.iter().filter(|r| !r.problems.is_empty()).count();
                    if json_out {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&reports).unwrap_or_default()
                        );
                    } else {
                        for r in &reports {
                            if r.problems.is_empty() {
                                println!("ok       {:<48} {}", r.id, r.destination);
                            } else {
                                println!(
                                    "DAMAGED  {:<48} {}: {}",
                                    r.id,
                                    r.destination,
                                    r.problems.join("; ")
                                );
                            }
                        }
                        let what = if args.read_data {
                            "metadata, markers, index and archive hashes, and every archive read back"
                        } else {
                            "metadata, markers, index and archive hashes"
                        };
                        println!(
                            "{} checked ({what}): {} sound, {bad} with problems",
                            reports.len(),
                            reports.len() - bad
                        );
                    }
                    if bad == 0 {
                        exit::OK
                    } else {
                        exit::INVALID
                    }
                }
                Err(e) => fail(&e),
            };
        }
        if args.read_data {
            eprintln!("error: --read-data goes with `backup check`");
            return exit::USAGE;
        }
        if kind == "prune" {
            return match backup.prune(args.dry_run).await {
                Ok(decisions) if json_out => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({ "dryRun": args.dry_run, "decisions": decisions })
                        )
                        .unwrap_or_default()
                    );
                    exit::OK
                }
                Ok(decisions) => {
                    let verb = if args.dry_run {
                        "would delete"
                    } else {
                        "deleted"
                    };
                    for d in &decisions {
                        let what = if d.keep { "keep" } else { verb };
                        println!("{:<12} {:<48} {}", what, d.id, d.reasons.join(", "));
                    }
                    let gone = decisions.iter().filter(|d| !d.keep).count();
                    println!("{} kept, {gone} {verb}", decisions.len() - gone);
                    exit::OK
                }
                Err(e) => fail(&e),
            };
        }
        if args.dry_run {
            eprintln!("error: --dry-run goes with `backup prune`");
            return exit::USAGE;
        }
        let bar = progress(&backup);
        let result = backup.backup(kind, args.resources.clone()).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        match result {
            Ok(info) if json_out => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
                exit::OK
            }
            Ok(info) => {
                let records: u64 = info.records.values().sum();
                println!(
                    "backup {} completed: {} {} record(s) of {} resource(s), {}, in {:.1} s",
                    info.id,
                    info.kind,
                    records,
                    info.resources.len(),
                    human_size(info.size),
                    info.duration_ms.unwrap_or(0) as f64 / 1000.0
                );
                if let Some(parent) = &info.parent {
                    println!("parent: {parent}");
                }
                println!("stored at: {}", info.destinations.join(", "));
                exit::OK
            }
            Err(e) => fail(&e),
        }
    })
}
