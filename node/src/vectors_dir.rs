//! The golden vectors as files: `keyway vectors generate` writes them into
//! a directory and `keyway vectors verify` checks one. What a file holds
//! and how it is checked is the protocol crate's (`keyway::vectors`, pure
//! functions over text); reading and writing the directory is here, so
//! that the protocol crate touches no file.

use std::path::Path;

use keyway::vectors;

/// Writes every vector file into `dir`, creating it if missing; returns
/// how many files were written.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let files = vectors::generate_all();
    for (name, text) in &files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(files.len())
}

/// The outcome of checking a directory of vectors.
#[derive(Debug, Default)]
pub struct Report {
    /// Tests checked, per file.
    pub checked: Vec<(String, usize)>,
    /// Every mismatch, as "file: tcId: what".
    pub failures: Vec<String>,
}

/// Checks every vector file in `dir` (KW-VEC-001). Missing files and files
/// of unknown kinds are failures too: a directory that silently lacks a
/// kind would pass for a complete set.
pub fn verify_dir(dir: &Path) -> Report {
    let mut report = Report::default();
    let names = vectors::file_names();
    for name in &names {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => match vectors::verify_text(name, &text) {
                Ok(n) => report.checked.push((name.clone(), n)),
                Err(failures) => report
                    .failures
                    .extend(failures.into_iter().map(|f| format!("{name}: {f}"))),
            },
            Err(e) => report.failures.push(format!("{name}: {e}")),
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".json") && !names.contains(&name) {
                report.failures.push(format!("{name}: unknown vector kind"));
            }
        }
    }
    report
}
