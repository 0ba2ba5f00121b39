"""Applies Switchyard's ClickHouse migrations on current ClickHouse (chdb,
in-process), loads a Parquet tree written by the sink into usage_events, runs a
report query and reads the daily rollup, printing the results as JSON.

usage: chdb_check.py SCHEMAS_DIR PARQUET_DIR REPORT_SQL [READY_SQL_JSON]

READY_SQL_JSON is a JSON list of further queries; the row count of each is
printed as ready_sql_rows.
"""
import glob
import json
import os
import sys
import tempfile

from chdb import session

schemas, parquet, report_sql = sys.argv[1:4]
ready = []
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        ready = json.load(f)


def statements(sql):
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


with tempfile.TemporaryDirectory() as path:
    s = session.Session(path)
    s.query("CREATE DATABASE IF NOT EXISTS switchyard")
    s.query("USE switchyard")
    for name in sorted(glob.glob(os.path.join(schemas, "*.sql"))):
        with open(name) as f:
            for statement in statements(f.read()):
                s.query(statement)
    columns = [
        line.split("\t")[0]
        for line in s.query("SELECT name FROM system.columns WHERE database = 'switchyard' "
                            "AND table = 'usage_events' AND default_kind = '' ORDER BY position",
                            "TabSeparated").bytes().decode().splitlines()
    ]
    files = os.path.join(parquet, "day=*", "org=*", "*.parquet")
    select = ", ".join(
        "'usage' AS kafka_topic" if c == "kafka_topic"
        else "toDateTime(ts64, 'UTC') AS ts" if c == "ts"
        else "toUInt64(toUnixTimestamp64Milli(ts64)) AS ts_ms" if c == "ts_ms"
        else "toDate(ts64, 'UTC') AS day" if c == "day"
        else "ifNull(batch_id, '') AS batch_id" if c == "batch_id"
        else c
        for c in columns
    )
    s.query(
        f"INSERT INTO usage_events ({', '.join(columns)}) "
        f"SELECT {select} FROM (SELECT *, ts AS ts64 FROM file('{files}', Parquet))"
    )
    rows = json.loads(s.query(report_sql, "JSONCompact").bytes())["data"]
    daily = json.loads(s.query("SELECT sum(cost_usd) FROM usage_daily", "JSONCompact").bytes())
    version = json.loads(s.query("SELECT version()", "JSONCompact").bytes())["data"][0][0]
    ready_rows = [len(json.loads(s.query(q, "JSONCompact").bytes())["data"]) for q in ready]
    print(json.dumps({
        "version": version,
        "ready_sql_rows": ready_rows,
        "rows": rows,
        "daily_cost_usd": daily["data"][0][0],
    }))
