//! Structured logs through `tracing`: JSON lines by default, one object per event, so log
//! shippers need no parsing rules. With `log.otlp_endpoint` set, spans are also exported over
//! OTLP/HTTP (protobuf) to a collector (Jaeger locally), sampled by `log.trace_sample_ratio`;
//! unset (the default), no OpenTelemetry layer is installed and nothing here costs anything
//! but one relaxed atomic load where a span would be linked.
//!
//! A trace continues across processes through the W3C `traceparent` the services already
//! pass: in HTTP headers (the gateway sends one with every request) and in every event's Kafka
//! headers. [`continue_trace`] makes a span the child of such a remote parent;
//! [`trace_context`] is what to pass on from a span.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

static EXPORTING: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `settings.filter`.
/// Calling it twice is harmless (tests spawn many apps in one process). Call it inside the
/// tokio runtime: the span exporter sends through it.
pub fn init(service: &str, settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_events(FmtSpan::NONE)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_span_events(FmtSpan::NONE)
            .boxed(),
    };
    let endpoint = settings.otlp_endpoint.trim();
    let traces = if endpoint.is_empty() || PROVIDER.get().is_some() {
        None
    } else {
        match tracer(service, endpoint, settings.trace_sample_ratio) {
            Ok(tracer) => Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Err(error) => {
                eprintln!("{service}: traces not exported: {error:#}");
                None
            }
        }
    };
    let exporting = traces.is_some();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    if installed.is_ok() {
        EXPORTING.store(exporting, Ordering::Relaxed);
        tracing::info!(
            service,
            otlp_endpoint = exporting.then_some(endpoint),
            trace_sample_ratio = exporting.then_some(settings.trace_sample_ratio),
            "telemetry initialised"
        );
    }
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Sends the spans still buffered (at shutdown).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

fn tracer(
    service: &str,
    endpoint: &str,
    ratio: f64,
) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracer> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| anyhow::anyhow!("telemetry::init was called outside the tokio runtime"))?;
    let client = OtlpClient {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        runtime,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // A trace is sampled where it starts (the gateway) and followed everywhere after.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer(service.to_owned());
    let _ = PROVIDER.set(provider);
    Ok(tracer)
}

/// Posts OTLP batches with the workspace's reqwest, on the tokio runtime: the batch processor
/// exports from a thread of its own, which has no reactor for reqwest to run on.
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        let call = async move {
            let response = client.execute(reqwest::Request::try_from(request)?).await?;
            let mut answer = opentelemetry_http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            Ok::<_, opentelemetry_http::HttpError>(answer.body(response.bytes().await?)?)
        };
        self.runtime.spawn(call).await?
    }
}

/// A W3C trace context: trace id, parent span id, sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl Remote {
    /// Parses a `traceparent` header value (`00-<trace>-<span>-<flags>`).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        Some(Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1,
        })
    }
}

/// Makes `span`, before it is first entered, the child of a span of another process. Nothing
/// when spans are not exported.
pub fn continue_trace(span: &Span, remote: Remote) {
    if !exporting() || remote.trace_id == 0 || remote.span_id == 0 {
        return;
    }
    let flags = if remote.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let parent = SpanContext::new(
        TraceId::from_bytes(remote.trace_id.to_be_bytes()),
        SpanId::from_bytes(remote.span_id.to_be_bytes()),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

/// The trace context to pass on from `span` (to a request or an event it causes): `None` when
/// spans are not exported.
pub fn trace_context(span: &Span) -> Option<Remote> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| Remote {
        trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
        sampled: span_context.is_sampled(),
    })
}

/// tracing-actix-web's root span per request, continuing the caller's `traceparent` when spans
/// are exported (set before the span is entered, as OpenTelemetry requires).
#[derive(Debug)]
pub struct TracedRootSpan;

impl RootSpanBuilder for TracedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let span = tracing_actix_web::root_span!(request);
        if exporting()
            && let Some(remote) = request
                .headers()
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .and_then(Remote::parse)
        {
            continue_trace(&span, remote);
        }
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_parsed_and_garbage_is_not() {
        let remote = Remote::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            remote,
            Some(Remote {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x00f067aa0ba902b7,
                sampled: true,
            })
        );
        assert!(Remote::parse("nonsense").is_none());
        assert!(Remote::parse("00-4bf92f35-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported_or_linked() {
        assert!(!exporting());
        let span = tracing::info_span!("quiet");
        continue_trace(
            &span,
            Remote {
                trace_id: 1,
                span_id: 2,
                sampled: true,
            },
        );
        assert!(trace_context(&span).is_none());
    }
}
