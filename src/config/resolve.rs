//! Resolve raw config into settings. (Placeholder.)
use std::path::Path;
pub fn parse_job(_text: &str, _file: &Path) -> super::Result<super::Job> {
    unimplemented!()
}
pub fn parse_fleet(_text: &str, _file: &Path) -> super::Result<super::Fleet> {
    unimplemented!()
}
