//! Raw TOML structs. (Placeholder.)
