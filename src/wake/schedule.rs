//! Awake at set hours: `[systemd] awake` windows such as
//! `Mon..Fri 08:00..18:00`, in which the generated `NAME-awake.timer` wakes
//! the service and `idlegate inhibit --during` holds it until the end.
//!
//! The grammar is a subset of systemd's calendar syntax (systemd.time(7)),
//! so that the start is an `OnCalendar=` value systemd reads as this module
//! does, plus an end:
//!
//! ```text
//! window   = [weekdays " "] ["*-*-* "] time ".." time
//! weekdays = day ["," day]... where day = NAME or NAME..NAME (forward in Mon..Sun)
//! NAME     = Mon Tue Wed Thu Fri Sat Sun, or the full name, any case
//! time     = H:MM or H:MM:SS (00:00:00 to 23:59:59)
//! ```
//!
//! No weekdays: every day. An end at or before the start ends on the next
//! day (`Fri 22:00..02:00` runs into Saturday). Local time, as systemd's
//! timers have it. [`Window::on_calendar`] is the start in systemd's
//! normalized form; [`left`] tells whether a moment is inside a window and
//! for how much longer.

use std::fmt::{self, Write};

/// The days' short names, Monday first (bit 0 of [`Window`]'s days).
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The days' full names, as systemd also takes them.
const FULL_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Every day of the week.
const EVERY_DAY: u8 = 0x7f;

/// Seconds in a day of the wall clock.
const DAY: u32 = 24 * 3600;

/// One window of `[systemd] awake`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The days it starts on, bit 0 Monday .. bit 6 Sunday.
    days: u8,
    /// Its start, in seconds after midnight.
    start: u32,
    /// Its end, in seconds after midnight (at or before `start`: the next day).
    end: u32,
    /// As written.
    text: String,
}

/// A moment on the local wall clock, as far as windows care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// The day of the week, 0 Monday .. 6 Sunday.
    pub weekday: u8,
    /// Seconds after midnight.
    pub second: u32,
}

/// Why a window does not parse: said after the value, e.g. "expected … ".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowError(String);

fn error(what: impl Into<String>) -> WindowError {
    WindowError(what.into())
}

impl std::str::FromStr for Window {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Window, WindowError> {
        const FORM: &str = "expected [WEEKDAYS] START..END, e.g. \"Mon..Fri 08:00..18:00\" (systemd calendar weekdays and times)";
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, date, times) = match words.as_slice() {
            // A time zone or anything else after the times.
            [.., last] if !last.contains(':') => return Err(error(FORM)),
            [times] => (None, None, *times),
            [first, times] if first.starts_with('*') => (None, Some(*first), *times),
            [days, times] => (Some(*days), None, *times),
            [days, date, times] => (Some(*days), Some(*date), *times),
            _ => return Err(error(FORM)),
        };
        if date.is_some_and(|d| d != "*-*-*") {
            return Err(error(
                "a window names weekdays, not dates: the date part can only be *-*-*",
            ));
        }
        let days = days.map_or(Ok(EVERY_DAY), weekdays)?;
        let (start, end) = times.split_once("..").ok_or_else(|| error(FORM))?;
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(error("the window ends when it starts: give an end time after the start (or before it, for the next day)"));
        }
        Ok(Window {
            days,
            start,
            end,
            text: words.join(" "),
        })
    }
}

/// `Mon..Fri,Sun`: the days' bits.
fn weekdays(text: &str) -> Result<u8, WindowError> {
    let mut days = 0u8;
    for item in text.split(',') {
        let (first, last) = match item.split_once("..") {
            Some((first, last)) => (day(first)?, day(last)?),
            None => (day(item)?, day(item)?),
        };
        if first > last {
            let tail = match last {
                0 => DAYS[0].to_owned(),
                _ => format!("Mon..{}", DAYS[last]),
            };
            return Err(error(format!(
                "{item}: a range of days goes forward from Mon to Sun: write {}..Sun,{tail}",
                DAYS[first]
            )));
        }
        for d in first..=last {
            days |= 1 << d;
        }
    }
    Ok(days)
}

