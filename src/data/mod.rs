//! Parquet input read by row ranges, and `gen`. (Placeholder.)
