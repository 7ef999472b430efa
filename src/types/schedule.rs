//! Cron schedules: parsing (5 fields, an optional leading seconds field, names, ranges, steps,
//! lists, `@yearly`…`@hourly`) on top of the `croner` crate. The one cron evaluator of the
//! project: the manifest validator, the scheduler and `job next` all use it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::Datelike;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use super::suggest::did_you_mean;

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
    /// The parsed form is not kept: a `croner::Cron` holds about 5 KB (a bitfield for every year
    /// it could ever match), which 10,000 jobs would multiply. It is shared while in use and
    /// parsed again when needed (the scheduler asks once per fire).
    parsed: Weak<Cron>,
    /// The hour field is `*` or a step: the job runs every real hour, through DST changes.
    every_hour: bool,
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

impl ScheduleError {
    /// The rule code a manifest diagnostic reports this error under.
    pub fn code(&self) -> &'static str {
        if self.never_fires {
            "manifest::cron_never_fires"
        } else {
            "manifest::invalid_cron"
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(|e| super::coded_error(e.code(), &e.message, Some(&e.help)))
    }
}

impl schemars::JsonSchema for Schedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Schedule".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "minLength": 1 })
    }
}

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
        let cron = match interned(trimmed) {
            Some(cron) => cron,
            None => {
                let cron = Arc::new(parse_checked(trimmed)?);
                intern(trimmed, &cron);
                cron
            }
        };
        let parsed = Arc::downgrade(&cron);
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let hour_field = match fields.len() {
            6 => fields[2],
            5 => fields[1],
            // @hourly is the only shorthand with a free hour.
            _ => {
                if trimmed.eq_ignore_ascii_case("@hourly") {
                    "*"
                } else {
                    "0"
                }
            }
        };
        Ok(Self {
            expr: trimmed.to_string(),
            every_hour: hour_field.contains('*') || hour_field.contains('/'),
            parsed,
        })
    }

    /// The first fire time strictly after `after`, in `tz`, following cronie's DST rules:
    ///
    /// - a wall-clock time that does not exist (the clocks spring forward over it) fires once,
    ///   at the first valid instant after the gap — unless the hour field is `*` or a step, in
    ///   which case the skipped wall-clock times simply do not happen;
    /// - a wall-clock time that occurs twice (the clocks fall back) fires once, at its first
    ///   occurrence — unless the hour field is `*` or a step: such jobs keep running every real
    ///   hour, so both occurrences fire.
    ///
    /// None only if nothing matches in the next 50 years.
    pub fn next_after<Tz: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Tz>,
        tz: &Tz,
    ) -> Option<chrono::DateTime<Tz>> {
        use chrono::{LocalResult, TimeZone as _};
        let after_utc = after.with_timezone(&chrono::Utc);
        // Candidates are wall-clock times, searched as if they were UTC (which has no DST).
        // Near a clock change, start a few hours of wall-clock time early so that the repeated
        // hour of a fall-back is seen again; elsewhere (almost always) start at `after`.
        use chrono::Offset;
        let offset_at = |d: chrono::Duration| (after_utc + d).with_timezone(tz).offset().fix();
        let near_change =
            offset_at(chrono::Duration::hours(-3)) != offset_at(chrono::Duration::hours(3));
        let back = if near_change {
            chrono::Duration::hours(3)
        } else {
            chrono::Duration::zero()
        };
        // Slots are whole seconds; a fraction in `after` must not leak into them.
        let whole = chrono::Timelike::with_nanosecond(&after.with_timezone(tz).naive_local(), 0)?;
        let mut cursor = whole - back;
        let mut best: Option<chrono::DateTime<Tz>> = None;
        let horizon = cursor + chrono::Duration::days(366 * 50);
        let cron = self.cron()?;
        loop {
            let next = cron
                .find_next_occurrence(&chrono::Utc.from_utc_datetime(&cursor), false)
                .ok()?;
            let naive = next.naive_utc();
            if naive > horizon {
                return best;
            }
            cursor = naive;
            let fire = match tz.from_local_datetime(&naive) {
                LocalResult::Single(t) => vec![t],
                LocalResult::Ambiguous(first, second) if self.every_hour => vec![first, second],
                LocalResult::Ambiguous(first, _) => vec![first],
                LocalResult::None if self.every_hour => vec![],
                LocalResult::None => gap_end(tz, naive).into_iter().collect(),
            };
            for t in fire
                .into_iter()
                .filter(|t| t.with_timezone(&chrono::Utc) > after_utc)
            {
                if best.as_ref().is_none_or(|b| t < *b) {
                    best = Some(t);
                }
            }
            // In a repeated hour, wall-clock order is not real-time order: keep looking until
            // no later wall-clock time can map to an earlier instant.
            if let Some(b) = &best {
                if !near_change || naive > b.naive_local() + chrono::Duration::hours(3) {
                    return best;
                }
            }
        }
    }

    /// The latest fire time at or before `at`, found without walking the slots in between (a
    /// per-second schedule looked back over a day would be 86,400 steps): the previous
    /// wall-clock match, then at most a few steps forward to settle clock changes.
    pub fn latest_at_or_before<Tz: chrono::TimeZone>(
        &self,
        at: &chrono::DateTime<Tz>,
        tz: &Tz,
    ) -> Option<chrono::DateTime<Tz>> {
        use chrono::TimeZone as _;
        let cron = self.cron()?;
        let local = at.with_timezone(tz).naive_local();
        let wall = cron
            .find_previous_occurrence(&chrono::Utc.from_utc_datetime(&local), true)
            .ok()?
            .naive_utc();
        // Start just before that wall-clock time as an instant (the earliest instant it can be;
        // near a clock change, hours before, so a repeated hour is seen), then step forward to
        // the last slot not after `at`: one step, except near a clock change.
        use chrono::Offset;
        let at_utc = at.with_timezone(&chrono::Utc);
        let offset_at = |d: chrono::Duration| (at_utc + d).with_timezone(tz).offset().fix();
        let margin =
            if offset_at(chrono::Duration::hours(-3)) != offset_at(chrono::Duration::hours(3)) {
                chrono::Duration::hours(3)
            } else {
                chrono::Duration::seconds(1)
            };
        // A wall-clock time in a spring-forward gap maps to no instant: look before the gap.
        let start = [
            margin,
            chrono::Duration::hours(3),
            chrono::Duration::hours(27),
        ]
        .into_iter()
        .find_map(|m| tz.from_local_datetime(&(wall - m)).earliest())?;
        let mut latest = None;
        let mut t = start;
        for _ in 0..100_000 {
            match self.next_after(&t, tz) {
                Some(next) if next.with_timezone(&chrono::Utc) <= at_utc => {
                    t = next.clone();
                    latest = Some(next);
                }
                _ => return latest,
            }
        }
        latest
    }

    /// The next `count` fire times after `after`.
    pub fn upcoming<Tz: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Tz>,
        tz: &Tz,
        count: usize,
    ) -> Vec<chrono::DateTime<Tz>> {
        let mut out = Vec::with_capacity(count);
        let mut t = after.clone();
        while out.len() < count {
            match self.next_after(&t, tz) {
                Some(next) => {
                    t = next.clone();
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }

    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The parsed expression: the one in use elsewhere, or parsed again (it parsed when the
    /// schedule was made, so None does not happen in practice).
    pub fn cron(&self) -> Option<Arc<Cron>> {
        if let Some(cron) = self.parsed.upgrade().or_else(|| interned(&self.expr)) {
            return Some(cron);
        }
        let cron = Arc::new(
            CronParser::builder()
                .seconds(Seconds::Optional)
                .year(Year::Disallowed)
                .build()
                .parse(&self.expr)
                .ok()?,
        );
        intern(&self.expr, &cron);
        Some(cron)
    }
}

fn interned_map() -> &'static Mutex<HashMap<String, Weak<Cron>>> {
    static MAP: OnceLock<Mutex<HashMap<String, Weak<Cron>>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

fn interned(expr: &str) -> Option<Arc<Cron>> {
    interned_map()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(expr)?
        .upgrade()
}

fn intern(expr: &str, cron: &Arc<Cron>) {
    let mut map = interned_map().lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= 4096 {
        map.retain(|_, w| w.strong_count() > 0);
    }
    map.insert(expr.to_string(), Arc::downgrade(cron));
}

/// Parses with croner and rejects expressions that can never fire.
fn parse_checked(trimmed: &str) -> Result<Cron, ScheduleError> {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(trimmed)
        .map_err(|e| match out_of_range(trimmed) {
            Some((message, help)) => ScheduleError {
                message: format!("`{trimmed}`: {message}"),
                help,
                never_fires: false,
            },
            None => ScheduleError {
                message: format!("`{trimmed}` is not a valid cron expression: {e}"),
                help: FIELDS_HELP.to_string(),
                never_fires: false,
            },
        })?;
    if !fires_at_all(&cron) {
        return Err(ScheduleError {
            message: format!("`{trimmed}` can never fire: no date matches its day and month fields"),
            help: "check the day-of-month against the month (February has at most 29 days; April, June, September and November 30)".into(),
            never_fires: true,
        });
    }
    Ok(cron)
}

/// The fields of a 5- or 6-field expression, with the numbers each allows.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Names the field whose number is out of its range, and the range, when that is why croner
/// refused the expression (croner says only "Number out of bounds.").
fn out_of_range(trimmed: &str) -> Option<(String, String)> {
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let names = match fields.len() {
        6 => &FIELDS[..],
        5 => &FIELDS[1..],
        _ => return None,
    };
    for (text, (name, min, max)) in fields.iter().zip(names) {
        for part in text.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, ""));
            if !step.is_empty() {
                match step.parse::<u32>() {
                    Ok(n) if n >= 1 && n <= *max => {}
                    Ok(_) => {
                        return Some((
                            format!(
                                "the step `/{step}` of the {name} field `{text}` is out of range"
                            ),
                            format!("a {name} step is 1 to {max}"),
                        ))
                    }
                    Err(_) => {}
                }
            }
            for bound in range.split('-') {
                // Only plain numbers are judged here; names, `L`, `W`, `#` and the like are
                // left to croner's own message.
                let Ok(n) = bound.parse::<u64>() else {
                    continue;
                };
                if n < u64::from(*min) || n > u64::from(*max) {
                    return Some((
                        format!("the {name} field `{text}` is out of range: {n} is not between {min} and {max}"),
                        format!("{name} values are {min} to {max}; {FIELDS_HELP}"),
                    ));
                }
            }
        }
    }
    None
}

