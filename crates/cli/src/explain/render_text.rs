//! The text report.

use super::*;

/// How the report writes times: in UTC, or in the time zone `--tz` names (an IANA name, its
/// rules from the tz database built into the program). Every time written is labelled with its
/// zone (`UTC`, or the zone's abbreviation at that instant: `JST`, `EDT`; its offset where the
/// zone has none: `UTC+04:00`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Clock {
    zone: Option<chrono_tz::Tz>,
}

impl Clock {
    /// `None` and `UTC` are UTC.
    pub(super) fn new(zone: Option<chrono_tz::Tz>) -> Clock {
        Clock {
            zone: zone.filter(|z| !matches!(z.name(), "UTC" | "Etc/UTC")),
        }
    }

    /// Whether times are in another zone than UTC.
    pub(super) fn is_local(&self) -> bool {
        self.zone.is_some()
    }

    /// The zone's name: `UTC` or `Asia/Tokyo`.
    pub(super) fn name(&self) -> &'static str {
        self.zone.map_or("UTC", |z| z.name())
    }

    /// `2026-01-05 09:00:00`, in the zone.
    pub(super) fn time(&self, ms: i64) -> String {
        let utc = || match format_rfc3339_ms(ms) {
            Ok(s) => s.get(..19).unwrap_or(&s).replace('T', " "),
            Err(_) => format!("{ms} ms"),
        };
        let Some(zone) = self.zone else {
            return utc();
        };
        match chrono::DateTime::from_timestamp_millis(ms) {
            Some(t) => t
                .with_timezone(&zone)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            None => utc(),
        }
    }

    /// The zone's label at an instant: `UTC`, `JST`, or the offset (`UTC+05:30`) where the tz
    /// database has no abbreviation.
    pub(super) fn label(&self, ms: i64) -> String {
        let Some(zone) = self.zone else {
            return "UTC".to_owned();
        };
        let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
            return "UTC".to_owned();
        };
        let t = t.with_timezone(&zone);
        let abbreviation = t.format("%Z").to_string();
        if abbreviation.starts_with(['+', '-']) {
            format!("UTC{}", t.format("%:z"))
        } else {
            abbreviation
        }
    }

    /// `text` marked with a zone label the way each language marks it: `… JST`, `…（JST）`.
    pub(super) fn mark(text: &str, label: &str, lang: Language) -> String {
        match lang {
            Language::En => format!("{text} {label}"),
            Language::Ja => format!("{text}（{label}）"),
        }
    }

    /// One instant, labelled.
    pub(super) fn at(&self, ms: i64, lang: Language) -> String {
        Clock::mark(&self.time(ms), &self.label(ms), lang)
    }

    /// `start → end` labelled, the end without its date when it is the same day; or the one
    /// instant when they are equal. When the zone's label changes between them (daylight
    /// saving time), each end has its own.
    pub(super) fn span(&self, start: i64, end: i64, lang: Language) -> String {
        if start == end {
            return self.at(start, lang);
        }
        let (s, e) = (self.time(start), self.time(end));
        let (ls, le) = (self.label(start), self.label(end));
        if ls != le {
            return format!(
                "{} → {}",
                Clock::mark(&s, &ls, lang),
                Clock::mark(&e, &le, lang)
            );
        }
        let text = match (s.get(..10), e.get(..10), e.get(11..)) {
            (Some(a), Some(b), Some(clock)) if a == b => format!("{s} → {clock}"),
            _ => format!("{s} → {e}"),
        };
        Clock::mark(&text, &ls, lang)
    }
}

/// A time zone as `--tz` takes it: an IANA name (`Asia/Tokyo`, `UTC`), in any letter case.
pub(super) fn parse_zone(s: &str) -> Result<chrono_tz::Tz, String> {
    let name = s.trim();
    chrono_tz::TZ_VARIANTS
        .iter()
        .find(|z| z.name().eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown time zone {name:?}: give an IANA time zone name such as Asia/Tokyo, \
                 Europe/London or UTC"
            )
        })
}

