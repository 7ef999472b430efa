//! `s3db-run db …`: read and write records of the manifest's database from the shell.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value};

use super::exit;
use crate::db::query::Filter;
use crate::db::{Database, DbError, ListOptions};
use crate::plugins::cache::Cache;
use crate::store::Connection;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    /// How many records are read or written at once.
    #[arg(long, global = true, default_value_t = crate::db::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Read around the manifest's cache (writes still invalidate it).
    #[arg(long = "no-cache", global = true)]
    pub no_cache: bool,
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DbCommand {
    /// List the resources (`--output json`: a JSON array of their names).
    Resources {
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
        output: super::Output,
    },
    /// Print one record as JSON.
    Get { resource: String, id: String },
    /// Insert a record given as a JSON object (`-` reads it from standard input).
    Put {
        resource: String,
        json: String,
        /// Update the record if its id exists, instead of failing.
        #[arg(long)]
        upsert: bool,
    },
    /// Delete a record.
    Delete { resource: String, id: String },
    /// Print records as JSON lines, in id order.
    List {
        resource: String,
        /// A filter such as '{"status":"paid","total":{"$gte":100}}'.
        #[arg(long = "where", value_name = "JSON")]
        filter: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// List a partition: NAME, with `--value FIELD=VALUE` for its fields.
        #[arg(long)]
        partition: Option<String>,
        #[arg(long = "value", value_name = "FIELD=VALUE", requires = "partition")]
        values: Vec<String>,
    },
    /// Print how many records there are (matching `--where`).
    Count {
        resource: String,
        #[arg(long = "where", value_name = "JSON")]
        filter: Option<String>,
    },
    /// Insert records from a JSON-lines file (`-` reads standard input).
    Import {
        resource: String,
        file: PathBuf,
        /// Update records whose id exists, instead of failing.
        #[arg(long)]
        upsert: bool,
    },
    /// Print every record as JSON lines.
    Export { resource: String },
}

pub fn run(args: &Args) -> u8 {
    super::block_on(run_async(args))
}

/// Opens the database a `db`-style command names: the manifest's, or `--connection`'s.
pub async fn open_database(
    manifest_path: &Path,
    connection: Option<&str>,
    concurrency: usize,
    use_cache: bool,
) -> Result<Database, u8> {
    open_database_and_cache(manifest_path, connection, concurrency, use_cache)
        .await
        .map(|(db, _)| db)
}

/// `open_database`, and the manifest's cache when it has one (for the `cache` commands).
pub async fn open_database_and_cache(
    manifest_path: &Path,
    connection: Option<&str>,
    concurrency: usize,
    use_cache: bool,
) -> Result<(Database, Option<Arc<Cache>>), u8> {
    let manifest_present = manifest_path.exists();
    let db = if !manifest_present && connection.is_some() {
        let conn: Connection = match connection.unwrap_or_default().parse() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(exit::USAGE);
            }
        };
        let store = conn.open(Path::new(".")).await.map_err(|e| {
            eprintln!("error: {e}");
            exit::INVALID
        })?;
        // Without a manifest, an s3db.js database's passphrase comes from the environment.
        let options = crate::db::ConnectOptions {
            passphrase: std::env::var("S3DB_PASSPHRASE").ok(),
            create_s3dbjs: false,
        };
        Database::connect_with(store, &Default::default(), &options)
            .await
            .map(|db| (db, None))
    } else {
        let checked = super::load_checked(manifest_path)?;
        let db = crate::runtime::open_database(&checked, connection).await;
        match (db, &checked.manifest.cache) {
            (Ok(db), Some(config)) => {
                let ctx = crate::plugins::BuildContext::for_manifest(
                    &checked.manifest,
                    db.clone(),
                    &checked.base_dir,
                );
                match <crate::plugins::cache::Cache as crate::plugins::Component>::build(
                    config, &ctx,
                )
                .await
                {
                    Ok(cache) => {
                        // Read around, the cache still hears about writes, so other processes
                        // sharing it do not read stale entries.
                        let cache = Arc::new(if use_cache { cache } else { cache.write_only() });
                        Ok((db.with_cache(cache.clone()), Some(cache)))
                    }
                    Err(e) => {
                        eprintln!("error: cache: {e}");
                        return Err(exit::INVALID);
                    }
                }
            }
            (db, _) => db.map(|db| (db, None)),
        }
    };
    db.map(|(db, cache)| (db.with_concurrency(concurrency), cache))
        .map_err(|e| {
            let e = crate::runtime::BuildError::Database(e);
            if e.manifest_path().is_some() {
                super::report_build(manifest_path, &e);
            } else if let crate::runtime::BuildError::Database(e) = e {
                eprintln!("error: {e}");
            }
            exit::INVALID
        })
}

fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("{what} must be a JSON object, got {other}")),
        Err(e) => Err(format!("{what} is not JSON: {e}")),
    }
}

fn parse_filter(text: Option<&str>) -> Result<Option<Filter>, String> {
    text.map(|t| {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("--where is not JSON: {e}"))?;
        Filter::parse(&v).map_err(|e| e.to_string())
    })
    .transpose()
}

async fn run_async(args: &Args) -> u8 {
    let db = match open_database(
        &args.target.manifest,
        args.target.connection.as_deref(),
        args.concurrency,
        !args.no_cache,
    )
    .await
    {
        Ok(db) => db,
        Err(code) => return code,
    };
    match execute(&db, &args.command).await {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            exit::USAGE
        }
        Err(Failure::Db(e)) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}

