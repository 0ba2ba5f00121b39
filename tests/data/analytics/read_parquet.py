"""Reads a Switchyard Parquet tree with pyarrow and with DuckDB, as a user would,
and prints what each saw as JSON: rows, total cost, the orgs and the ts type.

usage: read_parquet.py PARQUET_DIR
"""
import json
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

root = sys.argv[1]

table = pq.read_table(root)  # Hive partitions day=/org= become columns
pyarrow_view = {
    "rows": table.num_rows,
    "cost_usd": pc.sum(table["cost_usd"]).as_py(),
    "orgs": sorted({str(o) for o in table["org"].to_pylist()}),
    "ts_type": str(table.schema.field("ts").type),
}

rows, cost, orgs = duckdb.execute(
    f"""
    SELECT count(*), sum(cost_usd), list(DISTINCT org ORDER BY org)
    FROM read_parquet('{root}/day=*/org=*/*.parquet', hive_partitioning = true)
    """
).fetchall()[0]
duckdb_view = {"rows": rows, "cost_usd": cost, "orgs": orgs}

print(json.dumps({"pyarrow": pyarrow_view, "duckdb": duckdb_view}))