/// Text from the input (or the command line) as the text report writes it: C0 and C1 control
/// characters, DEL, the bidirectional overrides, embeddings, isolates and marks, and the
/// Unicode line and paragraph separators are written as `\u{1b}`. A login name, a browser
/// string or a provider's code is the sender's to choose, and an attacker's sign-in is among
/// the events: as they came, such characters would recolour or clear the help desk's terminal,
/// hide rows, start a fake line or reorder what follows them. Every input-derived string of the
/// text report goes through this; the JSON report's encoder escapes controls itself.
pub(super) fn printable(s: &str) -> Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    }
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Terminal columns of a character: East Asian wide and full-width characters take two.
pub(super) fn char_width(c: char) -> usize {
    match c as u32 {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

pub(super) fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// At most `max` columns, with `…` when cut.
pub(super) fn clip(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        if w + char_width(c) + 1 > max {
            break;
        }
        w += char_width(c);
        out.push(c);
    }
    out.push('…');
    out
}

pub(super) fn pad(s: &str, to: usize) -> String {
    let mut out = s.to_owned();
    out.extend(std::iter::repeat_n(' ', to.saturating_sub(width(s))));
    out
}

pub(super) fn source_text(e: &AuthEvent, lang: Language) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(ip) = e.src.ip {
        parts.push(ip.to_string());
    }
    if let Some(geo) = &e.src.geo {
        match (geo.country.is_empty(), geo.city.is_empty()) {
            (false, false) => parts.push(format!("{}/{}", geo.country, geo.city)),
            (false, true) => parts.push(geo.country.to_string()),
            (true, false) => parts.push(geo.city.to_string()),
            (true, true) => {}
        }
    }
    if !e.src.as_org.is_empty() {
        parts.push(clip(&e.src.as_org, 18));
    } else if let Some(asn) = e.src.asn {
        parts.push(format!("AS{asn}"));
    }
    let a = e.src.anonymizer;
    let kind = if a.tor {
        Some("Tor")
    } else if a.vpn || a.anonymous {
        Some(tr(lang, "anon. VPN", "匿名VPN"))
    } else if a.proxy {
        Some(tr(lang, "proxy", "プロキシ"))
    } else if a.hosting {
        Some(tr(lang, "hosting", "ホスティング"))
    } else {
        None
    };
    if let Some(k) = kind {
        parts.push(format!("[{k}]"));
    }
    if parts.is_empty() {
        "–".to_owned()
    } else {
        parts.join(" ")
    }
}

pub(super) fn device_text(e: &AuthEvent) -> String {
    match (e.device.os.is_empty(), e.device.browser.is_empty()) {
        (false, false) => format!("{}/{}", e.device.os, e.device.browser),
        (false, true) => e.device.os.to_string(),
        (true, false) => e.device.browser.to_string(),
        (true, true) => "–".to_owned(),
    }
}

/// New-device and new-country flags, unless the user's profile is still learning: then every
/// device and country is new and a marker would cry wolf.
pub(super) fn novelty(e: &AuthEvent, lang: Language) -> Vec<&'static str> {
    let c = &e.context;
    let mut out = Vec::new();
    if c.learning {
        return out;
    }
    if c.new_device {
        out.push(tr(lang, "new device", "新しい端末"));
    }
    if c.new_country {
        out.push(tr(lang, "new country", "新しい国"));
    }
    out
}

pub(super) fn reason_cell(e: &AuthEvent, lang: Language) -> String {
    match e.reason {
        Reason::None => String::new(),
        Reason::Other if !e.reason_raw.is_empty() => e.reason_raw.to_string(),
        r => reason_name(r, lang).to_owned(),
    }
}

pub(super) fn reasons_line(g: &Group, lang: Language) -> String {
    let sep = tr(lang, ", ", "、");
    let parts: Vec<String> = g
        .reasons
        .iter()
        .map(|(r, raw)| {
            let label = reason_label(*r, lang);
            let mut codes = vec![r.as_str().to_owned()];
            codes.extend(raw.iter().map(|c| printable(c).into_owned()));
            match lang {
                Language::En => format!("{label} ({})", codes.join(", ")),
                Language::Ja => format!("{label}（{}）", codes.join(", ")),
            }
        })
        .collect();
    parts.join(sep)
}

pub(super) fn write_steps(
    out: &mut String,
    steps: &[impl AsRef<str>],
    indent: &str,
    lang: Language,
) {
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{}", tr(lang, "Next steps:", "次の対応:"));
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "{indent}  {}. {}", i + 1, printable(s.as_ref()));
    }
}

