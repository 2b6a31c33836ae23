//! Calendar dates from Unix time, without a time-zone database: the error log's timestamps
//! and the `Date` header of responses (RFC 9110 §5.6.7) are both UTC.

use std::fmt::Write as _;

/// A UTC calendar time, computed without a time-zone database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Four-digit year.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl Civil {
    /// Converts seconds since the Unix epoch (days-from-civil, inverted: Howard Hinnant's
    /// well-known algorithm).
    pub fn from_unix(secs: u64) -> Civil {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            weekday: ((days + 4).rem_euclid(7)) as u32,
        }
    }
}

/// Month abbreviations, as both the access log and HTTP dates spell them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// Weekday abbreviations, Sunday first.
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Writes an IMF-fixdate (`Sun, 22 Nov 2026 10:00:00 GMT`, RFC 9110 §5.6.7) for `secs`.
pub fn http_date(secs: u64, out: &mut Vec<u8>) {
    let c = Civil::from_unix(secs);
    let mut s = String::with_capacity(29);
    let _ = write!(
        s,
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday as usize],
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    );
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        let mut d = Vec::new();
        http_date(784_111_777, &mut d);
        assert_eq!(d, b"Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
