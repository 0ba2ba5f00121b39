//! Keeps the crate cut by store: `row.rs` is the leaf every part speaks (it
//! imports nothing else of the crate), and decode writes into `RowSink`
//! without naming a store. A source scan; test modules do not count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

/// The file's code before its `#[cfg(test)]` module, without comment lines.
fn code(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn row_imports_nothing_else_of_the_crate() {
    let row = code("row.rs");
    for word in ["crate::", "super::"] {
        assert!(!row.contains(word), "row.rs names `{word}`:\n{row}");
    }
}

#[test]
fn decode_names_no_store() {
    let decode = code("decode.rs");
    for word in ["sinks", "parquet", "clickhouse", "arrow", "RowBinary"] {
        assert!(
            !decode.to_lowercase().contains(&word.to_lowercase()),
            "decode.rs names `{word}`; it should write into a RowSink only"
        );
    }
}
