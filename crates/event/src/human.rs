//! Durations and times as people read them in alert texts, in English and Japanese.
//!
//! Summaries of the compiled rules and of the SQL detections are both rendered with these, so an
//! alert reads the same whichever engine raised it, and `authwatch explain` shows time the same
//! way.

use crate::time::format_rfc3339_ms;

/// The language of a text, which decides how durations and times read inside its sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English: durations as in configuration and `authwatch explain` (`30m`, `1day 6h`), times
    /// as `2026-01-06 12:28:51 UTC`.
    En,
    /// Japanese: `30 分`, `1 日 6 時間`, times as `2026-01-06 12:28:51（UTC）`.
    Ja,
}

/// A duration as text in `lang`: `1day 6h` / `1 日 6 時間`. Units from days down to
/// milliseconds; zero parts are left out. Negative durations read as zero.
pub fn duration_text(ms: i64, lang: Lang) -> String {
    // Days are the largest unit: months and years have no fixed length, and detection windows
    // are far shorter.
    const UNITS: [(u64, &str, &str, &str); 5] = [
        (86_400_000, "day", "days", "日"),
        (3_600_000, "h", "h", "時間"),
        (60_000, "m", "m", "分"),
        (1_000, "s", "s", "秒"),
        (1, "ms", "ms", "ミリ秒"),
    ];
    let mut rest = u64::try_from(ms).unwrap_or(0);
    let mut parts = Vec::new();
    for (unit_ms, one, many, ja) in UNITS {
        let n = rest / unit_ms;
        rest %= unit_ms;
        if n == 0 {
            continue;
        }
        parts.push(match lang {
            Lang::En => format!("{n}{}", if n == 1 { one } else { many }),
            Lang::Ja => format!("{n} {ja}"),
        });
    }
    if parts.is_empty() {
        return match lang {
            Lang::En => "0s".to_owned(),
            Lang::Ja => "0 秒".to_owned(),
        };
    }
    parts.join(" ")
}

/// An instant as `authwatch explain` shows it: to the second, in UTC, marked the way each
/// language marks it (`2026-01-06 12:28:51 UTC`, `2026-01-06 12:28:51（UTC）`). Empty for an
/// instant outside the calendar's range, as before.
pub fn time_text(ms: i64, lang: Lang) -> String {
    let Ok(rfc) = format_rfc3339_ms(ms) else {
        return String::new();
    };
    let clock = rfc.get(..19).unwrap_or(&rfc).replace('T', " ");
    match lang {
        Lang::En => format!("{clock} UTC"),
        Lang::Ja => format!("{clock}（UTC）"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-06T12:28:51.349Z.
    const T: i64 = 1_767_702_531_349;

    #[test]
    fn japanese_durations_read_as_words() {
        const S: i64 = 1_000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        let ja = |ms| duration_text(ms, Lang::Ja);
        assert_eq!(ja(30 * M), "30 分");
        assert_eq!(ja(6 * H), "6 時間");
        assert_eq!(ja(D + 6 * H), "1 日 6 時間");
        assert_eq!(ja(45 * S), "45 秒");
        assert_eq!(ja(90 * S), "1 分 30 秒");
        assert_eq!(ja(H + 30 * M), "1 時間 30 分");
        assert_eq!(ja(500), "500 ミリ秒");
        assert_eq!(ja(0), "0 秒");
        assert_eq!(ja(-5), "0 秒");
    }

    #[test]
    fn english_durations_keep_the_configuration_style() {
        const M: i64 = 60_000;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        let en = |ms| duration_text(ms, Lang::En);
        // Every window the built-in rules use reads as the rule writes it.
        for (ms, text) in [
            (10 * M, "10m"),
            (15 * M, "15m"),
            (30 * M, "30m"),
            (H, "1h"),
            (3 * H, "3h"),
            (6 * H, "6h"),
        ] {
            assert_eq!(en(ms), text);
        }
        assert_eq!(en(D + 6 * H), "1day 6h");
        assert_eq!(en(7 * D), "7days");
        assert_eq!(en(90_000), "1m 30s");
        assert_eq!(en(1_500), "1s 500ms");
        assert_eq!(en(0), "0s");
    }

    #[test]
    fn times_drop_milliseconds_and_mark_utc() {
        assert_eq!(time_text(T, Lang::En), "2026-01-06 12:28:51 UTC");
        assert_eq!(time_text(T, Lang::Ja), "2026-01-06 12:28:51（UTC）");
        assert_eq!(time_text(i64::MAX, Lang::En), "");
    }
}
