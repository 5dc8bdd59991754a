//! Calendar months (UTC): the period allowances, usage and billing are counted over.

use std::fmt;
use std::str::FromStr;

use time::{Date, OffsetDateTime, UtcOffset};

/// A calendar month in UTC, written `YYYY-MM`. Parsed once where it enters (a form, a query
/// string), then passed around typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    month: time::Month,
}

/// Text that is not a month.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAMonth(pub String);

impl fmt::Display for NotAMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a month (YYYY-MM).", self.0)
    }
}

impl std::error::Error for NotAMonth {}

impl Month {
    /// The month `at` falls in, in UTC.
    pub fn of(at: OffsetDateTime) -> Self {
        let at = at.to_offset(UtcOffset::UTC);
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    /// This month.
    pub fn now() -> Self {
        Self::of(OffsetDateTime::now_utc())
    }

    pub fn year(self) -> i32 {
        self.year
    }

    /// 1 to 12.
    pub fn number(self) -> u8 {
        u8::from(self.month)
    }

    /// Its first day.
    pub fn first_day(self) -> Date {
        // The first of a month within the year range `time` supports always exists.
        Date::from_calendar_date(self.year, self.month, 1).unwrap_or(Date::MIN)
    }

    /// Its first instant.
    pub fn start(self) -> OffsetDateTime {
        self.first_day().midnight().assume_utc()
    }

    /// The first instant of the month after it (the end of this one, exclusive).
    pub fn end(self) -> OffsetDateTime {
        self.next().start()
    }

    pub fn next(self) -> Self {
        match self.month {
            time::Month::December => Self {
                year: self.year + 1,
                month: time::Month::January,
            },
            m => Self {
                year: self.year,
                month: m.next(),
            },
        }
    }

    pub fn previous(self) -> Self {
        match self.month {
            time::Month::January => Self {
                year: self.year - 1,
                month: time::Month::December,
            },
            m => Self {
                year: self.year,
                month: m.previous(),
            },
        }
    }

    /// How many days it has.
    pub fn days(self) -> u8 {
        self.month.length(self.year)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

impl FromStr for Month {
    type Err = NotAMonth;
    fn from_str(s: &str) -> Result<Self, NotAMonth> {
        let raw = s.trim();
        let bad = || NotAMonth(raw.to_string());
        let (y, m) = raw.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        let month = time::Month::try_from(month).map_err(|_| bad())?;
        if !(1970..=9998).contains(&year) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }
}

impl serde::Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn months_are_utc_and_bounded() {
        let at = datetime!(2026-12-31 23:30 -02:00);
        let m = Month::of(at);
        assert_eq!(m.to_string(), "2027-01");
        let dec: Month = "2026-12".parse().unwrap();
        assert_eq!(dec.start(), datetime!(2026-12-01 0:00 UTC));
        assert_eq!(dec.end(), datetime!(2027-01-01 0:00 UTC));
        assert_eq!(dec.next(), m);
        assert_eq!(m.previous(), dec);
        assert_eq!(dec.days(), 31);
        assert_eq!("2028-02".parse::<Month>().unwrap().days(), 29);
    }

    #[test]
    fn only_months_parse() {
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "x", "2026-00"] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert_eq!(" 2026-03 ".parse::<Month>().unwrap().to_string(), "2026-03");
        assert_eq!(
            "2026-13".parse::<Month>().unwrap_err().to_string(),
            "\"2026-13\" is not a month (YYYY-MM)."
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_month_or_a_message(raw in ".{0,12}") {
            if let Ok(month) = raw.parse::<Month>() {
                proptest::prop_assert_eq!(month.to_string().parse::<Month>(), Ok(month));
                proptest::prop_assert!(month.start() < month.end());
            }
        }

        #[test]
        fn months_walk_both_ways(year in 1971i32..9990, number in 1u8..=12) {
            let month: Month = format!("{year:04}-{number:02}").parse().unwrap();
            proptest::prop_assert_eq!(month.next().previous(), month);
            proptest::prop_assert_eq!(month.end(), month.next().start());
        }
    }
}
