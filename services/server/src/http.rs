//! REST under `/v1`, plus `/healthz` and `/metrics`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | liveness, the TEE mode and the number of hosted rooms |
//! | GET | `/metrics` | Prometheus (OpenMetrics) text |
//! | GET | `/v1/rooms` | the rooms the participant token authenticates in |
//! | GET | `/v1/rooms/{room}` | the contract as JSON, the room id, effective k, TEE, roles |
//! | GET | `/v1/rooms/{room}/datasets` | dataset status: uploaded, version, uploader, time (rows only for the owner) |
//! | GET | `/v1/rooms/{room}/computations` | computations and what the caller may do with each |
//! | POST | `/v1/rooms/{room}/computations/{name}/runs` | run a computation |
//! | GET | `/v1/rooms/{room}/computations/{name}/runs` | the run records |
//! | GET | `/v1/rooms/{room}/computations/{name}/runs/{run}/result` | the released result (`run` may be `latest`) |
//! | GET | `/v1/rooms/{room}/computations/{name}/runs/{run}/model` | a lookalike's trained model, for `model_to` |
//! | POST | `/v1/rooms/{room}/computations/{name}/runs/{run}/audience` | `{"size": N}`: the top N of a lookalike to the publisher's sink |
//! | GET | `/v1/rooms/{room}/audit` | the verified audit log |
//! | GET | `/v1/rooms/{room}/deals` | deals made for audiences released to a publisher (its publisher and advertiser) |
//! | GET | `/v1/rooms/{room}/activations` | the caller's activations kept for retry, with their state |
//! | GET | `/v1/rooms/{room}/proposals` | proposed contract versions, their changes, approvers and signed decisions |
//! | POST | `/v1/rooms/{room}/proposals` | `{"base_version": N, "room_file": "<YAML>", "description": …}`: propose the next version |
//! | GET | `/v1/rooms/{room}/proposals/{id}` | one proposal, with the proposed contract |
//! | POST | `/v1/rooms/{room}/proposals/{id}/approve` | `{"signature": "<signed decision>"}`: a data owner approves |
//! | POST | `/v1/rooms/{room}/proposals/{id}/reject` | `{"signature": "<signed decision>"}`: a data owner rejects |
//! | GET | `/v1/rooms/{room}/versions` | the contract versions, each naming the digest of the one before |
//! | GET | `/v1/rooms/{room}/attestation?nonce=<hex>` | attestation evidence for the enclave key (no token) |
//!
//! Everything is served over TLS with the enclave's certificate (see `sealroom_attest::tls`).
//! Every `/v1` call but `attestation` carries `Authorization: Bearer <token>`: a client attests the
//! server and pins its certificate before it sends its token. Errors are
//! `{"error": {"code": …, "message": …}}` with the status from [`crate::error::to_http`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sealroom_engine::{Caller, Channel, Engine, Error};
use serde_json::{Value, json};

use crate::error::HttpError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

/// HTTP metrics, registered next to the engine's.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RouteLabels, Counter>,
    seconds: Histogram,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self { requests: Family::default(), seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)) };
        let r = registry.sub_registry_with_prefix("sealroom_http");
        r.register("requests", "HTTP requests by method, route and status", m.requests.clone());
        r.register("request_seconds", "HTTP request latency", m.seconds.clone());
        m
    }
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub registry: Arc<Registry>,
    pub metrics: HttpMetrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The participant token of a request (`Authorization: Bearer <JWT>`).
#[derive(Debug)]
pub struct Token(String);

impl<S: Send + Sync> FromRequestParts<S> for Token {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Error::Unauthenticated("missing `Authorization: Bearer <token>` header".into()))?;
        let text =
            header.to_str().map_err(|_| Error::Unauthenticated("the Authorization header is not ASCII".into()))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into()))?;
        Ok(Token(token.trim().to_owned()))
    }
}

type ApiResult<T> = Result<T, HttpError>;

