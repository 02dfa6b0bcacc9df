"""Checks an export against the signed aggregate it came from.

Usage: check-export.py DIR, where DIR holds export.parquet, export.csv,
export.json (JSON lines) and aggregate.json (the signed document).

Each file is read by a real reader (pyarrow for Parquet; DuckDB for all
three). For every metric, the rows' count and sum (totals) and each
category's sum must equal the document's; an average must equal the mean
of the rows; and every row must name a report the document counted.
"""

import json
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

d = Path(sys.argv[1])
doc = json.loads((d / "aggregate.json").read_text())
agg = doc["aggregate"]
counted = {
    (e["report"]["author"], e["report"]["seq"], e["report"]["hash"])
    for e in agg["regions"]
    if e.get("figures") is not None
}
failures = []


def check(name, rows):
    """rows: (metric, category, value, author, seq, hash) tuples."""
    for metric, category, value, author, seq, hash_ in rows:
        if (author, seq, hash_) not in counted:
            failures.append(f"{name}: a row of {metric} names a report the aggregate did not count")
    for t in agg["totals"]:
        m = t["metric"]
        values = [r[2] for r in rows if r[0] == m and r[1] is None]
        if (len(values), sum(values)) != (t["count"], t["sum"]):
            failures.append(f"{name}: {m}: {len(values)} rows summing to {sum(values)}, the aggregate has {t['count']} and {t['sum']}")
        if t.get("rule") == "avg" and values:
            mean = round(sum(values) / len(values), 3)
            if mean != t["value"]:
                failures.append(f"{name}: {m}: mean {mean}, the aggregate says {t['value']}")
        for c in t.get("categories", []):
            cs = sum(r[2] for r in rows if r[0] == m and r[1] == c["category"])
            if cs != c["sum"]:
                failures.append(f"{name}: {m} {c['category']}: {cs}, the aggregate has {c['sum']}")
    print(f"{name}: {len(rows)} rows checked")


cols = "metric, category, value, author, seq, hash"
table = pq.read_table(d / "export.parquet")
check("pyarrow parquet", list(zip(*(table.column(c).to_pylist() for c in cols.split(", ")))))
con = duckdb.connect()
check("duckdb parquet", con.execute(f"select {cols} from read_parquet('{d / 'export.parquet'}')").fetchall())
check("duckdb csv", con.execute(
    f"select {cols} from read_csv('{d / 'export.csv'}', header=true, all_varchar=false, "
    "types={'category': 'VARCHAR', 'unit': 'VARCHAR', 'value': 'BIGINT', 'seq': 'UBIGINT'})").fetchall())
check("duckdb json", con.execute(f"select {cols} from read_json('{d / 'export.json'}', format='newline_delimited')").fetchall())
totals = con.execute(
    f"select metric, sum(value) from read_parquet('{d / 'export.parquet'}') where category is null group by metric order by metric"
).fetchall()
print("totals by metric (duckdb):", totals)
if failures:
    print("\n".join(failures))
    sys.exit(1)
print("the export equals the signed aggregate in every reader")
