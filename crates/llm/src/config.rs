//! The LLM configuration, from the environment ([`LlmConfig::from_settings`], or [`LlmConfig::from_vars`] for tests):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LLM_PROVIDERS` | `local` | provider names, in order (letters, digits, `_`) |
//! | `LLM_<NAME>_KIND` | `local` for the name `local`, else required | `openai`, `anthropic` or `local` |
//! | `LLM_<NAME>_URL` | the vendor's API | base URL (`…/v1` for openai) |
//! | `LLM_<NAME>_MODEL` | required for openai, anthropic | the model name |
//! | `LLM_<NAME>_API_KEY` / `LLM_<NAME>_API_KEY_FILE` | none | the key, or a file holding it (trimmed); not both |
//! | `LLM_<NAME>_MAX_TOKENS` | 1024 | anthropic: `max_tokens` when a request sets none |
//! | `LLM_<NAME>_TIMEOUT_MS` | 60000 | one attempt at most |
//! | `LLM_<NAME>_RETRIES` | 2 | further attempts after a retryable failure |
//! | `LLM_<NAME>_MAX_CONCURRENCY` | unbounded | calls to it in flight at once from this process; more wait |
//! | `LLM_<NAME>_RPM`, `LLM_<NAME>_TPM` | unbounded | requests and tokens per minute this process sends it; more wait |
//! | `LLM_ROUTE_<ROUTE>` | every provider, in order (for `reply` and `document`) | a route's fallback chain |
//! | `LLM_BREAKER_FAILURES` | 5 | consecutive failures that open a provider's breaker |
//! | `LLM_BREAKER_COOLDOWN_MS` | 30000 | how long it stays open |
//! | `LLM_RETRY_AFTER_MAX_MS` | 10000 | the longest `Retry-After` waited for |
//! | `LLM_TENANT_DAILY_TOKENS` | unlimited | tokens per tenant per UTC day |
//!
//! The fixed ones are the settings group [`LlmSettings`]; provider names are dynamic, so
//! the `LLM_<NAME>_*` and `LLM_ROUTE_*` variables are read here (listed for `--help` by
//! [`PROVIDER_VARIABLES`]), with the same rules: an empty variable counts as unset, and
//! every error names its variable. Keys are kept in [`Secret`]s and never appear in errors
//! or `Debug` output.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::anthropic::{self, AnthropicConfig, AnthropicProvider};
use crate::breaker::BreakerSettings;
use crate::budget::{Budget, InMemoryBudget};
use crate::clock::{Clock, SystemClock};
use crate::limits::Limits;
use crate::local::LocalProvider;
use crate::openai::{self, OpenAiConfig, OpenAiProvider};
use crate::router::{BuildError, ProviderPolicy, Router, RouterSettings};
use crate::{ChatProvider, Secret};

/// The routes every deployment has; unless configured, they try every provider in order.
pub const DEFAULT_ROUTES: [&str; 2] = ["reply", "document"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    /// One of [`LlmSettings`] (the message names it).
    #[error("{0}")]
    Setting(String),
    /// A key file that cannot be read (the error never quotes the file's content).
    #[error("environment variable {name}: cannot read {path:?}: {reason}")]
    Unreadable {
        name: String,
        path: String,
        reason: String,
    },
}

/// Which provider, and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    OpenAi(OpenAiConfig),
    Anthropic(AnthropicConfig),
    Local,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub policy: ProviderPolicy,
}

