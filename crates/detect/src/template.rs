//! Summary templates: `{placeholder}` text compiled once at load into literal and value parts.
//!
//! A template knows the language it is written in, because durations and times have to read
//! naturally inside its sentences: `30m` in a Japanese sentence reads as 30 metres, and a raw
//! RFC 3339 instant is not how the rest of the product shows time to people.

use crate::key::KeyField;
use authwatch_event::{Lang, duration_text, time_text};

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template {
    lang: Lang,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Counter(usize),
    Key(KeyField),
    Window,
    FirstSeen,
    LastSeen,
    SrcIp,
    Country,
    App,
}

/// Values available when a rule fires.
pub struct Values<'a> {
    /// Counter values as text, in the rule's counter order.
    pub counters: &'a [String],
    /// The key fields' text values.
    pub key: &'a dyn Fn(KeyField) -> String,
    /// The window size, or the session gap (ms).
    pub window_ms: i64,
    /// Start of the window (epoch ms).
    pub first_seen_ms: i64,
    /// Time of the deciding event (epoch ms).
    pub last_seen_ms: i64,
    /// The deciding event's source IP.
    pub src_ip: &'a str,
    /// The deciding event's country.
    pub country: &'a str,
    /// The deciding event's application.
    pub app: &'a str,
}

/// Placeholders every template may use besides counter names.
pub const PLACEHOLDERS: &[&str] = &[
    "user",
    "ip",
    "tenant",
    "asn",
    "device",
    "window",
    "first_seen",
    "last_seen",
    "src_ip",
    "country",
    "app",
];

impl Template {
    /// Compiles `text`, written in `lang`; `counters` are the rule's counter names. The error
    /// names the unknown placeholder.
    pub fn compile(text: &str, counters: &[String], lang: Lang) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {text:?}"))?;
            let name = after[..close].trim();
            let segment = if let Some(i) = counters.iter().position(|c| c == name) {
                Segment::Counter(i)
            } else if let Some(k) = KeyField::parse(name) {
                Segment::Key(k)
            } else {
                match name {
                    "window" => Segment::Window,
                    "first_seen" => Segment::FirstSeen,
                    "last_seen" => Segment::LastSeen,
                    "src_ip" => Segment::SrcIp,
                    "country" => Segment::Country,
                    "app" => Segment::App,
                    _ => {
                        return Err(format!(
                            "unknown placeholder {{{name}}}; expected a counter ({}) or one of: {}",
                            counters.join(", "),
                            PLACEHOLDERS.join(", ")
                        ));
                    }
                }
            };
            segments.push(segment);
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Template { lang, segments })
    }

    /// Fills the template, with durations and times in the template's language.
    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(t) => out.push_str(t),
                Segment::Counter(i) => out.push_str(v.counters.get(*i).map_or("", String::as_str)),
                Segment::Key(k) => {
                    let value = (v.key)(*k);
                    let (en, ja) = match k {
                        KeyField::User => ("user unknown", "ユーザー不明"),
                        KeyField::Ip => ("address unknown", "アドレス不明"),
                        KeyField::Tenant => ("tenant unknown", "テナント不明"),
                        KeyField::Asn => ("network unknown", "ネットワーク不明"),
                        KeyField::Device => ("device unknown", "デバイス不明"),
                        KeyField::Country => ("country unknown", "国不明"),
                        KeyField::App => ("app unknown", "アプリ不明"),
                    };
                    out.push_str(self.known(&value, en, ja));
                }
                Segment::Window => out.push_str(&duration_text(v.window_ms, self.lang)),
                Segment::FirstSeen => out.push_str(&time_text(v.first_seen_ms, self.lang)),
                Segment::LastSeen => out.push_str(&time_text(v.last_seen_ms, self.lang)),
                Segment::SrcIp => {
                    out.push_str(self.known(v.src_ip, "address unknown", "アドレス不明"))
                }
                Segment::Country => {
                    out.push_str(self.known(v.country, "country unknown", "国不明"))
                }
                Segment::App => out.push_str(self.known(v.app, "app unknown", "アプリ不明")),
            }
        }
        out
    }

    /// `value`, or words saying it is unknown: an address the geo databases do not know has no
    /// country, and "(last from 65.1.22.113, )" reads as a broken summary.
    fn known<'a>(&self, value: &'a str, en: &'static str, ja: &'static str) -> &'a str {
        match (value.is_empty(), self.lang) {
            (false, _) => value,
            (true, Lang::Ja) => ja,
            (true, _) => en,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-06T12:28:51.349Z.
    const T: i64 = 1_767_702_531_349;

    fn values<'a>(key: &'a dyn Fn(KeyField) -> String, counters: &'a [String]) -> Values<'a> {
        Values {
            counters,
            key,
            window_ms: 10 * 60_000,
            first_seen_ms: T - 90_000,
            last_seen_ms: T,
            src_ip: "192.0.2.7",
            country: "JP",
            app: "",
        }
    }

    fn aiko(k: KeyField) -> String {
        if k == KeyField::User {
            "aiko".to_owned()
        } else {
            String::new()
        }
    }

    #[test]
    fn renders_counters_keys_and_fixed_values() {
        let t = Template::compile(
            "{denied} pushes to {user} in {window}",
            &["denied".into()],
            Lang::En,
        )
        .unwrap();
        assert_eq!(
            t.render(&values(&aiko, &["7".to_owned()])),
            "7 pushes to aiko in 10m"
        );
    }

    #[test]
    fn durations_and_times_follow_the_template_language() {
        let text = |lang| {
            Template::compile(
                "{user}: {window} / {first_seen} / {last_seen} / {src_ip}",
                &[],
                lang,
            )
            .unwrap()
            .render(&values(&aiko, &[]))
        };
        assert_eq!(
            text(Lang::En),
            "aiko: 10m / 2026-01-06 12:27:21 UTC / 2026-01-06 12:28:51 UTC / 192.0.2.7"
        );
        assert_eq!(
            text(Lang::Ja),
            "aiko: 10 分 / 2026-01-06 12:27:21（UTC） / 2026-01-06 12:28:51（UTC） / 192.0.2.7"
        );
    }

    #[test]
    fn facts_the_event_lacks_say_so() {
        // The event has a user but neither a country nor an address.
        let key = |k: KeyField| {
            if k == KeyField::User {
                "aiko".to_owned()
            } else {
                String::new()
            }
        };
        let mut v = values(&key, &[]);
        v.country = "";
        v.src_ip = "";
        let en = Template::compile("{user} from {src_ip} ({country})", &[], Lang::En).unwrap();
        assert_eq!(en.render(&v), "aiko from address unknown (country unknown)");
        let ja = Template::compile("{user}：{src_ip}（{country}）", &[], Lang::Ja).unwrap();
        assert_eq!(ja.render(&v), "aiko：アドレス不明（国不明）");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let e = Template::compile("{denid} pushes", &["denied".into()], Lang::En).unwrap_err();
        assert!(e.contains("{denid}"), "{e}");
        assert!(Template::compile("{open", &[], Lang::Ja).is_err());
    }
}
