//! Entity costs to chunks of equal cost; splitting a range. (Placeholder.)
