//! The futures every idle connection keeps alive stay small: a held `/meta/connect` is a
//! `process` future for the whole hold, and a socket's pump waits in `next` between
//! deliveries. Growth here is memory per idle connection (docs/benchmarks.md).

use std::sync::Arc;

use crier_engine::conformance::Harness;
use crier_engine::{Engine, EngineConfig, MemoryBackend, RequestContext, RequestInfo, Transport};
use crier_protocol::Message;

#[tokio::test]
async fn held_connect_and_pump_futures_stay_small() {
    let engine = Engine::builder(EngineConfig::default(), Arc::new(MemoryBackend::new())).build();
    let ctx = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let process = engine.process(Vec::<Message>::new(), &ctx);
    let size = std::mem::size_of_val(&process);
    assert!(size <= 1280, "Engine::process future is {size} bytes");
    drop(process);
    let h = Harness { engine };
    let id = h.client().await;
    let mut pump = h.engine.pump(&id, &ctx).await.expect("a pump for a live session");
    let next = pump.next();
    let size = std::mem::size_of_val(&next);
    assert!(size <= 256, "Pump::next future is {size} bytes");
}
