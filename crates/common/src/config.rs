//! Settings as types. A library that needs settings declares them as one `clap::Args`
//! struct: each field a flag with its environment variable, its default and its meaning
//! (the doc comment). A binary's settings are one `clap::Parser` that flattens the groups it
//! uses, parsed once at its edge by [`parse`]; libraries take their typed group and never
//! read the environment themselves. So `--help` lists every setting a binary reads, with its
//! default and meaning, and `--settings-json` prints the same list for tools (the README's
//! configuration table and `dev/validate-deploy` are made from it).
//!
//! Every setting can be given as a flag or as its variable; an empty variable counts as
//! unset. [`from_env`] and [`from_vars`] read one group alone, for tests and tools.

use std::ffi::OsString;
use std::fmt::Display;
use std::time::Duration;

use clap::{Arg, Args, Command, FromArgMatches, Parser};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: &'static str },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// What clap said about a group's flags and variables (it names the variable).
    #[error("{0}")]
    Rejected(String),
}

impl ConfigError {
    /// The variable `name` with `value` is invalid for `reason`.
    pub fn invalid(name: &'static str, value: impl Into<String>, reason: impl Display) -> Self {
        ConfigError::Invalid {
            name,
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}

/// A duration in milliseconds, for `#[arg(value_parser = millis)]`.
pub fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{e} (milliseconds expected)"))
}

/// A duration in seconds, for `#[arg(value_parser = secs)]`.
pub fn secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("{e} (seconds expected)"))
}

/// The command line of the binary `name` whose settings are `C`, parsed from the process's
/// arguments and environment. `--settings-json` as the first argument prints the settings
/// (see [`manifest`]) and exits; `--help` lists them; an invalid setting prints clap's
/// error, which names it, and exits 2.
pub fn parse<C: Parser>(name: &'static str) -> C {
    parse_command(C::command().name(name).bin_name(name))
}

/// [`parse`] for a command line shared by several binaries, each with its own `about`.
pub fn parse_about<C: Parser>(name: &'static str, about: &'static str) -> C {
    parse_command(C::command().name(name).bin_name(name).about(about))
}

