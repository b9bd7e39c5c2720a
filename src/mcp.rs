//! `bgt mcp`: the background-task tools over the Model Context Protocol
//! (stdio), with the tool names and parameters agents know from the
//! background-tasks skill: `bg_run`, `bg_status`, `bg_output`, `bg_stop`,
//! plus `bg_wait`.
//!
//! This module is transport only: the tools, their schemas and their
//! replies are `tools`, shared with the Amp toolbox face. Tasks are started by re-exec'd supervisors, so they outlive
//! this server. Only this module starts a tokio runtime. stdout is the
//! protocol channel: nothing here prints to it.

use crate::tools::{self, Context};
use anyhow::Result;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest, ConstString,
        ContentBlock, Implementation, JsonRpcMessage, ListToolsResult, PaginatedRequestParams,
        ProgressNotificationParam, ProgressToken, ServerCapabilities, ServerConfig, Tool,
        ToolAnnotations,
    },
    service::{RequestContext, RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The MCP server: it holds nothing but the connection's identity; every
/// call reads the state directory.
#[derive(Debug, Clone)]
pub struct BgtServer {
    /// Unique to this connection (one server process serves one client),
    /// so two sessions of the same client never share a `since` cursor.
    connection: String,
}

impl BgtServer {
    fn new() -> BgtServer {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        BgtServer {
            connection: format!("{:x}{:05x}", std::process::id(), nanos & 0xfffff),
        }
    }

    /// The default `since` cursor: `mcp-<client name>-<connection>`. The
    /// client's name keeps an agent from moving a person's cursor; the
    /// connection part keeps two sessions of one client apart. An agent
    /// that wants a cursor across reconnects names one (`cursor`).
    fn cursor(&self, peer: &Peer<RoleServer>) -> String {
        let client = peer
            .peer_info()
            .map(|info| info.client_info.name.clone())
            .unwrap_or_default();
        tools::cursor_name("mcp", &client, Some(&self.connection))
    }
}

/// The tools as MCP lists them, from the one table in `tools`.
fn tool_list() -> Vec<Tool> {
    let object = |value: Value| match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(Default::default()),
    };
    tools::TOOLS
        .iter()
        .map(|t| {
            Tool::new(t.name, t.description, object(t.input_schema()))
                .with_raw_output_schema(object(t.output_schema()))
                .with_annotations(
                    ToolAnnotations::new()
                        .read_only(t.read_only)
                        .destructive(t.destructive)
                        .idempotent(t.idempotent)
                        .open_world(false),
                )
        })
        .collect()
}

/// Waits for `work`, sending `notifications/progress` about once a second
/// meanwhile: a long `bg_wait` shows it is alive, and clients that reset
/// their timeout on progress keep waiting.
async fn with_progress<T>(
    mut work: tokio::task::JoinHandle<T>,
    token: ProgressToken,
    peer: &Peer<RoleServer>,
) -> Result<T, tokio::task::JoinError> {
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                let seconds = started.elapsed().as_secs();
                let note = ProgressNotificationParam::new(token.clone(), seconds as f64)
                    .with_message(format!("{seconds} s"));
                let _ = peer.notify_progress(note).await;
            }
        }
    }
}

impl ServerHandler for BgtServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bgt", env!("CARGO_PKG_VERSION")))
            .with_instructions(tools::INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tool_list()))
    }

    /// Runs the tool off the runtime thread (the core blocks); a failure is
    /// a tool error the model reads, and the server keeps serving.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        if tools::tool(&name).is_none() {
            return Err(McpError::invalid_params(
                format!("unknown tool '{name}'"),
                None,
            ));
        }
        let ctx = Context {
            cursor: self.cursor(&context.peer),
        };
        let args = request.arguments;
        let work = tokio::task::spawn_blocking(move || tools::call(&name, args, &ctx));
        let done = match context.meta.get_progress_token() {
            Some(token) => with_progress(work, token, &context.peer).await,
            None => work.await,
        };
        let outcome =
            done.map_err(|e| McpError::internal_error(format!("tool failed: {e}"), None))?;
        let result = match outcome {
            Ok(reply) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(reply.text)]);
                result.structured_content = Some(reply.structured);
                result
            }
            Err(err) => CallToolResult::error(vec![ContentBlock::text(format!("bgt: {err:#}"))]),
        };
        Ok(result.into())
    }
}

/// How long calls still running when the client closes stdin may take to
/// finish (their replies are written if they do). rmcp alone would wait 5 s,
/// and a `bg_wait` can block for minutes; the tasks themselves never depend
/// on this server, so nothing is lost by leaving.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Serves MCP on stdio until the client closes it. Returns the exit code.
pub fn serve() -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let (lines, writer) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(write_lines(writer));
        let (closed, stdin_closed) = tokio::sync::oneshot::channel();
        let service = BgtServer::new()
            .serve(StdioLines::new(lines, closed))
            .await?;
        tokio::select! {
            done = service.waiting() => {
                done?;
            }
            _ = async {
                let _ = stdin_closed.await;
                tokio::time::sleep(CLOSE_GRACE).await;
            } => {}
        }
        anyhow::Ok(0)
    });
    // Blocking calls still in flight (a long `bg_wait`) and the stdin
    // reader cannot be cancelled: do not wait for them.
    runtime.shutdown_background();
    result
}

/// A line for stdout, and who wants to know it was written.
type OutLine = (
    Vec<u8>,
    Option<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
);

