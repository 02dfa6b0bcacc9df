#!/usr/bin/env bash
# Reads `fedsync report export` files with real analytics readers, outside
# `cargo test`: the CLI cycle test (tests/cli/cycle.rs) writes the Parquet,
# CSV and JSON-lines export of an approved aggregate and the signed
# document it came from; scripts/check-export.py loads them with pyarrow
# and DuckDB and compares every total with the document. Installs the
# Python packages in a venv under target/ if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/export-check-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null ||
    "$venv/bin/pip" install --quiet duckdb pyarrow

out=target/export-check
rm -rf "$out"
FEDSYNC_EXPORT_DIR="$PWD/$out" cargo test --quiet --test cli cycle
"$venv/bin/python" scripts/check-export.py "$out"
