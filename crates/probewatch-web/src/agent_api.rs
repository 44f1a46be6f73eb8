//! The endpoints results arrive through when they do not come from a local spool:
//! `POST /api/v1/agent/ingest` (batches from `probewatch agent`), `POST /api/v1/push` (one
//! document from a CI job, a container, a cron script) and `GET /api/v1/agents`.
//!
//! This module knows the wire shapes and HTTP; what a batch becomes (parsing, the host
//! rule, the durable commit) is the daemon's, behind [`RemoteIngest`]. Every answer that
//! says "stored" or "duplicate" is sent only after the commit that holds the item, so a
//! sender may delete its copy when it has one; a resent item is a duplicate, never a second
//! result.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// The version of the agent protocol this build speaks; a batch of another version is
/// refused as a whole (400), so an agent and a server of different majors never half-agree.
pub const PROTOCOL: u32 = 1;

/// Largest request body accepted on the ingest endpoints, as sent (compressed).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Largest batch once decompressed: a gzip bomb stops here.
pub const MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;

/// A batch of files from one agent: `POST /api/v1/agent/ingest`, JSON, usually gzipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipBatch {
    /// [`PROTOCOL`] of the sender.
    pub protocol: u32,
    /// The agent's name, as configured on the server with its token.
    pub agent: String,
    /// The agent's build, shown on the agents page.
    #[serde(default)]
    pub agent_version: String,
    /// Files waiting in the agent's outbox besides this batch.
    #[serde(default)]
    pub backlog_files: u64,
    /// Age of the oldest file waiting, in milliseconds (0: none).
    #[serde(default)]
    pub oldest_file_age_ms: u64,
    /// The files (none: a heartbeat).
    #[serde(default)]
    pub items: Vec<ShipItem>,
}

/// One complete result file as the agent read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipItem {
    /// The agent's spool it came from (its name there).
    pub spool: String,
    /// The spool's format (`xml`).
    #[serde(default)]
    pub format: Option<String>,
    /// Labels the agent's spool adds to every series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The file's path on the agent's host.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch): the time of results that declare none.
    pub mtime_ns: i64,
    /// Inode on the agent's host.
    #[serde(default)]
    pub inode: u64,
    /// The bytes, base64; absent when the file was over the agent's size limit.
    #[serde(default)]
    pub content: Option<String>,
}

/// What became of each item of a batch, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShipAnswer {
    /// One per item.
    pub items: Vec<ItemAnswer>,
}

/// What became of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemAnswer {
    /// `stored`, `duplicate` (this version was stored before) or `rejected` (stored as a
    /// rejection; the sender should quarantine its copy).
    pub result: String,
    /// For a rejection: its kind (`syntax`, `forbidden`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For a rejection: what was wrong, for the probe's author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One document pushed without an agent.
#[derive(Debug, Clone)]
pub struct PushDoc {
    /// The document's bytes.
    pub content: Vec<u8>,
    /// Its format (`xml`).
    pub format: Option<String>,
    /// The client's `Idempotency-Key`, if it sent one: the document's identity instead of
    /// its content hash.
    pub idempotency_key: Option<String>,
}

/// What the server knows of one agent, for `GET /api/v1/agents` and the agents page.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// Its configured name.
    pub name: String,
    /// `online`; `offline` once no server heard from it for the offline time (its checks
    /// then show as "agent offline", not stale); `unknown` before any server heard from it.
    pub state: String,
    /// Hosts it may write results for.
    pub hosts: Vec<String>,
    /// When this server last heard from it (ms; 0: never since this server started).
    pub last_contact_ms: i64,
    /// Its build, as it last said.
    pub version: String,
    /// Files waiting in its outbox, as it last said.
    pub backlog_files: u64,
    /// Age of its oldest waiting file, as it last said (ms).
    pub oldest_file_age_ms: u64,
    /// Files stored from it by this server since it started.
    pub stored: u64,
    /// Files it resent that were stored already.
    pub duplicates: u64,
    /// Files of it rejected.
    pub rejected: u64,
    /// The last rejection, with the file's path.
    pub last_reject: Option<String>,
}

/// Why a batch was not taken as a whole.
#[derive(Debug)]
pub enum RemoteError {
    /// The sender must change something (bad shape, unknown format, protocol version): 400.
    Refused(String),
    /// Nothing was committed; try again shortly (store unreachable, stopping): 503.
    Unavailable(String),
}

/// What the daemon does with results that arrive over HTTP.
pub trait RemoteIngest: Send + Sync {
    /// The sender whose token this is, compared in constant time; `None`: no such token.
    fn authenticate(&self, token: &str) -> Option<Arc<str>>;

    /// Parses and commits an agent's batch; answers once the commit is durable.
    fn ingest(&self, sender: &str, batch: ShipBatch) -> Result<ShipAnswer, RemoteError>;

    /// Parses and commits one pushed document.
    fn push(&self, sender: &str, doc: PushDoc) -> Result<ItemAnswer, RemoteError>;

