//! The router: named routes (`reply`, `document`, any name), each an ordered fallback
//! chain of providers. For a call it checks the tenant's daily token budget (refusing
//! before any provider is called once it is spent), then tries each provider of the
//! route in order:
//!
//! * a call waits for the provider's limits ([`crate::limits`]: calls at once, requests
//!   and tokens per minute, a pause it asked for with `Retry-After`), queueing rather
//!   than failing; a pause longer than [`RouterSettings::max_retry_after`] moves on;
//! * a provider whose circuit breaker is open is skipped without a call;
//! * each attempt has the provider's timeout;
//! * a retryable failure (429, 5xx, timeout, unreachable, malformed answer) is retried
//!   up to the provider's `retries`, after the `Retry-After` the provider asked for (a
//!   pause for every caller of that provider, and for no other provider; up to
//!   [`RouterSettings::max_retry_after`], asked for longer, the router moves on) or after
//!   a jittered backoff;
//! * a permanent failure (a refusal, a misconfiguration) moves on at once.
//!
//! The first completion wins and its usage is spent from the budget; every attempt is
//! returned with it ([`Routed::attempts`]) or with the error ([`RouteError::AllFailed`]),
//! so callers can record what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::backoff::Backoff;
use thiserror::Error;

use crate::breaker::{Breaker, BreakerSettings, BreakerState};
use crate::budget::{Budget, BudgetError, InMemoryBudget, resets_at};
use crate::clock::{Clock, SystemClock};
use crate::limits::{Limiter, Limits};
use crate::{ChatProvider, ChatRequest, Completion, ProviderError};

/// How one provider is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderPolicy {
    /// One attempt at most, from sending to a parsed answer.
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// What the provider allows this process (default: no bounds).
    pub limits: Limits,
}

impl Default for ProviderPolicy {
    fn default() -> Self {
        ProviderPolicy {
            timeout: Duration::from_secs(60),
            retries: 2,
            limits: Limits::default(),
        }
    }
}

/// What applies to every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSettings {
    pub breaker: BreakerSettings,
    /// The longest `Retry-After` waited for; a provider asking for more is left for the
    /// next one in the route.
    pub max_retry_after: Duration,
    /// The first and the longest backoff between retries without `Retry-After`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            breaker: BreakerSettings::default(),
            max_retry_after: Duration::from_secs(10),
            backoff_first: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(ProviderError),
    /// Not called: its circuit breaker is open.
    CircuitOpen,
    /// Not called: it asked every caller to wait this long, longer than the router waits.
    Paused(Duration),
}

impl Outcome {
    /// Whether the provider was called at all.
    pub fn called(&self) -> bool {
        matches!(self, Outcome::Completed | Outcome::Failed(_))
    }
}

/// One attempt at one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub provider: String,
    pub outcome: Outcome,
    pub latency: Duration,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Outcome::Completed => write!(f, "{}: completed", self.provider),
            Outcome::Failed(e) => write!(f, "{}: {e}", self.provider),
            Outcome::CircuitOpen => write!(f, "{}: skipped, circuit open", self.provider),
            Outcome::Paused(wait) => write!(
                f,
                "{}: skipped, it asked to wait {} ms",
                self.provider,
                wait.as_millis()
            ),
        }
    }
}

/// Where a streamed route's pieces go: the attempt they belong to (its index in
/// [`Routed::attempts`]) and the text.
pub trait RouteDeltas: Send + Sync {
    fn delta(&self, attempt: u32, text: &str);
}

impl<F: Fn(u32, &str) + Send + Sync> RouteDeltas for F {
    fn delta(&self, attempt: u32, text: &str) {
        self(attempt, text)
    }
}

/// A completion and the attempts it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub completion: Completion,
    /// Every attempt, in order; the last one completed.
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Error)]
pub enum RouteError {
    #[error("no LLM route named {0:?}")]
    UnknownRoute(String),
    #[error(
        "tenant {tenant} has used its daily budget of {limit} LLM tokens; it resets at {resets_at}"
    )]
    BudgetExhausted {
        tenant: String,
        limit: u64,
        resets_at: DateTime<Utc>,
    },
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("every provider of LLM route {route:?} failed: {}", summary(.attempts))]
    AllFailed {
        route: String,
        attempts: Vec<Attempt>,
    },
}

fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(Attempt::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A router that cannot be built as configured.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildError {
    #[error("two LLM providers are named {0:?}")]
    DuplicateProvider(String),
    #[error("LLM route {route:?} names {provider:?}, which is not a configured provider")]
    UnknownProvider { route: String, provider: String },
    #[error("LLM route {0:?} names no provider")]
    EmptyRoute(String),
    #[error("LLM provider {name:?}: {error}")]
    Provider { name: String, error: ProviderError },
}

struct Slot {
    provider: Arc<dyn ChatProvider>,
    policy: ProviderPolicy,
    breaker: Arc<Breaker>,
    limiter: Limiter,
}

pub struct Router {
    providers: HashMap<String, Slot>,
    routes: BTreeMap<String, Vec<String>>,
    budget: Arc<dyn Budget>,
    clock: Arc<dyn Clock>,
    settings: RouterSettings,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`Router`]: providers with their policies, routes, the budget and clock.
pub struct RouterBuilder {
    settings: RouterSettings,
    providers: Vec<(Arc<dyn ChatProvider>, ProviderPolicy)>,
    routes: Vec<(String, Vec<String>)>,
    budget: Arc<dyn Budget>,
    clock: Arc<dyn Clock>,
}

impl RouterBuilder {
    pub fn provider(mut self, provider: Arc<dyn ChatProvider>, policy: ProviderPolicy) -> Self {
        self.providers.push((provider, policy));
        self
    }

    /// A route trying `providers` in order (a later call with the same name replaces it).
    pub fn route<I, S>(mut self, name: impl Into<String>, providers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.routes
            .push((name.into(), providers.into_iter().map(Into::into).collect()));
        self
    }

    /// The token budget (default: unlimited).
    pub fn budget(mut self, budget: Arc<dyn Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// The clock (default: the system's).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn build(self) -> Result<Router, BuildError> {
        let mut providers = HashMap::new();
        for (provider, policy) in self.providers {
            let name = provider.name().to_owned();
            let slot = Slot {
                provider,
                policy,
                breaker: Breaker::new(self.settings.breaker, self.clock.clone()),
                limiter: Limiter::new(policy.limits, self.clock.clone()),
            };
            if providers.insert(name.clone(), slot).is_some() {
                return Err(BuildError::DuplicateProvider(name));
            }
        }
        let mut routes = BTreeMap::new();
        for (route, chain) in self.routes {
            if chain.is_empty() {
                return Err(BuildError::EmptyRoute(route));
            }
            if let Some(unknown) = chain.iter().find(|p| !providers.contains_key(*p)) {
                return Err(BuildError::UnknownProvider {
                    route,
                    provider: unknown.clone(),
                });
            }
            routes.insert(route, chain);
        }
        Ok(Router {
            providers,
            routes,
            budget: self.budget,
            clock: self.clock,
            settings: self.settings,
        })
    }
}

impl Router {
    pub fn builder(settings: RouterSettings) -> RouterBuilder {
        RouterBuilder {
            settings,
            providers: Vec::new(),
            routes: Vec::new(),
            budget: Arc::new(InMemoryBudget::new(None)),
            clock: Arc::new(SystemClock),
        }
    }

    /// The routes and their chains.
    pub fn routes(&self) -> &BTreeMap<String, Vec<String>> {
        &self.routes
    }

    /// The state of a provider's circuit breaker (`None`: no such provider).
    pub fn breaker_state(&self, provider: &str) -> Option<BreakerState> {
        self.providers.get(provider).map(|s| s.breaker.state())
    }

    /// Completes `req` for `tenant` through the providers of `route`.
    pub async fn route(
        &self,
        route: &str,
        tenant: &str,
        req: &ChatRequest,
    ) -> Result<Routed, RouteError> {
        self.route_with(route, tenant, req, None).await
    }

    /// [`Router::route`], streaming: each piece of the answer goes to `deltas` as the
    /// provider sends it, numbered by the attempt it belongs to (a retry or the next
    /// provider starts a new attempt, whose pieces replace the earlier ones').
    pub async fn route_streaming(
        &self,
        route: &str,
        tenant: &str,
        req: &ChatRequest,
        deltas: &dyn RouteDeltas,
    ) -> Result<Routed, RouteError> {
        self.route_with(route, tenant, req, Some(deltas)).await
    }

    async fn route_with(
        &self,
        route: &str,
        tenant: &str,
        req: &ChatRequest,
        deltas: Option<&dyn RouteDeltas>,
    ) -> Result<Routed, RouteError> {
        let chain = self
            .routes
            .get(route)
            .ok_or_else(|| RouteError::UnknownRoute(route.to_owned()))?;
        let day = self.clock.utc().date_naive();
        if let Some(allowance) = self.budget.remaining(tenant, day).await?
            && allowance.remaining() == 0
        {
            tracing::info!(
                route,
                tenant,
                limit = allowance.limit,
                "llm budget exhausted"
            );
            return Err(RouteError::BudgetExhausted {
                tenant: tenant.to_owned(),
                limit: allowance.limit,
                resets_at: resets_at(day),
            });
        }
        let mut attempts = Vec::new();
        for name in chain {
            let Some(slot) = self.providers.get(name) else {
                continue;
            };
            if let Some(completion) = self
                .try_provider(route, name, slot, req, deltas, &mut attempts)
                .await
            {
                if let Err(e) = self
                    .budget
                    .spend(tenant, day, completion.usage.total())
                    .await
                {
                    tracing::warn!(route, tenant, error = %e, "llm tokens spent could not be recorded");
                }
                return Ok(Routed {
                    completion,
                    attempts,
                });
            }
        }
        tracing::warn!(
            route,
            tenant,
            attempts = attempts.len(),
            "every llm provider failed"
        );
        Err(RouteError::AllFailed {
            route: route.to_owned(),
            attempts,
        })
    }

    /// Attempts at one provider, retrying what may succeed on a retry; `None` when the
    /// route should move on to the next provider.
    async fn try_provider(
        &self,
        route: &str,
        name: &str,
        slot: &Slot,
        req: &ChatRequest,
        deltas: Option<&dyn RouteDeltas>,
        attempts: &mut Vec<Attempt>,
    ) -> Option<Completion> {
        let mut backoff = Backoff::new(self.settings.backoff_first, self.settings.backoff_max);
        let mut attempt = 0u32;
        loop {
            // Its turn under the provider's limits: queued, not refused.
            let admitted = match slot.limiter.admit(req, self.settings.max_retry_after).await {
                Ok(admitted) => admitted,
                Err(wait) => {
                    tracing::info!(
                        route,
                        provider = name,
                        wait_ms = wait.as_millis() as u64,
                        "llm provider paused for longer than allowed; moving on"
                    );
                    attempts.push(Attempt {
                        provider: name.to_owned(),
                        outcome: Outcome::Paused(wait),
                        latency: Duration::ZERO,
                    });
                    return None;
                }
            };
            let Some(permit) = slot.breaker.try_acquire() else {
                tracing::debug!(route, provider = name, "llm provider skipped: circuit open");
                attempts.push(Attempt {
                    provider: name.to_owned(),
                    outcome: Outcome::CircuitOpen,
                    latency: Duration::ZERO,
                });
                return None;
            };
            let started = Instant::now();
            let number = attempts.len() as u32;
            let call = async {
                match deltas {
                    None => slot.provider.complete(req).await,
                    Some(deltas) => {
                        let piece = |text: &str| deltas.delta(number, text);
                        slot.provider.stream(req, &piece).await
                    }
                }
            };
            let result = tokio::time::timeout(slot.policy.timeout, call)
                .await
                .unwrap_or(Err(ProviderError::TimedOut {
                    after: slot.policy.timeout,
                }));
            let latency = started.elapsed();
            let error = match result {
                Ok(mut completion) => {
                    permit.succeeded();
                    slot.limiter.settle(&admitted, completion.usage.total());
                    completion.provider = name.to_owned();
                    tracing::info!(
                        route,
                        provider = name,
                        model = %completion.model,
                        latency_ms = latency.as_millis() as u64,
                        prompt_tokens = completion.usage.prompt_tokens,
                        completion_tokens = completion.usage.completion_tokens,
                        "llm completion"
                    );
                    attempts.push(Attempt {
                        provider: name.to_owned(),
                        outcome: Outcome::Completed,
                        latency,
                    });
                    return Some(completion);
                }
                Err(error) => error,
            };
            if matches!(error, ProviderError::Rejected(_)) {
                permit.succeeded();
            } else {
                permit.failed();
            }
            tracing::warn!(
                route,
                provider = name,
                attempt,
                latency_ms = latency.as_millis() as u64,
                error = %error,
                "llm attempt failed"
            );
            attempts.push(Attempt {
                provider: name.to_owned(),
                outcome: Outcome::Failed(error.clone()),
                latency,
            });
            drop(admitted);
            if let ProviderError::Unavailable {
                retry_after: Some(after),
                ..
            } = error
            {
                // Every caller of this provider waits, none of another's.
                slot.limiter.pause(after);
            }
            if !error.is_retryable() || attempt >= slot.policy.retries {
                return None;
            }
            let wait = match error {
                ProviderError::Unavailable {
                    retry_after: Some(after),
                    ..
                } => {
                    if after > self.settings.max_retry_after {
                        tracing::info!(
                            route,
                            provider = name,
                            retry_after_ms = after.as_millis() as u64,
                            "llm provider asks to wait longer than allowed; moving on"
                        );
                        return None;
                    }
                    // The next admission waits the pause out.
                    Duration::ZERO
                }
                _ => backoff.next_delay(),
            };
            if !wait.is_zero() {
                self.clock.sleep(wait).await;
            }
            attempt += 1;
        }
    }
}