impl ProviderConfig {
    /// The provider, ready to call.
    pub fn build(&self) -> Result<Arc<dyn ChatProvider>, BuildError> {
        let provider: Arc<dyn ChatProvider> = match &self.kind {
            ProviderKind::OpenAi(c) => Arc::new(OpenAiProvider::new(c.clone()).map_err(
                |error| BuildError::Provider {
                    name: self.name.clone(),
                    error,
                },
            )?),
            ProviderKind::Anthropic(c) => {
                Arc::new(AnthropicProvider::new(c.clone()).map_err(|error| {
                    BuildError::Provider {
                        name: self.name.clone(),
                        error,
                    }
                })?)
            }
            ProviderKind::Local => Arc::new(LocalProvider::new(self.name.clone())),
        };
        Ok(provider)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// In the order of `LLM_PROVIDERS`.
    pub providers: Vec<ProviderConfig>,
    pub routes: BTreeMap<String, Vec<String>>,
    pub router: RouterSettings,
    /// Tokens per tenant per UTC day (`None`: unlimited).
    pub tenant_daily_tokens: Option<u64>,
}

/// The fixed LLM settings (assistant-projector reads them); each provider is configured
/// by variables named after it, [`PROVIDER_VARIABLES`].
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(next_help_heading = "LLM providers")]
pub struct LlmSettings {
    /// Provider names, in order (letters, digits and `_`), e.g. `openai,claude,local`; each
    /// is configured by its `LLM_<NAME>_*` variables (below).
    #[arg(long = "llm-providers", env = "LLM_PROVIDERS", default_value = "local")]
    pub providers: String,
    /// Failures in a row that open a provider's circuit breaker.
    #[arg(
        long = "llm-breaker-failures",
        env = "LLM_BREAKER_FAILURES",
        default_value_t = 5
    )]
    pub breaker_failures: u32,
    /// Milliseconds an open breaker stays open.
    #[arg(long = "llm-breaker-cooldown-ms", env = "LLM_BREAKER_COOLDOWN_MS", default_value = "30000", value_parser = common::config::millis)]
    pub breaker_cooldown: Duration,
    /// The longest `Retry-After` waited for, in milliseconds; longer goes to the next
    /// provider of the route.
    #[arg(long = "llm-retry-after-max-ms", env = "LLM_RETRY_AFTER_MAX_MS", default_value = "10000", value_parser = common::config::millis)]
    pub retry_after_max: Duration,
    /// LLM tokens per tenant per UTC day, one budget for all replicas (`llm_token_usage`);
    /// a call is refused once it is spent (the call that crosses the limit completes).
    /// Unset: no limit.
    #[arg(long = "llm-tenant-daily-tokens", env = "LLM_TENANT_DAILY_TOKENS")]
    pub tenant_daily_tokens: Option<u64>,
}

/// The variables named after a provider or a route, for `--help` (their defaults and
/// meanings: the table at the top of this module, and the README).
pub const PROVIDER_VARIABLES: &str = "\
Each provider NAME of LLM_PROVIDERS is configured by LLM_<NAME>_* variables:
  LLM_<NAME>_KIND                openai, anthropic or local (`local` for the name local, else required)
  LLM_<NAME>_URL                 base URL (default: the vendor's API)
  LLM_<NAME>_MODEL               the model (required for openai and anthropic)
  LLM_<NAME>_API_KEY             the key, or LLM_<NAME>_API_KEY_FILE: a file holding it (not both)
  LLM_<NAME>_TIMEOUT_MS          one attempt at most (default 60000)
  LLM_<NAME>_RETRIES             further attempts after a retryable failure (default 2)
  LLM_<NAME>_MAX_TOKENS          anthropic: max_tokens when a request sets none (default 1024)
  LLM_<NAME>_MAX_CONCURRENCY     calls in flight at once from this process (default unbounded)
  LLM_<NAME>_RPM, LLM_<NAME>_TPM requests and tokens per minute (default unbounded)
  LLM_ROUTE_<ROUTE>              a route's fallback chain (default: every provider, in order)";

impl LlmConfig {
    /// From the given variables, as if they were the environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env = Env::new(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        let settings = common::config::from_vars::<LlmSettings, _, _, _>(
            env.0.iter().map(|(k, v)| (k.as_str(), v.clone())),
        )
        .map_err(|e| ConfigError::Setting(e.to_string()))?;
        Self::resolve(settings, &env)
    }

    /// From the fixed `settings` and the process environment's `LLM_<NAME>_*` and
    /// `LLM_ROUTE_*` variables.
    pub fn from_settings(settings: LlmSettings) -> Result<Self, ConfigError> {
        let env = Env::new(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k.starts_with("LLM_")),
        );
        Self::resolve(settings, &env)
    }

    fn resolve(settings: LlmSettings, env: &Env) -> Result<Self, ConfigError> {
        let names = provider_names(&settings.providers)?;
        let providers = names
            .iter()
            .map(|name| provider(env, name))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = routes(env, &names)?;
        Ok(LlmConfig {
            providers,
            routes,
            router: RouterSettings {
                breaker: BreakerSettings {
                    failures: settings.breaker_failures,
                    cooldown: settings.breaker_cooldown,
                },
                max_retry_after: settings.retry_after_max,
                ..RouterSettings::default()
            },
            tenant_daily_tokens: settings.tenant_daily_tokens,
        })
    }

    /// The router, with an in-memory budget and the system clock.
    pub fn build(&self) -> Result<Router, BuildError> {
        self.build_with(
            Arc::new(InMemoryBudget::new(self.tenant_daily_tokens)),
            Arc::new(SystemClock),
        )
    }

    /// The router, with the given budget (which then owns the daily limit) and clock.
    pub fn build_with(
        &self,
        budget: Arc<dyn Budget>,
        clock: Arc<dyn Clock>,
    ) -> Result<Router, BuildError> {
        let mut builder = Router::builder(self.router).budget(budget).clock(clock);
        for p in &self.providers {
            builder = builder.provider(p.build()?, p.policy);
        }
        for (route, chain) in &self.routes {
            builder = builder.route(route.clone(), chain.iter().cloned());
        }
        builder.build()
    }
}

