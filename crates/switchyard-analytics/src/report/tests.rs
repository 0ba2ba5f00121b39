use std::path::Path;
use std::time::Duration;

use super::*;
use crate::progress::Cut;
use crate::row::UsageRow;
use crate::row::tests::event;
use crate::sinks::parquet::{ParquetConfig, ParquetSink};

// 2026-11-24T10:00:00Z and the next day.
const DAY1: i64 = 1_795_514_400_000;
const DAY2: i64 = DAY1 + 86_400_000;

fn config(dir: &Path, sink_id: &str) -> ParquetConfig {
    ParquetConfig {
        dir: dir.to_owned(),
        sink_id: sink_id.into(),
        topic: "usage".into(),
        max_file_bytes: 1 << 20,
        roll_interval: Duration::from_secs(60),
        row_group_rows: 1024,
        zstd_level: 1,
    }
}

/// Writes `rows` (partition 0, offsets from `first`) and rolls them into place.
fn write(dir: &Path, sink_id: &str, first: i64, events: Vec<switchyard_core::usage::UsageEvent>) {
    let mut sink = ParquetSink::open(config(dir, sink_id)).unwrap();
    let n = events.len() as i64;
    for (i, e) in events.into_iter().enumerate() {
        sink.push(UsageRow::from_event(e, "usage", 0, first + i as i64))
            .unwrap();
    }
    let cut: Cut = [(0, first + n)].into();
    sink.roll(&cut).unwrap();
}

fn sample() -> Vec<switchyard_core::usage::UsageEvent> {
    let mut failed = event("e4", "acme", "search", DAY2, 0.25);
    failed.job_id = "job-e3".into();
    failed.outcome = switchyard_core::result::AttemptOutcome::Timeout;
    failed.model = "claude-haiku".into();
    failed.provider = "anthropic".into();
    vec![
        event("e1", "acme", "search", DAY1, 1.0),
        event("e2", "acme", "ads", DAY1 + 1000, 2.0),
        event("e3", "acme", "search", DAY2, 0.5),
        failed,
        event("e5", "globex", "search", DAY2 + 5, 4.0),
    ]
}

fn query(by: Vec<Dimension>) -> ReportQuery {
    ReportQuery {
        by,
        since: None,
        until: None,
    }
}

#[test]
fn parquet_sums_group_by_org_node_and_count_jobs_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s", 0, sample());
    let r = parquet::report(dir.path(), &query(vec![Dimension::Team])).unwrap();
    let keys: Vec<&str> = r.rows.iter().map(|r| r.keys[0].as_str()).collect();
    assert_eq!(
        keys,
        [
            "acme/retail/ads",
            "acme/retail/search",
            "globex/retail/search"
        ]
    );
    let search = &r.rows[1];
    // e1, e3 and the failed retry e4 of job e3.
    assert_eq!((search.jobs, search.attempts), (2, 3));
    assert!((search.cost_usd - 1.75).abs() < 1e-12);
    assert!((search.failed_cost_usd - 0.25).abs() < 1e-12);
    assert!((search.baseline_cost_usd - 17.5).abs() < 1e-12);
    assert!((search.savings_pct() - 90.0).abs() < 1e-9);
    assert_eq!(search.input_tokens, 300);
    assert_eq!((r.total.jobs, r.total.attempts), (4, 5));
    assert!((r.total.cost_usd - 7.75).abs() < 1e-12);
}

#[test]
fn copies_in_other_files_are_counted_once_and_the_window_cuts_by_time() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", 0, sample());
    // Another sink wrote e1 and e5 again at other offsets.
    write(
        dir.path(),
        "b",
        100,
        vec![sample()[0].clone(), sample()[4].clone()],
    );
    let r = parquet::report(dir.path(), &query(vec![Dimension::Org, Dimension::Day])).unwrap();
    assert_eq!(r.total.attempts, 5);
    let day2 = ReportQuery {
        since: Some(parse_instant("2026-11-25").unwrap()),
        ..query(vec![Dimension::Model])
    };
    let r = parquet::report(dir.path(), &day2).unwrap();
    assert_eq!(r.total.attempts, 3);
    assert_eq!(r.rows[0].keys, ["claude-haiku"]);
    let until = ReportQuery {
        until: Some(parse_instant("2026-11-24T10:00:01Z").unwrap()),
        ..query(vec![Dimension::Org])
    };
    assert_eq!(
        parquet::report(dir.path(), &until).unwrap().total.attempts,
        1
    );
}

