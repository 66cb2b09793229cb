"""Data preparation scripts: QA jsonl -> parquet."""
