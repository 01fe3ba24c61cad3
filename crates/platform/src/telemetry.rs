//! Structured logs through `tracing`, traces over OTLP, metrics for Prometheus.
//!
//! `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` writes one JSON object per line
//! for log shippers. With `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. Jaeger's
//! `http://jaeger:4317`), spans are exported over OTLP/gRPC, and spans continue the W3C
//! trace context they receive in HTTP and Kafka headers.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
#[must_use = "dropping it loses spans not yet exported; call shutdown() on exit"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The SDK's shutdown blocks: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

fn otlp_provider(service: &'static str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// How a process logs and traces.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetrySettings {
    /// Which events are logged: a level or `tracing` directives (`dev/stack` runs the
    /// broker at `warn` whatever it is: `THREADLINE_BROKER_LOG` to change that).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub filter: String,
    /// `text`, or `json` for one JSON object per line.
    #[arg(long = "log-format", env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// OTLP/gRPC trace export, e.g. Jaeger's `http://jaeger:4317` (unset: no export).
    #[arg(
        long = "otel-exporter-otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
}

/// Installs the global subscriber. Call once, first thing in `main` after its settings
/// are parsed.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> Telemetry {
    // The metrics recorder first: counters registered from here on are exported.
    let _ = metrics();
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings.format == "json";
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().compact().boxed()
    };
    let mut problem = None;
    let provider = settings.otlp_endpoint.as_ref().and_then(|endpoint| {
        otlp_provider(service, endpoint)
            .map_err(|e| problem = Some(format!("OTLP exporter to {endpoint}: {e}")))
            .ok()
    });
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init();
    if installed.is_ok() {
        tracing::info!(
            service,
            tracing = provider.is_some(),
            "telemetry initialised"
        );
    }
    if let Some(problem) = problem {
        tracing::error!(%problem, "traces are not exported");
    }
    Telemetry { provider }
}

/// Makes `span` a child of the W3C trace context in `traceparent`/`tracestate`.
/// Without an exporter this does nothing.
pub fn continue_trace(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_owned(), state.to_owned());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of `span`, when spans are being recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Installs the global Prometheus recorder (once per process) and returns its handle,
/// which renders `/metrics`.
pub fn metrics() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
