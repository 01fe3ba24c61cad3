//! Progress on stderr, drawn only when stderr is a terminal: a script or a pipe reads
//! the output alone.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A counter of `what` (events, say) with its rate, or a hidden one off a terminal.
pub fn counter(what: &'static str) -> ProgressBar {
    drawn(
        format!("{{spinner}} {{human_pos}} {what} ({{per_sec}}, {{elapsed}}) {{msg}}"),
        ProgressStyle::default_spinner,
    )
}

/// A bar of `what` done of a total set as it becomes known, with rate and time left, or
/// a hidden one off a terminal.
pub fn bar(what: &'static str) -> ProgressBar {
    drawn(
        format!(
            "{{bar:30}} {{human_pos}}/{{human_len}} {what} ({{per_sec}}, {{eta}} left) {{msg}}"
        ),
        ProgressStyle::default_bar,
    )
}

/// Progress drawn with `template` on a terminal (no length until the work says its
/// total), redrawn at least twice a second, also while nothing arrives; hidden elsewhere.
fn drawn(template: String, fallback: fn() -> ProgressStyle) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::no_length();
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| fallback()));
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}
