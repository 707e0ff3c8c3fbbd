//! Tracing setup for `crier serve`: log lines to stderr and, when `log.otlp_endpoint` is
//! set, spans exported over OTLP/HTTP (protobuf).
//!
//! This is the only place that knows OpenTelemetry: the libraries emit `tracing` spans
//! (`handshake`, `publish`, `deliver`) and this layer turns them into OTLP spans.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::settings::{LogConfig, LogFormat};

/// How long shutdown waits for the last batch of spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A type-erased layer on the registry.
type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// What must be flushed on exit. Dropping it without [`Telemetry::shutdown`] may lose
/// the last spans.
pub(crate) struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter, waiting at most
    /// [`FLUSH_TIMEOUT`]. Call it outside the async runtime: the exporter's HTTP client
    /// is blocking.
    pub(crate) fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber: the fmt layer (human or JSON by `log.format`, filtered
/// by `RUST_LOG` or else `log.level`) and, with `log.otlp_endpoint`, an OpenTelemetry
/// layer that exports Crier's INFO spans through a batch processor.
///
/// Call it outside the async runtime (the OTLP exporter's blocking client is built here).
pub(crate) fn init(log: &LogConfig) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in files and log collectors garble lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt: BoxedLayer = match log.format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Human => fmt.with_filter(filter).boxed(),
    };
    let mut layers = vec![fmt];

    let provider = match log.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let provider = provider(endpoint, &log.service_name)?;
            // Only Crier's own spans, whatever the log level: the exporter's HTTP client
            // must not trace itself, and `log.level = "warn"` should not turn traces off.
            let targets = Targets::new().with_target("crier", Level::INFO);
            let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("crier")).with_filter(targets);
            layers.push(otel.boxed());
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry().with(layers).try_init().context("installing the tracing subscriber")?;
    if let Some(endpoint) = &log.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, service = %log.service_name, "exporting traces over otlp");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider exporting to `<endpoint>/v1/traces` in batches.
fn provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .with_context(|| format!("log.otlp_endpoint {endpoint:?}"))?;
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
