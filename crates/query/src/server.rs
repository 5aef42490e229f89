//! The read-only Postgres-wire endpoint over the [`Catalog`] (pgwire).
//!
//! Any Postgres client (psql, tokio-postgres, JDBC, BI tools) connects with SCRAM-SHA-256 password
//! authentication and, optionally, TLS. Queries (simple and extended protocol) run on
//! DataFusion; DDL, DML and session statements are refused with SQLSTATE 25006
//! (read_only_sql_transaction).

use crate::catalog::{check_read_only, with_position};
use crate::{Catalog, QueryError};
use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{Sink, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// PBKDF2 iterations of the SCRAM verifier (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// How the endpoint authenticates and encrypts.
#[derive(Clone)]
pub struct ServerOptions {
    /// The one user name accepted.
    pub user: String,
    /// Its password (read from a file or an environment variable by the caller).
    pub password: String,
    /// TLS certificate chain and private key (PEM), if TLS is on.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Most rows one query returns (the rest is cut, with a notice in the log).
    pub max_rows: usize,
}

impl Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("ServerOptions")
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

#[derive(Debug)]
struct Secret {
    user: String,
    password: String,
}

#[async_trait]
impl AuthSource for Secret {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.user.as_str()) {
            return Err(user_error("28P01", "password authentication failed"));
        }
        let salt: [u8; 16] = rand_salt();
        let hashed = gen_salted_password(&self.password, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt.to_vec()), hashed))
    }
}

/// A fresh salt per authentication. SCRAM salts are sent to the client in the clear: they
/// must be unique per verifier, not secret, so a UUID v5 of the clock, a counter and the
/// process id serves.
fn rand_salt() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("{t}:{n}:{}", std::process::id());
    *uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).as_bytes()
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

fn query_error(e: QueryError) -> PgWireError {
    match e {
        QueryError::ReadOnly(_) => user_error("25006", e.to_string()),
        other => user_error("42000", other.to_string()),
    }
}

/// Query handling over the catalog.
struct Backend {
    catalog: Arc<Catalog>,
    parser: Arc<Parser>,
    max_rows: usize,
}

/// Keeps the statement text; planning happens at describe and execute time.
#[derive(Debug)]
struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_read_only(sql).map_err(query_error)?;
        Ok(Some(sql.to_owned()))
    }

    fn get_parameter_types(&self, _stmt: &String) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &String,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        // Describe is answered by the handler, which can plan asynchronously.
        Ok(Vec::new())
    }
}

/// The Postgres type a column is sent as.
fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Type::INT8,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Type::INT8,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Type::FLOAT8,
        _ => Type::VARCHAR,
    }
}

