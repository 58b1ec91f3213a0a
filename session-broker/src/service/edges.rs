//! Edges: registration, heartbeats, coordinates, peers, and where players reach them.

use std::collections::HashMap;
use std::time::Instant;

use edgeplay_protocol::coords::{Coord, INITIAL_ERROR};
use edgeplay_protocol::link::{MAX_PEERS, PeerRef};
use edgeplay_protocol::token::EdgeId;
use tracing::{info, warn};

use crate::error::BrokerError;
use crate::links::Links;
use crate::liveness::{EdgeState, Heard};
use crate::records::{EdgeAd, EdgeRecord};
use crate::requests::{self, HEARTBEAT_DOMAIN, Heartbeat, REGISTER_DOMAIN, signed_bytes};
use crate::service::{COORD_PERSIST_MS, Live, SIGNED_SKEW_MS, Service, encode, now_ms};
use crate::store::Table;

impl Service {
    /// Checks that `signed` is `edge`'s signature over its body in `domain`, issued (at
    /// `issued_unix_ms`) within the allowed skew of now; the message.
    fn check_signed<T>(
        &self,
        domain: &[u8],
        edge: &EdgeId,
        signed: requests::Signed<T>,
        issued_unix_ms: impl FnOnce(&T) -> u64,
    ) -> Result<T, BrokerError> {
        let requests::Signed {
            msg,
            unsigned: body,
            signature: sig,
        } = signed;
        let issued_unix_ms = issued_unix_ms(&msg);
        let refused = |e: BrokerError| {
            self.metrics.rejected_signatures.inc();
            e
        };
        let key = edge
            .verifying_key()
            .ok_or_else(|| refused(BrokerError::NotAKey(*edge)))?;
        key.verify_strict(&signed_bytes(domain, &body), &sig)
            .map_err(|_| refused(BrokerError::BadSignature(*edge)))?;
        if now_ms().abs_diff(issued_unix_ms) > SIGNED_SKEW_MS {
            return Err(refused(BrokerError::Stale {
                issued_unix_ms,
                skew_ms: SIGNED_SKEW_MS,
            }));
        }
        Ok(msg)
    }

    /// Parses and checks a signed registration (the body of `POST /v1/edges`, also sent over the
    /// edge link).
    pub(crate) fn verify_registration(&self, body: &[u8]) -> Result<EdgeAd, BrokerError> {
        let signed = requests::registration(body)?;
        let id = signed.msg.id;
        self.check_signed(REGISTER_DOMAIN, &id, signed, |ad| ad.issued_unix_ms)
    }

    /// 404 unless `edge` is registered (checked before its heartbeat's body is read).
    pub(crate) fn ensure_registered(&self, edge: &EdgeId) -> Result<(), BrokerError> {
        if self.live().edges.contains_key(edge) {
            Ok(())
        } else {
            Err(BrokerError::UnknownEdge(*edge))
        }
    }

    /// Parses and checks `edge`'s signed heartbeat (the body of `POST /v1/edges/{id}/heartbeat`).
    pub(crate) fn verify_heartbeat(
        &self,
        edge: &EdgeId,
        body: &[u8],
    ) -> Result<Heartbeat, BrokerError> {
        let signed = requests::heartbeat(body)?;
        self.check_signed(HEARTBEAT_DOMAIN, edge, signed, |hb| hb.issued_unix_ms)
    }

    /// Parses and checks `edge`'s signed session-end report (the body of
    /// `POST /v1/edges/{id}/ended`).
    pub(crate) fn verify_ended(
        &self,
        edge: &EdgeId,
        body: &[u8],
    ) -> Result<requests::EndedReport, BrokerError> {
        let signed = requests::ended_report(body)?;
        self.check_signed(requests::ENDED_DOMAIN, edge, signed, |r| r.issued_unix_ms)
    }