#[test]
fn renders_table_csv_and_json_with_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s", 0, sample());
    let r = parquet::report(
        dir.path(),
        &query(vec![Dimension::Org, Dimension::Strategy]),
    )
    .unwrap();
    let csv = r.render(Format::Csv);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "org,strategy,jobs,attempts,input_tokens,output_tokens,cached_input_tokens,cost_usd,avg_cost_per_job_usd,failed_cost_usd,baseline_cost_usd,savings_usd,savings_pct,routing_savings_usd,deferral_savings_usd,cache_write_input_tokens"
    );
    assert_eq!(
        lines.next().unwrap(),
        "acme,cost-first,3,4,400,80,20,3.750000,1.250000,0.250000,37.500000,33.750000,90.00,33.750000,0.000000,0"
    );
    let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
    assert_eq!(json["rows"][1]["org"], "globex");
    assert_eq!(json["rows"][1]["cost_usd"], 4.0);
    assert_eq!(json["total"]["jobs"], 4);
    let table = r.render(Format::Table);
    assert!(table.contains("TOTAL"), "{table}");
    assert!(table.contains("$7.75"), "{table}");
}

#[test]
fn csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_numbers_stay_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "+1+1",
        "-2+3",
        "@SUM(A1)",
        "\tcmd",
        "\rcmd",
    ];
    let mut events: Vec<_> = hostile
        .iter()
        .enumerate()
        .map(|(i, org)| event(&format!("h{i}"), org, "t", DAY1 + i as i64, 1.0))
        .collect();
    events.push(event("n", "-5", "t", DAY1 + 7, 1.0));
    // Routed dearer than the baseline: a negative saving.
    let mut dear = event("d", "dear", "t", DAY1 + 8, 2.0);
    dear.baseline_cost_usd = 0.5;
    events.push(dear);
    write(dir.path(), "s", 0, events);
    let r = parquet::report(dir.path(), &query(vec![Dimension::Org])).unwrap();
    let csv = r.render(Format::Csv);
    let lines: Vec<&str> = csv
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), hostile.len() + 2, "{csv:?}");
    for org in hostile {
        let cell = csv_cell(org);
        assert!(
            cell.starts_with('\'') || cell.starts_with("\"'"),
            "{cell:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{cell},"))),
            "{org:?} as {cell:?} in {csv:?}"
        );
    }
    assert_eq!(
        csv_cell("=HYPERLINK(\"http://evil.example\",\"x\")"),
        "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""
    );
    // No line starts with anything a spreadsheet runs.
    for line in &lines {
        assert!(!line.starts_with(['=', '+', '@', '\t', '\r']), "{line:?}");
    }
    // Numbers stay numbers, negative ones included.
    assert!(lines.iter().any(|l| l.starts_with("-5,")), "{csv:?}");
    let dear = lines.iter().find(|l| l.starts_with("dear,")).unwrap();
    assert!(
        dear.contains(",-1.500000,-300.00,"),
        "a negative saving is a number: {dear}"
    );
    for number in ["-5", "-1.500000", "0.25", "12", "-300.00"] {
        assert_eq!(neutralise(number), number, "{number}");
    }
    for text in ["-", "-.5", "-5.", "-1e5", "--5", "-5-", "+5"] {
        assert_eq!(neutralise(text), format!("'{text}"), "{text}");
    }
}

