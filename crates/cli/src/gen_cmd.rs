//! `authwatch gen`: synthetic traffic and its labels.

use anyhow::{Context, Result};
use authwatch_gen::{ConfigError, GenConfig, generate};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// `authwatch gen`
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Number of users.
    #[arg(long, default_value_t = 300)]
    users: usize,
    /// Number of days, starting Monday 2026-01-05 UTC.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Random seed: the same seed gives byte-identical output.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Events output (native JSON lines; `.gz` compresses; `-` is standard output).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Labels output: the alerts a perfect detector raises, as JSON lines.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Also write the tenant's corporate VPN egress addresses, one per line, for an
    /// `[[enrich.cidr_lists]]` entry with `located = false` (the labels assume a deployment that
    /// lists its own VPN; without it, travellers working through the VPN look like impossible
    /// travel).
    #[arg(long, value_name = "FILE")]
    vpn_egress: Option<PathBuf>,
    /// Stop after this many events (benchmarks); labels are written only for incidents whose
    /// events were all written.
    #[arg(long)]
    max_events: Option<u64>,
    /// Tenant name.
    #[arg(long, default_value = "example")]
    tenant: String,
    /// Write the events in this provider's format (`native`, `okta`, `entra`, `duo`, `auth0`,
    /// `keycloak`, `google`, `ocsf`, `ecs`): the same traffic, as that provider would log it.
    #[arg(long, default_value = "native", value_name = "FORMAT")]
    format: authwatch_normalize::Format,
}

/// An output opened by [`create_output`]: a file or standard output, gzip-compressed when the
/// file name ends in `.gz`.
pub enum Output {
    Plain(Box<dyn Write + Send>),
    /// Boxed: the encoder's state is large, and an output is opened once.
    Gzip(Box<flate2::write::GzEncoder<BufWriter<File>>>),
}

impl Output {
    /// Ends the output: writes the gzip trailer and flushes, reporting any error. Dropping a
    /// gzip encoder writes its trailer too but ignores a failure (a full disk), leaving a
    /// truncated file behind a successful exit.
    pub fn finish(self) -> std::io::Result<()> {
        match self {
            Output::Plain(mut w) => w.flush(),
            Output::Gzip(g) => (*g).finish()?.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(g) => g.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Plain(w) => w.write_all(buf),
            Output::Gzip(g) => g.write_all(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(g) => g.flush(),
        }
    }
}

/// Opens an output: `-` for stdout, gzip when the name ends in `.gz`. End it with
/// [`Output::finish`].
pub fn create_output(path: &PathBuf) -> Result<Output> {
    if path.as_os_str() == "-" {
        return Ok(Output::Plain(Box::new(BufWriter::new(
            crate::shared_stdout(),
        ))));
    }
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let buffered = BufWriter::with_capacity(256 * 1024, file);
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Output::Gzip(Box::new(flate2::write::GzEncoder::new(
            buffered,
            flate2::Compression::best(),
        )))
    } else {
        Output::Plain(Box::new(buffered))
    })
}

/// Writes generated events to `out` in `format`, returns the labels and the event count.
pub fn write_events(
    cfg: &GenConfig,
    format: authwatch_normalize::Format,
    out: &mut dyn Write,
) -> Result<(Vec<authwatch_gen::Label>, u64)> {
    anyhow::ensure!(
        format != authwatch_normalize::Format::Auto,
        "--format auto is for reading; choose a format to write"
    );
    let mut count = 0u64;
    let mut line = Vec::with_capacity(2048);
    let labels = generate(cfg, &mut |ev| {
        count += 1;
        line.clear();
        authwatch_normalize::encode(format, ev, &mut line)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        line.push(b'\n');
        out.write_all(&line)
    })?;
    out.flush()?;
    Ok((labels, count))
}

pub fn run(args: GenArgs) -> Result<ExitCode> {
    let cfg = GenConfig {
        users: args.users,
        days: args.days,
        seed: args.seed,
        tenant: args.tenant,
        max_events: args.max_events,
        ..GenConfig::default()
    };
    let mut outputs: Vec<(&str, &std::path::Path)> = vec![("--out", &args.out)];
    if let Some(labels) = &args.labels {
        outputs.push(("--labels", labels));
    }
    if let Some(vpn) = &args.vpn_egress {
        outputs.push(("--vpn-egress", vpn));
    }
    crate::paths::refuse_overwrites(&[], &outputs)?;
    // Checked here too (the generator checks again) to name the option, not the field.
    cfg.validate().map_err(|e| {
        let option = match e {
            ConfigError::Users(_) => "--users",
            ConfigError::Days(_) => "--days",
            ConfigError::Tenant(_) => "--tenant",
            ConfigError::Start(_) => "the start date",
        };
        anyhow::anyhow!("{option}: {e}")
    })?;
    let mut out = create_output(&args.out)?;
    let (labels, count) = write_events(&cfg, args.format, &mut out)
        .with_context(|| format!("--out {}", args.out.display()))?;
    out.finish()
        .with_context(|| format!("--out {}", args.out.display()))?;
    if let Some(path) = &args.labels {
        let mut w = create_output(path)?;
        for l in &labels {
            serde_json::to_writer(&mut w, l)?;
            w.write_all(b"\n")?;
        }
        w.finish()
            .with_context(|| format!("--labels {}", path.display()))?;
    }
    if let Some(path) = &args.vpn_egress {
        let mut w = create_output(path)?;
        writeln!(
            w,
            "# corporate VPN egress of the generated tenant (authwatch gen)"
        )?;
        for ip in authwatch_gen::vpn_egress() {
            writeln!(w, "{ip}")?;
        }
        w.finish()
            .with_context(|| format!("--vpn-egress {}", path.display()))?;
    }
    // Labels are counted only when written: a count without a file reads as if there were one.
    eprintln!(
        "authwatch gen: {count} events to {}{}",
        args.out.display(),
        args.labels
            .as_ref()
            .map(|p| format!(", {} labels to {}", labels.len(), p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip output ended with `finish` is a whole gzip stream (its trailer checked by the
    /// decoder), with nothing left in a buffer.
    #[test]
    fn a_finished_gzip_output_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl.gz");
        let mut out = create_output(&path).unwrap();
        assert!(matches!(out, Output::Gzip(_)));
        out.write_all(b"{\"a\":1}\n").unwrap();
        out.finish().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(File::open(&path).unwrap()),
            &mut text,
        )
        .unwrap();
        assert_eq!(text, "{\"a\":1}\n");
    }

    #[test]
    fn vpn_egress_lists_the_generated_concentrators() {
        let dir = tempfile::tempdir().unwrap();
        let vpn = dir.path().join("vpn.txt");
        let args = GenArgs {
            users: 20,
            days: 1,
            seed: 1,
            out: dir.path().join("events.jsonl"),
            labels: None,
            vpn_egress: Some(vpn.clone()),
            max_events: None,
            tenant: "example".into(),
            format: authwatch_normalize::Format::Native,
        };
        run(args).unwrap();
        let text = std::fs::read_to_string(&vpn).unwrap();
        let ips: Vec<std::net::IpAddr> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(ips, authwatch_gen::vpn_egress());
        assert!(!ips.is_empty());
    }
}