    /// Stores a checked registration and puts the edge in the index: whether it is new.
    pub(crate) async fn admit_edge(&self, ad: EdgeAd) -> Result<bool, BrokerError> {
        let rec = EdgeRecord {
            free_slots: ad.capacity,
            draining: false,
            state: EdgeState::Alive,
            home: self.me(),
            coord: None,
            coord_error: None,
            stored_coord: None,
            ad,
        };
        let bytes = encode(&rec)?;
        self.store
            .put(Table::Edges, rec.ad.id.to_string(), bytes)
            .await?;
        let id = rec.ad.id;
        let created = {
            let mut live = self.live();
            let spec = Live::spec(&live.sessions, &rec);
            live.index.upsert(spec);
            live.liveness.handle_heartbeat(id, false, Instant::now());
            let created = live.edges.insert(id, (rec, Instant::now())).is_none();
            self.metrics.edges.set(live.edges.len() as i64);
            // A dead edge registering again (its link timed out, it relinked) is alive now.
            self.metrics.edges_dead.set(Self::count_dead(&live));
            created
        };
        self.metrics.registrations.inc();
        info!(edge = %id, "edge registered");
        Ok(created)
    }

    /// Applies an edge's checked load report, from `POST /v1/edges/{id}/heartbeat` or the edge
    /// link: load and liveness live in memory, and the store sees the edge's state only when it
    /// changes. An edge heartbeating here (after its broker died, say) makes this broker its
    /// home.
    pub(crate) async fn apply_heartbeat(
        &self,
        edge: EdgeId,
        free_slots: u32,
        draining: bool,
    ) -> Result<(), BrokerError> {
        let me = self.me();
        let changed = {
            let mut live = self.live();
            let Live {
                index,
                edges,
                liveness,
                sessions,
                ..
            } = &mut *live;
            let Some((rec, seen)) = edges.get_mut(&edge) else {
                return Err(BrokerError::UnknownEdge(edge));
            };
            rec.free_slots = free_slots;
            rec.draining = draining;
            *seen = Instant::now();
            let serving = rec.free_slots < rec.ad.capacity;
            let heard = liveness.handle_heartbeat(edge, serving, Instant::now());
            let revived = heard == Heard::Revived || rec.state == EdgeState::Dead;
            let moved = rec.home != me;
            rec.state = EdgeState::Alive;
            rec.home.clone_from(&me);
            index.upsert(Live::spec(sessions, rec));
            (revived || moved).then(|| rec.clone())
        };
        if let Some(rec) = changed {
            self.edge_state_changed(rec).await;
        }
        self.metrics.heartbeats.inc();
        Ok(())
    }

    /// Any authenticated message on an edge's link proves it is alive: an edge marked dead (it
    /// was stopped, say, and its heartbeats missed) is revived by its first answer instead of
    /// waiting for its next heartbeat, which an idle edge sends only every 15 s.
    pub(crate) async fn edge_heard(&self, edge: EdgeId) {
        let dead = self
            .live()
            .edges
            .get(&edge)
            .filter(|(r, _)| r.state == EdgeState::Dead)
            .map(|(r, _)| (r.free_slots, r.draining));
        if let Some((free_slots, draining)) = dead
            && let Err(e) = self.apply_heartbeat(edge, free_slots, draining).await
        {
            warn!(%edge, error = %e, "cannot revive the edge");
        }
    }