enum Failure {
    Usage(String),
    Db(DbError),
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Failure::Db(e)
    }
}

fn print_line(value: &Value) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{value}");
}

async fn execute(db: &Database, command: &DbCommand) -> Result<u8, Failure> {
    match command {
        DbCommand::Resources { output } => {
            let names = db.resource_names();
            if *output == super::Output::Json {
                println!("{}", serde_json::json!(names));
            } else {
                for name in names {
                    println!("{name}");
                }
            }
        }
        DbCommand::Get { resource, id } => match db.resource(resource)?.get_cached(id).await? {
            Some(record) => print_line(&record.to_json()),
            None => {
                eprintln!("error: {resource}/{id} not found");
                return Ok(exit::INVALID);
            }
        },
        DbCommand::Put {
            resource,
            json,
            upsert,
        } => {
            let text = if json == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| Failure::Usage(e.to_string()))?;
                s
            } else {
                json.clone()
            };
            let data = parse_object(&text, "the record").map_err(Failure::Usage)?;
            let res = db.resource(resource)?;
            let record = if *upsert {
                let id = match data.get("id") {
                    Some(Value::String(id)) => id.clone(),
                    _ => return Err(Failure::Usage("--upsert needs the record's \"id\"".into())),
                };
                res.upsert(&id, data).await?
            } else {
                res.insert(data, None).await?
            };
            print_line(&record.to_json());
        }
        DbCommand::Delete { resource, id } => {
            if !db.resource(resource)?.delete(id, None).await? {
                eprintln!("error: {resource}/{id} not found");
                return Ok(exit::INVALID);
            }
        }
        DbCommand::List {
            resource,
            filter,
            limit,
            offset,
            partition,
            values,
        } => {
            let filter = parse_filter(filter.as_deref()).map_err(Failure::Usage)?;
            let values = values
                .iter()
                .map(|v| {
                    v.split_once('=')
                        .map(|(f, v)| (f.to_string(), v.to_string()))
                        .ok_or_else(|| {
                            Failure::Usage(format!("--value takes FIELD=VALUE, got `{v}`"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let records = db
                .resource(resource)?
                .list_cached(ListOptions {
                    filter,
                    limit: *limit,
                    offset: *offset,
                    partition: partition.clone().map(|p| (p, values)),
                })
                .await?;
            for r in records {
                print_line(&r.to_json());
            }
        }
        DbCommand::Count { resource, filter } => {
            let filter = parse_filter(filter.as_deref()).map_err(Failure::Usage)?;
            println!("{}", db.resource(resource)?.count_cached(filter).await?);
        }
        DbCommand::Import {
            resource,
            file,
            upsert,
        } => {
            return import(db, resource, file, *upsert).await;
        }
        DbCommand::Export { resource } => {
            // Printed as read: memory stays flat however large the resource.
            let mut records = std::pin::pin!(db.resource(resource)?.stream(None));
            while let Some(r) = records.next().await {
                print_line(&r?.to_json());
            }
        }
    }
    Ok(exit::OK)
}

async fn import(db: &Database, resource: &str, file: &Path, upsert: bool) -> Result<u8, Failure> {
    let res = db.resource(resource)?;
    // Standard input is kept in a temporary file: the lines are checked in a first pass (a bad
    // one imports nothing) and written in a second, so memory stays flat however long the input.
    let spooled;
    let path = if file == Path::new("-") {
        let mut tmp = tempfile::NamedTempFile::new()
            .map_err(|e| Failure::Usage(format!("cannot keep standard input: {e}")))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut tmp)
            .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
        spooled = tmp;
        spooled.path()
    } else {
        file
    };
    let open = || -> Result<std::io::BufReader<std::fs::File>, Failure> {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))
    };
    for (n, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| Failure::Usage(format!("line {}: {e}", n + 1)))?;
        if !line.trim().is_empty() {
            parse_object(&line, &format!("line {}", n + 1)).map_err(Failure::Usage)?;
        }
    }
    let lines = open()?
        .lines()
        .enumerate()
        .filter_map(|(n, line)| Some((n + 1, line.ok()?)))
        .filter(|(_, l)| !l.trim().is_empty());
    let mut writes = futures::stream::iter(lines.map(|(n, line)| {
        let res = res.clone();
        async move {
            let outcome = match parse_object(&line, "") {
                Ok(data) => match (
                    upsert,
                    data.get("id").and_then(Value::as_str).map(str::to_string),
                ) {
                    (true, Some(id)) => res.upsert(&id, data).await.map(|_| ()),
                    _ => res.insert(data, None).await.map(|_| ()),
                },
                Err(e) => Err(DbError::Schema(e)),
            };
            (n, outcome)
        }
    }))
    .buffered(db.concurrency());
    let (mut imported, mut failed) = (0usize, 0usize);
    while let Some((n, outcome)) = writes.next().await {
        match outcome {
            Ok(()) => imported += 1,
            Err(e) => {
                failed += 1;
                eprintln!("error: line {n}: {e}");
            }
        }
    }
    eprintln!("imported {imported} record(s) into {resource}, {failed} failed");
    Ok(if failed == 0 { exit::OK } else { exit::INVALID })
}