#[test]
fn queries_are_checked() {
    assert!(query(vec![]).validate().is_err());
    assert!(
        query(vec![Dimension::Org, Dimension::Org])
            .validate()
            .is_err()
    );
    let backwards = ReportQuery {
        since: Some(parse_instant("2026-11-02").unwrap()),
        until: Some(parse_instant("2026-11-01").unwrap()),
        ..query(vec![Dimension::Org])
    };
    assert!(backwards.validate().is_err());
    assert!(parse_instant("yesterday").is_err());
    assert_eq!("bu".parse::<Dimension>().unwrap(), Dimension::Bu);
    assert!("division".parse::<Dimension>().is_err());
    let missing = parquet::report(
        Path::new("/nonexistent/usage"),
        &query(vec![Dimension::Org]),
    );
    assert!(missing.unwrap_err().to_string().contains("not a directory"));
}

#[test]
fn the_same_query_gives_the_same_sql_keys_as_the_parquet_side() {
    let sql = clickhouse::group_sql(&query(vec![Dimension::Project, Dimension::Day]));
    assert!(sql.contains("FROM usage_events FINAL"), "{sql}");
    assert!(
        sql.contains(
            "GROUP BY concat(org, '/', business_unit, '/', team, '/', project), toString(day)"
        ),
        "{sql}"
    );
}

#[test]
fn the_html_page_is_self_contained_and_escapes_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sample();
    events[1].business_unit = "<script>".into();
    write(dir.path(), "s", 0, events);
    let q = |by| parquet::report(dir.path(), &query(by)).unwrap();
    let pages = html::Pages {
        daily_by_bu: q(vec![Dimension::Day, Dimension::Bu]),
        by_model: q(vec![Dimension::Model]),
        by_strategy: q(vec![Dimension::Strategy]),
        by_bu: q(vec![Dimension::Bu]),
    };
    let page = html::render(&pages, "test");
    assert!(page.starts_with("<!doctype html>"));
    assert!(!page.contains("<script"), "names must be escaped");
    assert!(page.contains("acme/&lt;script&gt;"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched"
    );
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("Saved by routing"));
}

#[test]
fn money_and_counts_read_well() {
    assert_eq!(dollars(1234.567), "$1,234.57");
    assert_eq!(dollars(0.00042), "$0.0004");
    assert_eq!(dollars(-2.5), "-$2.50");
    assert_eq!(digits(1_234_567), "1,234,567");
    assert_eq!(digits(12), "12");
}

#[test]
fn a_sink_whose_manifest_is_gone_refuses_instead_of_deleting_its_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s", 0, sample());
    std::fs::remove_file(crate::sinks::parquet::Manifest::path(dir.path(), "s")).unwrap();
    let err = ParquetSink::open(config(dir.path(), "s"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no manifest"), "{err}");
    // Nothing was deleted; another sink id starts fine beside them.
    assert_eq!(
        parquet::report(dir.path(), &query(vec![Dimension::Org]))
            .unwrap()
            .total
            .attempts,
        5
    );
    assert!(ParquetSink::open(config(dir.path(), "t")).is_ok());
}

#[test]
fn a_clickhouse_source_is_named_without_its_credentials_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s", 0, sample());
    let q = |by| parquet::report(dir.path(), &query(by)).unwrap();
    let pages = html::Pages {
        daily_by_bu: q(vec![Dimension::Day, Dimension::Bu]),
        by_model: q(vec![Dimension::Model]),
        by_strategy: q(vec![Dimension::Strategy]),
        by_bu: q(vec![Dimension::Bu]),
    };
    let source = Source::ClickHouse(crate::ClickHouseConfig::new(
        "http://analyst:s3cret@ch.internal:8123/?password=s3cret",
        "switchyard",
    ));
    let named = source.describe();
    assert_eq!(
        named,
        "ClickHouse http://ch.internal:8123/?password=*** (database switchyard)"
    );
    let page = html::render(&pages, &named);
    assert!(!page.contains("s3cret"));
    assert!(!page.contains("analyst"));
}