/// The one writer of stdout: replies from rmcp and protocol errors from
/// [`StdioLines`] go through it whole, so lines never interleave.
async fn write_lines(mut lines: tokio::sync::mpsc::UnboundedReceiver<OutLine>) {
    use tokio::io::AsyncWriteExt;
    let mut stdout = tokio::io::stdout();
    while let Some((line, written)) = lines.recv().await {
        let result = async {
            stdout.write_all(&line).await?;
            stdout.flush().await
        }
        .await;
        if let Some(written) = written {
            let _ = written.send(result);
        }
    }
}

/// MCP's stdio transport (one JSON-RPC message per line) with the error
/// replies JSON-RPC 2.0 requires, which rmcp's own does not give: it drops
/// a line that is not JSON without a word, and answers bad params with
/// -32601 or an id-less -32600. Here a line that is not JSON gets -32700
/// Parse error (id null), one that is not a request object -32600 Invalid
/// Request, a known method with bad params -32602 Invalid params, an
/// unknown one -32601; a notification never gets a reply. Only well-formed
/// messages reach rmcp. It also tells [`serve`] when stdin closes.
struct StdioLines {
    input: tokio::io::BufReader<tokio::io::Stdin>,
    /// The line being read; kept across calls, since rmcp may cancel a
    /// `receive` between two reads of the same line.
    line: Vec<u8>,
    output: tokio::sync::mpsc::UnboundedSender<OutLine>,
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The JSON-RPC method names of rmcp's method marker types.
macro_rules! method_names {
    ($($marker:ident),* $(,)?) => {
        [$(rmcp::model::$marker::VALUE),*]
    };
}

/// The client-to-server methods with typed params: if one of them arrives
/// as rmcp's catch-all `CustomRequest`, its params did not fit.
const TYPED_METHODS: &[&str] = &method_names![
    InitializeResultMethod,
    PingRequestMethod,
    CallToolRequestMethod,
    ListToolsRequestMethod,
    ListPromptsRequestMethod,
    GetPromptRequestMethod,
    ListResourcesRequestMethod,
    ListResourceTemplatesRequestMethod,
    ReadResourceRequestMethod,
    SubscribeRequestMethod,
    UnsubscribeRequestMethod,
    SetLevelRequestMethod,
    CompleteRequestMethod,
];

impl StdioLines {
    fn new(
        output: tokio::sync::mpsc::UnboundedSender<OutLine>,
        closed: tokio::sync::oneshot::Sender<()>,
    ) -> StdioLines {
        StdioLines {
            input: tokio::io::BufReader::new(tokio::io::stdin()),
            line: Vec::new(),
            output,
            closed: Some(closed),
        }
    }
}

/// A JSON-RPC error response.
fn error_reply(id: Option<Value>, code: i32, message: String) -> Vec<u8> {
    let reply = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    });
    let mut line = reply.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// One input line: a message for rmcp, an error reply to send back, or
/// nothing (blank lines, bad notifications, stray responses).
fn classify(line: &[u8]) -> Option<Result<RxJsonRpcMessage<RoleServer>, Vec<u8>>> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return Some(Err(error_reply(None, -32700, "Parse error".into())));
    };
    let Some(object) = value.as_object() else {
        return Some(Err(error_reply(None, -32600, "Invalid Request".into())));
    };
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    let method = object.get("method").and_then(Value::as_str);
    let version_ok = object.get("jsonrpc").is_some_and(|v| v == "2.0");
    let bad_params = |method: &str, why: String| {
        let message = format!("Invalid params for {method}{why}");
        Some(Err(error_reply(id.clone(), -32602, message)))
    };
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value.clone()) {
        Ok(JsonRpcMessage::Request(request)) => match &request.request {
            ClientRequest::CustomRequest(custom)
                if TYPED_METHODS.contains(&custom.method.as_str()) =>
            {
                bad_params(&custom.method, String::new())
            }
            _ => Some(Ok(JsonRpcMessage::Request(request))),
        },
        Ok(message) => Some(Ok(message)),
        // A notification never gets a reply, and a bad response has nobody to go to.
        Err(_) if !object.contains_key("id") && method.is_some() => None,
        Err(_)
            if method.is_none()
                && (object.contains_key("result") || object.contains_key("error")) =>
        {
            None
        }
        Err(_) => match (method, &id) {
            (Some(method), Some(_)) if version_ok && TYPED_METHODS.contains(&method) => {
                let why = match object.get("params") {
                    Some(params) if !params.is_object() => ": params must be an object".into(),
                    _ => String::new(),
                };
                bad_params(method, why)
            }
            (Some(method), Some(_)) if version_ok => Some(Err(error_reply(
                id.clone(),
                -32601,
                format!("Method not found: {method}"),
            ))),
            _ => Some(Err(error_reply(
                id.clone(),
                -32600,
                "Invalid Request".into(),
            ))),
        },
    }
}

impl Transport<RoleServer> for StdioLines {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let output = self.output.clone();
        let line = serde_json::to_vec(&item).map(|mut line| {
            line.push(b'\n');
            line
        });
        async move {
            let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdout is closed");
            let (written, done) = tokio::sync::oneshot::channel();
            output
                .send((line.map_err(std::io::Error::other)?, Some(written)))
                .map_err(|_| closed())?;
            done.await.map_err(|_| closed())?
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        use tokio::io::AsyncBufReadExt;
        loop {
            // Cancel-safe: a partial read stays in `self.line`.
            let read = self.input.read_until(b'\n', &mut self.line).await;
            let at_end = !matches!(read, Ok(n) if n > 0);
            let line = std::mem::take(&mut self.line);
            match classify(&line) {
                Some(Ok(message)) if !at_end => return Some(message),
                Some(Err(reply)) => {
                    let _ = self.output.send((reply, None));
                }
                _ => {}
            }
            if at_end {
                if let Some(closed) = self.closed.take() {
                    let _ = closed.send(());
                }
                return None;
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
