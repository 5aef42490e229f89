//! Summary templates: `{placeholder}` text compiled once at load into literal and value parts.

use crate::key::KeyField;

/// A compiled template.
#[derive(Debug, Clone)]
pub struct Template(Vec<Segment>);

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
    /// The window size as written in the rule (`10m`).
    pub window: &'a str,
    /// First and last event time, RFC 3339.
    pub first_seen: &'a str,
    /// Last event time, RFC 3339.
    pub last_seen: &'a str,
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
    /// Compiles `text`; `counters` are the rule's counter names. The error names the unknown
    /// placeholder.
    pub fn compile(text: &str, counters: &[String]) -> Result<Self, String> {
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
        Ok(Template(segments))
    }

    /// Fills the template.
    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for s in &self.0 {
            match s {
                Segment::Literal(t) => out.push_str(t),
                Segment::Counter(i) => out.push_str(v.counters.get(*i).map_or("", String::as_str)),
                Segment::Key(k) => out.push_str(&(v.key)(*k)),
                Segment::Window => out.push_str(v.window),
                Segment::FirstSeen => out.push_str(v.first_seen),
                Segment::LastSeen => out.push_str(v.last_seen),
                Segment::SrcIp => out.push_str(v.src_ip),
                Segment::Country => out.push_str(v.country),
                Segment::App => out.push_str(v.app),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_keys_and_fixed_values() {
        let t =
            Template::compile("{denied} pushes to {user} in {window}", &["denied".into()]).unwrap();
        let key = |k: KeyField| {
            if k == KeyField::User {
                "aiko".to_owned()
            } else {
                String::new()
            }
        };
        let s = t.render(&Values {
            counters: &["7".to_owned()],
            key: &key,
            window: "10m",
            first_seen: "",
            last_seen: "",
            src_ip: "",
            country: "",
            app: "",
        });
        assert_eq!(s, "7 pushes to aiko in 10m");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let e = Template::compile("{denid} pushes", &["denied".into()]).unwrap_err();
        assert!(e.contains("{denid}"), "{e}");
        assert!(Template::compile("{open", &[]).is_err());
    }
}
