//! The Arrow Flight service.
//!
//! - `DoPut` uploads a table. Descriptor: the path `rooms/<room id>/tables/<table>` (one segment, or
//!   the four segments `rooms`, `<room id>`, `tables`, `<table>`), or the command
//!   `sealroom.flight.v1.UploadTable`.
//! - `DoGet` returns a released result section. Ticket: `rooms/<room id>/computations/<name>/runs/<run
//!   id or latest>/sections/<section>` in UTF-8.
//! - `ListFlights` / `GetFlightInfo` / `GetSchema` show a caller the result sections it may read
//!   (with tickets) and the tables it owns (their expected schema and status); nothing else.
//! - `DoAction("run-computation")` runs a computation; `DoAction("lookalike-model")` releases a
//!   lookalike's model to a participant the contract names in `model_to`;
//!   `DoAction("lookalike-audience")` delivers the top N of a lookalike to the publisher's sink.
//! - `Handshake` with the participant token (a JWT, see `sealroom_attest::token`) as payload answers which rooms it authenticates in.
//!
//! Every call carries `authorization: Bearer <token>` (except `Handshake`, which takes the token as
//! its payload).

use std::pin::Pin;

use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket, flight_descriptor,
};
use futures::stream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sealroom_engine::{Caller, Channel, Engine, Error};
use sealroom_proto::flight::v1::{RunComputation, UploadTable};
use tonic::{Request, Response, Status, Streaming};

use crate::error::to_status;

/// The name of the action that runs a computation.
pub const RUN_ACTION: &str = "run-computation";
/// The name of the action that releases a lookalike's model (to `model_to`).
pub const MODEL_ACTION: &str = "lookalike-model";
/// The name of the action that delivers a lookalike audience to the publisher's sink.
pub const AUDIENCE_ACTION: &str = "lookalike-audience";
/// The name of the action that returns attestation evidence (no token needed).
pub const ATTESTATION_ACTION: &str = "attestation";

#[derive(Debug, Clone)]
pub struct SealroomFlight {
    engine: Engine,
}

impl SealroomFlight {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

fn status(e: Error) -> Status {
    to_status(&e)
}

/// The participant token of a request (`authorization: Bearer <JWT>`).
fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    let value = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "missing `authorization: Bearer <token>` metadata; every call must carry the participant's token",
        )
    })?;
    let text = value.to_str().map_err(|_| Status::unauthenticated("the authorization metadata is not ASCII"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("the authorization metadata must be `Bearer <token>`"))?;
    Ok(token.trim().to_owned())
}

/// What a descriptor path or ticket points at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Table { room: String, table: String },
    Section { room: String, computation: String, run: String, section: String },
}

impl Target {
    fn room(&self) -> &str {
        match self {
            Self::Table { room, .. } | Self::Section { room, .. } => room,
        }
    }
}

const PATH_HELP: &str = "expected `rooms/<room id>/tables/<table>` or \
     `rooms/<room id>/computations/<name>/runs/<run id or latest>/sections/<section>`";

fn parse_path(segments: &[String]) -> Result<Target, Status> {
    let parts: Vec<&str> = if segments.len() == 1 {
        segments[0].split('/').filter(|s| !s.is_empty()).collect()
    } else {
        segments.iter().map(String::as_str).collect()
    };
    match parts.as_slice() {
        ["rooms", room, "tables", table] => Ok(Target::Table { room: (*room).into(), table: (*table).into() }),
        ["rooms", room, "computations", computation, "runs", run, "sections", section] => Ok(Target::Section {
            room: (*room).into(),
            computation: (*computation).into(),
            run: (*run).into(),
            section: (*section).into(),
        }),
        _ => Err(Status::invalid_argument(format!("unrecognized path '{}': {PATH_HELP}", parts.join("/")))),
    }
}

