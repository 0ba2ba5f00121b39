//! Reading a TOML file into a typed config so that every error names the file, the
//! line, the key and the fix. Syntax and type errors come from the parser and serde;
//! semantic errors come from each config's `validate()`, which reports a key path
//! that is located here in the original text. Environment overrides
//! (`SWITCHYARD__SECTION__KEY=value`) are applied before typing; an error on an
//! overridden key names the variable instead of a line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySeg {
    /// `table.key`
    Key(String),
    /// `array[3]`
    Index(usize),
}

/// A path to a value in a TOML document, such as `deployments[2].rpm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<KeySeg>);

impl KeyPath {
    /// The empty path (the whole document).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(KeySeg::Key(k.to_owned()));
        Self(v)
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(KeySeg::Index(i));
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                KeySeg::Key(k) if i == 0 => write!(f, "{k}")?,
                KeySeg::Key(k) => write!(f, ".{k}")?,
                KeySeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A config problem a person can fix without reading code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File (or `environment variable NAME`) the value came from.
    pub origin: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.origin, line)?,
            None => write!(f, "{}: ", self.origin)?,
        }
        write!(f, "`{}`: {}", self.key, self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A semantic problem found by a `validate()`, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Where.
    pub path: KeyPath,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl Invalid {
    /// Shorthand constructor.
    pub fn new(path: KeyPath, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            path,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// A parsed TOML file that remembers where each key was written.
pub struct ConfigSource {
    path: PathBuf,
    doc: toml_edit::Document<String>,
    overrides: Vec<(KeyPath, String)>,
}

impl ConfigSource {
    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Turns a validation finding into an error with file and line.
    pub fn locate(&self, invalid: Invalid) -> ConfigError {
        if let Some((_, var)) = self.overrides.iter().find(|(p, _)| p == &invalid.path) {
            return ConfigError {
                origin: format!("environment variable {var}"),
                line: None,
                key: invalid.path.to_string(),
                problem: invalid.problem,
                fix: invalid.fix,
            };
        }
        ConfigError {
            origin: self.path.display().to_string(),
            line: self.line_of(&invalid.path),
            key: invalid.path.to_string(),
            problem: invalid.problem,
            fix: invalid.fix,
        }
    }

    /// The line of the deepest part of `path` present in the file.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let offset = span_of(self.doc.as_item(), &path.0)?;
        let text = self.doc.raw();
        Some(
            text[..offset.min(text.len())]
                .bytes()
                .filter(|b| *b == b'\n')
                .count()
                + 1,
        )
    }
}

/// Walks `segs` from `item`, returning the byte offset of the deepest item found.
fn span_of(item: &toml_edit::Item, segs: &[KeySeg]) -> Option<usize> {
    use toml_edit::{Item, Value};
    let here = item.span().map(|s| s.start);
    let Some((first, rest)) = segs.split_first() else {
        return here;
    };
    let deeper = match (item, first) {
        (Item::Table(t), KeySeg::Key(k)) => t
            .get_key_value(k)
            .and_then(|(key, child)| span_of(child, rest).or_else(|| key.span().map(|s| s.start))),
        (Item::Value(Value::InlineTable(t)), KeySeg::Key(k)) => t
            .get_key_value(k)
            .and_then(|(key, child)| span_of(child, rest).or_else(|| key.span().map(|s| s.start))),
        (Item::ArrayOfTables(a), KeySeg::Index(i)) => a.get(*i).and_then(|t| {
            let child = Item::Table(t.clone());
            span_of(&child, rest)
        }),
        (Item::Value(Value::Array(a)), KeySeg::Index(i)) => a
            .get(*i)
            .and_then(|v| span_of(&Item::Value(v.clone()), rest)),
        _ => None,
    };
    deeper.or(here)
}

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

/// Parses `text` (read from `path`) into `T`, applying `env` overrides
/// (`SWITCHYARD__A__B=v` sets `a.b`), and reporting errors located in the file.
pub fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    env: &[(String, String)],
) -> Result<(T, ConfigSource), ConfigError> {
    let origin = path.display().to_string();
    let doc = toml_edit::Document::parse(text.to_owned()).map_err(|e| {
        let line = e.span().map(|s| {
            text[..s.start.min(text.len())]
                .bytes()
                .filter(|b| *b == b'\n')
                .count()
                + 1
        });
        ConfigError {
            origin: origin.clone(),
            line,
            key: "(syntax)".into(),
            problem: e.message().trim().to_owned(),
            fix: "correct the TOML syntax at that line".into(),
        }
    })?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
        origin: origin.clone(),
        line: None,
        key: "(syntax)".into(),
        problem: e.message().to_owned(),
        fix: "correct the TOML syntax".into(),
    })?;
    let mut overrides = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            continue;
        }
        set_path(&mut table, &keys, parse_env_value(value));
        overrides.push((
            KeyPath(keys.into_iter().map(KeySeg::Key).collect()),
            var.clone(),
        ));
    }
    let source = ConfigSource {
        path: path.to_owned(),
        doc,
        overrides,
    };
    let value = toml::Value::Table(table);
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = convert_path(e.path());
        let message = e.inner().message().to_owned();
        let (path, fix) = explain_serde_message(path, &message);
        source.locate(Invalid {
            path,
            problem: message,
            fix,
        })
    })?;
    Ok((typed, source))
}