impl Report {
    /// Each tenant the name occurs in, with its event count, as the warnings list them.
    fn tenant_counts(&self, lang: Language) -> Vec<String> {
        self.tenants
            .iter()
            .map(|(t, n)| {
                let t = printable(tenant_name(t, lang));
                match lang {
                    Language::En => format!("{t} ({n} events)"),
                    Language::Ja => format!("{t}（{n} 件）"),
                }
            })
            .collect()
    }

    pub(super) fn render(&self, lang: Language) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "authwatch explain — {}", printable(&self.user));
        // What the input lacked and whose accounts are mixed change how everything below reads,
        // so they come before it, not after.
        self.render_notes(&mut out, lang);
        if self.events.is_empty() {
            self.render_not_found(&mut out, lang);
            return out;
        }
        self.render_header(&mut out, lang);
        self.render_recent(&mut out, lang);
        self.render_causes(&mut out, lang);
        self.render_alerts(&mut out, lang);
        out
    }

    pub(super) fn render_notes(&self, out: &mut String, lang: Language) {
        if self.input.unreadable > 0 {
            let files: Vec<String> = self
                .input
                .files
                .iter()
                .filter(|f| f.unreadable > 0)
                .map(|f| match lang {
                    Language::En => {
                        format!("{} {} of {}", printable(&f.name), f.unreadable, f.lines)
                    }
                    Language::Ja => {
                        format!(
                            "{} {} 行中 {} 行",
                            printable(&f.name),
                            f.lines,
                            f.unreadable
                        )
                    }
                })
                .collect();
            let bad = self.input.unreadable;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {bad} input line(s) could not be read ({}); neither the rules nor this \
                     report saw them (authwatch replay --dead-letter FILE says why).",
                    files.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 読み取れない入力行が {bad} 行ありました（{}）。検知ルールもこのレポートもそれらの行を見ていません（理由は authwatch replay --dead-letter FILE で確認できます）。",
                    files.join("、")
                ),
            };
        }
        if self.alerts_dropped > 0 {
            let n = self.alerts_dropped;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {n} older alert(s) about this user were not kept (only the \
                     {MAX_ALERTS} most recent are); a failure one of them would have explained is \
                     judged here from another alert or from its reason."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: このユーザーに関する古いアラート {n} 件は保持していません（保持するのは最新の {MAX_ALERTS} 件です）。それらが説明したはずの失敗は、ここでは別のアラートか理由から判断しています。"
                ),
            };
        }
        if self.keyed_dropped > 0 {
            let n = self.keyed_dropped;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {n} alert(s) keyed by an address, device or tenant were dropped \
                     unmatched (more than {MAX_KEYED_ALERTS} were open at once); a failure one of \
                     them would have explained is judged from its reason here."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: アドレス・端末・テナント単位のアラート {n} 件を照合せずに破棄しました（同時に {MAX_KEYED_ALERTS} 件を超えて未終了でした）。それらが説明したはずの失敗は、ここでは理由から判断しています。"
                ),
            };
        }
        if self.input.late > 0 {
            let late = self.input.late;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {late} event(s) were too far out of time order to analyse (standard \
                     input or a pipe is read as it comes; a file only when its time turns very \
                     often); authwatch replay --late-events FILE lists them."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 時刻の順序が大きく乱れていたため分析できなかったイベントが {late} 件ありました（標準入力やパイプは届いた順に読みます。ファイルは時刻の進む向きが非常に頻繁に変わる場合のみ）。authwatch replay の --late-events FILE で確認できます。"
                ),
            };
        }
        if self.user_late > 0 && !self.events.is_empty() {
            let n = self.user_late;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {n} of this user's events were out of order (too far behind newer \
                     ones) and are not in this report; sort the input by time, oldest first, \
                     to include them."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: このユーザーのイベントのうち {n} 件は時刻の順序が乱れていた（新しいイベントより大きく遅れていた）ため、このレポートに含まれていません。含めるには入力を時刻の古い順に並べ替えてください。"
                ),
            };
        }
        if self.input.deferred.0 > 0 {
            let (runs, lines) = self.input.deferred;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: {runs} ordered run(s) of the input ({lines} lines) were read after \
                     their time: more than {MAX_OPEN_LANES} runs overlap in time, and only that \
                     many are read at once. Events of theirs too far behind are among those too \
                     far out of order; sorting the input by time avoids it."
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 入力の時刻順の区間 {runs} 個（{lines} 行）を本来の時刻より後に読みました。時刻の重なる区間が {MAX_OPEN_LANES} 個を超え、同時に読むのはその数までのためです。大きく遅れたイベントは順序が乱れたイベントに含まれます。入力を時刻順に並べると避けられます。"
                ),
            };
        }
        if self.mixes_tenants() {
            let tenants = self.tenant_counts(lang);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Warning: {} exists in {} tenants: {}. These may be different people's \
                     accounts; this report covers all of them, with the tenant on every row. \
                     Use --tenant to see one.",
                    printable(&self.user),
                    self.tenants.len(),
                    tenants.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "警告: {} は {} つのテナントに存在します: {}。別の人のアカウントかもしれません。このレポートはすべてを対象にし、各行にテナントを示します。1 つに絞るには --tenant を指定してください。",
                    printable(&self.user),
                    self.tenants.len(),
                    tenants.join("、")
                ),
            };
        }
    }

    pub(super) fn render_not_found(&self, out: &mut String, lang: Language) {
        let (events, files) = (self.input.events, self.input.files.len());
        let user = printable(&self.user);
        if self.before_since > 0 {
            let since = self.since.map(|d| d.0).unwrap_or_default();
            let since = duration_words(since, lang);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "No events for {user} in the last {since} of the input; {} older event(s) exist \
                     (run without --since to see them).",
                    self.before_since
                ),
                Language::Ja => writeln!(
                    out,
                    "入力の最後の {since}に {user} のイベントはありません。それより前のイベントが {} 件あります（--since を付けずに実行すると表示されます）。",
                    self.before_since
                ),
            };
            return;
        }
        if self.user_late > 0 {
            let n = self.user_late;
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "No events for {user} could be analysed: {n} of this user's events were out \
                     of order (too far behind newer ones; standard input and pipes are read as \
                     they come, files in time order unless their time turns very often).\n\
                     Sort the input by time, oldest first, and run again."
                ),
                Language::Ja => writeln!(
                    out,
                    "{user} のイベントを分析できませんでした。このユーザーのイベント {n} 件は時刻の順序が乱れていました（新しいイベントより大きく遅れていました。標準入力やパイプは届いた順に読み、ファイルは時刻の進む向きが非常に頻繁に変わる場合を除き時刻順に読みます）。\n\
                     入力を時刻の古い順に並べ替えてから、もう一度実行してください。"
                ),
            };
            return;
        }
        if let Some(tenant) = &self.tenant
            && !self.tenants.is_empty()
        {
            let tenant = printable(tenant);
            let elsewhere = self.tenant_counts(lang);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "No events for {user} in tenant {tenant}; the name occurs in: {}.",
                    elsewhere.join(", ")
                ),
                Language::Ja => writeln!(
                    out,
                    "テナント {tenant} に {user} のイベントはありません。この名前があるテナント: {}。",
                    elsewhere.join("、")
                ),
            };
            return;
        }
        let _ = match lang {
            Language::En => writeln!(
                out,
                "No events for {user} in the input ({events} events read from {files} file(s)).\n\
                 Check the spelling: the name is matched, ignoring case, against the login name \
                 (UPN or e-mail) and the user id."
            ),
            Language::Ja => writeln!(
                out,
                "入力に {user} のイベントはありません（{files} ファイルから {events} 件のイベントを読み込みました）。\n\
                 綴りを確認してください。ログイン名（UPN またはメールアドレス）とユーザー ID に、大文字・小文字を区別せずに照合しています。"
            ),
        };
        if !self.similar.is_empty() {
            let _ = writeln!(
                out,
                "{} {}",
                tr(lang, "Similar names in the input:", "入力にある似た名前:"),
                self.similar
                    .iter()
                    .map(|s| printable(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    pub(super) fn render_header(&self, out: &mut String, lang: Language) {
        let (first, last) = match (self.events.first(), self.events.last()) {
            (Some(f), Some(l)) => (f.time, l.time),
            _ => return,
        };
        let clock = self.clock;
        let _ = writeln!(
            out,
            "{} {}",
            tr(lang, "Period:", "期間:"),
            clock.span(first, last, lang)
        );
        if clock.is_local() {
            // Alert summaries are written by the rules, in UTC: said once, not left to be
            // guessed from the labels.
            let (name, label) = (clock.name(), clock.label(last));
            let zone = match lang {
                _ if label != clock.label(first) => format!("{name} "),
                Language::En => format!("{name} ({label}) "),
                Language::Ja => format!("{name}（{label}）"),
            };
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Times are in {}; alert summaries, written by the rules, give theirs in UTC.",
                    zone.trim_end()
                ),
                Language::Ja => writeln!(
                    out,
                    "時刻は {zone}で表示しています。ルールが作成するアラートの概要文の時刻は UTC です。"
                ),
            };
        }
        if let Some(t) = &self.tenant {
            let _ = writeln!(out, "{} {}", tr(lang, "Tenant:", "テナント:"), printable(t));
        }
        // Steps, not sign-ins: one sign-in is a password step, an MFA step and often several
        // single sign-ons, and providers log each; counting "sign-ins" would be a guess.
        let (steps, ok, failed, locks) = (self.steps, self.successes, self.failures, self.lockouts);
        let _ = match lang {
            Language::En => write!(
                out,
                "Sign-in and MFA steps: {steps} ({ok} succeeded, {failed} failed)"
            ),
            Language::Ja => write!(
                out,
                "サインイン・MFA の手順: {steps} 件（成功 {ok} 件、失敗 {failed} 件）"
            ),
        };
        let _ = match (lang, locks) {
            (Language::En, 0) => writeln!(out, "."),
            (Language::En, _) => writeln!(
                out,
                "; the account was locked {}.",
                count_en(locks, "time", "times")
            ),
            (Language::Ja, 0) => writeln!(out, "。"),
            (Language::Ja, _) => writeln!(out, "。アカウントのロック: {locks} 回。"),
        };
        let by_class: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let n = g.failures + g.lockouts;
                match lang {
                    Language::En => format!("{n} {}", class_name(g.class, lang)),
                    Language::Ja => format!("{} {n} 件", class_name(g.class, lang)),
                }
            })
            .collect();
        let alerts = alerts_text(self.alerts.len(), self.alerts_dropped, lang);
        let _ = match (lang, failed + locks) {
            (Language::En, 0) => writeln!(out, "In short: no failures in this period; {alerts}."),
            (Language::En, _) => writeln!(
                out,
                "In short: {} by cause: {}; {alerts}.",
                problems_text(failed, locks, lang),
                by_class.join(", ").to_lowercase(),
            ),
            (Language::Ja, 0) => writeln!(out, "まとめ: この期間に失敗はありません。{alerts}"),
            (Language::Ja, _) => writeln!(
                out,
                "まとめ: {}の原因の内訳は、{}です。{alerts}",
                problems_text(failed, locks, lang),
                by_class.join("、")
            ),
        };
        // A high or critical alert is the help desk's cue to stop troubleshooting and escalate.
        let worst = self
            .alerts
            .iter()
            .filter(|a| a.severity >= Severity::High)
            .max_by_key(|a| (a.severity, a.last_seen));
        if let Some(a) = worst {
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Act first on: [{}] {} at {} (see \"Alerts concerning this user\" below).",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    clock.at(a.last_seen.millis(), lang)
                ),
                Language::Ja => writeln!(
                    out,
                    "最優先の対応: [{}] {}（{}）。下の「このユーザーに関するアラート」を参照してください。",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    clock.at(a.last_seen.millis(), lang)
                ),
            };
        }
        if let Some(d) = self.since {
            let since = duration_words(d.0, lang);
            let newest = self.newest.map(|t| clock.at(t, lang)).unwrap_or_default();
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Only the last {since} of the input (up to its newest event, {newest})."
                ),
                Language::Ja => writeln!(
                    out,
                    "入力の最後の {since}のみ（最新のイベント {newest}まで）を対象にしています。"
                ),
            };
        }
        if self.evicted > 0 {
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "Note: only the user's {MAX_EVENTS} most recent events are analysed; {} older ones were skipped.",
                    self.evicted
                ),
                Language::Ja => writeln!(
                    out,
                    "注: 分析対象はこのユーザーの最新 {MAX_EVENTS} 件のイベントです。それより古い {} 件は省略しました。",
                    self.evicted
                ),
            };
        }
    }
    pub(super) fn render_recent(&self, out: &mut String, lang: Language) {
        let n = self.last.min(self.events.len());
        if n == 0 {
            return;
        }
        let shown = &self.events[self.events.len() - n..];
        let clock = self.clock;
        // One zone label for the table, or one per row when it changes within it (daylight
        // saving time).
        let labels: BTreeSet<String> = shown.iter().map(|e| clock.label(e.time)).collect();
        let per_row = labels.len() > 1;
        let zone = match (clock.is_local(), labels.iter().next()) {
            (true, Some(label)) if !per_row => match lang {
                Language::En => format!("{} ({label})", clock.name()),
                Language::Ja => format!("{}（{label}）", clock.name()),
            },
            _ => clock.name().to_owned(),
        };
        let _ = writeln!(out);
        let _ = match lang {
            Language::En => writeln!(
                out,
                "Recent sign-ins (last {n} of {} events, oldest first; times in {zone})",
                self.events.len()
            ),
            Language::Ja => writeln!(
                out,
                "最近のサインイン（全 {} 件のうち最新 {n} 件、古い順、時刻は {zone}）",
                self.events.len()
            ),
        };
        let tenants = self.mixes_tenants();
        let header = [
            tr(lang, "TIME", "時刻"),
            tr(lang, "TENANT", "テナント"),
            tr(lang, "ACTIVITY", "操作"),
            tr(lang, "FACTOR", "方式"),
            tr(lang, "RESULT", "結果"),
            tr(lang, "REASON", "理由"),
            tr(lang, "SOURCE", "接続元"),
            tr(lang, "DEVICE", "端末"),
            "",
        ]
        .map(str::to_owned);
        let mut rows: Vec<[String; 9]> = vec![header];
        for e in shown {
            let marks = novelty(e, lang);
            rows.push([
                if per_row {
                    format!("{} {}", clock.time(e.time), clock.label(e.time))
                } else {
                    clock.time(e.time)
                },
                clip(&printable(tenant_name(&e.tenant, lang)), 20),
                activity_name(e.activity, lang).to_owned(),
                factor_name(e.factor, lang).to_owned(),
                outcome_name(e.outcome, lang).to_owned(),
                clip(&printable(&reason_cell(e, lang)), 24),
                clip(&printable(&source_text(e, lang)), 52),
                clip(&printable(&device_text(e)), 28),
                if marks.is_empty() {
                    String::new()
                } else {
                    format!("⚑ {}", marks.join(tr(lang, ", ", "、")))
                },
            ]);
        }
        let mut widths = [0usize; 9];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        for row in &rows {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                // The tenant column only when the name is found in more than one.
                if i == 1 && !tenants {
                    continue;
                }
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&pad(cell, widths[i]));
                    line.push_str("  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }

    pub(super) fn render_causes(&self, out: &mut String, lang: Language) {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", tr(lang, "Failures by cause", "原因別の失敗"));
        if self.groups.is_empty() {
            let _ = writeln!(
                out,
                "  {}",
                tr(
                    lang,
                    "No failures in this period.",
                    "この期間に失敗はありません。"
                )
            );
            return;
        }
        let clock = self.clock;
        for g in &self.groups {
            let name = class_name(g.class, lang);
            let meaning = class_meaning(g.class, lang);
            let span = clock.span(g.first, g.last, lang);
            let _ = writeln!(out);
            let counted = problems_text(g.failures, g.lockouts, lang);
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "  {} — {meaning}: {counted}, {span}",
                    name.to_uppercase(),
                ),
                Language::Ja => writeln!(out, "  【{name}】{meaning}: {counted}、{span}"),
            };
            let _ = writeln!(
                out,
                "    {} {}",
                tr(lang, "Reasons:", "理由:"),
                reasons_line(g, lang)
            );
            for (basis, x) in &g.explanations {
                let span = clock.span(x.first, x.last, lang);
                let counted = problems_text(x.failures, x.lockouts, lang);
                let steps: Vec<&str> = match basis {
                    Basis::Alert(i) => {
                        let a = &self.alerts[*i];
                        let _ = writeln!(out, "    • {}", printable(a.summary.get(lang.code())));
                        let name = alert_name(a);
                        let fired = clock.at(a.last_seen.millis(), lang);
                        // The summary counts what the rule had seen when it fired; explain
                        // counts what the alert explains in this report, often more (the
                        // incident went on without a new alert): both are labelled.
                        let _ = match lang {
                            Language::En => writeln!(
                                out,
                                "      (alert {name}, severity {}, fired {fired} with the counts \
                                 above; explained here: {counted}, {span})",
                                severity_name(a.severity, lang),
                            ),
                            Language::Ja => writeln!(
                                out,
                                "      （アラート {name}、重要度 {}。上の件数は {fired} の発報時点のものです。ここで説明する対象: {counted}、{span}）",
                                severity_name(a.severity, lang),
                            ),
                        };
                        a.steps
                            .get(lang.code())
                            .iter()
                            .map(String::as_str)
                            .collect()
                    }
                    Basis::Generic(generic) => {
                        let text = generic.text(lang);
                        // With alerts let go of, one of them may have explained these: the
                        // report says only what it knows.
                        let dropped = self.alerts_dropped + self.keyed_dropped > 0;
                        let none = match (lang, dropped) {
                            (Language::En, false) => "no alert explains these",
                            (Language::En, true) => "no kept alert explains these",
                            (Language::Ja, false) => "説明するアラートはなく",
                            (Language::Ja, true) => "保持しているアラートには説明するものがなく",
                        };
                        let _ = match lang {
                            Language::En => writeln!(
                                out,
                                "    • {}\n      ({none}; judged from the reason: {counted}, {span})",
                                text.summary,
                            ),
                            Language::Ja => writeln!(
                                out,
                                "    • {}\n      （{none}、理由から判断しました。該当: {counted}、{span}）",
                                text.summary,
                            ),
                        };
                        text.steps.to_vec()
                    }
                };
                write_steps(out, &steps, "      ", lang);
            }
        }
    }

    pub(super) fn render_alerts(&self, out: &mut String, lang: Language) {
        let _ = writeln!(out);
        let (n, dropped) = (self.alerts.len(), self.alerts_dropped);
        let _ = match (lang, dropped) {
            (Language::En, 0) => writeln!(out, "Alerts concerning this user ({n})"),
            (Language::En, _) => writeln!(
                out,
                "Alerts concerning this user ({n}; {dropped} older not kept, see the note at the top)"
            ),
            (Language::Ja, 0) => writeln!(out, "このユーザーに関するアラート（{n} 件）"),
            (Language::Ja, _) => writeln!(
                out,
                "このユーザーに関するアラート（{n} 件。ほかに保持していない古いアラート {dropped} 件。冒頭の注を参照）"
            ),
        };
        // "None fired" only when none was let go of: a dropped alert may be this period's.
        if self.alerts.is_empty() && dropped == 0 {
            let _ = writeln!(
                out,
                "  {}",
                tr(
                    lang,
                    "None: no detection rule fired for this user or their sign-ins.",
                    "ありません。このユーザーやそのサインインについて、検知ルールは発報していません。"
                )
            );
        }
        let explaining = self.explaining();
        let clock = self.clock;
        for (i, a) in self.alerts.iter().enumerate() {
            let _ = writeln!(out);
            let span = clock.span(a.window.start.millis(), a.window.end.millis(), lang);
            let e = &a.entity;
            // Alerts keyed by this user alone need no entity; others say what they are about
            // (an address, a tenant) since the user is only part of them.
            let only_user = e.tenant.is_none()
                && e.ip.is_none()
                && e.asn.is_none()
                && e.device_fingerprint.is_none()
                && e.country.is_none()
                && e.app.is_none();
            let entity = if only_user {
                String::new()
            } else {
                format!(" — {}", printable(&e.to_string()))
            };
            let _ = match lang {
                Language::En => writeln!(
                    out,
                    "  [{}] {} — cause: {} — {span}{entity}",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    class_name(a.cause_class, lang).to_lowercase(),
                ),
                Language::Ja => writeln!(
                    out,
                    "  [{}] {} — 原因: {} — {span}{entity}",
                    severity_name(a.severity, lang),
                    alert_name(a),
                    class_name(a.cause_class, lang),
                ),
            };
            let _ = writeln!(out, "    {}", printable(a.summary.get(lang.code())));
            if let Some(s) = self.scopes.get(i)
                && s.last > span_end(a)
            {
                let last = clock.at(s.last, lang);
                let _ = match lang {
                    Language::En => writeln!(
                        out,
                        "    The incident went on after the alert, without a new one: the user's \
                         last failure of its kind was at {last}."
                    ),
                    Language::Ja => writeln!(
                        out,
                        "    インシデントはアラートの後も新たなアラートなしに続きました。このユーザーのこの種類の最後の失敗は {last} です。"
                    ),
                };
            }
            // Steps printed under "Failures by cause" are not repeated: one list per incident.
            if explaining.contains(&i) {
                let _ = writeln!(
                    out,
                    "    {}",
                    tr(
                        lang,
                        "Next steps: see \"Failures by cause\" above.",
                        "次の対応: 上の「原因別の失敗」を参照してください。"
                    )
                );
            } else {
                write_steps(out, a.steps.get(lang.code()), "    ", lang);
            }
        }
    }
}

