//! `GET /api/v1/events`: the plugins' events as a Server-Sent Events stream. Each event's SSE
//! `event:` is its type (`transition`, `action_error`, `entity_initialized`, `job_start`,
//! `job_complete`, `job_error`, `job_finished`, `backup_start`, `backup_complete`,
//! `backup_error`, `restore_start`, `restore_complete`, `restore_error`, `reload`, …) and its
//! `data:` the event as JSON; `?types=a,b` keeps only those.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::runtime::Runtime;

/// One event, as sent to every subscriber.
#[derive(Debug, Clone)]
pub struct Published {
    pub kind: String,
    pub data: Value,
}

/// The runner's events, gathered from every plugin.
pub struct Events {
    tx: broadcast::Sender<Arc<Published>>,
}

impl Events {
    /// Follows the runtime's plugins for as long as they live.
    pub fn follow(runtime: &Runtime) -> Arc<Self> {
        let (tx, _) = broadcast::channel(1024);
        let this = Arc::new(Self { tx });
        forward(runtime.scheduler.subscribe(), &this, "type");
        if let Some(machines) = &runtime.machines {
            forward(machines.subscribe(), &this, "type");
        }
        if let Some(backup) = runtime.backup() {
            forward(backup.subscribe(), &this, "event");
        }
        this
    }

    pub fn publish(&self, kind: &str, data: Value) {
        let _ = self.tx.send(Arc::new(Published {
            kind: kind.to_string(),
            data,
        }));
    }

    /// The stream a client reads; `types` empty means every event.
    pub fn stream(
        &self,
        types: Vec<String>,
    ) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
        let rx = self.tx.subscribe();
        let stream = futures::stream::unfold((rx, types), |(mut rx, types)| async move {
            loop {
                match rx.recv().await {
                    Ok(e) if types.is_empty() || types.contains(&e.kind) => {
                        let event = Event::default()
                            .event(e.kind.clone())
                            .data(e.data.to_string());
                        return Some((Ok(event), (rx, types)));
                    }
                    Ok(_) => continue,
                    // A reader too slow for 1024 events is told how many it missed.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let event = Event::default()
                            .event("lagged")
                            .data(serde_json::json!({ "missed": missed }).to_string());
                        return Some((Ok(event), (rx, types)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        // A comment every 15 s keeps proxies from closing a quiet stream, and counts as
        // traffic for the API's idle timeout.
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    }
}

/// Re-publishes a plugin's events under the name their `tag` field holds.
fn forward<E: serde::Serialize + Clone + Send + 'static>(
    mut rx: broadcast::Receiver<E>,
    events: &Arc<Events>,
    tag: &'static str,
) {
    let events = Arc::downgrade(events);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let Some(events) = events.upgrade() else {
                        return;
                    };
                    let data = serde_json::to_value(&e).unwrap_or(Value::Null);
                    let kind = data[tag].as_str().unwrap_or("event").to_string();
                    events.publish(&kind, data);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
