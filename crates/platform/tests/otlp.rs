//! Traces leave over OTLP/gRPC: a request span continues the caller's W3C trace and
//! reaches a real OTLP receiver (a tonic server built from opentelemetry-proto, standing
//! in for Jaeger's port 4317, which cannot run here).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use platform::context::{RequestContext, propagate};
use tokio::sync::mpsc;

struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_continue_the_callers_trace_and_reach_the_otlp_receiver() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", grpc.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc)),
    );
    let settings: platform::telemetry::TelemetrySettings =
        platform::config::from_vars([("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())])
            .expect("telemetry settings");
    let telemetry = platform::telemetry::init("otlp-test", &settings);

    let app = Router::new()
        .route(
            "/echo",
            get(|ctx: RequestContext| async move { ctx.traceparent }),
        )
        .layer(axum::middleware::from_fn(propagate));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(http, app).await });

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let ours = reqwest::Client::new()
        .get(format!("{base}/echo"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parts: Vec<&str> = ours.split('-').collect();
    assert_eq!(parts[1], caller_trace, "same trace: {ours}");
    assert_ne!(parts[2], caller_span, "a span of our own: {ours}");
    telemetry.shutdown().await;

    let mut found = None;
    while found.is_none() {
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("spans exported within 10 s")
            .expect("receiver open");
        for resource_spans in batch.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    if span.name == "request" {
                        found = Some((service.clone(), span));
                    }
                }
            }
        }
    }
    let (service, span) = found.unwrap();
    assert!(service.unwrap_or_default().contains("otlp-test"));
    assert_eq!(hex(&span.trace_id), caller_trace);
    assert_eq!(hex(&span.parent_span_id), caller_span);
    assert_eq!(
        hex(&span.span_id),
        parts[2],
        "the exported span is the one whose id we passed on"
    );
}
