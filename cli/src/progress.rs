//! Progress on stderr, drawn only when stderr is a terminal: a script or a pipe reads
//! the output alone.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A counter of `what` (events, say) with its rate, or a hidden one off a terminal.
pub fn counter(what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {{human_pos}} {what} ({{per_sec}}, {{elapsed}}) {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    // Redrawn at least once a second, also while nothing arrives.
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// A bar of `what` done of a total set as it becomes known, with rate and time left, or
/// a hidden one off a terminal.
pub fn bar(what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // No length until the work says its total.
    let bar = ProgressBar::no_length();
    let style = ProgressStyle::with_template(&format!(
        "{{bar:30}} {{human_pos}}/{{human_len}} {what} ({{per_sec}}, {{eta}} left) {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}
