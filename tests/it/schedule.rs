//! Cron schedules in time zones, across the 2026 DST changes of America/New_York (Mar 8, Nov 1),
//! Europe/Berlin (Mar 29, Oct 25) and Australia/Lord_Howe (Apr 5 and Oct 4, a 30-minute shift),
//! and UTC.
//!
//! Expected values come from two places. Hand-checked cases state the rule they show. The table
//! compares 32 expressions × 4 zones (next 5 fires from two days before each zone's changes)
//! with an oracle that applies cronie's rules by definition, the slow way: it walks real time
//! minute by minute and decides for each instant whether it fires — a matching wall-clock time
//! fires at its first occurrence (every occurrence if the hour field is `*` or a step), and the
//! first instant after a spring-forward gap fires if a fixed-hour job matched a skipped time.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use s3db_run::types::schedule::Schedule;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn next(expr: &str, zone: Tz, after: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).unwrap();
    s.upcoming(&at(after).with_timezone(&zone), &zone, n)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect()
}

#[test]
fn spring_forward_runs_a_skipped_time_once_after_the_gap() {
    use chrono_tz::America::New_York;
    // 02:30 does not exist on 2026-03-08 in New York: the job runs at 03:00 EDT, once.
    assert_eq!(
        next("30 2 * * *", New_York, "2026-03-07T12:00:00Z", 3),
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00"
        ]
    );
    // Every minute of the skipped hour maps to 03:00: still one run.
    assert_eq!(
        next("*/20 2 * * *", New_York, "2026-03-08T06:00:00Z", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    );
    // A job on every hour simply has no 02:00 that day.
    assert_eq!(
        next("0 * * * *", New_York, "2026-03-08T05:30:00Z", 3),
        [
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T04:00:00-04:00"
        ]
    );
    // Lord Howe moves 30 minutes: 02:15 does not exist on 2026-10-04; the first valid instant is 02:30.
    assert_eq!(
        next(
            "15 2 * * *",
            chrono_tz::Australia::Lord_Howe,
            "2026-10-03T00:00:00Z",
            2
        ),
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
}

#[test]
fn fall_back_runs_a_repeated_time_once_and_hourly_jobs_every_real_hour() {
    use chrono_tz::America::New_York;
    // 01:30 happens twice on 2026-11-01: a fixed-hour job runs at the first one only.
    assert_eq!(
        next("30 1 * * *", New_York, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    // A wildcard hour runs in both 01:00 hours.
    assert_eq!(
        next("0 * * * *", New_York, "2026-11-01T04:30:00Z", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
    // Lord Howe repeats 01:30–02:00 on 2026-04-05: every 15 minutes of real time, both times.
    assert_eq!(
        next(
            "*/15 * * * *",
            chrono_tz::Australia::Lord_Howe,
            "2026-04-04T14:20:00Z",
            4
        ),
        [
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30"
        ]
    );
    // Berlin repeats 02:00–03:00 on 2026-10-25.
    assert_eq!(
        next(
            "30 2 * * *",
            chrono_tz::Europe::Berlin,
            "2026-10-24T12:00:00Z",
            2
        ),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
}

#[test]
fn fields_follow_vixie_cron() {
    let utc = chrono_tz::UTC;
    // Day of month and day of week both restricted: either matches. 2026-02-13 is a Friday;
    // 2026-03-06 a Friday, 2026-03-13 a Friday and the 13th.
    assert_eq!(
        next("0 0 13 * FRI", utc, "2026-02-12T00:00:00Z", 4),
        [
            "2026-02-13T00:00:00+00:00",
            "2026-02-20T00:00:00+00:00",
            "2026-02-27T00:00:00+00:00",
            "2026-03-06T00:00:00+00:00"
        ]
    );
    // 0 and 7 are Sunday; 2026-03-01 is a Sunday.
    assert_eq!(
        next("0 9 * * 0", utc, "2026-02-28T00:00:00Z", 1),
        next("0 9 * * 7", utc, "2026-02-28T00:00:00Z", 1)
    );
    assert_eq!(
        next("0 9 * * 7", utc, "2026-02-28T00:00:00Z", 1),
        ["2026-03-01T09:00:00+00:00"]
    );
    assert_eq!(
        next("0 9 * * SUN", utc, "2026-02-28T00:00:00Z", 1),
        ["2026-03-01T09:00:00+00:00"]
    );
    // Names, ranges, lists, steps; an optional seconds field.
    assert_eq!(
        next("0 0 1 JAN *", utc, "2026-06-01T00:00:00Z", 1),
        ["2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next("0 9 * * MON-FRI", utc, "2026-03-06T10:00:00Z", 1),
        ["2026-03-09T09:00:00+00:00"]
    );
    assert_eq!(
        next("10-20/5 6,18 * * *", utc, "2026-03-06T06:12:00Z", 3),
        [
            "2026-03-06T06:15:00+00:00",
            "2026-03-06T06:20:00+00:00",
            "2026-03-06T18:10:00+00:00"
        ]
    );
    assert_eq!(
        next("*/20 * * * * *", utc, "2026-03-06T06:00:05Z", 2),
        ["2026-03-06T06:00:20+00:00", "2026-03-06T06:00:40+00:00"]
    );
    assert_eq!(
        next("@weekly", utc, "2026-03-02T00:00:00Z", 1),
        ["2026-03-08T00:00:00+00:00"]
    );
    // Slots are whole seconds, whatever fraction the start has.
    assert_eq!(
        next("* * * * * *", utc, "2026-03-06T06:00:05.500Z", 2),
        ["2026-03-06T06:00:06+00:00", "2026-03-06T06:00:07+00:00"]
    );
    assert_eq!(
        next("@annually", utc, "2026-03-02T00:00:00Z", 1),
        ["2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next("0 0 29 2 *", utc, "2026-03-02T00:00:00Z", 1),
        ["2028-02-29T00:00:00+00:00"]
    );
}

/// The oracle: does the instant `t` (a whole minute) fire?
fn oracle_fires(cron: &croner::Cron, every_hour: bool, zone: Tz, t: DateTime<Utc>) -> bool {
    let matches = |naive: NaiveDateTime| {
        cron.is_time_matching(&Utc.from_utc_datetime(&naive))
            .unwrap_or(false)
    };
    let local = t.with_timezone(&zone).naive_local();
    if matches(local) {
        let first = match zone.from_local_datetime(&local) {
            LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => x.with_timezone(&Utc) == t,
            LocalResult::None => false,
        };
        if every_hour || first {
            return true;
        }
    }
    if every_hour {
        return false;
    }
    // The first instant after a gap fires for a fixed-hour job that matched a skipped time.
    let before = (t - Duration::minutes(1))
        .with_timezone(&zone)
        .naive_local();
    let mut skipped = before + Duration::minutes(1);
    while skipped < local {
        if matches(skipped) {
            return true;
        }
        skipped += Duration::minutes(1);
    }
    false
}

fn oracle(expr: &str, zone: Tz, after: DateTime<Utc>, n: usize) -> Vec<String> {
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .unwrap();
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let every_hour = expr == "@hourly"
        || (fields.len() == 5 && (fields[1].contains('*') || fields[1].contains('/')));
    let mut out = Vec::new();
    let mut day = after.with_timezone(&zone).date_naive() - Duration::days(1);
    while out.len() < n {
        // Only days whose date can match are walked minute by minute.
        let day_can_match = [day, day + Duration::days(1)].iter().any(|d| {
            parsed.pattern.month_match(d.month()).unwrap_or(false)
                && parsed
                    .pattern
                    .day_match(d.year(), d.month(), d.day())
                    .unwrap_or(false)
        });
        if day_can_match {
            let start = zone
                .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
                .earliest()
                .unwrap()
                .with_timezone(&Utc);
            let mut t = start;
            while t < start + Duration::hours(25) && out.len() < n {
                if t > after
                    && oracle_fires(&parsed, every_hour, zone, t)
                    && !out.contains(&t.with_timezone(&zone).to_rfc3339())
                {
                    out.push(t.with_timezone(&zone).to_rfc3339());
                }
                t += Duration::minutes(1);
            }
        }
        day += Duration::days(1);
        assert!(day.year() < 2040, "oracle found nothing for {expr}");
    }
    out.sort_by_key(|s| DateTime::parse_from_rfc3339(s).unwrap());
    out
}

const EXPRESSIONS: &[&str] = &[
    "* * * * *",
    "*/15 * * * *",
    "0 * * * *",
    "30 * * * *",
    "0 */2 * * *",
    "0 2 * * *",
    "30 2 * * *",
    "15 2 * * *",
    "45 1 * * *",
    "30 1 * * *",
    "0 3 * * *",
    "0 0 * * *",
    "59 23 * * *",
    "0 9 * * MON",
    "0 9 * * MON-FRI",
    "0 9 * * 0",
    "0 9 * * 7",
    "0 12 1 * *",
    "0 0 13 * FRI",
    "0 0 1 JAN *",
    "0 6,18 * * *",
    "10-20/5 2 * * *",
    "0 1-3 * * *",
    "*/30 1,2 * * *",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "5 4 * * SAT,SUN",
    "0 2 * * SUN",
    "20 1-2 * * *",
];

#[test]
fn thirty_two_expressions_in_four_zones_match_the_oracle_across_dst_changes() {
    // Each zone's 2026 changes as instants (UTC has none: two ordinary dates stand in).
    let zones: [(Tz, [&str; 2]); 4] = [
        (
            chrono_tz::UTC,
            ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"],
        ),
        (
            chrono_tz::America::New_York,
            ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"],
        ),
        (
            chrono_tz::Europe::Berlin,
            ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"],
        ),
        (
            chrono_tz::Australia::Lord_Howe,
            ["2026-10-03T15:30:00Z", "2026-04-04T15:00:00Z"],
        ),
    ];
    let mut checked = 0;
    for (zone, changes) in zones {
        for change in changes {
            for expr in EXPRESSIONS {
                // Start close enough before the change that the 5 fires cross it: minutes for
                // per-minute jobs, hours for hourly ones, two days for the rest.
                let lead = match *expr {
                    "* * * * *" => Duration::minutes(3),
                    "*/15 * * * *" | "*/30 1,2 * * *" | "10-20/5 2 * * *" => Duration::minutes(40),
                    "0 * * * *" | "30 * * * *" | "@hourly" | "20 1-2 * * *" | "0 1-3 * * *" => {
                        Duration::hours(3)
                    }
                    "0 */2 * * *" => Duration::hours(5),
                    _ => Duration::days(2),
                };
                let from = at(change) - lead;
                let expected = oracle(expr, zone, from, 5);
                let got = next(expr, zone, &from.to_rfc3339(), 5);
                assert_eq!(got, expected, "{expr} in {zone} after {from}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 32 * 4 * 2);
}

#[test]
fn job_next_prints_one_rfc3339_time_with_offset_per_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args([
            "job",
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--after",
            "2026-03-07T12:00:00Z",
            "--count",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2026-03-08T03:00:00-04:00\n2026-03-09T02:30:00-04:00\n2026-03-10T02:30:00-04:00\n"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["job", "next", "0 0 31 2 *"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("can never fire"));
    let zone = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["job", "next", "@daily", "--tz", "Europe/Berln"])
        .output()
        .unwrap();
    assert_eq!(zone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zone.stderr).contains("Europe/Berlin"));
}