fn caller(state: &AppState, room: &str, token: &Token) -> Result<Caller, Error> {
    state.engine.authenticate(room, &token.0)
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/rooms", get(list_rooms))
        .route("/rooms/{room}", get(room))
        .route("/rooms/{room}/datasets", get(datasets))
        .route("/rooms/{room}/computations", get(computations))
        .route("/rooms/{room}/computations/{name}/runs", get(list_runs).post(run))
        .route("/rooms/{room}/computations/{name}/runs/{run}/result", get(result))
        .route("/rooms/{room}/computations/{name}/runs/{run}/model", get(model))
        .route("/rooms/{room}/computations/{name}/runs/{run}/audience", post(audience))
        .route("/rooms/{room}/activations", get(activations))
        .route("/rooms/{room}/deals", get(deals))
        .route("/rooms/{room}/audit", get(audit))
        .route("/rooms/{room}/proposals", get(proposals).post(propose))
        .route("/rooms/{room}/proposals/{id}", get(proposal))
        .route("/rooms/{room}/proposals/{id}/{verdict}", post(decide))
        .route("/rooms/{room}/versions", get(versions))
        .route("/rooms/{room}/attestation", get(attestation));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.requests.get_or_create(&RouteLabels { method, route, status: response.status().as_u16() }).inc();
    state.metrics.seconds.observe(started.elapsed().as_secs_f64());
    response
}

async fn not_found(request: Request) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "not_found", "message": format!(
            "no route {} {}; the API is under /v1 (see /v1/rooms), plus /healthz and /metrics",
            request.method(), request.uri().path()
        )}})),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "tee": state.engine.tee().describe(),
        "rooms": state.engine.room_ids().len(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("could not encode metrics: {e}")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn list_rooms(State(state): State<AppState>, token: Token) -> ApiResult<Json<Value>> {
    let memberships = state.engine.memberships(&token.0)?;
    let rooms: Vec<Value> = memberships
        .iter()
        .map(|c| {
            let view = state.engine.room_view(c).unwrap_or(Value::Null);
            json!({ "room_id": c.room_id().as_str(), "name": view["name"], "you": c.participant() })
        })
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

async fn room(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &room, &token)?;
    Ok(Json(state.engine.room_view(&caller)?))
}

async fn datasets(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &room, &token)?;
    Ok(Json(json!({ "datasets": state.engine.datasets(&caller)? })))
}

async fn computations(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &room, &token)?;
    Ok(Json(json!({ "computations": state.engine.computations(&caller)? })))
}

async fn list_runs(
    State(state): State<AppState>,
    Path((room, name)): Path<(String, String)>,
    token: Token,
) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &room, &token)?;
    Ok(Json(json!({ "runs": state.engine.runs(&caller, &name)? })))
}

async fn run(
    State(state): State<AppState>,
    Path((room, name)): Path<(String, String)>,
    token: Token,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = caller(&state, &room, &token)?;
    let record = state.engine.run(&caller, &name).await?;
    let result = format!("/v1/rooms/{room}/computations/{name}/runs/{}/result", record.run_id);
    Ok((StatusCode::CREATED, Json(json!({ "run": record, "result": result }))))
}

/// A release's JSON, made off the async workers (a release fsyncs its audit entry).
async fn released_json(
    state: &AppState,
    (room, name, run): (String, String, String),
    token: &Token,
    release: impl FnOnce(&Engine, &Caller, &str, &str) -> Result<Value, Error> + Send + 'static,
) -> ApiResult<Json<Value>> {
    Ok(Json(as_caller(state, &room, token, move |engine, caller| release(engine, caller, &name, &run)).await?))
}

/// Authenticates the caller in `room`, then runs `f` off the async workers (it reads sealed files,
/// checks signatures or appends to the audit log).
async fn as_caller<T: Send + 'static>(
    state: &AppState,
    room: &str,
    token: &Token,
    f: impl FnOnce(&Engine, &Caller) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let caller = caller(state, room, token)?;
    let engine = state.engine.clone();
    crate::off_runtime(move || f(&engine, &caller)).await
}

async fn result(
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
    token: Token,
) -> ApiResult<Json<Value>> {
    released_json(&state, path, &token, |engine, caller, name, run| {
        Ok(engine.release(caller, name, Some(run), Channel::Rest)?.json().clone())
    })
    .await
}

async fn model(
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
    token: Token,
) -> ApiResult<Json<Value>> {
    released_json(&state, path, &token, |engine, caller, name, run| {
        Ok(engine.release_model(caller, name, Some(run), Channel::Rest)?.json().clone())
    })
    .await
}

/// A JSON request body, or what it must look like (`like`) and why it is not.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], like: impl std::fmt::Display) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidRequest(format!("the body must be JSON like {like}: {e}")))
}

/// The body of `POST …/audience`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceRequest {
    size: u64,
}

