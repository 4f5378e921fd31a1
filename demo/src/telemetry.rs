//! How a demo service is instrumented: the way an application team would do
//! it with the official OpenTelemetry SDK. `tracing` spans become OTLP spans
//! (`tracing-opentelemetry`), `tracing` events become OTLP log records carrying
//! the trace id of the span they happened in (`opentelemetry-appender-tracing`),
//! both exported in batches over OTLP/gRPC. W3C `traceparent` and `baggage`
//! cross every call.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::{self, BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{self, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Longest a span or log record waits in the SDK before it is exported.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(String),
}

/// The service's tracer and logger providers; `shutdown` sends what is still queued.
pub struct ServiceTelemetry {
    tracer_provider: SdkTracerProvider,
    logger_provider: SdkLoggerProvider,
}

impl ServiceTelemetry {
    /// Installs the process-wide `tracing` subscriber and propagator. Must run
    /// inside the Tokio runtime (the gRPC exporter's channel lives on it).
    /// `WEFT_LOG` filters what is also printed to stderr (default `warn`).
    pub fn install(service: &str, otlp_endpoint: &str) -> Result<Self, TelemetryError> {
        let resource = Resource::builder()
            .with_service_name(service.to_string())
            .with_attributes([
                KeyValue::new("service.namespace", "crm"),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new(
                    "service.instance.id",
                    format!("{service}-{}", std::process::id()),
                ),
                KeyValue::new("deployment.environment.name", "demo"),
            ])
            .build();
        let exporter_error = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter {
            endpoint: otlp_endpoint.to_string(),
            reason: e.to_string(),
        };
        let spans = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp_endpoint)
            .build()
            .map_err(exporter_error)?;
        let logs = LogExporter::builder()
            .with_tonic()
            .with_endpoint(otlp_endpoint)
            .build()
            .map_err(exporter_error)?;
        // The SDK's default 5 s between exports would leave the apps' spans
        // seconds behind the proxies' around every request; a trace looked at
        // live should be whole.
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(spans)
                    .with_batch_config(
                        trace::BatchConfigBuilder::default()
                            .with_scheduled_delay(EXPORT_DELAY)
                            .build(),
                    )
                    .build(),
            )
            .with_resource(resource.clone())
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_log_processor(
                BatchLogProcessor::builder(logs)
                    .with_batch_config(
                        logs::BatchConfigBuilder::default()
                            .with_scheduled_delay(EXPORT_DELAY)
                            .build(),
                    )
                    .build(),
            )
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));

        // The exporter's own transport logs through `tracing` too; exporting
        // those would feed the exporter with records about itself.
        let exported = || {
            EnvFilter::new("info")
                .add_directive("hyper=off".parse().expect("static directive"))
                .add_directive("h2=off".parse().expect("static directive"))
                .add_directive("tonic=off".parse().expect("static directive"))
                .add_directive("tower=off".parse().expect("static directive"))
                .add_directive("reqwest=off".parse().expect("static directive"))
                .add_directive("opentelemetry=off".parse().expect("static directive"))
        };
        let printed =
            EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
        tracing_subscriber::registry()
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer_provider.tracer("weft-demo"))
                    .with_filter(exported()),
            )
            .with(OpenTelemetryTracingBridge::new(&logger_provider).with_filter(exported()))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .with_filter(printed),
            )
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        Ok(Self {
            tracer_provider,
            logger_provider,
        })
    }

    /// Exports what is still queued; blocking, so it runs off the runtime's workers.
    pub async fn shutdown(self) {
        let _ = tokio::task::spawn_blocking(move || {
            let _ = self.tracer_provider.shutdown();
            let _ = self.logger_provider.shutdown();
        })
        .await;
    }
}

/// Reads trace context and baggage from request headers.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes trace context and baggage into request headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
