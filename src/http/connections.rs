//! Open connections, counted: each connection holds a [`Counted`] in its per-connection data
//! while it is open, raising `instauth_http_open_connections`, and the service warns (at most
//! once a second) while the count stands at the cap and new connections wait unaccepted.

use std::sync::{Arc, Mutex};

use actix_web::dev::Extensions;
use prometheus::IntGauge;

use crate::auth::admission::Shed;

/// What every connection reports to.
#[derive(Debug)]
pub(super) struct Connections {
    open: IntGauge,
    /// The effective bound: actix's per-worker bound times the workers.
    max_connections: usize,
    at_cap: Mutex<Shed>,
}

impl Connections {
    pub(super) fn new(open: IntGauge, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            open,
            max_connections,
            at_cap: Mutex::new(Shed::default()),
        })
    }

    /// Called by the server as each connection starts; the count drops when its data does.
    pub(super) fn opened(&self, data: &mut Extensions) {
        self.open.inc();
        data.insert(Counted(self.open.clone()));
        let open = usize::try_from(self.open.get()).unwrap_or(usize::MAX);
        if open >= self.max_connections
            && let Some(times) = Shed::count(&self.at_cap)
        {
            tracing::warn!(
                open,
                max_connections = self.max_connections,
                times,
                "connection limit reached: new connections wait in the listen backlog"
            );
        }
    }
}

/// One open connection's share of the gauge.
#[derive(Debug)]
struct Counted(IntGauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}
