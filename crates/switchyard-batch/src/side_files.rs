//! Files a command writes beside its input or output (`submit`'s rejects file,
//! `collect`'s OpenAI errors file) never replace the input or the output: a
//! rejects file opened on the input truncates it while it is being read, and
//! an errors file on the output replaces the results. Two paths name the same
//! file when they resolve to one (symbolic links, `./`, `..`), or, on Unix,
//! when they are one inode (hard links).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Refuses `side` (the `flag`'s file) when it is the same file as `main` (the
/// command's `role` file).
pub fn check_apart(side: &Path, flag: &'static str, main: &Path, role: &'static str) -> Result<()> {
    if same_file(side, main) {
        return Err(Error::SameFile {
            path: side.to_owned(),
            flag,
            role,
        });
    }
    Ok(())
}

/// Whether `a` and `b` name one file (either may not exist yet).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        use std::os::unix::fs::MetadataExt;
        return ma.dev() == mb.dev() && ma.ino() == mb.ino();
    }
    match (resolved(a), resolved(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The absolute, link-free path of `p`, or of its directory joined with its
/// name when `p` does not exist yet.
fn resolved(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let name = p.file_name()?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(dir.canonicalize().ok()?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_under_two_names_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{}\n").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(same_file(&input, &input));
        assert!(same_file(&input, &sub.join("../in.jsonl")));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.jsonl");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(same_file(&link, &input));
            let hard = dir.path().join("hard.jsonl");
            std::fs::hard_link(&input, &hard).unwrap();
            assert!(same_file(&hard, &input));
        }
        // Files that do not exist yet.
        let out = dir.path().join("out.jsonl");
        assert!(same_file(&out, &sub.join("../out.jsonl")));
        assert!(!same_file(&out, &dir.path().join("out.errors.jsonl")));
        assert!(!same_file(&input, &out));
        let err = check_apart(&input, "--rejects", &input, "input").unwrap_err();
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("--rejects"), "{err}");
    }
}