fn parse_command<C: Parser>(mut command: Command) -> C {
    // Clap's own checks of the command (unique names...) run here in debug builds, so that
    // `--settings-json` (asked by dev/validate-deploy in every test run) fails on them too.
    command.build();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--settings-json")
    {
        println!("{}", manifest(&command));
        std::process::exit(0);
    }
    let matches = settings(command).get_matches();
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The settings group `T` from the process environment alone (no command line).
pub fn from_env<T: Args + FromArgMatches>() -> Result<T, ConfigError> {
    let command = settings(T::augment_args(
        Command::new("settings").no_binary_name(true),
    ));
    from_matches(command, Vec::new())
}

/// The defaults of the settings group `T`, which has no setting without a default.
///
/// # Panics
/// When `T` has a required setting: a programming error its first test shows.
pub fn defaults<T: Args + FromArgMatches>() -> T {
    match from_vars::<T, _, &str, &str>([]) {
        Ok(t) => t,
        Err(e) => panic!("a settings group with required settings has no defaults: {e}"),
    }
}

/// The settings group `T` from the given variables, as if they were the environment (the
/// process's own is not read). Variables the group does not declare are ignored.
pub fn from_vars<T, I, K, V>(vars: I) -> Result<T, ConfigError>
where
    T: Args + FromArgMatches,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    // The process's own variables play no part: only the names are needed.
    let command = named(T::augment_args(
        Command::new("settings").no_binary_name(true),
    ));
    let mut args = Vec::new();
    for (name, value) in vars {
        let value: String = value.into();
        if value.is_empty() {
            continue;
        }
        let flag = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_ref()))
            .and_then(Arg::get_long);
        if let Some(flag) = flag {
            args.push(OsString::from(format!("--{flag}={value}")));
        }
    }
    let command = command.mut_args(|a| a.env(None::<&'static str>));
    from_matches(command, args)
}

/// Each setting's value is shown as its variable (`--kafka-brokers <KAFKA_BROKERS>`), so
/// clap's messages name the variable whichever way the setting was given.
fn named(command: Command) -> Command {
    command.mut_args(
        |arg| match arg.get_env().map(|e| e.to_string_lossy().into_owned()) {
            Some(env) => arg.value_name(env),
            None => arg,
        },
    )
}

/// [`named`], and a variable of the process set but empty counts as unset (clap would
/// parse the empty text), as a Compose file's `${VAR:-}` means.
fn settings(command: Command) -> Command {
    named(command).mut_args(|arg| {
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        if empty {
            arg.env(None::<&'static str>)
        } else {
            arg
        }
    })
}

fn from_matches<T: FromArgMatches>(
    command: Command,
    args: Vec<OsString>,
) -> Result<T, ConfigError> {
    let matches = command
        .try_get_matches_from(args)
        .map_err(|e| ConfigError::Rejected(e.to_string().trim_end().to_owned()))?;
    T::from_arg_matches(&matches).map_err(|e| ConfigError::Rejected(e.to_string()))
}

/// Every setting of `command` as JSON, `{"binary", "settings": [{"env", "flag",
/// "default", "required", "secret", "group", "help"}]}`: what `--settings-json` prints for
/// the README's table and `dev/validate-deploy`. Flags without a variable are options of a
/// command, not settings.
pub fn manifest(command: &Command) -> serde_json::Value {
    let settings: Vec<serde_json::Value> = command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?;
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some(serde_json::json!({
                "env": env,
                "flag": arg.get_long().map(|l| format!("--{l}")),
                "default": (!default.is_empty()).then(|| default.join(",")),
                "required": arg.is_required_set(),
                "secret": arg.is_hide_env_values_set(),
                "group": arg.get_help_heading(),
                "help": arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()),
            }))
        })
        .collect();
    serde_json::json!({ "binary": command.get_name(), "settings": settings })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group as libraries write them.
    #[derive(Debug, clap::Args)]
    #[command(next_help_heading = "Example")]
    struct Example {
        /// How many.
        #[arg(
            long = "example-count",
            env = "THREADLINE_EXAMPLE_COUNT",
            default_value_t = 7
        )]
        count: u32,
        /// A secret.
        #[arg(
            long = "example-key",
            env = "THREADLINE_EXAMPLE_KEY",
            hide_env_values = true
        )]
        key: Option<String>,
    }

    #[test]
    fn vars_are_read_by_their_names_and_defaults_apply() {
        let e: Example = from_vars([("THREADLINE_EXAMPLE_COUNT", "3"), ("OTHER", "x")]).unwrap();
        assert_eq!((e.count, e.key), (3, None));
        let e: Example = from_vars([
            ("THREADLINE_EXAMPLE_KEY", "k"),
            ("THREADLINE_EXAMPLE_COUNT", ""),
        ])
        .unwrap();
        assert_eq!((e.count, e.key.as_deref()), (7, Some("k")));
    }

    #[test]
    fn an_invalid_value_names_the_setting() {
        let e = from_vars::<Example, _, _, _>([("THREADLINE_EXAMPLE_COUNT", "many")]).unwrap_err();
        assert!(e.to_string().contains("--example-count"), "{e}");
        assert!(e.to_string().contains("many"), "{e}");
    }

    #[test]
    fn the_manifest_lists_each_setting_with_its_default_group_and_secrecy() {
        let cmd = Example::augment_args(Command::new("example"));
        let m = manifest(&cmd);
        let s = &m["settings"];
        assert_eq!(s[0]["env"], "THREADLINE_EXAMPLE_COUNT");
        assert_eq!(s[0]["default"], "7");
        assert_eq!(s[0]["group"], "Example");
        assert_eq!(s[0]["help"], "How many");
        assert_eq!(s[0]["secret"], false);
        assert_eq!(s[1]["env"], "THREADLINE_EXAMPLE_KEY");
        assert_eq!(s[1]["default"], serde_json::Value::Null);
        assert_eq!(s[1]["secret"], true);
    }
}
