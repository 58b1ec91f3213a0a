//! Sessions: rate limits, the offer and the pick, and session look-ups through the store.

use std::net::IpAddr;
use std::time::Instant;

use edgeplay_protocol::coords::INITIAL_ERROR;
use edgeplay_protocol::token::{EdgeId, SessionId};
use tracing::{info, warn};

use crate::error::BrokerError;
use crate::placement::Request;
use crate::ratelimit::Limited;
use crate::records::{EdgeAd, SessionRecord};
use crate::service::{Offered, Placed, Service, encode, now_ms};
use crate::store::{StoreError, Swap, Table};

impl Service {
    /// Takes a token from `ip`'s bucket and `player`'s (see [`crate::ratelimit`]).
    pub(crate) fn rate_limit(&self, ip: IpAddr, player: &str) -> Result<(), BrokerError> {
        let mut live = self.live();
        let rate = live.limiter.rate();
        let Err(which) = live.limiter.check(ip, player, Instant::now()) else {
            return Ok(());
        };
        drop(live);
        self.metrics.rate_limited.inc();
        Err(match which {
            Limited::Ip => BrokerError::RateLimited {
                who: format!("address {ip}"),
                per_sec: rate.ip_per_sec,
                burst: rate.ip_burst,
            },
            Limited::Player => BrokerError::RateLimited {
                who: format!("player `{player}`"),
                per_sec: rate.per_sec,
                burst: rate.burst,
            },
        })
    }

    /// The locked part of `POST /v1/sessions`: the request's candidates from the index and what
    /// the answer says of each, under one hold of the registry lock. None now is an empty list
    /// (503); none ever is [`crate::placement::PlacementError::Unmet`] (422), see `Index::offer`.
    pub(crate) fn offer(
        &self,
        request: &Request,
    ) -> Result<(Vec<EdgeId>, Vec<Offered>), BrokerError> {
        let live = self.live();
        let cands: Vec<EdgeId> = live
            .index
            .offer(request)?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let out = cands
            .iter()
            .filter_map(|id| live.edges.get(id))
            .map(|(r, _)| Offered {
                edge: r.ad.id,
                region: r.ad.region.clone(),
                quic_addr: r.ad.quic_addr,
                echo_addr: r.ad.echo_addr,
                coord: r.coord.unwrap_or(r.ad.coord),
                coord_error: r.coord_error.unwrap_or(INITIAL_ERROR),
            })
            .collect();
        Ok((cands, out))
    }

    /// The locked part of `POST /v1/sessions/{id}/select`: the pick on the measured RTTs and
    /// the chosen edge's registration, under one hold of the registry lock.
    pub(crate) fn choose(
        &self,
        request: &Request,
        candidates: &[EdgeId],
        measured: &[(EdgeId, f64)],
    ) -> Result<EdgeAd, BrokerError> {
        let live = self.live();
        let pick = live.index.pick(request, candidates, measured)?;
        live.edges
            .get(&pick.edge)
            .map(|(r, _)| r.ad.clone())
            .ok_or(BrokerError::ChosenEdgeLeft)
    }

