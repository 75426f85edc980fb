use super::parse::*;
use super::*;
use chrono::{Duration, Timelike, Weekday};
use std::collections::BTreeSet;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn sched(expr: &str) -> Schedule {
    Schedule::parse(expr).unwrap_or_else(|e| panic!("`{expr}` should parse: {e}"))
}

fn err(expr: &str) -> ScheduleError {
    match Schedule::parse(expr) {
        Ok(s) => panic!("`{expr}` should be rejected, got {s:?}"),
        Err(e) => e,
    }
}

/// Weekdays of the fire times within the week after `from`.
fn weekdays_in_week(expr: &str, from: DateTime<Utc>) -> BTreeSet<u32> {
    let s = sched(expr);
    let end = from + Duration::days(7);
    let mut days = BTreeSet::new();
    let mut t = from;
    while let Some(next) = s.next_after(&t) {
        if next >= end {
            break;
        }
        days.insert(next.weekday().num_days_from_sunday());
        // Jump to the next day to keep the loop short.
        t = next.date_naive().and_hms_opt(23, 59, 59).unwrap().and_utc();
    }
    days
}

// 2024-06-02 is a Sunday.
const SUNDAY: (i32, u32, u32) = (2024, 6, 2);

fn sunday_noon() -> DateTime<Utc> {
    utc(SUNDAY.0, SUNDAY.1, SUNDAY.2, 12, 0, 0)
}

#[test]
fn monday_is_one() {
    let next = sched("0 8 * * 1").next_after(&sunday_noon()).unwrap();
    assert_eq!(next, utc(2024, 6, 3, 8, 0, 0));
    assert_eq!(next.weekday(), Weekday::Mon);
}

#[test]
fn sunday_is_zero_and_seven() {
    let from = utc(2024, 6, 3, 0, 0, 0); // Monday
    for expr in ["0 8 * * 0", "0 8 * * 7", "0 8 * * sun", "0 8 * * SUN"] {
        let next = sched(expr).next_after(&from).unwrap();
        assert_eq!(next, utc(2024, 6, 9, 8, 0, 0), "{expr}");
        assert_eq!(next.weekday(), Weekday::Sun, "{expr}");
    }
}

#[test]
fn saturday_is_six() {
    let next = sched("0 8 * * 6").next_after(&sunday_noon()).unwrap();
    assert_eq!(next.weekday(), Weekday::Sat);
}

#[test]
fn friday_to_sunday_ranges() {
    let expect: BTreeSet<u32> = [5, 6, 0].into();
    for expr in [
        "0 0 * * 5-7",
        "0 0 * * fri-sun",
        "0 0 * * Fri-Sun",
        "0 0 * * 5,6,7",
    ] {
        assert_eq!(weekdays_in_week(expr, sunday_noon()), expect, "{expr}");
    }
    // Every minute on Fri, Sat, Sun: the first fire after Thursday night
    // is Friday 00:00, and Sunday 23:59 is followed by Friday again.
    let s = sched("* * * * 5-7");
    assert_eq!(
        s.next_after(&utc(2024, 6, 6, 23, 59, 30)).unwrap(),
        utc(2024, 6, 7, 0, 0, 0)
    );
    assert_eq!(
        s.next_after(&utc(2024, 6, 9, 23, 59, 0)).unwrap(),
        utc(2024, 6, 14, 0, 0, 0)
    );
}

#[test]
fn weekdays_skip_weekend() {
    let expect: BTreeSet<u32> = [1, 2, 3, 4, 5].into();
    assert_eq!(weekdays_in_week("0 9 * * 1-5", sunday_noon()), expect);
    assert_eq!(weekdays_in_week("0 9 * * mon-fri", sunday_noon()), expect);
    // Friday 09:00 is followed by Monday 09:00.
    let s = sched("0 9 * * 1-5");
    assert_eq!(
        s.next_after(&utc(2024, 6, 7, 9, 0, 0)).unwrap(),
        utc(2024, 6, 10, 9, 0, 0)
    );
}

#[test]
fn weekday_steps_and_full_range() {
    assert_eq!(
        weekdays_in_week("0 0 * * */2", sunday_noon()),
        [0, 2, 4, 6].into()
    );
    assert_eq!(
        weekdays_in_week("0 0 * * 1-5/2", sunday_noon()),
        [1, 3, 5].into()
    );
    assert_eq!(
        weekdays_in_week("0 0 * * 0-7", sunday_noon()),
        (0..7).collect()
    );
}

#[test]
fn every_quarter_hour() {
    let s = sched("*/15 * * * *");
    let times = s.upcoming(&utc(2024, 6, 2, 10, 0, 0), 5);
    let minutes: Vec<u32> = times.iter().map(|t| t.minute()).collect();
    assert_eq!(minutes, [15, 30, 45, 0, 15]);
    assert!(times.iter().all(|t| t.second() == 0));
    assert_eq!(times[3], utc(2024, 6, 2, 11, 0, 0));
}