/// The category, and the rule when it says more (`mfa_triage/triage_clock_drift`), as the text
/// report writes it ([`printable`]: rule files are input too).
pub(super) fn alert_name(a: &Alert) -> String {
    let name = if a.category == a.rule_id {
        a.category.clone()
    } else {
        format!("{}/{}", a.category, a.rule_id)
    };
    printable(&name).into_owned()
}

/// `5 failures`, `1 lockout`, `5 failures and 1 lockout`: failed steps and lockouts are
/// counted apart everywhere, so that every figure says what it counts.
pub(super) fn problems_text(failures: usize, lockouts: usize, lang: Language) -> String {
    match lang {
        Language::En => match (failures, lockouts) {
            (f, 0) => count_en(f, "failure", "failures"),
            (0, l) => count_en(l, "lockout", "lockouts"),
            (f, l) => format!(
                "{} and {}",
                count_en(f, "failure", "failures"),
                count_en(l, "lockout", "lockouts")
            ),
        },
        Language::Ja => match (failures, lockouts) {
            (f, 0) => format!("失敗 {f} 件"),
            (0, l) => format!("ロック {l} 件"),
            (f, l) => format!("失敗 {f} 件とロック {l} 件"),
        },
    }
}

pub(super) fn span_end(a: &Alert) -> i64 {
    span(a).1
}

