//! Reporting periods: a calendar month or quarter, with one spelling each.

use std::fmt;
use std::str::FromStr;

use super::{Due, ReportError};

/// A reporting period: a calendar month or quarter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: u16, month: u8 },
    Quarter { year: u16, quarter: u8 },
}

const DAY_MS: u64 = 86_400_000;

impl Period {
    /// The first instant after the period, in ms since the epoch (UTC).
    pub fn end_ms(&self) -> u64 {
        let (year, month) = match *self {
            Period::Month { year, month } => (year, month),
            Period::Quarter { year, quarter } => (year, quarter * 3),
        };
        let (y, m) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        days_from_epoch(y, m) * DAY_MS
    }

    /// When a report for this period is due under `due`, if it sets a
    /// deadline for this kind of period.
    pub fn due_ms(&self, due: &Due) -> Option<u64> {
        let days = match self {
            Period::Month { .. } => due.month_days?,
            Period::Quarter { .. } => due.quarter_days?,
        };
        Some(self.end_ms() + u64::from(days) * DAY_MS)
    }
}

impl Period {
    /// The period of the same kind just before this one (none before 1970).
    pub fn previous(&self) -> Option<Period> {
        match *self {
            Period::Month { year, month: 1 } => (year > 1970).then(|| Period::Month {
                year: year - 1,
                month: 12,
            }),
            Period::Month { year, month } => Some(Period::Month {
                year,
                month: month - 1,
            }),
            Period::Quarter { year, quarter: 1 } => (year > 1970).then(|| Period::Quarter {
                year: year - 1,
                quarter: 4,
            }),
            Period::Quarter { year, quarter } => Some(Period::Quarter {
                year,
                quarter: quarter - 1,
            }),
        }
    }

    /// The calendar quarter `ms` (since the epoch, UTC) falls in.
    pub fn quarter_at(ms: u64) -> Period {
        let c = civil(ms);
        Period::Quarter {
            year: c.year,
            quarter: (c.month - 1) / 3 + 1,
        }
    }
}

/// A moment as the calendar reads it, in UTC.
pub struct Civil {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
}

/// The UTC calendar date and time of `ms` since the epoch: the inverse of
/// [`days_from_epoch`], without a date library.
pub fn civil(ms: u64) -> Civil {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let z = secs / 86_400 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        // Years past 9999 are beyond any period, and clamp there.
        year: (yoe + era * 400 + u64::from(month <= 2)).min(9999) as u16,
        month: month as u8,
        day: (doy - (153 * mp + 2) / 5 + 1) as u8,
        hour: (rem / 3600) as u8,
        minute: (rem % 3600 / 60) as u8,
    }
}

/// Days from 1970-01-01 to the first of `month` in `year` (a proleptic
/// Gregorian calendar; every year parsed is 1970 or later).
fn days_from_epoch(year: u16, month: u8) -> u64 {
    // Counting years from March puts the leap day last in each year.
    let y = u64::from(year) - u64::from(month <= 2);
    let m = u64::from(month);
    let era = y / 400;
    let yoe = y % 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Period {
        s.parse().unwrap()
    }

    #[test]
    fn a_period_ends_at_midnight_utc_on_the_first_of_the_next() {
        // 2026-10-01T00:00:00Z and 2027-01-01T00:00:00Z.
        assert_eq!(p("2026-09").end_ms(), 1_790_812_800_000);
        assert_eq!(p("2026-Q4").end_ms(), 1_798_761_600_000);
        assert_eq!(p("2026-12").end_ms(), p("2026-Q4").end_ms());
        assert_eq!(p("1970-01").end_ms(), 31 * DAY_MS);
        // A leap February has 29 days, a century's only if it divides by 400.
        let feb =
            |y: &str| (p(&format!("{y}-02")).end_ms() - p(&format!("{y}-01")).end_ms()) / DAY_MS;
        assert_eq!(
            (feb("2024"), feb("2026"), feb("2100"), feb("2000")),
            (29, 28, 28, 29)
        );
    }

    #[test]
    fn the_calendar_reads_back_what_the_day_count_made() {
        for period in [
            "1970-01", "2000-02", "2024-02", "2026-09", "2100-03", "9999-11",
        ] {
            let end = p(period).end_ms();
            let c = civil(end - 1);
            assert_eq!(format!("{:04}-{:02}", c.year, c.month), period);
            assert_eq!((c.hour, c.minute), (23, 59));
            let next = civil(end);
            assert_eq!((next.day, next.hour, next.minute), (1, 0, 0));
        }
        assert_eq!(
            Period::quarter_at(p("2026-12").end_ms() - 1).to_string(),
            "2026-Q4"
        );
        assert_eq!(
            Period::quarter_at(p("2026-03").end_ms()).to_string(),
            "2026-Q2"
        );
        assert_eq!(p("2026-Q1").previous(), Some(p("2025-Q4")));
        assert_eq!(p("2026-01").previous(), Some(p("2025-12")));
        assert_eq!(p("2026-07").previous(), Some(p("2026-06")));
        assert_eq!(p("1970-01").previous(), None);
    }

    #[test]
    fn the_deadline_is_counted_from_the_end_of_the_period() {
        let due = Due {
            month_days: Some(15),
            quarter_days: None,
        };
        assert_eq!(
            p("2026-09").due_ms(&due),
            Some(p("2026-09").end_ms() + 15 * DAY_MS)
        );
        assert_eq!(p("2026-Q3").due_ms(&due), None);
    }
}