/// A day's number, 0 Monday.
fn day(name: &str) -> Result<usize, WindowError> {
    DAYS.iter()
        .zip(FULL_DAYS)
        .position(|(short, full)| {
            name.eq_ignore_ascii_case(short) || name.eq_ignore_ascii_case(full)
        })
        .ok_or_else(|| {
            error(format!(
                "{name:?} is not a day of the week: expected Mon, Tue, Wed, Thu, Fri, Sat or Sun"
            ))
        })
}

/// `H:MM` or `H:MM:SS`: seconds after midnight.
fn time(text: &str) -> Result<u32, WindowError> {
    let bad = || {
        error(format!(
            "{text:?} is not a time of day: expected HH:MM or HH:MM:SS, such as 08:00 or 17:30:00 (one time: a window has one start and one end)"
        ))
    };
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let mut value = [0u32; 3];
    for (i, part) in parts.iter().enumerate() {
        let width_ok = if i == 0 {
            (1..=2).contains(&part.len())
        } else {
            part.len() == 2
        };
        if !width_ok || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        value[i] = part.parse().map_err(|_| bad())?;
    }
    let [h, m, s] = value;
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    Ok(h * 3600 + m * 60 + s)
}

/// `08:00:00`.
fn clock(second: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        second / 3600,
        second / 60 % 60,
        second % 60
    )
}

impl Window {
    /// The window's start as systemd normalizes an `OnCalendar=` value:
    /// `Mon..Fri *-*-* 08:00:00`, or `*-*-* 08:00:00` for every day.
    pub fn on_calendar(&self) -> String {
        let mut out = String::new();
        if self.days != EVERY_DAY {
            let mut d = 0;
            while d < 7 {
                if self.days & (1 << d) == 0 {
                    d += 1;
                    continue;
                }
                let mut last = d;
                while last + 1 < 7 && self.days & (1 << (last + 1)) != 0 {
                    last += 1;
                }
                let sep = if out.is_empty() { "" } else { "," };
                let _ = match last - d {
                    0 => write!(out, "{sep}{}", DAYS[d]),
                    1 => write!(out, "{sep}{},{}", DAYS[d], DAYS[last]),
                    _ => write!(out, "{sep}{}..{}", DAYS[d], DAYS[last]),
                };
                d = last + 1;
            }
            out.push(' ');
        }
        out.push_str("*-*-* ");
        out.push_str(&clock(self.start));
        out
    }