    /// Every configured agent and what this server knows of it.
    fn agents(&self) -> Vec<AgentView>;

    /// Hosts whose agent is offline: their silent checks are not stale, their agent is away.
    fn offline_hosts(&self) -> std::collections::HashSet<String>;
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = crate::access::auth_scheme(value)?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// A request refused (or not taken now), as its answer: a status and a sentence.
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            (self.status, [(header::RETRY_AFTER, "1")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

fn plain(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// The sender, or the answer refusing the request.
fn sender(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Arc<dyn RemoteIngest>, Arc<str>), Refusal> {
    let Some(remote) = state.remote.clone() else {
        return Err(plain(
            StatusCode::NOT_FOUND,
            "this server takes no results over HTTP: configure [[agent]] tokens",
        ));
    };
    let Some(token) = bearer(headers) else {
        return Err(plain(
            StatusCode::UNAUTHORIZED,
            "send the agent's token as Authorization: Bearer <token>",
        ));
    };
    match remote.authenticate(token) {
        Some(name) => Ok((remote, name)),
        None => Err(plain(
            StatusCode::UNAUTHORIZED,
            "unknown token: it matches no [[agent]] of this server",
        )),
    }
}

/// The body, inflated when it came gzipped, bounded by [`MAX_INFLATED_BYTES`].
fn inflate(headers: &HeaderMap, body: Bytes) -> Result<Vec<u8>, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            let mut reader = flate2::read::GzDecoder::new(&body[..]).take(MAX_INFLATED_BYTES + 1);
            if let Err(err) = reader.read_to_end(&mut out) {
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    format!("the gzip body does not inflate: {err}"),
                ));
            }
            if out.len() as u64 > MAX_INFLATED_BYTES {
                return Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body inflates to over {MAX_INFLATED_BYTES} bytes; send smaller batches"
                    ),
                ));
            }
            Ok(out)
        }
        other => Err(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported: send gzip or none"),
        )),
    }
}

fn remote_error(err: RemoteError) -> Refusal {
    match err {
        RemoteError::Refused(message) => plain(StatusCode::BAD_REQUEST, message),
        RemoteError::Unavailable(message) => {
            tracing::warn!(error = %message, "results sent over HTTP were not committed");
            plain(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

/// `POST /api/v1/agent/ingest`: a batch from an agent. 200 with one answer per item, only
/// after the commit; 401 for a token that matches no agent, 403 for a batch naming another
/// agent, 400 for a malformed batch, 503 when nothing could be committed now.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (remote, name) = sender(&state, &headers)?;
    let batch = tokio::task::spawn_blocking(move || {
        let raw = inflate(&headers, body)?;
        serde_json::from_slice::<ShipBatch>(&raw).map_err(|err| {
            plain(
                StatusCode::BAD_REQUEST,
                format!("the batch is not valid JSON of the agent protocol: {err}"),
            )
        })
    })
    .await
    .map_err(|err| plain(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    if batch.protocol != PROTOCOL {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!(
                "agent protocol {} is not spoken here (this server speaks {PROTOCOL}): upgrade \
                 the agent or the server so they match",
                batch.protocol
            ),
        ));
    }
    if batch.agent != *name {
        return Err(plain(
            StatusCode::FORBIDDEN,
            format!(
                "this token belongs to agent {name:?}, but the batch says it is from {:?}",
                batch.agent
            ),
        ));
    }
    let answer = tokio::task::spawn_blocking(move || remote.ingest(&name, batch))
        .await
        .map_err(|err| plain(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
        .map_err(remote_error)?;
    Ok(Json(answer).into_response())
}

/// Query parameters of `POST /api/v1/push`.
#[derive(Debug, Deserialize)]
pub(crate) struct PushParams {
    format: Option<String>,
}

/// `POST /api/v1/push`: one result document (body as a probe writes it to a file). 200
/// `stored` or `duplicate` after the commit; 422 with the reason when the document is
/// rejected (the rejection is stored and shown on /ingest too).
pub(crate) async fn push(
    State(state): State<AppState>,
    Query(params): Query<PushParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (remote, name) = sender(&state, &headers)?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 256) {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key is longer than 256 bytes",
        ));
    }
    let answer = tokio::task::spawn_blocking(move || {
        let content = inflate(&headers, body)?;
        let doc = PushDoc {
            content,
            format: params.format,
            idempotency_key,
        };
        remote.push(&name, doc).map_err(remote_error)
    })
    .await
    .map_err(|err| plain(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))??;
    if answer.result == "rejected" {
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(answer)).into_response());
    }
    Ok(Json(answer).into_response())
}

/// `GET /api/v1/agents`: every configured agent and what this server knows of it.
pub(crate) async fn agents(State(state): State<AppState>) -> Response {
    let agents = state
        .remote
        .as_ref()
        .map(|r| r.agents())
        .unwrap_or_default();
    Json(serde_json::json!({ "status": "success", "data": agents })).into_response()
}
