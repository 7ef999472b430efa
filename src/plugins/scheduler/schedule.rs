//! Cron schedules: parsing (5 fields, an optional leading seconds field, names, ranges, steps,
//! lists, `@yearly`…`@hourly`) on top of the `croner` crate. The one cron evaluator of the
//! project: the manifest validator, the scheduler and `job next` all use it.

use std::fmt;

use chrono::Datelike;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::manifest::suggest::did_you_mean;

const NICKNAMES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expr)
    }
}

/// Why an expression is not a usable schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    pub help: String,
    /// The expression parses but matches no date at all (`0 0 31 2 *`).
    pub never_fires: bool,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScheduleError {}

const FIELDS_HELP: &str = "write 5 fields: minute hour day-of-month month day-of-week (e.g. `0 3 * * *`), optionally preceded by seconds, or one of @yearly @annually @monthly @weekly @daily @hourly";

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        let invalid = |message: String, help: String| ScheduleError {
            message,
            help,
            never_fires: false,
        };
        if let Some(name) = trimmed.strip_prefix('@') {
            if !NICKNAMES.iter().any(|n| n[1..].eq_ignore_ascii_case(name)) {
                let help = did_you_mean(trimmed, NICKNAMES.iter().copied())
                    .unwrap_or_else(|| FIELDS_HELP.to_string());
                return Err(invalid(
                    format!("`{trimmed}` is not a cron shorthand"),
                    help,
                ));
            }
        } else {
            let fields = trimmed.split_whitespace().count();
            if fields != 5 && fields != 6 {
                return Err(invalid(
                    format!("the cron expression `{trimmed}` has {fields} fields"),
                    FIELDS_HELP.to_string(),
                ));
            }
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(trimmed).map_err(|e| {
            invalid(
                format!("`{trimmed}` is not a valid cron expression: {e}"),
                FIELDS_HELP.to_string(),
            )
        })?;
        if !fires_at_all(&cron) {
            return Err(ScheduleError {
                message: format!("`{trimmed}` can never fire: no date matches its day and month fields"),
                help: "check the day-of-month against the month (February has at most 29 days; April, June, September and November 30)".into(),
                never_fires: true,
            });
        }
        Ok(Self {
            expr: trimmed.to_string(),
            cron,
        })
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    pub fn cron(&self) -> &Cron {
        &self.cron
    }
}

/// Whether any day in a full 28-year calendar cycle (every weekday/leap-year combination)
/// matches. Hours, minutes and seconds always match something once they parse.
fn fires_at_all(cron: &Cron) -> bool {
    let Some(mut day) = chrono::NaiveDate::from_ymd_opt(2024, 1, 1) else {
        return true;
    };
    for _ in 0..(28 * 366) {
        let matches = cron.pattern.month_match(day.month()).unwrap_or(true)
            && cron
                .pattern
                .day_match(day.year(), day.month(), day.day())
                .unwrap_or(true);
        if matches {
            return true;
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_forms() {
        for expr in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 9 * * MON",
            "0 0 1 JAN *",
            "30 0 3 * * *",
            "@annually",
            "@HOURLY",
            "0 0 * * 7",
        ] {
            Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }

    #[test]
    fn rejects_wrong_field_counts_and_impossible_dates() {
        assert!(!Schedule::parse("* * * *").unwrap_err().never_fires);
        assert!(!Schedule::parse("0 0 1 1 * 2030 *").unwrap_err().never_fires);
        assert!(Schedule::parse("0 0 31 2 *").unwrap_err().never_fires);
        assert!(Schedule::parse("0 0 30 2 *").unwrap_err().never_fires);
        assert!(Schedule::parse("0 0 29 2 *").is_ok());
        assert_eq!(
            Schedule::parse("@daly").unwrap_err().help,
            "did you mean `@daily`?"
        );
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
