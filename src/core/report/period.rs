//! Reporting periods: a calendar month or quarter, with one spelling each.

use std::fmt;
use std::str::FromStr;

use super::ReportError;

/// A reporting period: a calendar month or quarter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: u16, month: u8 },
    Quarter { year: u16, quarter: u8 },
}

impl FromStr for Period {
    type Err = ReportError;

    /// Exactly `YYYY-MM` (01–12) or `YYYY-Qn` (1–4), years 1970–9999: one
    /// spelling per period, so one key per region and period.
    fn from_str(s: &str) -> Result<Period, ReportError> {
        let bad = || ReportError::BadPeriod(s.chars().take(40).collect());
        let (y, rest) = s.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) {
            return Err(bad());
        }
        let year: u16 = y.parse().map_err(|_| bad())?;
        if year < 1970 {
            return Err(bad());
        }
        if let Some(q) = rest.strip_prefix('Q') {
            if !digits(q, 1) {
                return Err(bad());
            }
            let quarter: u8 = q.parse().map_err(|_| bad())?;
            return match quarter {
                1..=4 => Ok(Period::Quarter { year, quarter }),
                _ => Err(bad()),
            };
        }
        if !digits(rest, 2) {
            return Err(bad());
        }
        let month: u8 = rest.parse().map_err(|_| bad())?;
        match month {
            1..=12 => Ok(Period::Month { year, month }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
        }
    }
}