fn parse_descriptor(descriptor: &FlightDescriptor) -> Result<Target, Status> {
    match flight_descriptor::DescriptorType::try_from(descriptor.r#type) {
        Ok(flight_descriptor::DescriptorType::Path) => parse_path(&descriptor.path),
        Ok(flight_descriptor::DescriptorType::Cmd) => {
            let cmd = UploadTable::decode(descriptor.cmd.clone()).map_err(|e| {
                Status::invalid_argument(format!("the descriptor command is not a sealroom.flight.v1.UploadTable: {e}"))
            })?;
            Ok(Target::Table { room: cmd.room_id, table: cmd.table })
        }
        _ => Err(Status::invalid_argument(format!("the descriptor has no type; {PATH_HELP}"))),
    }
}

fn section_path(room: &str, computation: &str, run: &str, section: &str) -> String {
    format!("rooms/{room}/computations/{computation}/runs/{run}/sections/{section}")
}

impl SealroomFlight {
    fn caller<T>(&self, request: &Request<T>, room: &str) -> Result<Caller, Status> {
        let token = bearer(request)?;
        self.engine.authenticate(room, &token).map_err(status)
    }

    /// FlightInfos for every result section of the latest run of the computations a caller may read.
    fn result_infos(&self, caller: &Caller) -> Result<Vec<FlightInfo>, Status> {
        let mut infos = Vec::new();
        for computation in self.engine.computations(caller).map_err(status)? {
            if !computation.you_may_read || computation.latest_run.is_none() {
                continue;
            }
            for shape in self.engine.section_shapes(caller, &computation.name, None).map_err(status)? {
                infos.push(self.section_info(caller, &computation.name, &shape)?);
            }
        }
        Ok(infos)
    }

