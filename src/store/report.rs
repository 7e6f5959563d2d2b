//! The validation report a version carries in its record.

use serde::{Deserialize, Serialize};

/// The outcome of the validation gate for one version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub passed: bool,
    pub checks: Vec<Check>,
}

/// One check of the gate: its name (`coverage`, `finite`, `topk_well_formed`,
/// `spot_check`, `drift`), whether it passed, and what it saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// A few offending entities or values, for the person reading the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl ValidationReport {
    /// The first failed check, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.passed)
    }
}
