//! Numbers, money and dates as people read them, the same on the server and in the browser.

use time::OffsetDateTime;

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as people read sizes, in powers of 1,000 as file managers show them: `812 bytes`,
/// `4.2 KB`, `12.5 MB`, `1.3 GB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [(i64, &str); 3] = [(1_000_000_000, "GB"), (1_000_000, "MB"), (1_000, "KB")];
    for (size, unit) in UNITS {
        if n >= size {
            let tenths = (n * 10 + size / 2) / size;
            return if tenths % 10 == 0 || tenths >= 1000 {
                format!("{} {unit}", thousands(tenths / 10))
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

/// Micro-dollars as `$1,234.56` (small amounts keep four decimals: `$0.0042`).
pub fn dollars(micro: i64) -> String {
    if micro > 0 && micro < 100 {
        return "under $0.0001".into();
    }
    if micro > 0 && micro < 10_000 {
        return format!("${:.4}", micro as f64 / 1_000_000.0);
    }
    let cents = (micro + 5_000) / 10_000;
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

/// Micro-dollars as a plain decimal with six places (`1.234567`), for exports.
pub fn dollars_exact(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// Reads a dollar amount (`12`, `12.5`, `$1,200.00`) as micro-dollars, at most $1,000,000.
pub fn parse_dollars(raw: &str) -> Result<i64, String> {
    let cleaned: String = raw
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect();
    let bad = || {
        format!(
            "{:?} is not an amount in dollars, such as 25 or 12.50.",
            raw.trim()
        )
    };
    if cleaned.is_empty() {
        return Err("Enter an amount in dollars, such as 25 or 12.50.".into());
    }
    let (whole, cents) = cleaned.split_once('.').unwrap_or((cleaned.as_str(), ""));
    if whole.is_empty() && cents.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !cents.chars().all(|c| c.is_ascii_digit())
        || cents.len() > 2
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    if whole > 1_000_000 {
        return Err("The amount can be at most $1,000,000.".into());
    }
    let cents: i64 = format!("{cents:0<2}").parse().map_err(|_| bad())?;
    Ok(whole * 1_000_000 + cents * 10_000)
}

/// `2026-11-29`.
pub fn date(at: OffsetDateTime) -> String {
    let d = at.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `2026-11-29 14:03 UTC`.
pub fn date_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!("{} {:02}:{:02} UTC", date(at), at.hour(), at.minute())
}

/// `29 Nov 2026`.
pub fn day(at: OffsetDateTime) -> String {
    let month = at.month().to_string();
    format!("{} {} {}", at.day(), &month[..3], at.year())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(812), "812 bytes");
        assert_eq!(bytes(4_200), "4.2 KB");
        assert_eq!(bytes(12_549_000), "12.5 MB");
        assert_eq!(bytes(500_000_000), "500 MB");
        assert_eq!(bytes(5_000_000_000), "5 GB");
        assert_eq!(bytes(999_960), "1,000 KB");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(-12_345), "-12,345");
    }

    #[test]
    fn dollars_round_trip() {
        assert_eq!(parse_dollars("12.5"), Ok(12_500_000));
        assert_eq!(parse_dollars("$1,200.00"), Ok(1_200_000_000));
        assert_eq!(parse_dollars("0"), Ok(0));
        assert!(parse_dollars("-3").is_err());
        assert!(parse_dollars("1.234").is_err());
        assert!(parse_dollars("").is_err());
        assert!(parse_dollars("abc").is_err());
        assert!(parse_dollars("2000000").is_err());
        assert_eq!(dollars(1_200_000_000), "$1,200.00");
        assert_eq!(dollars(4_200), "$0.0042");
        assert_eq!(dollars(13), "under $0.0001");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars_exact(1_234_567), "1.234567");
        assert_eq!(dollars_exact(-5), "-0.000005");
    }

    #[test]
    fn dates() {
        let at = datetime!(2026-11-03 10:00 UTC);
        assert_eq!(date(at), "2026-11-03");
        assert_eq!(day(at), "3 Nov 2026");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_amount_or_a_message(raw in ".{0,40}") {
            match parse_dollars(&raw) {
                Ok(micro) => proptest::prop_assert!((0..=1_000_000_000_000).contains(&micro)),
                Err(message) => proptest::prop_assert!(!message.is_empty()),
            }
        }

        #[test]
        fn written_amounts_read_back(cents in 0i64..100_000_000) {
            let written = format!("{}.{:02}", cents / 100, cents % 100);
            proptest::prop_assert_eq!(parse_dollars(&written), Ok(cents * 10_000));
        }

        #[test]
        fn formatting_never_panics(n in proptest::num::i64::ANY) {
            let _ = (thousands(n), dollars(n), dollars_exact(n));
        }
    }
}
