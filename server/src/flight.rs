//! The gRPC-facing service: authentication and sessions around the Flight SQL
//! service.
//!
//! ```text
//! request ─> ContrailFlight: authenticate (bearer token) ─> resolve session
//!              (cookie / token) ─> attach RequestContext ─> SqlService
//! response <─ add Set-Cookie when the session was just created <─┘
//! ```
//!
//! arrow-flight's `FlightSqlService` answers every method through one blanket
//! `FlightService` impl; wrapping it here is also where methods the
//! trait hard-codes (PollFlightInfo) get their own implementation.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo, SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use contrail_workflows::dataplane::SpoolTicket;

use crate::error::Error;
use crate::service::SqlService;
use crate::session::{RequestContext, SESSION_COOKIE, Sessions, cookie_session_id};
use crate::wire::{Frames, flight_frames};

type Inner = SqlService;

/// The Flight service Contrail serves.
pub struct ContrailFlight {
    inner: Arc<SqlService>,
    sessions: Sessions,
}

impl ContrailFlight {
    pub fn new(inner: Arc<SqlService>, sessions: Sessions) -> Self {
        Self { inner, sessions }
    }

    /// Authenticate and attach the session.
    fn admit<T>(&self, mut request: Request<T>) -> Result<(Request<T>, RequestContext), Status> {
        let identity = if self.inner.auth.enabled() {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Status::from(Error::unauthenticated(
                        "authentication required: handshake with Basic credentials first",
                    ))
                })?;
            Some(self.inner.auth.verify_bearer(header)?)
        } else {
            None
        };
        let cookie = request
            .metadata()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(cookie_session_id)
            .map(str::to_string);
        let rc = self.sessions.resolve(cookie.as_deref(), identity);
        request.extensions_mut().insert(rc.clone());
        Ok((request, rc))
    }
}

/// Add `Set-Cookie` when the session was created by this request.
fn announce<T>(rc: &RequestContext, mut response: Response<T>) -> Response<T> {
    if rc.session.take_announce() {
        if let Ok(v) = format!("{SESSION_COOKIE}={}; Path=/; HttpOnly", rc.session.id()).parse() {
            response.metadata_mut().append("set-cookie", v);
        }
    }
    response
}

/// A descriptor's command must decode before the generic dispatch sees it:
/// arrow-flight reports a command it cannot read as INTERNAL, and it is the
/// client's (INVALID_ARGUMENT).
fn check_command(descriptor: &FlightDescriptor) -> Result<(), Status> {
    use arrow_flight::flight_descriptor::DescriptorType;
    use arrow_flight::sql::{Any, Command};
    use prost::Message;
    if descriptor.r#type != DescriptorType::Cmd as i32 {
        return Ok(());
    }
    // Not an `Any` (Contrail's own poll descriptors): the service reads it.
    let Ok(any) = Any::decode(&*descriptor.cmd) else {
        return Ok(());
    };
    if !any
        .type_url
        .starts_with("type.googleapis.com/arrow.flight.protocol.sql.")
    {
        return Ok(());
    }
    Command::try_from(any)
        .map_err(|e| Status::invalid_argument(format!("the descriptor's command cannot be read: {e}")))?;
    Ok(())
}

macro_rules! delegate {
    ($self:ident, $method:ident, $request:ident) => {{
        let (request, rc) = $self.admit($request)?;
        let response = <Inner as FlightService>::$method(&$self.inner, request).await?;
        Ok(announce(&rc, response))
    }};
}

impl ContrailFlight {
    /// DoGet for [`crate::wire::FlightRouter`]: a statement's rows go out as
    /// IPC frames straight from their columns; every other ticket (catalog
    /// metadata, spooled workflow partitions) takes the generic path.
    pub async fn do_get_frames(&self, request: Request<Ticket>) -> Result<Response<Frames>, Status> {
        if SpoolTicket::is_spool_ticket(&request.get_ref().ticket) {
            return Ok(self.do_get(request).await?.map(flight_frames));
        }
        let (request, rc) = self.admit(request)?;
        let response = match self.inner.rows(&rc, request.get_ref()).await? {
            Some(rows) => Response::new(rows.frames()?),
            None => <Inner as FlightService>::do_get(&self.inner, request)
                .await?
                .map(flight_frames),
        };
        Ok(announce(&rc, response))
    }
}

#[tonic::async_trait]
impl FlightService for ContrailFlight {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // The handshake is where credentials are checked; no token yet.
        <Inner as FlightService>::handshake(&self.inner, request).await
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        delegate!(self, list_flights, request)
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let (request, rc) = self.admit(request)?;
        check_command(request.get_ref())?;
        let response = <Inner as FlightService>::get_flight_info(&self.inner, request).await?;
        Ok(announce(&rc, response))
    }

    async fn poll_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        // Statements start here; workflow statements answer at once with progress
        // and a descriptor to poll again. Anything else completes within the call.
        let (request, rc) = self.admit(request)?;
        check_command(request.get_ref())?;
        if let Some(poll) = self.inner.poll(&rc, request.get_ref().clone()).await? {
            return Ok(announce(&rc, Response::new(poll)));
        }
        let info = <Inner as FlightService>::get_flight_info(&self.inner, request)
            .await?
            .into_inner();
        let poll = PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        };
        Ok(announce(&rc, Response::new(poll)))
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let (request, rc) = self.admit(request)?;
        check_command(request.get_ref())?;
        let schema = self.inner.schema_of(&rc, request.get_ref()).await?;
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let result = SchemaResult::try_from(arrow_flight::SchemaAsIpc::new(&schema, &options))
            .map_err(|e| Status::from(Error::from(e)))?;
        Ok(announce(&rc, Response::new(result)))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        if SpoolTicket::is_spool_ticket(&request.get_ref().ticket) {
            let (request, rc) = self.admit(request)?;
            let stream = self.inner.spooled(&request.get_ref().ticket).await?;
            return Ok(announce(&rc, Response::new(stream)));
        }
        delegate!(self, do_get, request)
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        delegate!(self, do_put, request)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        delegate!(self, do_exchange, request)
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        delegate!(self, do_action, request)
    }

    async fn list_actions(&self, request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        delegate!(self, list_actions, request)
    }
}
