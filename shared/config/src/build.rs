//! Build-time embedding of the triggers file into the Lambda binaries.
//!
//! Each Lambda's `build.rs` calls [`embed`]; its `main.rs` reads the result with
//! [`embedded_triggers_file!`](crate::embedded_triggers_file). An invalid file fails the build,
//! so a broken schedule is caught by `sam build` or CI, never at 2 a.m.

use std::path::{Path, PathBuf};

/// Environment variable naming the triggers file to embed (relative to the workspace root).
pub const TRIGGERS_FILE_ENV: &str = "CIRCLECI_TRIGGERS_FILE";
pub const DEFAULT_TRIGGERS_FILE: &str = "triggers.toml";

/// Validates the triggers file and copies it to `$OUT_DIR/triggers.toml`.
/// Panics (failing the build with every problem listed) when the file is invalid.
pub fn embed() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let requested =
        std::env::var(TRIGGERS_FILE_ENV).unwrap_or_else(|_| DEFAULT_TRIGGERS_FILE.into());
    println!("cargo:rerun-if-env-changed={TRIGGERS_FILE_ENV}");
    match embed_into(&manifest_dir, &out_dir, Path::new(&requested)) {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(message) => panic!("{message}"),
    }
}

/// The work of [`embed`] without the process environment: returns the embedded file's path,
/// or why the build must fail.
pub fn embed_into(
    manifest_dir: &Path,
    out_dir: &Path,
    requested: &Path,
) -> Result<PathBuf, String> {
    let path = resolve(manifest_dir, requested);
    let source = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read the triggers file {}: {error}", path.display()))?;
    crate::parse_str(&source, &path.display().to_string())
        .map_err(|error| format!("refusing to embed an invalid triggers file: {error}"))?;
    std::fs::write(out_dir.join("triggers.toml"), &source)
        .map_err(|error| format!("cannot write the embedded triggers file: {error}"))?;
    Ok(path)
}

/// Relative paths are taken from the workspace root (the nearest ancestor with a Cargo.lock),
/// which is also where `sam build` points `CodeUri`.
fn resolve(manifest_dir: &Path, requested: &Path) -> PathBuf {
    if requested.is_absolute() {
        return requested.to_path_buf();
    }
    let root = manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(manifest_dir);
    root.join(requested)
}

/// The embedded triggers file as a `&'static str` (use in a crate whose build script called
/// [`embed`]).
#[macro_export]
macro_rules! embedded_triggers_file {
    () => {
        include_str!(concat!(env!("OUT_DIR"), "/triggers.toml"))
    };
}
