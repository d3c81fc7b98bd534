//! Rings on agent connections: every ring offered WAITING
//! (`.ams.routing.RoutingTaskNotification`) is answered with `.ams.routing.UpdateRingState` before it
//! expires (Messaging Agent API — Getting Started, Step 6).

use serde_json::Value;

use crate::engine::{Analyzer, Context, FastMap, Frame, Hook};
use crate::frame::{as_list, body, type_is};
use crate::pyrepr::py_format_g;
use crate::record::{Record, Val};

/// A ring's deadline when its notification names no `ringExpiration`.
const RING_TIMEOUT_S: f64 = 30.0;

/// A ring offered WAITING, until its deadline: what the violation names.
struct Offer {
    conn: String,
    ring_id: String,
    offered: f64,
    frame: Option<i128>,
    timeout: f64,
}

#[derive(Default)]
pub struct Rings {
    /// conn -> ring id -> when offered.
    waiting: FastMap<String, FastMap<String, f64>>,
    /// Deadline token -> its offer.
    offers: FastMap<u64, Offer>,
    next_token: u64,
}

/// A `ringExpiration` in ms as the deadline in s (`isinstance(x, (int, float)) and x > 0`: a
/// boolean true counts as 1 ms).
fn timeout_of(expiration: Option<&Value>) -> f64 {
    let ms = match expiration {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match ms {
        Some(ms) if ms > 0.0 => ms / 1000.0,
        _ => RING_TIMEOUT_S,
    }
}

impl Analyzer for Rings {
    fn wants(&self, hook: Hook, _direction: &str, type_: Option<&str>) -> bool {
        match hook {
            Hook::Request => type_is(type_, "UpdateRingState"),
            Hook::Notification => type_.is_some_and(|t| t.ends_with("RoutingTaskNotification")),
            _ => false,
        }
    }

    fn open(&mut self, _ctx: &mut Context, rec: &Record) {
        let conn = rec.conn.as_str().expect("an open connection's id");
        self.waiting.insert(conn.to_owned(), FastMap::default());
    }

    fn notification(&mut self, ctx: &mut Context, frame: &Frame) {
        let rec = frame.rec;
        let conn = rec.conn.as_str().expect("an open connection's id");
        let t = rec.t.number().expect("a record's time");
        let Some(Value::Object(body)) = body(frame) else {
            return;
        };
        let waiting = self.waiting.get_mut(conn).expect("an open connection");
        for change in as_list(body.get("changes")) {
            let Some(Value::Object(result)) = change.as_object().and_then(|c| c.get("result"))
            else {
                continue;
            };
            for ring in as_list(result.get("ringsDetails")) {
                let Some(ring) = ring.as_object() else {
                    continue;
                };
                let Some(Value::String(ring_id)) = ring.get("ringId") else {
                    continue;
                };
                let state = ring.get("ringState").and_then(Value::as_str);
                let deleted = change.get("type").and_then(Value::as_str) == Some("DELETE");
                if state == Some("WAITING") && !deleted {
                    if !waiting.contains_key(ring_id) {
                        let timeout = timeout_of(ring.get("ringExpiration"));
                        waiting.insert(ring_id.clone(), t);
                        let token = self.next_token;
                        self.next_token += 1;
                        let offer = Offer {
                            conn: conn.to_owned(),
                            ring_id: ring_id.clone(),
                            offered: t,
                            frame: rec.n.as_int(),
                            timeout,
                        };
                        self.offers.insert(token, offer);
                        ctx.after(t, timeout, token);
                    }
                } else if state != Some("EXPIRED") {
                    // Taken elsewhere or cancelled: nothing to answer.
                    waiting.remove(ring_id);
                }
            }
        }
    }

    fn request(&mut self, _ctx: &mut Context, frame: &Frame) {
        if let Some(Value::String(ring_id)) = body(frame).and_then(|b| b.get("ringId")) {
            let conn = frame.rec.conn.as_str().expect("an open connection's id");
            if let Some(waiting) = self.waiting.get_mut(conn) {
                waiting.remove(ring_id);
            }
        }
    }

    fn deadline(&mut self, ctx: &mut Context, deadline: f64, token: u64) {
        let offer = self
            .offers
            .remove(&token)
            .expect("a deadline this analyzer set");
        let Some(waiting) = self.waiting.get_mut(&offer.conn) else {
            return;
        };
        if waiting.get(&offer.ring_id) == Some(&offer.offered) {
            waiting.remove(&offer.ring_id);
            let message = format!(
                "ring {} offered WAITING was neither ACCEPTED nor REJECTED within its {} s",
                offer.ring_id,
                py_format_g(offer.timeout)
            );
            ctx.violation(
                "ring-not-answered",
                Some(&offer.conn),
                &Val::Float(deadline),
                offer.frame,
                message,
                None,
                false,
            );
        }
    }

    fn close(&mut self, _ctx: &mut Context, rec: &Record, _at_capture_end: bool) {
        if let Some(conn) = rec.conn.as_str() {
            self.waiting.remove(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_expirations_and_lists_as_python_reads_them() {
        assert!(type_is(
            Some(".ams.routing.UpdateRingState"),
            "UpdateRingState"
        ));
        assert!(type_is(Some("UpdateRingState"), "UpdateRingState"));
        assert!(!type_is(Some("xUpdateRingState"), "UpdateRingState"));
        assert!(!type_is(None, "UpdateRingState"));
        let value = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(timeout_of(Some(&value("20000"))), 20.0);
        assert_eq!(timeout_of(Some(&value("true"))), 0.001);
        assert_eq!(timeout_of(Some(&value("0"))), RING_TIMEOUT_S);
        assert_eq!(timeout_of(Some(&value("\"5\""))), RING_TIMEOUT_S);
        assert_eq!(as_list(Some(&value("{}"))).len(), 1);
        assert_eq!(as_list(Some(&value("null"))).len(), 0);
        assert_eq!(as_list(Some(&value("[1, 2]"))).len(), 2);
    }
}