    /// An edge reported the coordinate it measured: placement uses it from now on, and the
    /// record (so every broker of the store) carries it.
    ///
    /// # Errors
    /// What was wrong with it (not finite, out of range), or the store's failure.
    pub(crate) async fn apply_coord(
        &self,
        edge: EdgeId,
        coord: Coord,
        error: f64,
    ) -> Result<(), BrokerError> {
        if !coord.is_valid() || !error.is_finite() || error < 0.0 {
            return Err(BrokerError::BadCoordinate { edge, coord, error });
        }
        let bytes = {
            let mut guard = self.live();
            let live = &mut *guard;
            let Some((rec, _)) = live.edges.get_mut(&edge) else {
                return Ok(());
            };
            let stored = rec.stored_coord.unwrap_or(rec.ad.coord);
            rec.coord = Some(coord);
            rec.coord_error = Some(error.min(INITIAL_ERROR));
            let spec = Live::spec(&live.sessions, rec);
            live.index.upsert(spec);
            // Placement follows every report; the store only moves worth a write.
            let far = (stored.x - coord.x).hypot(stored.y - coord.y)
                + (stored.height - coord.height).abs()
                >= COORD_PERSIST_MS;
            if !far {
                return Ok(());
            }
            rec.stored_coord = Some(coord);
            encode(rec)?
        };
        self.store
            .put(Table::Edges, edge.to_string(), bytes)
            .await?;
        Ok(())
    }

    /// Up to [`MAX_PEERS`] live edges other than `edge` that answer UDP echoes, picked at random,
    /// with their coordinates: what `edge` measures next.
    pub(crate) fn peers_for(&self, edge: &EdgeId) -> Vec<PeerRef> {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            return Vec::new();
        }
        let live = self.live();
        live.index
            .sample(MAX_PEERS + 1, u64::from_le_bytes(seed))
            .into_iter()
            .filter(|id| id != edge)
            .filter_map(|id| {
                let (rec, _) = live.edges.get(&id)?;
                Some(PeerRef {
                    id,
                    echo_addr: rec.ad.echo_addr?,
                    coord: rec.coord.unwrap_or(rec.ad.coord),
                    error: rec.coord_error.unwrap_or(INITIAL_ERROR),
                })
            })
            .take(MAX_PEERS)
            .collect()
    }

    /// An edge's link dropped: it takes no new sessions until it links again.
    pub(crate) fn edge_gone(&self, edge: &EdgeId) {
        self.live().index.remove(edge);
        warn!(%edge, "edge gone: out of placement until it links again");
    }

    /// An edge's link fell silent (nothing from it for three of its heartbeat intervals, see
    /// [`crate::liveness::LinkWatch`]): it is dead now, as if its heartbeat deadline had passed
    /// (out of placement, state `dead` in the store, its sessions marked for failover), unless
    /// the sweep marked it already or another broker is its home.
    pub(crate) async fn edge_silent(&self, edge: EdgeId) {
        let news = self.live().liveness.declare_dead(&edge);
        if news {
            self.mark_dead(edge).await;
        }
    }

    /// Every registered edge's record, by id.
    pub(crate) fn edges(&self) -> Vec<EdgeRecord> {
        let live = self.live();
        let mut v: Vec<EdgeRecord> = live.edges.values().map(|(r, _)| r.clone()).collect();
        v.sort_by_key(|r| r.ad.id);
        v
    }

    /// Where players reach `edges` through a relay: `""` (this broker, relative URLs) for an
    /// edge linked here, else the URL of the broker it is linked to (its home, from the shared
    /// store), when that broker is alive. Brokers relay only to their own links.
    pub(crate) async fn relay_bases(
        &self,
        links: &Links,
        edges: &[EdgeId],
    ) -> HashMap<EdgeId, String> {
        let homes: Vec<(EdgeId, String)> = {
            let live = self.live();
            edges
                .iter()
                .filter(|e| !links.is_linked(e))
                .filter_map(|e| live.edges.get(e).map(|(r, _)| (*e, r.home.clone())))
                .collect()
        };
        let me = self.me();
        let away: Vec<_> = homes
            .into_iter()
            .filter(|(_, h)| !h.is_empty() && *h != me)
            .collect();
        if away.is_empty() {
            return HashMap::new();
        }
        let brokers = match self.store.brokers().await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot list the brokers for relay URLs; pointing players here");
                return HashMap::new();
            }
        };
        away.into_iter()
            .filter_map(|(e, home)| {
                brokers
                    .iter()
                    .find(|b| b.id == home)
                    .map(|b| (e, b.url.trim_end_matches('/').to_owned()))
            })
            .collect()
    }
}