async fn audience(
    State(state): State<AppState>,
    Path((room, name, run)): Path<(String, String, String)>,
    token: Token,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = caller(&state, &room, &token)?;
    let request: AudienceRequest =
        json_body(&body, "{\"size\": 50000} (the number of users to take from the top of the ranking)")?;
    let delivery = state.engine.deliver_audience(&caller, &name, Some(&run), request.size).await?;
    Ok((StatusCode::CREATED, Json(json!({ "delivery": delivery }))))
}

/// The body of `POST …/proposals`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeRequest {
    /// The contract version the proposal changes (`contract_version` of `GET /v1/rooms/{room}`).
    base_version: u64,
    /// The whole proposed contract, as a room file (YAML).
    room_file: String,
    #[serde(default)]
    description: String,
}

/// The body of `POST …/proposals/{id}/approve` and `…/reject`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    /// The compact JWS of a `sealroom_attest::token::Decision`, signed with an issuer key.
    signature: String,
}

async fn propose(
    State(state): State<AppState>,
    Path(room): Path<String>,
    token: Token,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = caller(&state, &room, &token)?;
    let request: ProposeRequest = json_body(
        &body,
        "{\"base_version\": 1, \"room_file\": \"<the whole proposed room file, YAML>\", \"description\": \"why\"}",
    )?;
    let contract = sealroom_proto::RoomFile::parse(&request.room_file, "the proposed room file")
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
    let proposal = state.engine.propose(&caller, request.base_version, contract, &request.description).await?;
    Ok((StatusCode::CREATED, Json(json!({ "proposal": proposal.to_json()? }))))
}

async fn proposals(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let all = as_caller(&state, &room, &token, |engine, caller| {
        engine.proposals(caller)?.iter().map(sealroom_engine::Proposal::to_json).collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(json!({ "proposals": all })))
}

async fn proposal(
    State(state): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    token: Token,
) -> ApiResult<Json<Value>> {
    let one = as_caller(&state, &room, &token, move |engine, caller| engine.proposal(caller, &id)?.to_json()).await?;
    Ok(Json(json!({ "proposal": one })))
}

async fn decide(
    State(state): State<AppState>,
    Path((room, id, verdict)): Path<(String, String, String)>,
    token: Token,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let verdict = match verdict.as_str() {
        "approve" | "reject" => verdict,
        other => {
            return Err(Error::NotFound(format!(
                "no action '{other}' on a proposal: POST …/proposals/{id}/approve or …/reject"
            ))
            .into());
        }
    };
    let request: DecideRequest = json_body(
        &body,
        format_args!(
            "{{\"signature\": \"<compact JWS>\"}}, the decision signed with your issuer key (`sealroom proposal \
             {verdict}` makes it)"
        ),
    )?;
    let decided = as_caller(&state, &room, &token, move |engine, caller| {
        engine.decide(caller, &id, &verdict, &request.signature)?.to_json()
    })
    .await?;
    Ok(Json(json!({ "proposal": decided })))
}

async fn versions(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let all = as_caller(&state, &room, &token, |engine, caller| engine.contract_versions(caller)).await?;
    Ok(Json(json!({ "versions": all })))
}

#[derive(Debug, serde::Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn attestation(
    State(state): State<AppState>,
    Path(room): Path<String>,
    axum::extract::Query(query): axum::extract::Query<NonceQuery>,
) -> ApiResult<Json<Value>> {
    let nonce = query
        .nonce
        .ok_or_else(|| Error::InvalidRequest("give a fresh random nonce: ?nonce=<32 to 128 hex characters>".into()))?;
    let engine = state.engine.clone();
    Ok(Json(crate::off_runtime(move || engine.attestation(&room, &nonce)).await?))
}

async fn deals(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let deals = as_caller(&state, &room, &token, |engine, caller| engine.deals(caller)).await?;
    Ok(Json(json!({ "deals": deals })))
}

async fn activations(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    let activations = as_caller(&state, &room, &token, |engine, caller| engine.activations(caller)).await?;
    Ok(Json(json!({ "activations": activations })))
}

async fn audit(State(state): State<AppState>, Path(room): Path<String>, token: Token) -> ApiResult<Json<Value>> {
    // Reading the log checks every entry's chain link and signature.
    let entries = as_caller(&state, &room, &token, |engine, caller| engine.audit_entries(caller)).await?;
    let head = entries.last().map(|e| e.entry_sha256.clone());
    Ok(Json(json!({ "entries": entries, "head_sha256": head })))
}