/// The first instant after a DST gap that contains the wall-clock time `naive`.
fn gap_end<Tz: chrono::TimeZone>(
    tz: &Tz,
    naive: chrono::NaiveDateTime,
) -> Option<chrono::DateTime<Tz>> {
    use chrono::{LocalResult, Timelike};
    // Gaps are whole minutes long and at most a few hours; walk to the first valid minute.
    let mut t = naive.with_second(0)?;
    for _ in 0..(6 * 60) {
        t += chrono::Duration::minutes(1);
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => return Some(x),
            LocalResult::None => {}
        }
    }
    None
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
    fn the_latest_slot_is_found_without_walking_back() {
        use chrono::TimeZone as _;
        let every_second = Schedule::parse("* * * * * *").unwrap();
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap()
            + chrono::Duration::milliseconds(500);
        assert_eq!(
            every_second.latest_at_or_before(&at, &chrono::Utc).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
                .unwrap()
        );
        let daily = Schedule::parse("30 2 * * *").unwrap();
        let tz = chrono_tz::Europe::Berlin;
        // 02:30 did not happen on 29 March 2026 (clocks went 02:00 -> 03:00); the slot that
        // day is the end of the gap, 03:00 CEST.
        let after_gap = tz.with_ymd_and_hms(2026, 3, 29, 12, 0, 0).unwrap();
        let latest = daily.latest_at_or_before(&after_gap, &tz).unwrap();
        assert_eq!(
            daily.next_after(&(latest - chrono::Duration::seconds(1)), &tz),
            Some(latest)
        );
        assert!(latest <= after_gap && latest > after_gap - chrono::Duration::days(1));
        let exactly = tz.with_ymd_and_hms(2026, 11, 30, 2, 30, 0).unwrap();
        assert_eq!(daily.latest_at_or_before(&exactly, &tz).unwrap(), exactly);
    }

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

    #[test]
    fn an_out_of_range_number_names_its_field_and_range() {
        for (expr, field, range) in [
            ("0 25 * * *", "hour field `25`", "between 0 and 23"),
            ("61 * * * *", "minute field `61`", "between 0 and 59"),
            ("0 0 0 * *", "day-of-month field `0`", "between 1 and 31"),
            ("0 0 1 1-13 *", "month field `1-13`", "between 1 and 12"),
            ("0 0 * * 1,8", "day-of-week field `1,8`", "between 0 and 7"),
            ("75 0 0 * * *", "second field `75`", "between 0 and 59"),
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(
                e.message.contains(field) && e.message.contains(range),
                "{expr}: {e}"
            );
            assert!(!e.message.contains("Number out of bounds"), "{expr}: {e}");
        }
        let e = Schedule::parse("*/0 * * * *").unwrap_err();
        assert!(e.message.contains("step `/0` of the minute field"), "{e}");
    }
}