#[test]
fn first_of_month() {
    let s = sched("0 0 1 * *");
    assert_eq!(
        s.upcoming(&utc(2024, 1, 15, 0, 0, 0), 3),
        [
            utc(2024, 2, 1, 0, 0, 0),
            utc(2024, 3, 1, 0, 0, 0),
            utc(2024, 4, 1, 0, 0, 0)
        ]
    );
}

#[test]
fn or_rule_when_both_day_fields_restricted() {
    let s = sched("0 0 13 * 5");
    // 2024-08-13 is a Tuesday: fires because it is the 13th.
    assert_eq!(utc(2024, 8, 13, 0, 0, 0).weekday(), Weekday::Tue);
    assert_eq!(
        s.next_after(&utc(2024, 8, 12, 0, 0, 0)).unwrap(),
        utc(2024, 8, 13, 0, 0, 0)
    );
    // 2024-08-16 is a Friday, not the 13th: fires because it is Friday.
    assert_eq!(
        s.next_after(&utc(2024, 8, 13, 0, 0, 0)).unwrap(),
        utc(2024, 8, 16, 0, 0, 0)
    );
    // 2024-09-13 is a Friday the 13th: fires once.
    let times = s.upcoming(&utc(2024, 9, 12, 0, 0, 0), 2);
    assert_eq!(
        times,
        [utc(2024, 9, 13, 0, 0, 0), utc(2024, 9, 20, 0, 0, 0)]
    );
}

#[test]
fn and_rule_when_a_day_field_starts_with_star() {
    // crontab: `*/2` counts as unrestricted, so both must match:
    // odd days of the month that are Mondays.
    let s = sched("0 0 */2 * 1");
    for t in s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 20) {
        assert_eq!(t.weekday(), Weekday::Mon, "{t}");
        assert_eq!(t.day() % 2, 1, "{t}");
    }
}

#[test]
fn six_and_seven_fields() {
    let next = sched("30 0 8 * * 1").next_after(&sunday_noon()).unwrap();
    assert_eq!(next, utc(2024, 6, 3, 8, 0, 30));
    assert_eq!(next.weekday(), Weekday::Mon);

    // Seconds field works.
    let s = sched("*/20 * * * * *");
    assert_eq!(
        s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 3),
        [
            utc(2024, 1, 1, 0, 0, 20),
            utc(2024, 1, 1, 0, 0, 40),
            utc(2024, 1, 1, 0, 1, 0)
        ]
    );

    // OR rule applies in the 6-field form too.
    let s = sched("0 0 0 13 * fri");
    assert_eq!(
        s.next_after(&utc(2024, 8, 13, 0, 0, 0)).unwrap(),
        utc(2024, 8, 16, 0, 0, 0)
    );

    // Quartz-style `?` means the same as `*`.
    let s = sched("0 0 8 ? * MON");
    assert_eq!(
        s.next_after(&sunday_noon()).unwrap(),
        utc(2024, 6, 3, 8, 0, 0)
    );

    // 7 fields: the year restricts.
    let s = sched("0 0 0 1 1 * 2030");
    assert_eq!(
        s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 5),
        [utc(2030, 1, 1, 0, 0, 0)]
    );
}

#[test]
fn shorthands() {
    let from = utc(2024, 6, 5, 13, 7, 0); // Wednesday
    let next = |expr: &str| sched(expr).next_after(&from).unwrap();
    assert_eq!(next("@daily"), utc(2024, 6, 6, 0, 0, 0));
    assert_eq!(next("@midnight"), utc(2024, 6, 6, 0, 0, 0));
    assert_eq!(next("@hourly"), utc(2024, 6, 5, 14, 0, 0));
    assert_eq!(next("@weekly"), utc(2024, 6, 9, 0, 0, 0));
    assert_eq!(next("@weekly").weekday(), Weekday::Sun);
    assert_eq!(next("@monthly"), utc(2024, 7, 1, 0, 0, 0));
    assert_eq!(next("@yearly"), utc(2025, 1, 1, 0, 0, 0));
    assert_eq!(next("@annually"), utc(2025, 1, 1, 0, 0, 0));
    assert_eq!(next("  @DAILY "), utc(2024, 6, 6, 0, 0, 0));
}