    fn section_info(
        &self,
        caller: &Caller,
        computation: &str,
        shape: &sealroom_engine::SectionShape,
    ) -> Result<FlightInfo, Status> {
        let path = section_path(caller.room_id().as_str(), computation, &shape.run_id, &shape.name);
        FlightInfo::new().try_with_schema(&shape.schema).map_err(|e| Status::internal(e.to_string())).map(|info| {
            info.with_descriptor(FlightDescriptor::new_path(vec![path.clone()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(path)))
                .with_total_records(i64::try_from(shape.rows).unwrap_or(-1))
                .with_ordered(true)
        })
    }

    /// FlightInfo of a table for its owner: the schema the contract expects and the dataset status.
    fn table_info(&self, caller: &Caller, table: &str) -> Result<FlightInfo, Status> {
        let status_of = self.engine.datasets(caller).map_err(status)?.into_iter().find(|d| d.table == table);
        let Some(dataset) = status_of else {
            return Err(status(Error::NotFound(format!("room {} has no table '{table}'", caller.room_id()))));
        };
        if dataset.owner != caller.participant() {
            return Err(status(Error::PermissionDenied(format!(
                "only the owner of table '{table}' ({}) may see its flight information",
                dataset.owner
            ))));
        }
        let schema = self.engine.upload_schema(caller, table).map_err(status)?;
        let path = format!("rooms/{}/tables/{table}", caller.room_id());
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(FlightDescriptor::new_path(vec![path]))
            .with_total_records(dataset.rows.map_or(-1, |r| i64::try_from(r).unwrap_or(-1)));
        Ok(info)
    }

    fn info_for(&self, caller: &Caller, target: &Target) -> Result<FlightInfo, Status> {
        match target {
            Target::Table { table, .. } => self.table_info(caller, table),
            Target::Section { computation, run, section, .. } => {
                let shapes = self.engine.section_shapes(caller, computation, Some(run)).map_err(status)?;
                let shape = shapes.iter().find(|s| &s.name == section).ok_or_else(|| {
                    Status::not_found(format!(
                        "computation '{computation}' has no section '{section}' (sections: {})",
                        shapes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                self.section_info(caller, computation, shape)
            }
        }
    }
}

type FlightStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The JSON body of the lookalike actions.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LookalikeAction {
    room_id: String,
    computation: String,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

impl LookalikeAction {
    fn parse(action: &Action, shape: &str) -> Result<Self, Status> {
        serde_json::from_slice(&action.body)
            .map_err(|e| Status::invalid_argument(format!("the {} body must be JSON like {shape}: {e}", action.r#type)))
    }
}

impl SealroomFlight {
    async fn run_action(&self, request: &Request<Action>) -> Result<serde_json::Value, Status> {
        let body = &request.get_ref().body;
        let run = if body.first() == Some(&b'{') {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                room_id: String,
                computation: String,
            }
            let b: Body = serde_json::from_slice(body).map_err(|e| {
                Status::invalid_argument(format!(
                    "the {RUN_ACTION} body must be {{\"room_id\": …, \"computation\": …}}: {e}"
                ))
            })?;
            RunComputation { room_id: b.room_id, computation: b.computation }
        } else {
            RunComputation::decode(body.clone()).map_err(|e| {
                Status::invalid_argument(format!(
                    "the {RUN_ACTION} body is neither JSON nor a sealroom.flight.v1.RunComputation: {e}"
                ))
            })?
        };
        let caller = self.caller(request, &run.room_id)?;
        let record = self.engine.run(&caller, &run.computation).await.map_err(status)?;
        let tickets: serde_json::Map<String, serde_json::Value> = record
            .sections
            .iter()
            .map(|s| (s.clone(), section_path(&run.room_id, &record.computation, &record.run_id, s).into()))
            .collect();
        Ok(serde_json::json!({ "run": record, "tickets": tickets }))
    }

    async fn model_action(&self, request: &Request<Action>) -> Result<serde_json::Value, Status> {
        let a =
            LookalikeAction::parse(request.get_ref(), r#"{"room_id": "r", "computation": "lookalike", "run": "…"}"#)?;
        if a.size.is_some() {
            return Err(Status::invalid_argument(format!(
                "{MODEL_ACTION} takes no size: the size is for {AUDIENCE_ACTION}"
            )));
        }
        let caller = self.caller(request, &a.room_id)?;
        let engine = self.engine.clone();
        crate::off_runtime(move || {
            engine.release_model(&caller, &a.computation, a.run.as_deref(), Channel::Flight).map(|m| m.json().clone())
        })
        .await
        .map_err(status)
    }

    async fn attestation_action(&self, request: &Request<Action>) -> Result<serde_json::Value, Status> {
        #[derive(serde::Deserialize)]
        struct Body {
            room_id: String,
            nonce: String,
        }
        let body: Body = serde_json::from_slice(&request.get_ref().body).map_err(|e| {
            Status::invalid_argument(format!(
                "the {ATTESTATION_ACTION} body must be JSON like {{\"room_id\": \"…\", \"nonce\": \"<32 to 128 hex \
                 characters>\"}}: {e}"
            ))
        })?;
        let engine = self.engine.clone();
        crate::off_runtime(move || engine.attestation(&body.room_id, &body.nonce)).await.map_err(status)
    }

    async fn audience_action(&self, request: &Request<Action>) -> Result<serde_json::Value, Status> {
        let shape = r#"{"room_id": "r", "computation": "lookalike", "size": 50000}"#;
        let a = LookalikeAction::parse(request.get_ref(), shape)?;
        let size = a.size.ok_or_else(|| {
            Status::invalid_argument(format!(
                "the {AUDIENCE_ACTION} body needs a size (how many users to take from the top of the ranking), \
                 like {shape}"
            ))
        })?;
        let caller = self.caller(request, &a.room_id)?;
        let delivery =
            self.engine.deliver_audience(&caller, &a.computation, a.run.as_deref(), size).await.map_err(status)?;
        Ok(serde_json::json!({ "delivery": delivery }))
    }
}

#[tonic::async_trait]
impl FlightService for SealroomFlight {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty handshake"))?;
        let token = String::from_utf8(first.payload.to_vec())
            .map_err(|_| Status::unauthenticated("the handshake payload must be the participant token (UTF-8)"))?;
        let memberships = self.engine.memberships(token.trim()).map_err(status)?;
        let body = serde_json::json!({
            "memberships": memberships.iter().map(|c| serde_json::json!({"room_id": c.room_id().as_str(), "participant": c.participant()})).collect::<Vec<_>>(),
            "authorization": "send `authorization: Bearer <token>` on every call",
        });
        let response = HandshakeResponse { protocol_version: first.protocol_version, payload: body.to_string().into() };
        Ok(Response::new(stream::once(async { Ok(response) }).boxed()))
    }

    async fn list_flights(&self, request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        let token = bearer(&request)?;
        let prefix = String::from_utf8_lossy(&request.get_ref().expression).to_string();
        let mut infos = Vec::new();
        for caller in self.engine.memberships(&token).map_err(status)? {
            for table in self.engine.owned_tables(&caller).map_err(status)? {
                infos.push(self.table_info(&caller, &table)?);
            }
            infos.extend(self.result_infos(&caller)?);
        }
        let infos: Vec<Result<FlightInfo, Status>> = infos
            .into_iter()
            .filter(|i| {
                i.flight_descriptor.as_ref().is_none_or(|d| d.path.first().is_none_or(|p| p.starts_with(&prefix)))
            })
            .map(Ok)
            .collect();
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        let target = parse_descriptor(request.get_ref())?;
        let caller = self.caller(&request, target.room())?;
        Ok(Response::new(self.info_for(&caller, &target)?))
    }

    async fn poll_flight_info(&self, _request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "PollFlightInfo is not offered: results are computed by DoAction(\"run-computation\") and are then \
             immediately available through GetFlightInfo and DoGet",
        ))
    }

    async fn get_schema(&self, request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        let target = parse_descriptor(request.get_ref())?;
        let caller = self.caller(&request, target.room())?;
        let info = self.info_for(&caller, &target)?;
        let schema = info.try_decode_schema().map_err(|e| Status::internal(e.to_string()))?;
        let result = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = String::from_utf8(request.get_ref().ticket.to_vec())
            .map_err(|_| Status::invalid_argument(format!("the ticket is not UTF-8; {PATH_HELP}")))?;
        let target = parse_path(&[ticket])?;
        let Target::Section { room, computation, run, section } = target else {
            return Err(Status::permission_denied(
                "tables are never downloaded: only released results can be read (tickets name a result section)",
            ));
        };
        let caller = self.caller(&request, &room)?;
        let engine = self.engine.clone();
        let (name, id) = (computation.clone(), run.clone());
        let released = crate::off_runtime(move || engine.release(&caller, &name, Some(&id), Channel::Flight))
            .await
            .map_err(status)?;
        let section = released.section(&section).ok_or_else(|| {
            Status::not_found(format!(
                "computation '{computation}' has no section '{section}' (sections: {})",
                released.sections().iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let batch = section.to_record_batch().map_err(status)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(stream::once(async move { Ok(batch) }))
            .map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                other => Status::internal(other.to_string()),
            });
        Ok(Response::new(stream.boxed()))
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let token = bearer(&request)?;
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::invalid_argument("the DoPut stream is empty: send a descriptor and a schema first")
        })?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Status::invalid_argument(format!("the first DoPut message carries no flight descriptor; {PATH_HELP}"))
        })?;
        let Target::Table { room, table } = parse_descriptor(&descriptor)? else {
            return Err(Status::invalid_argument(
                "DoPut uploads tables: the descriptor must be rooms/<room id>/tables/<table>",
            ));
        };
        let caller = self.engine.authenticate(&room, &token).map_err(status)?;
        let mut session = self.engine.begin_upload(&caller, &table).map_err(status)?;
        let data = stream::once(async { Ok(first) }).chain(incoming.map_err(|s| FlightError::Tonic(Box::new(s))));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        loop {
            match batches.next().await {
                None => break,
                Some(Ok(batch)) => session.push(batch).await.map_err(status)?,
                Some(Err(e)) => {
                    // The session is dropped here: nothing of this upload is kept.
                    let why = match e {
                        FlightError::Tonic(s)
                            if s.code() == tonic::Code::OutOfRange || s.message().contains("too large") =>
                        {
                            return Err(Status::resource_exhausted(format!(
                                "a message of the upload is larger than this server accepts ({}); send smaller record \
                                 batches (pyarrow: writer.write_table(table, max_chunksize=100_000)). Nothing was stored.",
                                s.message()
                            )));
                        }
                        FlightError::Tonic(s) => {
                            format!("the upload stream broke: {}", s.message())
                        }
                        other => format!("the upload stream could not be decoded: {other}"),
                    };
                    return Err(Status::aborted(format!("{why}. Nothing of this upload was stored; send it again.")));
                }
            }
            if let Some(schema) = batches.schema() {
                session.check_schema(schema).map_err(status)?;
            }
        }
        if let Some(schema) = batches.schema() {
            session.check_schema(schema).map_err(status)?;
        }
        let manifest = session.commit().await.map_err(status)?;
        let body = serde_json::json!({
            "table": manifest.table,
            "version": manifest.version,
            "rows": manifest.rows,
            "data_sha256": manifest.data_sha256,
            "committed_at": manifest.committed_at,
            "warnings": manifest.warnings,
        });
        let result = PutResult { app_metadata: body.to_string().into() };
        Ok(Response::new(stream::once(async { Ok(result) }).boxed()))
    }

    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let body = match request.get_ref().r#type.as_str() {
            RUN_ACTION => self.run_action(&request).await?,
            MODEL_ACTION => self.model_action(&request).await?,
            AUDIENCE_ACTION => self.audience_action(&request).await?,
            ATTESTATION_ACTION => self.attestation_action(&request).await?,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}'; available actions: {RUN_ACTION}, {MODEL_ACTION}, {AUDIENCE_ACTION}, \
                     {ATTESTATION_ACTION}"
                )));
            }
        };
        let result = arrow_flight::Result::new(body.to_string());
        Ok(Response::new(stream::once(async { Ok(result) }).boxed()))
    }

    async fn list_actions(&self, _request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = [
            (
                RUN_ACTION,
                "Run a computation. Body: {\"room_id\": …, \"computation\": …} (JSON) or \
                 sealroom.flight.v1.RunComputation. Result: {\"run\": …, \"tickets\": {section: ticket}}",
            ),
            (
                MODEL_ACTION,
                "A lookalike's trained model, for the participants the contract names in model_to. Body: \
                 {\"room_id\": …, \"computation\": …, \"run\": run id (optional: the latest)}. Result: the \
                 released model (JSON)",
            ),
            (
                AUDIENCE_ACTION,
                "The top `size` users of a lookalike, delivered to the publisher's sink (audience_to only). \
                 Body: {\"room_id\": …, \"computation\": …, \"run\": run id (optional), \"size\": N}. \
                 Result: {\"delivery\": …}",
            ),
            (
                ATTESTATION_ACTION,
                "Attestation evidence binding the enclave's TLS key to a room, fresh for a nonce; needs no \
                 token. Body: {\"room_id\": …, \"nonce\": 16 to 64 random bytes in hex}. Result: \
                 {\"evidence\": …, \"certificate_pem\": …, \"tee\": …}",
            ),
        ];
        let actions = actions.map(|(t, d)| Ok(ActionType { r#type: t.into(), description: d.into() }));
        Ok(Response::new(stream::iter(actions).boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("DoExchange is not offered: upload with DoPut and read released results with DoGet"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_in_one_or_many_segments() {
        let one = parse_path(&["rooms/abc/tables/crm".into()]).unwrap();
        let many = parse_path(&["rooms".into(), "abc".into(), "tables".into(), "crm".into()]).unwrap();
        assert_eq!(one, many);
        assert_eq!(one, Target::Table { room: "abc".into(), table: "crm".into() });
        let s = parse_path(&["rooms/r/computations/overlap/runs/latest/sections/summary".into()]).unwrap();
        assert_eq!(
            s,
            Target::Section {
                room: "r".into(),
                computation: "overlap".into(),
                run: "latest".into(),
                section: "summary".into()
            }
        );
        let err = parse_path(&["tables/crm".into()]).unwrap_err();
        assert!(err.message().contains("expected `rooms/<room id>/tables/<table>`"));
    }

    #[test]
    fn upload_commands_parse() {
        let cmd = UploadTable { room_id: "r".into(), table: "t".into() };
        let d = FlightDescriptor::new_cmd(cmd.encode_to_vec());
        assert_eq!(parse_descriptor(&d).unwrap(), Target::Table { room: "r".into(), table: "t".into() });
        let bad = FlightDescriptor::new_cmd(vec![0xff, 0xff]);
        assert!(parse_descriptor(&bad).unwrap_err().message().contains("UploadTable"));
    }
}
