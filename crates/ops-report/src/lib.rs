//! The status report operators read, as `threadline status` prints it and the console's
//! status page shows it: the relay (command-api's `/v1/admin/relay`) and each projector
//! (its health address's `/status`), each with the reasons it needs attention. One
//! definition of "needs attention" for both; no I/O here, the binaries fetch.
//!
//! The JSON form ([`Report::to_json`]) is what `threadline status --json` prints and the
//! console's `/api/status` answers; it only gains fields.

use serde_json::{Value, json};

/// One component: what it reported, or why it could not be asked, and why it needs
/// attention (nothing: it is fine).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub reported: Result<Value, String>,
    pub attention: Vec<String>,
}

impl Component {
    /// The relay as command-api reported it.
    pub fn relay(status: Value) -> Component {
        Component {
            name: "relay".to_owned(),
            attention: relay_attention(&status),
            reported: Ok(status),
        }
    }

    /// A projector as its `/status` reported it.
    pub fn projector(name: &str, status: Value) -> Component {
        Component {
            name: name.to_owned(),
            attention: projector_attention(&status),
            reported: Ok(status),
        }
    }

    /// A component that could not be asked (`error` says why).
    pub fn unreachable(name: &str, error: String) -> Component {
        Component {
            name: name.to_owned(),
            attention: vec!["unreachable".to_owned()],
            reported: Err(error),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "ok": self.attention.is_empty(), "attention": self.attention});
        match &self.reported {
            Ok(status) => v["status"] = status.clone(),
            Err(error) => v["error"] = json!(error),
        }
        v
    }
}

/// The relay and every projector.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub relay: Component,
    pub projectors: Vec<Component>,
}

impl Report {
    /// Nothing needs attention.
    pub fn healthy(&self) -> bool {
        std::iter::once(&self.relay)
            .chain(&self.projectors)
            .all(|c| c.attention.is_empty())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "healthy": self.healthy(),
            "relay": self.relay.to_json(),
            "projectors": self.projectors.iter().map(Component::to_json).collect::<Vec<_>>(),
        })
    }
}

/// `NAME=URL`: a projector and its health address (both settings that list projectors
/// take a comma-separated list of these).
pub fn named_url(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => Ok((
            name.trim().to_owned(),
            url.trim().trim_end_matches('/').to_owned(),
        )),
        _ => Err(format!("{text:?}: use NAME=URL")),
    }
}

fn number(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

/// Why the relay needs attention: publishing fails, events are parked, or it neither
/// publishes nor stands by.
pub fn relay_attention(s: &Value) -> Vec<String> {
    let mut why = Vec::new();
    if s["stuck"] == true {
        why.push(format!(
            "stuck since {}: {}",
            s["failing_since"].as_str().unwrap_or("?"),
            s["last_error"].as_str().unwrap_or("?")
        ));
    }
    if number(s, "parked") > 0.0 {
        why.push(format!("{} events parked", s["parked"]));
    }
    if s["active"] != true && s["standby"] != true {
        why.push("neither publishing nor standing by".to_owned());
    }
    why
}

/// Why a projector needs attention: it waits on an outage, events of its projection are
/// parked (now, when it says; else those it parked since it started), or it dead-lettered
/// some.
pub fn projector_attention(s: &Value) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(outage) = s["waiting_on"].as_str() {
        why.push(format!("waiting on an outage: {outage}"));
    }
    match s["parked_now"].as_u64() {
        Some(0) => {}
        Some(n) => why.push(format!("{n} events parked")),
        None if number(s, "parked") > 0.0 => {
            why.push(format!("{} events parked since it started", s["parked"]))
        }
        None => {}
    }
    if number(s, "dead_lettered") > 0.0 {
        why.push(format!("{} events dead-lettered", s["dead_lettered"]));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_that_publishes_or_stands_by_with_nothing_parked_is_fine() {
        assert!(relay_attention(&json!({"active": true, "parked": 0})).is_empty());
        assert!(relay_attention(&json!({"standby": true})).is_empty());
        let stuck = json!({"active": true, "stuck": true, "failing_since": "t", "last_error": "down", "parked": 2});
        assert_eq!(
            relay_attention(&stuck),
            ["stuck since t: down", "2 events parked"]
        );
        assert_eq!(
            relay_attention(&json!({})),
            ["neither publishing nor standing by"]
        );
    }

    #[test]
    fn what_is_parked_now_wins_over_what_was_parked_since_the_start() {
        // Parked earlier, re-driven since: fine.
        assert!(projector_attention(&json!({"parked": 3, "parked_now": 0})).is_empty());
        assert_eq!(
            projector_attention(&json!({"parked": 0, "parked_now": 2})),
            ["2 events parked"]
        );
        // A projector that cannot count them now says what it parked itself.
        assert_eq!(
            projector_attention(&json!({"parked": 1, "parked_now": null})),
            ["1 events parked since it started"]
        );
        assert_eq!(
            projector_attention(&json!({"waiting_on": "the database", "dead_lettered": 1})),
            [
                "waiting on an outage: the database",
                "1 events dead-lettered"
            ]
        );
    }

    #[test]
    fn a_report_is_healthy_only_when_nothing_needs_attention() {
        let fine = Report {
            relay: Component::relay(json!({"active": true})),
            projectors: vec![Component::projector("read-model-projector", json!({}))],
        };
        assert!(fine.healthy());
        assert_eq!(fine.to_json()["projectors"][0]["ok"], true);
        let down = Report {
            projectors: vec![Component::unreachable("x", "refused".into())],
            ..fine
        };
        assert!(!down.healthy());
        assert_eq!(down.to_json()["projectors"][0]["error"], "refused");
        assert_eq!(
            named_url(" a = http://h:1/ "),
            Ok(("a".into(), "http://h:1".into()))
        );
        assert!(named_url("a").is_err() && named_url("=http://h").is_err());
    }
}
