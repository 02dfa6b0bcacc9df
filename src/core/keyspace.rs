//! Which record keys hold reports: the one fact about key names that both
//! the replica (which notes when a report first arrived) and the report
//! module need, kept here so neither imports the other for it.

/// `regions/<r>/reports/<p>` or `units/<u>/reports/<p>`: a region's or a
/// unit's report for a period.
pub fn is_report(key: &str) -> bool {
    (key.strip_prefix("regions/"))
        .or_else(|| key.strip_prefix("units/"))
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(owner, tail)| !owner.is_empty() && tail.starts_with("reports/"))
}

/// `regions/<r>/approvals/…`: a region's approvals of its units' reports
/// (HQ's are under `hq/approvals/`).
pub fn is_approval(key: &str) -> bool {
    (key.strip_prefix("regions/"))
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(owner, tail)| !owner.is_empty() && tail.starts_with("approvals/"))
}

#[cfg(test)]
mod tests {
    use super::{is_approval, is_report};

    #[test]
    fn report_keys_are_the_regions_and_units_report_spaces() {
        assert!(is_report("regions/fr/reports/2026-09"));
        assert!(is_report("units/aleysk/reports/2026-Q3"));
        assert!(!is_report("regions/fr/notes/1"));
        assert!(!is_report("regions/reports/x"));
        assert!(!is_report("regions//reports/x"));
        assert!(!is_report("hq/reports/schema"));
        assert!(!is_report("hq/approvals/x"));
        assert!(is_approval("regions/fr/approvals/2026-09/units/a"));
        assert!(!is_approval("units/a/approvals/2026-09"));
    }
}