/// The variables of `vars` that look like overrides, for [`parse`] (the caller
/// passes the process environment; this crate never reads it).
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// Reads the files a config names (a pipeline config's catalog and org file).
/// Implemented over the disk by `switchyard-loader`, over memory by tests and by
/// the configuration compiled into the binary; any `Fn(&Path) -> io::Result<String>`
/// is one.
pub trait ReadFile {
    /// The text of the file at `path`.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

impl<F: Fn(&Path) -> std::io::Result<String>> ReadFile for F {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self(path)
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        cur = t;
    }
    cur.insert(last.clone(), value);
}

fn convert_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    KeyPath(
        path.iter()
            .filter_map(|seg| match seg {
                Segment::Seq { index } => Some(KeySeg::Index(*index)),
                Segment::Map { key } => Some(KeySeg::Key(key.clone())),
                Segment::Enum { variant } => Some(KeySeg::Key(variant.clone())),
                Segment::Unknown => None,
            })
            .collect(),
    )
}

/// Derives the key the message is about and a fix from serde's wording.
fn explain_serde_message(path: KeyPath, message: &str) -> (KeyPath, String) {
    if let Some(field) = between(message, "unknown field `", "`") {
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("");
        let fix = if expected.is_empty() {
            format!("remove `{field}`")
        } else {
            format!("remove `{field}` or correct its spelling (expected {expected})")
        };
        let mut path = path;
        if path.0.last() != Some(&KeySeg::Key(field.to_owned())) {
            path = path.key(field);
        }
        return (path, fix);
    }
    if let Some(field) = between(message, "missing field `", "`") {
        return (path.clone(), format!("add `{field}` under `{path}`"));
    }
    if let Some(variant) = between(message, "unknown variant `", "`") {
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("a listed value");
        return (path, format!("replace `{variant}` with {expected}"));
    }
    if message.starts_with("invalid type") {
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e)
            .unwrap_or("the documented type");
        return (path, format!("give {expected}"));
    }
    (
        path,
        "see the documented keys in docs/configuration.md".into(),
    )
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// The known name closest to `name` (edit distance, ignoring case), when it is
/// close enough to be a likely typo: what "did you mean" hints and fixes offer.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    let limit = (name.chars().count() / 3).max(2);
    known
        .into_iter()
        .map(|k| (edit_distance(&name, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        worker: Worker,
        #[serde(default)]
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Worker {
        threads: u32,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        #[allow(dead_code)]
        name: String,
        rpm: u32,
    }

    fn parse_cfg(text: &str, env: &[(String, String)]) -> Result<Cfg, ConfigError> {
        parse::<Cfg>(Path::new("p.toml"), text, env).map(|(c, _)| c)
    }

    #[test]
    fn a_wrong_type_names_file_line_key_and_fix() {
        let text = "[worker]\nthreads = 4\n\n[[items]]\nname = \"a\"\nrpm = 1\n\n[[items]]\nname = \"b\"\nrpm = \"many\"\n";
        let err = parse_cfg(text, &[]).unwrap_err();
        assert_eq!(err.line, Some(10), "{err}");
        assert_eq!(err.key, "items[1].rpm");
        assert!(
            err.to_string()
                .starts_with("p.toml:10: `items[1].rpm`: invalid type"),
            "{err}"
        );
        assert!(err.fix.contains("u32"), "{err}");
    }

    #[test]
    fn an_unknown_key_points_at_its_line() {
        let text = "[worker]\nthreads = 4\nthraeds = 5\n";
        let err = parse_cfg(text, &[]).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.fix.contains("remove `thraeds`"), "{err}");
    }

    #[test]
    fn a_missing_key_names_its_table() {
        let err = parse_cfg("[worker]\n", &[]).unwrap_err();
        assert!(err.fix.contains("add `threads`"), "{err}");
        assert_eq!(err.line, Some(1));
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse_cfg("[worker]\nthreads = = 4\n", &[]).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn environment_overrides_win_and_are_named_in_errors() {
        let env = vec![("SWITCHYARD__WORKER__THREADS".to_owned(), "16".to_owned())];
        let cfg = parse_cfg("[worker]\nthreads = 4\n", &env).unwrap();
        assert_eq!(cfg.worker.threads, 16);
        let env = vec![("SWITCHYARD__WORKER__THREADS".to_owned(), "lots".to_owned())];
        let err = parse_cfg("[worker]\nthreads = 4\n", &env).unwrap_err();
        assert_eq!(
            err.origin, "environment variable SWITCHYARD__WORKER__THREADS",
            "{err}"
        );
    }

    #[test]
    fn validation_findings_are_located() {
        let text = "[worker]\nthreads = 4\n[[items]]\nname = \"a\"\nrpm = 0\n";
        let (_, source) = parse::<Cfg>(Path::new("p.toml"), text, &[]).unwrap();
        let err = source.locate(Invalid::new(
            KeyPath::root().key("items").index(0).key("rpm"),
            "rpm is 0",
            "give a positive limit",
        ));
        assert_eq!(err.line, Some(5));
        assert_eq!(
            err.to_string(),
            "p.toml:5: `items[0].rpm`: rpm is 0; fix: give a positive limit"
        );
    }

    #[test]
    fn the_closest_name_is_offered_only_when_it_is_a_likely_typo() {
        let known = ["gpt-5-nano", "gpt-5-mini", "claude-haiku-5-5"];
        assert_eq!(closest("gpt-5-nanoo", known), Some("gpt-5-nano"));
        assert_eq!(closest("GPT-5-Mini", known), Some("gpt-5-mini"));
        assert_eq!(closest("claude-haiku-55", known), Some("claude-haiku-5-5"));
        assert_eq!(closest("llama-70b", known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