fn provider_names(raw: &str) -> Result<Vec<String>, ConfigError> {
    const VAR: &str = "LLM_PROVIDERS";
    let names = list(raw);
    if names.is_empty() {
        return Err(invalid(VAR, raw, "name at least one provider"));
    }
    for (i, name) in names.iter().enumerate() {
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                VAR,
                raw,
                &format!("{name:?}: a name has only letters, digits and _"),
            ));
        }
        if names[..i].contains(name) {
            return Err(invalid(VAR, raw, &format!("{name:?} is listed twice")));
        }
    }
    Ok(names)
}

/// Comma-separated names, trimmed and lowercased, empty ones dropped.
fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn provider(env: &Env, name: &str) -> Result<ProviderConfig, ConfigError> {
    let var = |suffix: &str| format!("LLM_{}_{suffix}", name.to_ascii_uppercase());
    let kind_var = var("KIND");
    let kind = match env.get(&kind_var) {
        Some(kind) => kind.to_owned(),
        None if name == "local" => "local".to_owned(),
        None => return Err(ConfigError::Missing { name: kind_var }),
    };
    let timeout = env.millis_or(&var("TIMEOUT_MS"), 60_000)?;
    if timeout.is_zero() {
        return Err(invalid(&var("TIMEOUT_MS"), "0", "must be above 0"));
    }
    let bound = |name: String| -> Result<Option<u32>, ConfigError> {
        match env.parse::<u32>(&name)? {
            Some(0) => Err(invalid(
                &name,
                "0",
                "must be above 0 (unset it for no bound)",
            )),
            other => Ok(other),
        }
    };
    let policy = ProviderPolicy {
        timeout,
        retries: env.parse_or(&var("RETRIES"), 2u32)?,
        limits: Limits {
            max_concurrency: bound(var("MAX_CONCURRENCY"))?.map(|n| n as usize),
            requests_per_minute: bound(var("RPM"))?,
            tokens_per_minute: bound(var("TPM"))?,
        },
    };
    let kind = match kind.as_str() {
        "local" => ProviderKind::Local,
        "openai" => ProviderKind::OpenAi(OpenAiConfig {
            name: name.to_owned(),
            base_url: env
                .get(&var("URL"))
                .unwrap_or(openai::DEFAULT_BASE_URL)
                .to_owned(),
            model: env.required(&var("MODEL"))?.to_owned(),
            api_key: api_key(env, &var("API_KEY"), &var("API_KEY_FILE"))?,
            timeout,
        }),
        "anthropic" => ProviderKind::Anthropic(AnthropicConfig {
            name: name.to_owned(),
            base_url: env
                .get(&var("URL"))
                .unwrap_or(anthropic::DEFAULT_BASE_URL)
                .to_owned(),
            model: env.required(&var("MODEL"))?.to_owned(),
            api_key: api_key(env, &var("API_KEY"), &var("API_KEY_FILE"))?,
            default_max_tokens: env
                .parse_or(&var("MAX_TOKENS"), anthropic::DEFAULT_MAX_TOKENS)?
                .max(1),
            timeout,
        }),
        other => return Err(invalid(&kind_var, other, "use openai, anthropic or local")),
    };
    Ok(ProviderConfig {
        name: name.to_owned(),
        kind,
        policy,
    })
}

/// The key from `key_var`, or read from the file `file_var` names (trimmed).
fn api_key(env: &Env, key_var: &str, file_var: &str) -> Result<Option<Secret>, ConfigError> {
    match (env.get(key_var), env.get(file_var)) {
        (Some(_), Some(path)) => Err(invalid(
            file_var,
            path,
            &format!("set {key_var} or {file_var}, not both"),
        )),
        (Some(key), None) => Ok(Some(Secret::new(key.trim()))),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                name: file_var.to_owned(),
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let key = content.trim();
            if key.is_empty() {
                return Err(invalid(file_var, path, "the file is empty"));
            }
            Ok(Some(Secret::new(key)))
        }
        (None, None) => Ok(None),
    }
}

