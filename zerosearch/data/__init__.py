"""Data formats the method reads and writes: QA rows in the ZeroSearch parquet schema, JSON-lines files."""