#[test]
fn month_names_and_lists() {
    let s = sched("0 12 1 jan,Jul *");
    assert_eq!(
        s.upcoming(&utc(2024, 3, 1, 0, 0, 0), 2),
        [utc(2024, 7, 1, 12, 0, 0), utc(2025, 1, 1, 12, 0, 0)]
    );
    let s = sched("0 0 1 MAR-may *");
    let months: Vec<u32> = s
        .upcoming(&utc(2024, 1, 1, 0, 0, 0), 4)
        .iter()
        .map(|t| t.month())
        .collect();
    assert_eq!(months, [3, 4, 5, 3]);
}

#[test]
fn strictly_after() {
    let s = sched("0 8 * * *");
    let at = utc(2024, 6, 3, 8, 0, 0);
    assert_eq!(s.next_after(&at).unwrap(), utc(2024, 6, 4, 8, 0, 0));
    let just_before = at - Duration::milliseconds(1);
    assert_eq!(s.next_after(&just_before).unwrap(), at);
    let just_after = at + Duration::milliseconds(1);
    assert_eq!(s.next_after(&just_after).unwrap(), utc(2024, 6, 4, 8, 0, 0));
}

#[test]
fn never_firing_and_far_future() {
    let s = sched("0 0 30 2 *");
    assert_eq!(s.next_after(&utc(2024, 1, 1, 0, 0, 0)), None);
    assert!(s.upcoming(&utc(2024, 1, 1, 0, 0, 0), 3).is_empty());
    let s = sched("* * * * *");
    assert_eq!(s.next_after(&DateTime::<Utc>::MAX_UTC), None);
    assert_eq!(
        s.next_after(&DateTime::<Utc>::MIN_UTC),
        Some(utc(1970, 1, 1, 0, 0, 0))
    );
    assert_eq!(
        s.next_after(&utc(1900, 5, 5, 5, 5, 5)),
        Some(utc(1970, 1, 1, 0, 0, 0))
    );
    // Leap day.
    let s = sched("0 0 29 2 *");
    assert_eq!(
        s.next_after(&utc(2024, 3, 1, 0, 0, 0)).unwrap(),
        utc(2028, 2, 29, 0, 0, 0)
    );
}

#[test]
fn source_and_from_str() {
    let s: Schedule = "0 8 * * 1".parse().unwrap();
    assert_eq!(s.source(), "0 8 * * 1");
    assert_eq!(s.to_string(), "0 8 * * 1");
}

#[test]
fn field_count_errors() {
    for (expr, found) in [("* * * *", 4), ("* * * * * * * *", 8), ("5", 1)] {
        let e = err(expr);
        assert_eq!(e, ScheduleError::FieldCount { found }, "{expr}");
        let msg = e.to_string();
        assert!(msg.contains("expected 5 fields"), "{msg}");
        assert!(msg.contains(&format!("found {found}")), "{msg}");
    }
}

