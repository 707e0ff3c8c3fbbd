//! The futures every idle connection keeps alive stay small: a socket waits on its held
//! `/meta/connect` with `HeldConnect::interrupted` (and a timer) for the whole hold, its
//! pump waits in `next` between deliveries, and a held long-poll is an `Engine::process`
//! future. Growth here is memory per idle connection
//! (docs/benchmarks.md).

use std::sync::Arc;

use crier_engine::conformance::Harness;
use crier_engine::{Engine, EngineConfig, MemoryBackend, RequestContext, RequestInfo, SocketReplies, Transport, Turn};
use crier_protocol::Message;
use serde_json::json;

#[tokio::test]
async fn held_connect_and_pump_futures_stay_small() {
    let engine = Engine::builder(EngineConfig::default(), Arc::new(MemoryBackend::new())).build();
    let ws = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    // Held long-polls (HTTP) still wait inside `Engine::process`.
    let process = engine.process(Vec::<Message>::new(), &ws);
    let size = std::mem::size_of_val(&process);
    assert!(size <= 1280, "Engine::process future is {size} bytes");
    drop(process);
    let h = Harness { engine };
    let id = h.client().await;
    h.connect(&id, Some(0)).await;
    let connect: Message =
        serde_json::from_value(json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket"}))
            .expect("message");
    let SocketReplies::Held(held) = h.engine.process_socket(vec![connect], &ws, Turn::none()).await else {
        panic!("a socket's second connect is held");
    };
    // What a socket waits on, made again each turn of its loop, for the whole hold.
    let interrupted = held.interrupted();
    let size = std::mem::size_of_val(&interrupted);
    assert!(size <= 112, "HeldConnect::interrupted future is {size} bytes");
    drop(interrupted);
    let finish = held.finish(&ws);
    let size = std::mem::size_of_val(&finish);
    assert!(size <= 384, "HeldConnect::finish future is {size} bytes");
    drop(finish);
    let mut pump = h.engine.pump(&id, &ws).await.expect("a pump for a live session");
    let next = pump.next();
    let size = std::mem::size_of_val(&next);
    assert!(size <= 160, "Pump::next future is {size} bytes");
}