    /// A new session for `player`: its candidates, recorded in the store and here.
    pub(crate) async fn create_session(
        &self,
        player: String,
        request: Request,
    ) -> Result<(SessionId, Vec<Offered>), BrokerError> {
        let (candidates, out) = self.offer(&request)?;
        if candidates.is_empty() {
            return Err(BrokerError::NoEdge);
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let id = SessionId(raw);
        let rec = SessionRecord {
            id,
            player,
            request,
            candidates,
            edge: None,
            created_unix_ms: now_ms(),
            placed_unix_ms: None,
            started_unix_ms: None,
        };
        let bytes = encode(&rec)?;
        self.store
            .put(Table::Sessions, id.to_string(), bytes)
            .await?;
        self.keep(rec);
        self.metrics.sessions.inc();
        Ok((id, out))
    }

    /// Places a session read with its revision ([`Service::session`]) on the edge picked from
    /// `measured`, through a write fenced on that revision, and mints its join token.
    ///
    /// A session is placed once: one that has an edge already (placed by an earlier selection,
    /// here or on another broker) is refused with [`BrokerError::AlreadyPlaced`] and no token
    /// is minted; moving a session to another edge is the failover's path, not this one.
    pub(crate) async fn place(
        &self,
        stored: SessionRecord,
        revision: Option<u64>,
        measured: &[(EdgeId, f64)],
    ) -> Result<Placed, BrokerError> {
        let sid = stored.id;
        if let Some(edge) = stored.edge {
            return Err(self.already_placed(sid, edge));
        }
        let edge = self.choose(&stored.request, &stored.candidates, measured)?;
        let mut rec = stored;
        let now = now_ms();
        rec.edge = Some(edge.id);
        rec.placed_unix_ms = Some(now);
        let (token, t) = self
            .key
            .mint(sid, edge.id, &rec.player, now)
            .map_err(|e| BrokerError::Internal(e.to_string()))?;
        let bytes = encode(&rec)?;
        if let Swap::Stale(_) = self
            .store
            .put_if(Table::Sessions, sid.to_string(), bytes, revision)
            .await?
        {
            // Another selection (here or on another broker) wrote first: say where it went.
            return Err(match self.session(&sid).await {
                Ok(Some((SessionRecord { edge: Some(e), .. }, _))) => self.already_placed(sid, e),
                _ => BrokerError::SessionChanged(sid),
            });
        }
        self.keep(rec);
        self.metrics.selections.inc();
        info!(session = %sid, edge = %edge.id, "session placed");
        Ok(Placed {
            edge,
            token,
            expires_unix_ms: t.expires_unix_ms,
        })
    }

    /// The refusal of a second selection of `sid`, placed on `edge` already.
    fn already_placed(&self, sid: SessionId, edge: EdgeId) -> BrokerError {
        self.reselections_refused.inc();
        info!(session = %sid, %edge, "selection refused: the session is placed already");
        BrokerError::AlreadyPlaced { session: sid, edge }
    }

    /// A session with its store revision, read through the store (so one created on another
    /// broker is found), and cached in memory.
    pub(crate) async fn session(
        &self,
        sid: &SessionId,
    ) -> Result<Option<(SessionRecord, Option<u64>)>, StoreError> {
        match self
            .store
            .get_versioned(Table::Sessions, &sid.to_string())
            .await?
        {
            Some(v) => match serde_json::from_slice::<SessionRecord>(&v.value) {
                Ok(rec) => {
                    self.keep(rec.clone());
                    Ok(Some((rec, Some(v.revision))))
                }
                Err(e) => {
                    warn!(session = %sid, error = %e, "unreadable session record");
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// [`Service::session`], or 404.
    pub(crate) async fn stored_session(
        &self,
        sid: &SessionId,
    ) -> Result<(SessionRecord, Option<u64>), BrokerError> {
        self.session(sid).await?.ok_or(BrokerError::NoSession(*sid))
    }

    /// A session as this broker knows it, or as the store has it (one created or selected on
    /// another broker of the same store): 404 when neither does.
    async fn session_record(
        &self,
        sid: &SessionId,
        need_edge: bool,
    ) -> Result<SessionRecord, BrokerError> {
        let cached = self.live().sessions.get(sid).cloned();
        match cached {
            Some(rec) if !need_edge || rec.edge.is_some() => Ok(rec),
            _ => self.stored_session(sid).await.map(|(rec, _)| rec),
        }
    }

    /// Checks that `edge` is one of the session's candidates (what a player may probe).
    pub(crate) async fn session_candidate(
        &self,
        sid: &SessionId,
        edge: &EdgeId,
    ) -> Result<(), BrokerError> {
        let rec = self.session_record(sid, false).await?;
        if rec.candidates.contains(edge) {
            Ok(())
        } else {
            Err(BrokerError::NotACandidate {
                edge: *edge,
                session: *sid,
            })
        }
    }

    /// The edge a session was placed on: 404 for an unknown session, 409 before selection.
    pub(crate) async fn session_edge(&self, sid: &SessionId) -> Result<EdgeId, BrokerError> {
        let rec = self.session_record(sid, true).await?;
        rec.edge.ok_or(BrokerError::NotPlaced(*sid))
    }
}
