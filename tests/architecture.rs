//! Keeps the code's shape: a source scan (no compiler involved) that fails when
//! files of a crate import each other in a loop, when a function outside tests
//! grows past 120 lines, when the domain crate touches files or the environment,
//! or when a second backoff type appears. What counts as an import: a
//! `use crate::…` / `use super::…` or an inline `crate::a::b` / `super::a` path
//! that names another file of the same crate; `mod` declarations and test code do
//! not count. `docs/architecture.md` explains the layout these checks protect.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest function allowed outside tests, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One crate's source files: the `src` directory and its root file.
struct CrateSrc {
    name: String,
    src: PathBuf,
    root_file: PathBuf,
}

fn crates() -> Vec<CrateSrc> {
    let mut out = vec![CrateSrc {
        name: "switchyard".into(),
        src: root().join("src"),
        root_file: root().join("src/main.rs"),
    }];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src/lib.rs").exists())
        .collect();
    dirs.sort();
    for d in dirs {
        out.push(CrateSrc {
            name: d.file_name().unwrap().to_string_lossy().into_owned(),
            src: d.join("src"),
            root_file: d.join("src/lib.rs"),
        });
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Test code: files named `tests.rs`, files under a `tests` or `benches`
/// folder, and everything from a file's first `#[cfg(test)]` on.
fn is_test_file(rel: &Path) -> bool {
    rel.file_name().is_some_and(|f| f == "tests.rs")
        || rel
            .components()
            .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches")
}

fn non_test_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Drops comments (line and doc comments) so paths in prose do not count.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file relative to its crate's `src`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn go(prefix: &str, rest: &str, out: &mut Vec<String>) {
        match rest.find('{') {
            None => out.push(format!("{prefix}{rest}")),
            Some(open) => {
                let head = &rest[..open];
                let inner = &rest[open + 1..rest.rfind('}').unwrap_or(rest.len())];
                let mut depth = 0;
                let mut start = 0;
                let mut items = Vec::new();
                for (i, ch) in inner.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(&inner[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                items.push(&inner[start..]);
                for item in items.into_iter().filter(|s| !s.is_empty()) {
                    go(&format!("{prefix}{head}"), item, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every `crate::…` / `super::…` path in non-test code, as segments.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let text = strip_comments(text);
    let mut out = Vec::new();
    // `use` statements (possibly grouped, possibly over several lines) are
    // expanded and cut out; what remains is scanned for inline paths.
    let mut rest = String::with_capacity(text.len());
    let mut tail = text.as_str();
    while let Some(i) = find_word(tail, "use ") {
        let after = &tail[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let stmt = after[..end].trim();
        if stmt.starts_with("crate::") || stmt.starts_with("super::") {
            for p in expand_use(stmt) {
                let p = p.split(" as ").next().unwrap_or_default().to_owned();
                out.push(p.split("::").map(str::to_owned).collect());
            }
        }
        rest.push_str(&tail[..i]);
        tail = &after[end..];
    }
    rest.push_str(tail);
    for start_word in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = find_word(&rest[from..], start_word) {
            let at = from + i;
            from = at + start_word.len();
            if at >= 2 && &rest[at - 2..at] == "::" {
                continue;
            }
            let path: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

/// Where `word` starts in `text` not preceded by an identifier character.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        if at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The file a path names, if it names a file of this crate other than `from`.
fn resolve(
    path: &[String],
    from_module: &[String],
    modules: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<PathBuf> {
    let mut base: Vec<String> = Vec::new();
    let mut segs = path.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
        }
        Some("super") => {
            base = from_module.to_vec();
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                base.pop();
            }
        }
        _ => return None,
    }
    let mut best = modules.get(&base).cloned();
    for s in segs {
        base.push(s.clone());
        match modules.get(&base) {
            Some(f) => best = Some(f.clone()),
            None => break,
        }
    }
    best
}

/// Each crate's import graph between its non-test files.
fn import_graphs() -> Vec<(String, BTreeMap<PathBuf, BTreeSet<PathBuf>>)> {
    let mut graphs = Vec::new();
    for c in crates() {
        let mut files = Vec::new();
        rust_files(&c.src, &mut files);
        let mut modules: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
        for f in &files {
            let rel = f.strip_prefix(&c.src).unwrap();
            if is_test_file(rel)
                || (f != &c.root_file && rel.parent().is_none() && rel == Path::new("main.rs"))
            {
                continue;
            }
            modules.insert(module_of(rel), f.clone());
        }
        let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (module, file) in &modules {
            let edges = graph.entry(file.clone()).or_default();
            for p in paths_in(&non_test_text(file)) {
                if let Some(target) = resolve(&p, module, &modules)
                    && &target != file
                {
                    edges.insert(target);
                }
            }
        }
        graphs.push((c.name, graph));
    }
    graphs
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let Some((w, _)) = graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn no_crate_has_an_import_loop_across_folders_or_of_more_than_two_files() {
    let mut problems = Vec::new();
    for (name, graph) in import_graphs() {
        for cycle in cycles(&graph) {
            let folders: BTreeSet<_> = cycle.iter().map(|f| f.parent().unwrap()).collect();
            let engine_dispatch = cycle.iter().any(|f| f.ends_with("engine.rs"))
                && cycle.iter().any(|f| f.ends_with("dispatch.rs"));
            if cycle.len() > 2 || folders.len() > 1 || engine_dispatch {
                let files: Vec<String> = cycle.iter().map(|f| rel(f)).collect();
                problems.push(format!("{name}: {}", files.join(" <-> ")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "import loops (a loop is a missing noun: move the shared words to a leaf module):\n{}",
        problems.join("\n")
    );
}

/// Functions outside tests longer than [`MAX_FN_LINES`], as `file: name (lines)`.
fn long_functions() -> Vec<String> {
    let mut out = Vec::new();
    for c in crates() {
        let mut files = Vec::new();
        rust_files(&c.src, &mut files);
        for f in files {
            let rel_path = f.strip_prefix(&c.src).unwrap();
            if is_test_file(rel_path) {
                continue;
            }
            let text = non_test_text(&f);
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(name) = fn_name(line) else { continue };
                let indent = line.len() - line.trim_start().len();
                let close = lines[i + 1..].iter().position(|l| {
                    l.len() - l.trim_start().len() == indent && l.trim_start().starts_with('}')
                });
                if let Some(k) = close
                    && k + 2 > MAX_FN_LINES
                {
                    out.push(format!("{}: {name} ({} lines)", rel(&f), k + 2));
                }
            }
        }
    }
    out
}

/// The name of a function whose body starts on this line.
fn fn_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.trim_end().ends_with(';') {
        return None;
    }
    let mut words = t.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "pub" | "async" | "const" | "unsafe" | "extern" => continue,
            w if w.starts_with("pub(") => continue,
            "fn" => {
                let name = words.next()?;
                let end = name
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(name.len());
                return Some(&name[..end]);
            }
            _ => return None,
        }
    }
    None
}

#[test]
fn no_function_outside_tests_is_longer_than_120_lines() {
    let long = long_functions();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (name their steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_domain_crate_reads_no_file_and_no_environment() {
    let mut files = Vec::new();
    let src = root().join("crates/switchyard-core/src");
    rust_files(&src, &mut files);
    let forbidden = [
        "std::fs",
        "fs::read",
        "fs::write",
        "File::open",
        "File::create",
        "std::env",
        "env::var",
        "std::net",
        "std::process",
    ];
    let mut found = Vec::new();
    for f in files {
        if is_test_file(f.strip_prefix(&src).unwrap()) {
            continue;
        }
        let text = strip_comments(&non_test_text(&f));
        for word in forbidden {
            if text.contains(word) {
                found.push(format!("{}: {word}", rel(&f)));
            }
        }
    }
    assert!(
        found.is_empty(),
        "switchyard-core is pure (parse texts, return values); read files and the environment in switchyard-loader or the binary:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_workspace_has_one_backoff_type() {
    let mut kinds = Vec::new();
    for c in crates() {
        let mut files = Vec::new();
        rust_files(&c.src, &mut files);
        for f in files {
            if is_test_file(f.strip_prefix(&c.src).unwrap()) {
                continue;
            }
            for line in strip_comments(&non_test_text(&f)).lines() {
                let t = line.trim_start();
                let t = t
                    .strip_prefix("pub ")
                    .or_else(|| t.strip_prefix("pub(crate) "))
                    .unwrap_or(t);
                if let Some(name) = t
                    .strip_prefix("struct ")
                    .or_else(|| t.strip_prefix("enum "))
                    && name.to_ascii_lowercase().contains("backoff")
                {
                    kinds.push(format!(
                        "{}: {}",
                        rel(&f),
                        name.trim_end_matches(['{', ' ', ';'])
                    ));
                }
            }
        }
    }
    assert_eq!(
        kinds.len(),
        1,
        "one backoff type (switchyard-core's) serves providers, worker and sink:\n{}",
        kinds.join("\n")
    );
}

#[test]
fn the_scanner_sees_loops_and_long_functions() {
    // The checks above are only as good as the scanner: it must resolve the
    // import forms it claims to and find a long function.
    assert_eq!(
        expand_use("crate::{a::B, c::{d, e::F}}"),
        ["crate::a::B", "crate::c::d", "crate::c::e::F"]
    );
    let mut modules = BTreeMap::new();
    modules.insert(vec![], PathBuf::from("lib.rs"));
    modules.insert(vec!["a".to_owned()], PathBuf::from("a/mod.rs"));
    modules.insert(
        vec!["a".to_owned(), "b".to_owned()],
        PathBuf::from("a/b.rs"),
    );
    let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let from_b = ["a".to_owned(), "b".to_owned()];
    assert_eq!(
        resolve(&p("super::X"), &from_b, &modules),
        Some(PathBuf::from("a/mod.rs"))
    );
    assert_eq!(
        resolve(&p("crate::a::b::Y"), &[], &modules),
        Some(PathBuf::from("a/b.rs"))
    );
    let paths = paths_in(
        "use crate::{a::b::Y, a::Z};\nfn f() { crate::a::b::g(); }\n// crate::a::b in a comment\n",
    );
    assert_eq!(paths.len(), 3, "{paths:?}");
    let mut g = BTreeMap::new();
    let (x, y, z) = (PathBuf::from("x"), PathBuf::from("y"), PathBuf::from("z"));
    g.insert(x.clone(), BTreeSet::from([y.clone()]));
    g.insert(y.clone(), BTreeSet::from([z.clone()]));
    g.insert(z.clone(), BTreeSet::from([x.clone()]));
    assert_eq!(cycles(&g), vec![vec![x, y, z]]);
    assert_eq!(
        fn_name("    pub(crate) async fn run_it<T>(x: T) {"),
        Some("run_it")
    );
    assert_eq!(fn_name("    fn declared(&self);"), None);
}