fn routes(env: &Env, providers: &[String]) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut routes: BTreeMap<String, Vec<String>> = DEFAULT_ROUTES
        .iter()
        .map(|r| ((*r).to_owned(), providers.to_vec()))
        .collect();
    for (var, raw) in env.0.iter().filter(|(k, _)| k.starts_with("LLM_ROUTE_")) {
        let route = var["LLM_ROUTE_".len()..].to_ascii_lowercase();
        if route.is_empty() {
            continue;
        }
        let chain = list(raw);
        if chain.is_empty() {
            return Err(invalid(var, raw, "name at least one provider"));
        }
        if let Some(unknown) = chain.iter().find(|p| !providers.contains(p)) {
            return Err(invalid(
                var,
                raw,
                &format!(
                    "{unknown:?} is not in LLM_PROVIDERS ({})",
                    providers.join(",")
                ),
            ));
        }
        routes.insert(route, chain);
    }
    Ok(routes)
}

fn invalid(name: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The variables, empty ones dropped.
struct Env(HashMap<String, String>);

impl Env {
    fn new(vars: impl Iterator<Item = (String, String)>) -> Env {
        Env(vars.filter(|(_, v)| !v.is_empty()).collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })
    }

    fn parse<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|e: T::Err| invalid(name, value, &e.to_string()))
            })
            .transpose()
    }

    fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    fn millis_or(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(name, default).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<LlmConfig, ConfigError> {
        LlmConfig::from_vars(vars.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn nothing_configured_is_the_offline_local_provider_on_both_routes() {
        let c = config(&[]).unwrap();
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.providers[0].name, "local");
        assert_eq!(c.providers[0].kind, ProviderKind::Local);
        assert_eq!(c.providers[0].policy, ProviderPolicy::default());
        assert_eq!(c.routes["reply"], vec!["local"]);
        assert_eq!(c.routes["document"], vec!["local"]);
        assert_eq!(c.tenant_daily_tokens, None);
        assert_eq!(c.router, RouterSettings::default());
        let router = c.build().unwrap();
        assert_eq!(router.routes().len(), 2);
    }

    #[test]
    fn providers_routes_and_limits_are_read() {
        let dir = std::env::temp_dir().join(format!("llm-key-{}", std::process::id()));
        std::fs::write(&dir, "  sk-ant-from-file\n").unwrap();
        let path = dir.to_string_lossy().into_owned();
        let c = config(&[
            ("LLM_PROVIDERS", "Primary, backup ,local"),
            ("LLM_PRIMARY_KIND", "openai"),
            ("LLM_PRIMARY_URL", "http://localhost:11434/v1"),
            ("LLM_PRIMARY_MODEL", "llama3.2"),
            ("LLM_PRIMARY_API_KEY", "sk-openai-secret"),
            ("LLM_PRIMARY_TIMEOUT_MS", "1500"),
            ("LLM_PRIMARY_RETRIES", "0"),
            ("LLM_BACKUP_KIND", "anthropic"),
            ("LLM_BACKUP_MODEL", "claude-haiku-4-5"),
            ("LLM_BACKUP_API_KEY_FILE", &path),
            ("LLM_ROUTE_REPLY", "primary,local"),
            ("LLM_ROUTE_SUMMARY", "backup"),
            ("LLM_BREAKER_FAILURES", "3"),
            ("LLM_BREAKER_COOLDOWN_MS", "1000"),
            ("LLM_TENANT_DAILY_TOKENS", "50000"),
            ("LLM_UNRELATED", ""),
        ])
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["primary", "backup", "local"]);
        let ProviderKind::OpenAi(primary) = &c.providers[0].kind else {
            panic!("{:?}", c.providers[0]);
        };
        assert_eq!(primary.base_url, "http://localhost:11434/v1");
        assert_eq!(primary.model, "llama3.2");
        assert_eq!(primary.api_key, Some(Secret::new("sk-openai-secret")));
        assert_eq!(c.providers[0].policy.timeout, Duration::from_millis(1500));
        assert_eq!(c.providers[0].policy.retries, 0);
        let ProviderKind::Anthropic(backup) = &c.providers[1].kind else {
            panic!("{:?}", c.providers[1]);
        };
        assert_eq!(backup.base_url, "https://api.anthropic.com");
        assert_eq!(backup.api_key, Some(Secret::new("sk-ant-from-file")));
        assert_eq!(backup.default_max_tokens, 1024);
        assert_eq!(c.routes["reply"], ["primary", "local"]);
        assert_eq!(c.routes["document"], ["primary", "backup", "local"]);
        assert_eq!(c.routes["summary"], ["backup"]);
        assert_eq!(c.router.breaker.failures, 3);
        assert_eq!(c.router.breaker.cooldown, Duration::from_secs(1));
        assert_eq!(c.tenant_daily_tokens, Some(50_000));
        // Keys never show in Debug output, of the configuration or of the router.
        let debug = format!("{c:?}");
        assert!(!debug.contains("sk-openai-secret"), "{debug}");
        assert!(!debug.contains("sk-ant-from-file"), "{debug}");
        assert!(debug.contains("***"));
        let router = c.build().unwrap();
        let debug = format!("{router:?}");
        assert!(!debug.contains("sk-"), "{debug}");
    }

    #[test]
    fn configuration_errors_name_the_variable_and_never_the_key() {
        let err = |vars: &[(&str, &str)]| config(vars).unwrap_err().to_string();
        assert_eq!(
            err(&[("LLM_PROVIDERS", "gpt")]),
            "environment variable LLM_GPT_KIND is required but not set"
        );
        let e = err(&[("LLM_PROVIDERS", "gpt"), ("LLM_GPT_KIND", "gemini")]);
        assert!(
            e.contains("LLM_GPT_KIND") && e.contains("openai, anthropic or local"),
            "{e}"
        );
        assert_eq!(
            err(&[("LLM_PROVIDERS", "gpt"), ("LLM_GPT_KIND", "openai")]),
            "environment variable LLM_GPT_MODEL is required but not set"
        );
        let e = err(&[("LLM_PROVIDERS", "my-gpt")]);
        assert!(
            e.contains("LLM_PROVIDERS") && e.contains("letters, digits and _"),
            "{e}"
        );
        let e = err(&[("LLM_PROVIDERS", "local,local")]);
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&[("LLM_PROVIDERS", " , ")]);
        assert!(e.contains("at least one provider"), "{e}");
        let e = err(&[("LLM_ROUTE_REPLY", "local,gpt")]);
        assert!(
            e.contains("LLM_ROUTE_REPLY") && e.contains("\"gpt\" is not in LLM_PROVIDERS (local)"),
            "{e}"
        );
        let e = err(&[("LLM_LOCAL_TIMEOUT_MS", "soon")]);
        assert!(e.contains("LLM_LOCAL_TIMEOUT_MS=\"soon\""), "{e}");
        let e = err(&[("LLM_LOCAL_TIMEOUT_MS", "0")]);
        assert!(e.contains("must be above 0"), "{e}");
        let e = err(&[("LLM_TENANT_DAILY_TOKENS", "-5")]);
        assert!(e.contains("LLM_TENANT_DAILY_TOKENS"), "{e}");
        let gpt = [
            ("LLM_PROVIDERS", "gpt"),
            ("LLM_GPT_KIND", "openai"),
            ("LLM_GPT_MODEL", "m"),
        ];
        let e = err(&[
            gpt[0],
            gpt[1],
            gpt[2],
            ("LLM_GPT_API_KEY", "sk-never-shown"),
            ("LLM_GPT_API_KEY_FILE", "/run/secrets/key"),
        ]);
        assert!(
            e.contains("not both") && !e.contains("sk-never-shown"),
            "{e}"
        );
        let e = err(&[
            gpt[0],
            gpt[1],
            gpt[2],
            ("LLM_GPT_API_KEY_FILE", "/nonexistent/llm-key"),
        ]);
        assert!(
            e.contains("LLM_GPT_API_KEY_FILE") && e.contains("/nonexistent/llm-key"),
            "{e}"
        );
        // A URL that is not one fails when the router is built, naming the provider.
        let c = config(&[gpt[0], gpt[1], gpt[2], ("LLM_GPT_URL", "localhost:8080")]).unwrap();
        let e = c.build().unwrap_err().to_string();
        assert!(e.contains("\"gpt\"") && e.contains("localhost:8080"), "{e}");
    }
}
