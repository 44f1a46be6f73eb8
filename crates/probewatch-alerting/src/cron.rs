//! Five-field cron patterns (minute, hour, day of month, month, day of week) as crontab(5)
//! reads them, for maintenance windows that recur on something other than a weekly
//! rhythm ("02:00 on the first of each month": `0 2 1 * *`). Written here because the cron
//! crates work in chrono or in an older jiff than ours, and a window needs only "which local
//! minutes match", not a scheduler.

use jiff::civil::Date;

/// A parsed pattern: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronPattern {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day of month and day of week both restricted: a day matches if either does
    /// (crontab's rule); otherwise the restricted one decides.
    days_restricted: bool,
    weekdays_restricted: bool,
    /// The pattern as written.
    pub text: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field: its name for errors, its range, and names for its values.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(u32::try_from(i).unwrap_or(0) + self.min);
        }
        let v: u32 = text
            .parse()
            .map_err(|_| format!("{} {text:?} is not a number", self.name))?;
        // Sunday may be written 7 as well as 0.
        let v = if self.name == "day of week" && v == 7 {
            0
        } else {
            v
        };
        if v < self.min || v > self.max {
            return Err(format!(
                "{} {v} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The field's bits, and whether it restricts the day (see below).
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        // As Vixie cron: a field that starts with `*` (`*`, `*/2`) does not restrict the
        // day for the day-of-month-or-day-of-week rule.
        let restricted = !text.starts_with('*');
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} step {s:?} is not a positive number", self.name)
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (from, to) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?)
            } else {
                let v = self.value(range)?;
                // "5/15" means from 5 to the end, every 15.
                (v, if step > 1 { self.max } else { v })
            };
            if from > to {
                return Err(format!("{} range {range:?} runs backwards", self.name));
            }
            // Values are at most 59, so a step past that simply ends the walk.
            for v in (from..=to).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
                bits |= 1u64 << v;
            }
        }
        Ok((bits, restricted))
    }
}

impl CronPattern {
    /// Parses `minute hour day-of-month month day-of-week` (numbers, `*`, ranges `a-b`,
    /// steps `/n`, lists `a,b`, month and weekday names), or one of `@yearly`,
    /// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
    pub fn parse(text: &str) -> Result<CronPattern, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "cron {text:?} has {} fields; it needs five: minute hour day-of-month month \
                 day-of-week",
                fields.len()
            ));
        };
        let field = |name, min, max, names| Field {
            name,
            min,
            max,
            names,
        };
        let err = |e: String| format!("cron {text:?}: {e}");
        let (minutes, _) = field("minute", 0, 59, &[]).parse(minute).map_err(err)?;
        let (hours, _) = field("hour", 0, 23, &[]).parse(hour).map_err(err)?;
        let (days, days_restricted) = field("day of month", 1, 31, &[]).parse(day).map_err(err)?;
        let (months, _) = field("month", 1, 12, &MONTHS).parse(month).map_err(err)?;
        let (weekdays, weekdays_restricted) = field("day of week", 0, 6, &WEEKDAYS)
            .parse(weekday)
            .map_err(err)?;
        Ok(CronPattern {
            minutes,
            hours: u32::try_from(hours).unwrap_or(0),
            days: u32::try_from(days).unwrap_or(0),
            months: u16::try_from(months).unwrap_or(0),
            weekdays: u8::try_from(weekdays).unwrap_or(0),
            days_restricted,
            weekdays_restricted,
            text: text.to_string(),
        })
    }

    /// Whether the pattern fires on some minute of `date`.
    pub fn matches_date(&self, date: Date) -> bool {
        let month = u32::try_from(date.month()).unwrap_or(0);
        if self.months & (1 << month) == 0 {
            return false;
        }
        let day = self.days & (1 << u32::try_from(date.day()).unwrap_or(0)) != 0;
        let weekday =
            self.weekdays & (1 << date.weekday().to_sunday_zero_offset().unsigned_abs()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// The minutes of the day (0 = 00:00) the pattern fires at on `date`, in order.
    pub fn minutes_on(&self, date: Date) -> Vec<u16> {
        if !self.matches_date(date) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for hour in (0..24u16).filter(|h| self.hours & (1 << h) != 0) {
            for minute in (0..60u16).filter(|m| self.minutes & (1 << m) != 0) {
                out.push(hour * 60 + minute);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        let p = CronPattern::parse("0,30 2-4 * * mon-fri").expect("parses");
        // 2026-11-27 is a Friday, the 28th a Saturday.
        let times: Vec<String> = p
            .minutes_on(date(2026, 11, 27))
            .iter()
            .map(|m| format!("{:02}:{:02}", m / 60, m % 60))
            .collect();
        assert_eq!(
            times,
            ["02:00", "02:30", "03:00", "03:30", "04:00", "04:30"]
        );
        assert!(p.minutes_on(date(2026, 11, 28)).is_empty());
        let every = CronPattern::parse("*/20 9 * * *").expect("parses");
        assert_eq!(every.minutes_on(date(2026, 1, 1)).len(), 3);
        let from_five = CronPattern::parse("5/20 9 * * *").expect("parses");
        assert_eq!(
            from_five.minutes_on(date(2026, 1, 1))[0] % 60,
            5,
            "5/20: 5, 25, 45"
        );
        assert_eq!(
            CronPattern::parse("@monthly"),
            CronPattern::parse("0 0 1 * *").map(|p| CronPattern {
                text: "@monthly".into(),
                ..p
            })
        );
        // Sunday is 0 or 7.
        let sunday = date(2026, 11, 29);
        assert!(
            CronPattern::parse("0 0 * * 7")
                .expect("7")
                .matches_date(sunday)
        );
        assert!(
            CronPattern::parse("0 0 * * SUN")
                .expect("SUN")
                .matches_date(sunday)
        );
        assert!(
            CronPattern::parse("0 0 * dec *")
                .expect("dec")
                .matches_date(date(2026, 12, 3))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // crontab(5): the 1st of the month, and every Monday.
        let p = CronPattern::parse("0 3 1 * mon").expect("parses");
        assert!(p.matches_date(date(2026, 12, 1)), "the 1st (a Tuesday)");
        assert!(p.matches_date(date(2026, 11, 30)), "a Monday");
        assert!(!p.matches_date(date(2026, 12, 2)));
        // Only one restricted: that one decides.
        let first = CronPattern::parse("0 3 1 * *").expect("parses");
        assert!(!first.matches_date(date(2026, 11, 30)));
    }

    #[test]
    fn a_huge_step_ends_the_walk() {
        let p = CronPattern::parse("59/4294967295 * * * *").expect("parses");
        assert_eq!(
            p.minutes_on(date(2026, 1, 1)).len(),
            24,
            "minute 59 of every hour"
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("0 2 * *", "has 4 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("0 25 * * *", "hour 25"),
            ("0 0 0 * *", "day of month 0"),
            ("0 0 * foo *", "month \"foo\" is not a number"),
            ("0 0 * * 1-", "day of week \"\" is not a number"),
            ("*/0 * * * *", "step \"0\""),
            ("0 5-2 * * *", "runs backwards"),
        ] {
            let err = CronPattern::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
