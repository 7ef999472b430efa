//! Grandfather-father-son retention with restic's semantics: for each rule, walking from the
//! newest backup back, the newest backup of each calendar day / ISO week / month / year (in the
//! configured time zone) is kept until the rule's count is reached. Rules are OR'd; only
//! completed backups count; the newest completed backup is always kept; a backup that a kept
//! incremental depends on is kept with it.
//!
//! Owns: the decision and its reasons. Never: deletes anything (the plugin does).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::manifest::model::RetentionPolicy;

/// What retention needs to know about a backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub completed: bool,
    pub parent: Option<String>,
}

/// Whether a backup stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Decides, for every candidate, keep or delete. The result is newest first.
pub fn decide(policy: &RetentionPolicy, tz: chrono_tz::Tz, items: &[Candidate]) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = items.iter().collect();
    sorted.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    let mut reasons: HashMap<&str, Vec<String>> = HashMap::new();
    let completed: Vec<&Candidate> = sorted.iter().copied().filter(|c| c.completed).collect();

    if policy.is_empty() {
        for c in &completed {
            reasons
                .entry(&c.id)
                .or_default()
                .push("no retention policy".into());
        }
    } else {
        type Bucket = fn(&DateTime<chrono_tz::Tz>) -> String;
        let rules: [(&str, Option<u32>, Bucket); 4] = [
            ("daily", policy.daily, |t| t.format("%Y-%m-%d").to_string()),
            ("weekly", policy.weekly, |t| {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }),
            ("monthly", policy.monthly, |t| t.format("%Y-%m").to_string()),
            ("yearly", policy.yearly, |t| t.format("%Y").to_string()),
        ];
        for (name, count, bucket) in rules {
            let Some(count) = count else { continue };
            let mut kept = 0;
            let mut last: Option<String> = None;
            for c in &completed {
                if kept >= count {
                    break;
                }
                let b = bucket(&c.started_at.with_timezone(&tz));
                if last.as_deref() != Some(b.as_str()) {
                    reasons
                        .entry(&c.id)
                        .or_default()
                        .push(format!("{name} ({b})"));
                    kept += 1;
                    last = Some(b);
                }
            }
        }
    }
    if let Some(newest) = completed.first() {
        reasons
            .entry(&newest.id)
            .or_default()
            .insert(0, "newest".into());
    }

    // An incremental is useless without its chain: keep every ancestor of a kept backup.
    let by_id: HashMap<&str, &Candidate> = items.iter().map(|c| (c.id.as_str(), c)).collect();
    let kept: Vec<String> = reasons.keys().map(|k| k.to_string()).collect();
    for id in kept {
        let mut seen = HashSet::new();
        let mut child = id.clone();
        while let Some(parent) = by_id.get(child.as_str()).and_then(|c| c.parent.clone()) {
            if !seen.insert(parent.clone()) {
                break;
            }
            if let Some(p) = by_id.get(parent.as_str()) {
                reasons
                    .entry(&p.id)
                    .or_default()
                    .push(format!("needed by {child}"));
            }
            child = parent;
        }
    }

    sorted
        .iter()
        .map(|c| match reasons.remove(c.id.as_str()) {
            Some(mut r) => {
                r.dedup();
                Decision {
                    id: c.id.clone(),
                    keep: true,
                    reasons: r,
                }
            }
            None => Decision {
                id: c.id.clone(),
                keep: false,
                reasons: vec![if c.completed {
                    "not kept by any retention rule".into()
                } else {
                    "incomplete (interrupted or failed)".into()
                }],
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn full(id: &str, when: &str) -> Candidate {
        Candidate {
            id: id.into(),
            started_at: at(when),
            completed: true,
            parent: None,
        }
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    fn policy(daily: u32, weekly: u32, monthly: u32, yearly: u32) -> RetentionPolicy {
        let some = |n| (n > 0).then_some(n);
        RetentionPolicy {
            daily: some(daily),
            weekly: some(weekly),
            monthly: some(monthly),
            yearly: some(yearly),
        }
    }

    #[test]
    fn several_backups_a_day_keep_only_the_newest_of_each_day() {
        let items = [
            full("a", "2024-03-14T01:00:00Z"),
            full("b", "2024-03-14T13:00:00Z"),
            full("c", "2024-03-15T01:00:00Z"),
            full("d", "2024-03-15T13:00:00Z"),
            full("e", "2024-03-15T23:00:00Z"),
        ];
        let d = decide(&policy(2, 0, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&d), ["e", "b"]);
        assert_eq!(d[0].reasons, ["newest", "daily (2024-03-15)"]);
    }

    #[test]
    fn the_year_boundary_splits_years_but_not_iso_weeks() {
        // 2024-12-30 and 2025-01-02 are both in ISO week 2025-W01.
        let items = [
            full("dec30", "2024-12-30T12:00:00Z"),
            full("dec31", "2024-12-31T12:00:00Z"),
            full("jan02", "2025-01-02T12:00:00Z"),
        ];
        let weekly = decide(&policy(0, 5, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&weekly), ["jan02"]);
        let yearly = decide(&policy(0, 0, 0, 5), chrono_tz::UTC, &items);
        assert_eq!(kept(&yearly), ["jan02", "dec31"]);
        assert!(yearly[1].reasons.contains(&"yearly (2024)".to_string()));
    }

    #[test]
    fn days_follow_the_time_zone_across_a_dst_change() {
        // Europe/Berlin moves to summer time on 2024-03-31 at 02:00 local. 22:30Z on 30 March
        // is 23:30 local (30 March); 22:30Z on 31 March is 00:30 on 1 April local.
        let items = [
            full("mar30", "2024-03-30T22:30:00Z"),
            full("mar31-early", "2024-03-31T00:30:00Z"),
            full("apr01-local", "2024-03-31T22:30:00Z"),
        ];
        let berlin = decide(&policy(10, 0, 0, 0), chrono_tz::Europe::Berlin, &items);
        assert_eq!(kept(&berlin), ["apr01-local", "mar31-early", "mar30"]);
        let utc = decide(&policy(10, 0, 0, 0), chrono_tz::UTC, &items);
        // In UTC the last two are on the same day, so only the newer stays.
        assert_eq!(kept(&utc), ["apr01-local", "mar30"]);
    }

    #[test]
    fn incomplete_backups_never_count_and_the_newest_complete_is_kept() {
        let mut broken = full("broken", "2024-03-16T01:00:00Z");
        broken.completed = false;
        let items = [full("old", "2024-01-01T00:00:00Z"), broken];
        let d = decide(&policy(0, 0, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&d), ["old"]);
        let d = decide(&policy(1, 0, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&d), ["old"]);
        assert_eq!(d[0].reasons, ["incomplete (interrupted or failed)"]);
    }

    #[test]
    fn a_kept_incremental_keeps_its_whole_chain() {
        let inc = |id: &str, when: &str, parent: &str| Candidate {
            parent: Some(parent.into()),
            ..full(id, when)
        };
        let items = [
            full("f1", "2024-01-01T00:00:00Z"),
            inc("i1", "2024-01-02T00:00:00Z", "f1"),
            inc("i2", "2024-01-03T00:00:00Z", "i1"),
            full("f2", "2024-01-03T12:00:00Z"),
        ];
        // One daily: only the newest; nothing depends on a full.
        let d = decide(&policy(1, 0, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&d), ["f2"]);
        // Two dailies: f2 (3 January) and i1 (2 January), which needs f1.
        let d = decide(&policy(2, 0, 0, 0), chrono_tz::UTC, &items);
        assert_eq!(kept(&d), ["f2", "i1", "f1"]);
        let f1 = d.iter().find(|d| d.id == "f1").unwrap();
        assert_eq!(f1.reasons, ["needed by i1"]);
    }
}