#[test]
fn out_of_range_errors() {
    let e = err("61 * * * *");
    assert!(matches!(
        e,
        ScheduleError::OutOfRange {
            field: ScheduleField::Minute,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "minute value 61 is out of range: expected 0-59"
    );
    let e = err("* * * * 8");
    assert!(matches!(
        e,
        ScheduleError::OutOfRange {
            field: ScheduleField::DayOfWeek,
            ..
        }
    ));
    assert!(e.to_string().contains("day-of-week value 8"), "{e}");
    assert!(e.to_string().contains("0-7"), "{e}");
    for (expr, field) in [
        ("* 24 * * *", ScheduleField::Hour),
        ("* * 0 * *", ScheduleField::DayOfMonth),
        ("* * 32 * *", ScheduleField::DayOfMonth),
        ("* * * 13 *", ScheduleField::Month),
        ("60 * * * * *", ScheduleField::Second),
        ("0 0 0 * * * 2200", ScheduleField::Year),
        ("99999999999999999999 * * * *", ScheduleField::Minute),
        ("1-99 * * * *", ScheduleField::Minute),
    ] {
        match err(expr) {
            ScheduleError::OutOfRange { field: f, .. } => assert_eq!(f, field, "{expr}"),
            other => panic!("{expr}: unexpected {other:?}"),
        }
    }
}

#[test]
fn bad_token_errors() {
    let e = err("* * * * funday");
    assert_eq!(
        e,
        ScheduleError::InvalidToken {
            field: ScheduleField::DayOfWeek,
            token: "funday".into()
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("day-of-week") && msg.contains("funday"),
        "{msg}"
    );
    assert!(msg.contains("sun, mon"), "{msg}");

    assert!(matches!(
        err("* * * foo *"),
        ScheduleError::InvalidToken {
            field: ScheduleField::Month,
            ..
        }
    ));
    assert!(matches!(
        err("mon * * * *"),
        ScheduleError::InvalidToken {
            field: ScheduleField::Minute,
            ..
        }
    ));
    assert!(matches!(
        err("1,,2 * * * *"),
        ScheduleError::InvalidToken { .. }
    ));
    assert!(matches!(
        err("-5 * * * *"),
        ScheduleError::InvalidToken { .. }
    ));
    assert!(matches!(
        err("+5 * * * *"),
        ScheduleError::InvalidToken { .. }
    ));
    assert!(matches!(
        err("? * * * *"),
        ScheduleError::InvalidToken { .. }
    ));
    assert!(matches!(
        err("L * * * *"),
        ScheduleError::InvalidToken { .. }
    ));
    assert!(matches!(
        err("*/0 * * * *"),
        ScheduleError::InvalidStep { .. }
    ));
    assert!(matches!(
        err("*/ * * * *"),
        ScheduleError::InvalidStep { .. }
    ));
    assert!(matches!(
        err("*/1/2 * * * *"),
        ScheduleError::InvalidStep { .. }
    ));
    assert!(matches!(
        err("5/15 * * * *"),
        ScheduleError::StepWithoutRange { .. }
    ));
    assert!(matches!(
        err("* 22-2 * * *"),
        ScheduleError::BackwardsRange { .. }
    ));
    assert!(matches!(
        err("* * * * sat-mon"),
        ScheduleError::BackwardsRange { .. }
    ));
    assert!(matches!(
        err("@reboot"),
        ScheduleError::UnknownShorthand { .. }
    ));
    assert!(matches!(
        err("@daily 5"),
        ScheduleError::ShorthandWithFields { .. }
    ));
}

#[test]
fn empty_and_garbage_never_panic() {
    assert_eq!(err(""), ScheduleError::Empty);
    assert_eq!(err("   \t\n"), ScheduleError::Empty);
    assert!(err("").to_string().contains("expected 5 fields"));
    for expr in [
        "💥",
        "日 月 火 水 木",
        "★ * * * *",
        "* * * * 月",
        "*/💥 * * * *",
        "1-💥 * * * *",
        "@💥",
        "\u{0}",
        "ǅ-ǅ * * * *",
        "- - - - -",
        "/ / / / /",
        ", , , , ,",
        "*-* * * * *",
        "4294967296/1 * * * *",
        "*/4294967296 * * * *",
    ] {
        let result = Schedule::parse(expr);
        assert!(result.is_err(), "{expr}: {result:?}");
        assert!(!result.unwrap_err().to_string().is_empty());
    }
    // A step longer than the range is valid: only the start is selected.
    assert!(Schedule::parse("0-59/4294967295 * * * *").is_ok());
    // Unicode whitespace separates fields like ASCII whitespace.
    assert!(Schedule::parse("0\u{3000}8 * * 1").is_ok());
}

/// Cross-check: the union of `cron` crate schedules fires exactly at the
/// minutes that crontab's matching rule selects.
#[test]
fn matches_crontab_rule_minute_by_minute() {
    let exprs = [
        "0 0 13 * 5",
        "30 6 1,15 * mon-wed",
        "*/7 */5 */3 */2 *",
        "0 12 * * 5-7",
        "0 0 */2 * 1",
        "15 9 * feb,aug 0",
    ];
    let start = utc(2024, 1, 27, 0, 0, 0);
    let end = start + Duration::days(62);
    for expr in exprs {
        let spec = parse_spec(expr).unwrap();
        let matches = |t: DateTime<Utc>| {
            let dom = spec.dom.contains(&t.day());
            let dow = spec.dow.contains(&t.weekday().num_days_from_sunday());
            let day = if spec.dom_star || spec.dow_star {
                dom && dow
            } else {
                dom || dow
            };
            spec.minute.contains(&t.minute())
                && spec.hour.contains(&t.hour())
                && spec.month.contains(&t.month())
                && day
        };
        let mut expected = Vec::new();
        let mut t = start + Duration::minutes(1);
        while t < end {
            if matches(t) {
                expected.push(t);
            }
            t += Duration::minutes(1);
        }
        let got: Vec<_> = sched(expr)
            .upcoming(&start, expected.len() + 1)
            .into_iter()
            .filter(|t| *t < end)
            .collect();
        assert!(!expected.is_empty(), "{expr}");
        assert_eq!(got, expected, "{expr}");
    }
}

#[test]
fn a_timezone_moves_the_fire_time_with_daylight_saving() {
    let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let s = Schedule::parse("0 8 * * 1").unwrap().in_timezone(berlin);
    // Winter: 08:00 CET is 07:00 UTC.
    let winter = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
    assert_eq!(
        s.next_after(&winter).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 30, 7, 0, 0).unwrap()
    );
    // Summer: 08:00 CEST is 06:00 UTC.
    let summer = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
    assert_eq!(
        s.next_after(&summer).unwrap(),
        Utc.with_ymd_and_hms(2026, 7, 6, 6, 0, 0).unwrap()
    );
}
