//! `s3db-run init [DIR]`: write a commented starter manifest that validates as written.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::exit;

/// The starter manifest. A test checks that it validates.
pub const STARTER: &str = include_str!("starter.yaml");

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Folder to write `s3db.yaml` (and `s3db.schema.json`) into.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

pub fn run(args: &Args) -> u8 {
    match init(&args.dir) {
        Ok(path) => {
            println!("wrote {}", path.display());
            println!("next: s3db-run validate {}", path.display());
            exit::OK
        }
        Err(InitError::Exists(path)) => {
            eprintln!(
                "error: {} already exists; s3db-run init never overwrites a manifest",
                path.display()
            );
            exit::INVALID
        }
        Err(InitError::Io(path, e)) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            exit::USAGE
        }
    }
}

#[derive(Debug)]
pub enum InitError {
    Exists(PathBuf),
    Io(PathBuf, std::io::Error),
}

/// Writes `DIR/s3db.yaml` (never overwriting it) and the schema it points at.
pub fn init(dir: &Path) -> Result<PathBuf, InitError> {
    std::fs::create_dir_all(dir).map_err(|e| InitError::Io(dir.to_path_buf(), e))?;
    let path = dir.join("s3db.yaml");
    // create_new makes the existence check and the write one step, so a file that appears
    // meanwhile is still never overwritten.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(InitError::Exists(path))
        }
        Err(e) => return Err(InitError::Io(path, e)),
    };
    file.write_all(STARTER.as_bytes())
        .map_err(|e| InitError::Io(path.clone(), e))?;
    let schema = dir.join("s3db.schema.json");
    if !schema.exists() {
        std::fs::write(&schema, crate::manifest::json_schema_text())
            .map_err(|e| InitError::Io(schema.clone(), e))?;
    }
    Ok(path)
}
