//! A live progress line on standard error, fed by the pipeline's counters.

use authwatch_event::format_rfc3339_ms;
use authwatch_pipeline::Metrics;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running progress display; [`Progress::finish`] stops it.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting. With `total_bytes`, a bar; else a spinner. When standard error is not a
    /// terminal, a plain line every few seconds instead, so logs of long runs show life.
    pub fn start(metrics: Arc<Metrics>, total_bytes: Option<u64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let bar = match total_bytes {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{bar:30.cyan/blue} {bytes}/{total_bytes} {elapsed} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let tty = !bar.is_hidden();
            let mut ticks = 0u64;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                ticks += 1;
                let msg = line(&metrics);
                if tty {
                    bar.set_position(Metrics::get(&metrics.bytes_read));
                    bar.set_message(msg);
                } else if ticks.is_multiple_of(50) {
                    eprintln!("progress: {msg}");
                }
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and clears the display.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn line(m: &Metrics) -> String {
    let wm = m.watermark.load(Ordering::Relaxed);
    let wm = if wm == i64::MIN {
        "-".to_owned()
    } else {
        format_rfc3339_ms(wm).unwrap_or_default()
    };
    format!(
        "{} events, {} alerts, {} dead letters, {} late, {} repeated, watermark {wm}",
        Metrics::get(&m.events),
        Metrics::get(&m.alerts),
        m.dead_letter_total(),
        Metrics::get(&m.late_events),
        Metrics::get(&m.duplicate_events),
    )
}