    /// Whether `now` is inside this window, and then the seconds to its end.
    pub fn left(&self, now: WallClock) -> Option<u32> {
        let starts_on = |weekday: u8| self.days & (1 << weekday) != 0;
        let t = now.second.min(DAY - 1);
        if self.end > self.start {
            return (starts_on(now.weekday) && (self.start..self.end).contains(&t))
                .then(|| self.end - t);
        }
        // Through midnight: begun today, or yesterday and not ended yet.
        if starts_on(now.weekday) && t >= self.start {
            Some(DAY - t + self.end)
        } else if starts_on((now.weekday + 6) % 7) && t < self.end {
            Some(self.end - t)
        } else {
            None
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether `now` is inside one of `windows`: then the seconds to the
/// latest end among those it is in.
pub fn left(windows: &[Window], now: WallClock) -> Option<u32> {
    windows.iter().filter_map(|w| w.left(now)).max()
}

/// Now, on the local wall clock (UTC if the time zone cannot be read).
pub fn now() -> WallClock {
    let (weekday, second) = crate::sys::local_weekday_and_second();
    WallClock { weekday, second }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(text: &str) -> Window {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn at(weekday: u8, hh: u32, mm: u32) -> WallClock {
        WallClock {
            weekday,
            second: hh * 3600 + mm * 60,
        }
    }

    #[test]
    fn the_start_is_systemds_normalized_calendar_form() {
        for (text, calendar) in [
            ("Mon..Fri 08:00..18:00", "Mon..Fri *-*-* 08:00:00"),
            ("08:00..18:00", "*-*-* 08:00:00"),
            ("sat,SUN 9:30..12:00", "Sat,Sun *-*-* 09:30:00"),
            (
                "Mon,Wed..Fri,Sun 07:05:09..07:06",
                "Mon,Wed..Fri,Sun *-*-* 07:05:09",
            ),
            ("Monday..Sunday *-*-* 23:00..01:00", "*-*-* 23:00:00"),
            ("Tue,Mon 00:00..00:01", "Mon,Tue *-*-* 00:00:00"),
        ] {
            assert_eq!(window(text).on_calendar(), calendar, "{text}");
        }
        assert_eq!(
            window("  Mon  08:00..09:00 ").to_string(),
            "Mon 08:00..09:00"
        );
    }

    #[test]
    fn bad_windows_say_what_is_expected() {
        for (text, said) in [
            ("", "expected [WEEKDAYS] START..END"),
            ("Mon..Fri 08:00", "expected [WEEKDAYS] START..END"),
            ("Mon Fri 08:00..09:00 x", "expected [WEEKDAYS] START..END"),
            ("Fri..Mon 08:00..18:00", "write Fri..Sun,Mon"),
            ("Mo 08:00..18:00", "\"Mo\" is not a day of the week"),
            ("Mon 24:00..18:00", "\"24:00\" is not a time of day"),
            ("Mon 08:60..18:00", "is not a time of day"),
            ("Mon 08..18:00", "is not a time of day"),
            ("Mon 08,12:00..18:00", "one start and one end"),
            ("Mon 08:00..18:00:0", "is not a time of day"),
            (
                "Mon 2026-*-* 08:00..18:00",
                "the date part can only be *-*-*",
            ),
            ("08:00..08:00", "the window ends when it starts"),
            (
                "Mon..Fri 08:00..18:00 Europe/Paris",
                "expected [WEEKDAYS] START..END",
            ),
        ] {
            let e = text.parse::<Window>().unwrap_err().to_string();
            assert!(e.contains(said), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_day_window_covers_its_hours_on_its_days() {
        let w = window("Mon..Fri 08:00..18:00");
        assert_eq!(w.left(at(0, 8, 0)), Some(10 * 3600));
        assert_eq!(w.left(at(4, 17, 59)), Some(60));
        assert_eq!(w.left(at(2, 7, 59)), None);
        assert_eq!(w.left(at(2, 18, 0)), None, "the end is outside");
        assert_eq!(w.left(at(5, 12, 0)), None, "Saturday");
    }

    #[test]
    fn a_night_window_runs_into_the_next_day() {
        let w = window("Fri 22:00..02:00");
        assert_eq!(w.left(at(4, 22, 0)), Some(4 * 3600));
        assert_eq!(
            w.left(at(5, 1, 0)),
            Some(3600),
            "Saturday night, begun Friday"
        );
        assert_eq!(w.left(at(5, 2, 0)), None);
        assert_eq!(w.left(at(4, 1, 0)), None, "Thursday's did not start");
        assert_eq!(w.left(at(5, 23, 0)), None);
        // Sunday's window runs into Monday: the week wraps.
        assert_eq!(window("Sun 23:00..01:00").left(at(0, 0, 30)), Some(1800));
    }

    #[test]
    fn overlapping_windows_hold_to_the_latest_end() {
        let windows = [window("Mon..Fri 08:00..12:00"), window("Mon 11:00..13:00")];
        assert_eq!(left(&windows, at(0, 11, 30)), Some(5400));
        assert_eq!(left(&windows, at(1, 11, 30)), Some(1800));
        assert_eq!(left(&windows, at(1, 12, 30)), None);
        assert_eq!(left(&[], at(1, 12, 30)), None);
    }

    #[test]
    fn a_leap_second_is_the_last_second_of_the_day() {
        let w = window("23:00..00:00");
        let leap = WallClock {
            weekday: 3,
            second: DAY,
        };
        assert_eq!(w.left(leap), Some(1));
    }
}