/// A tenant as shown: events of providers without tenants have none.
pub(super) fn tenant_name(t: &str, lang: Language) -> &str {
    if t.is_empty() {
        tr(lang, "(no tenant)", "（テナントなし）")
    } else {
        t
    }
}

/// `1 failure`, `3 failures`.
pub(super) fn count_en(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// How many alerts concern the user, for the summary line: never "none" when some were let go
/// of ([`MAX_ALERTS`]), since those may be this period's.
pub(super) fn alerts_text(n: usize, dropped: u64, lang: Language) -> String {
    match (lang, n, dropped) {
        (Language::En, 0, 0) => "no alert concerns this user".to_owned(),
        (Language::En, 1, 0) => "1 alert concerns this user".to_owned(),
        (Language::En, n, 0) => format!("{n} alerts concern this user"),
        (Language::En, n, d) => {
            format!("{n} kept alert(s) concern this user, and {d} older one(s) were not kept")
        }
        (Language::Ja, n, 0) => format!("このユーザーに関するアラートは {n} 件です。"),
        (Language::Ja, n, d) => format!(
            "このユーザーに関するアラートは保持している {n} 件と、保持していない古い {d} 件です。"
        ),
    }
}

/// A duration as configuration writes it (`1day 12h`), for the JSON report; sentences use
/// [`duration_words`].
pub(super) fn humanize(d: std::time::Duration) -> String {
    serde_json::to_value(DurationText(d))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{}s", d.as_secs()))
}