fn fields_of(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

/// Encodes result batches as data rows of `fields`.
fn encode(
    fields: Arc<Vec<FieldInfo>>,
    batches: &[RecordBatch],
    max_rows: usize,
) -> PgWireResult<Vec<PgWireResult<pgwire::messages::data::DataRow>>> {
    let mut rows = Vec::new();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let options = FormatOptions::default();
    let api = |e: datafusion::arrow::error::ArrowError| PgWireError::ApiError(Box::new(e));
    for b in batches {
        let columns: Vec<(Type, ArrayRef)> = b
            .columns()
            .iter()
            .zip(fields.iter())
            .map(|(c, f)| {
                let t = f.datatype().clone();
                let c = match t {
                    Type::INT8 => cast(c, &DataType::Int64),
                    Type::FLOAT8 => cast(c, &DataType::Float64),
                    _ => Ok(Arc::clone(c)),
                };
                c.map(|c| (t, c))
            })
            .collect::<Result<_, _>>()
            .map_err(api)?;
        let formatters: Vec<ArrayFormatter<'_>> = columns
            .iter()
            .map(|(_, c)| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(api)?;
        for row in 0..b.num_rows() {
            if rows.len() >= max_rows {
                return Ok(rows);
            }
            for ((t, c), fmt) in columns.iter().zip(&formatters) {
                if c.is_null(row) {
                    encoder.encode_field(&None::<String>)?;
                    continue;
                }
                match *t {
                    Type::BOOL => encoder.encode_field(&c.as_boolean().value(row))?,
                    Type::INT8 => {
                        encoder.encode_field(&c.as_primitive::<Int64Type>().value(row))?
                    }
                    Type::FLOAT8 => {
                        encoder.encode_field(&c.as_primitive::<Float64Type>().value(row))?
                    }
                    _ => encoder.encode_field(&fmt.value(row).to_string())?,
                }
            }
            rows.push(Ok(encoder.take_row()));
        }
    }
    Ok(rows)
}

impl Backend {
    async fn run(&self, sql: &str, format: &Format) -> PgWireResult<Response> {
        let result = self.catalog.query(sql).await.map_err(query_error)?;
        let fields = Arc::new(fields_of(&result.schema, format));
        let rows = encode(Arc::clone(&fields), &result.batches, self.max_rows)?;
        if result.rows() > self.max_rows {
            tracing::warn!(
                rows = result.rows(),
                max = self.max_rows,
                "serve: result cut at serve.max_rows"
            );
        }
        Ok(Response::Query(QueryResponse::new(
            fields,
            stream::iter(rows),
        )))
    }

    async fn describe(&self, sql: &str, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        check_read_only(sql).map_err(query_error)?;
        let df = self
            .catalog
            .context()
            .sql(sql)
            .await
            .map_err(|e| user_error("42000", with_position(&e)))?;
        Ok(fields_of(df.schema().as_arrow(), format))
    }
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // One statement per query string (DataFusion runs one at a time).
        let sql = query.trim().trim_end_matches(';');
        if sql.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        Ok(vec![self.run(sql, &Format::UnifiedText).await?])
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = String;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self
            .describe(&target.statement, &Format::UnifiedBinary)
            .await?;
        Ok(DescribeStatementResponse::new(Vec::new(), fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self
            .describe(&target.statement.statement, &target.result_column_format)
            .await?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<String>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !portal.parameters.is_empty() {
            return Err(user_error(
                "0A000",
                "query parameters ($1, …) are not supported; inline the values",
            ));
        }
        self.run(&portal.statement.statement, &portal.result_column_format)
            .await
    }
}

struct Handlers {
    backend: Arc<Backend>,
    secret: Arc<Secret>,
    certificate: Option<Vec<u8>>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.backend)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.backend)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(Arc::clone(&self.secret) as Arc<dyn AuthSource>);
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(cert) = &self.certificate
            && let Err(e) = scram.configure_certificate(cert)
        {
            tracing::warn!(error = %e, "serve: SCRAM channel binding unavailable");
        }
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("15.0 (authwatch {})", env!("CARGO_PKG_VERSION"));
        Arc::new(SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(scram))
    }
}

fn tls_acceptor(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor, QueryError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| QueryError::Config(format!("serve.tls_cert: {e}")))?;
    if certs.is_empty() {
        return Err(QueryError::Config(
            "serve.tls_cert: no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| QueryError::Config(format!("serve.tls_key: {e}")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| QueryError::Config(format!("serve TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| QueryError::Config(format!("serve TLS: {e}")))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves the catalog on `listener` until the future is dropped. Each connection runs on its
/// own task; a failing connection is logged and does not affect others.
pub async fn serve(
    catalog: Arc<Catalog>,
    options: ServerOptions,
    listener: TcpListener,
) -> Result<(), QueryError> {
    if options.password.is_empty() {
        return Err(QueryError::Config(
            "serve: the password is empty; set serve.password_file or serve.password_env".into(),
        ));
    }
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let handlers = Arc::new(Handlers {
        backend: Arc::new(Backend {
            catalog,
            parser: Arc::new(Parser),
            max_rows: options.max_rows.max(1),
        }),
        secret: Arc::new(Secret {
            user: options.user.clone(),
            password: options.password.clone(),
        }),
        certificate: options.tls.as_ref().map(|(c, _)| c.clone()),
    });
    loop {
        let (socket, peer) = listener.accept().await.map_err(|e| QueryError::Io {
            path: "serve.listen".into(),
            source: e,
        })?;
        let handlers = Arc::clone(&handlers);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::info!(%peer, error = %e, "serve: connection ended with an error");
            }
        });
    }
}
