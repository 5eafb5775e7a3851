//! Flight SQL over the wire with arrow-flight's `FlightSqlServiceClient`,
//! against the real binary.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::error::FlightError;
use arrow_flight::sql::TableDefinitionOptions;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, CommandStatementIngest, SqlInfo};
use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
use common::{TestServer, fetch, query, try_fetch};
use futures::TryStreamExt;
use tonic::Code;

fn code_of<E: std::error::Error + 'static>(e: &E) -> Option<Code> {
    code_of_dyn(e)
}

fn code_of_dyn(e: &(dyn std::error::Error + 'static)) -> Option<Code> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(status) = s.downcast_ref::<tonic::Status>() {
            return Some(status.code());
        }
        if let Some(FlightError::Tonic(status)) = s.downcast_ref::<FlightError>() {
            return Some(status.code());
        }
        if let Some(arrow::error::ArrowError::ExternalError(inner)) = s.downcast_ref::<arrow::error::ArrowError>() {
            if let Some(code) = code_of_dyn(inner.as_ref()) {
                return Some(code);
            }
        }
        source = s.source();
    }
    None
}

#[tokio::test]
async fn ddl_dml_and_queries() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    assert_eq!(
        c.execute_update("CREATE TABLE t (id BIGINT NOT NULL, name VARCHAR)".into(), None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        c.execute_update("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, NULL)".into(), None)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        c.execute_update("UPDATE t SET name = 'z' WHERE id >= 2".into(), None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        c.execute_update("DELETE FROM t WHERE id = 1".into(), None)
            .await
            .unwrap(),
        1
    );
    let out = query(&mut c, "SELECT id, name FROM t ORDER BY id").await;
    assert_eq!(
        out,
        "+----+------+\n| id | name |\n+----+------+\n| 2  | z    |\n| 3  | z    |\n+----+------+"
    );
    // Strings go out as Utf8, not Utf8View.
    let info = c.execute("SELECT name FROM t".into(), None).await.unwrap();
    let schema: Schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    let batches = fetch(&mut c, info).await;
    assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Utf8);
}

#[tokio::test]
async fn large_result_streams_in_many_batches() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    let n: i64 = 3_000_000;
    let info = c
        .execute(format!("SELECT value AS v FROM range({n})"), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let (mut rows, mut sum, mut batches) = (0i64, 0i64, 0usize);
    while let Some(batch) = stream.try_next().await.unwrap() {
        let col = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        rows += batch.num_rows() as i64;
        sum += col.iter().flatten().sum::<i64>();
        batches += 1;
    }
    assert_eq!(rows, n);
    assert_eq!(sum, n * (n - 1) / 2);
    assert!(batches > 10, "result should stream in many batches, got {batches}");
}

#[tokio::test]
async fn errors_map_to_grpc_codes_and_server_keeps_serving() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    let e = c.execute("SELEC 1".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), Some(Code::InvalidArgument), "{e}");
    let e = c.execute("SELECT * FROM no_such_table".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), Some(Code::NotFound), "{e}");
    assert!(e.to_string().contains("no_such_table"), "{e}");
    let e = c
        .execute("SELECT no_such_col FROM (VALUES (1)) t(a)".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::InvalidArgument), "{e}");
    // An undecodable ticket.
    let e = c
        .do_get(arrow_flight::Ticket::new(b"garbage".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::InvalidArgument), "{e}");
    // A forged ticket (valid Any, wrong signature).
    use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
    use prost::Message;
    let forged = TicketStatementQuery {
        statement_handle: b"CT\x01\x01{}0123456789012345678901234567890123".to_vec().into(),
    };
    let e = c
        .do_get(arrow_flight::Ticket::new(forged.as_any().encode_to_vec()))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::InvalidArgument), "{e}");
    let e = c.execute("SELECT 1/0".into(), None).await;
    let code = match e {
        Err(e) => code_of(&e),
        Ok(info) => code_of(&try_fetch(&mut c, info).await.unwrap_err()),
    };
    assert_eq!(code, Some(Code::InvalidArgument), "division by zero");

    assert_eq!(
        query(&mut c, "SELECT 41 + 1 AS x").await,
        "+----+\n| x  |\n+----+\n| 42 |\n+----+"
    );
}

#[tokio::test]
async fn prepared_statements_bind_parameters() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.execute_update("CREATE TABLE p (id BIGINT, name VARCHAR)".into(), None)
        .await
        .unwrap();
    let mut insert = c.prepare("INSERT INTO p VALUES (?, ?)".into(), None).await.unwrap();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
        ],
    )
    .unwrap();
    insert.set_parameters(params).unwrap();
    assert_eq!(
        insert.execute_update().await.unwrap(),
        3,
        "every parameter row inserted"
    );
    insert.close().await.unwrap();
    let commits = std::fs::read_dir(server.data_dir.join("tables/public/p/_delta_log"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(commits, 2, "CREATE and one atomic commit for all parameter rows");

    let mut select = c
        .prepare("SELECT name FROM p WHERE id > $1 ORDER BY id".into(), None)
        .await
        .unwrap();
    assert_eq!(select.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(select.dataset_schema().unwrap().field(0).data_type(), &DataType::Utf8);
    let one = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    select.set_parameters(one).unwrap();
    let info = select.execute().await.unwrap();
    let out = arrow::util::pretty::pretty_format_batches(&fetch(&mut c, info).await)
        .unwrap()
        .to_string();
    assert_eq!(out, "+------+\n| name |\n+------+\n| y    |\n| z    |\n+------+");
}

#[tokio::test]
async fn prepared_handle_and_ticket_survive_restart() {
    let mut server = TestServer::start(&[]);
    let mut c = server.client().await;
    let created = c
        .execute_update(
            "CREATE TABLE r AS SELECT * FROM (VALUES (1), (2), (3)) v(x)".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(created, 3, "CTAS reports the rows it wrote");
    let handle = raw_prepare(&mut c, "SELECT sum(x) AS s FROM r").await;
    let info = c.execute("SELECT count(*) AS n FROM r".into(), None).await.unwrap();
    server.restart(true);
    let mut c2 = server.client().await;
    // The old ticket is served by the restarted server.
    let out = arrow::util::pretty::pretty_format_batches(&fetch(&mut c2, info).await)
        .unwrap()
        .to_string();
    assert_eq!(out, "+---+\n| n |\n+---+\n| 3 |\n+---+");
    // So is the old prepared statement handle (re-issued through the new connection).
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt};
    use prost::Message;
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let info = c2
        .inner_mut()
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await
        .unwrap()
        .into_inner();
    let out = arrow::util::pretty::pretty_format_batches(&fetch(&mut c2, info).await)
        .unwrap()
        .to_string();
    assert_eq!(out, "+---+\n| s |\n+---+\n| 6 |\n+---+");
}

/// Prepare through the raw action, returning the server's handle.
async fn raw_prepare(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> bytes::Bytes {
    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, ProstMessageExt,
    };
    use prost::Message;
    let req = ActionCreatePreparedStatementRequest {
        query: sql.into(),
        transaction_id: None,
    };
    let action = arrow_flight::Action {
        r#type: "CreatePreparedStatement".into(),
        body: req.as_any().encode_to_vec().into(),
    };
    let mut results = c.do_action(action).await.unwrap();
    let result = results.try_next().await.unwrap().expect("one result");
    let any = Any::decode(result.body.as_ref()).unwrap();
    let result: ActionCreatePreparedStatementResult = any.unpack().unwrap().unwrap();
    result.prepared_statement_handle
}

#[tokio::test]
async fn metadata_commands() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    c.execute_update("CREATE SCHEMA sales".into(), None).await.unwrap();
    c.execute_update("CREATE TABLE sales.orders (id INT NOT NULL, note VARCHAR)".into(), None)
        .await
        .unwrap();
    c.execute_update("CREATE VIEW sales.v AS SELECT id FROM sales.orders".into(), None)
        .await
        .unwrap();

    let info = c.get_catalogs().await.unwrap();
    let out = arrow::util::pretty::pretty_format_batches(&fetch(&mut c, info).await)
        .unwrap()
        .to_string();
    assert!(out.contains("contrail"), "{out}");

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("sa%".into()),
        })
        .await
        .unwrap();
    let out = arrow::util::pretty::pretty_format_batches(&fetch(&mut c, info).await)
        .unwrap()
        .to_string();
    assert!(out.contains("sales") && !out.contains("public"), "{out}");

    let info = c
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("sales".into()),
            table_name_filter_pattern: None,
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        1,
        "only the table, not the view"
    );
    let schema_bytes = batches[0].column_by_name("table_schema").unwrap();
    let bytes = schema_bytes
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap()
        .value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(bytes).unwrap();
    let expected = c
        .execute("SELECT * FROM sales.orders".into(), None)
        .await
        .unwrap()
        .try_decode_schema()
        .unwrap();
    assert_eq!(schema, expected, "include_schema matches the streamed schema");
    assert!(!schema.field(0).is_nullable());

    let info = c
        .get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::SqlIdentifierQuoteChar])
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);

    let info = c
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    assert!(fetch(&mut c, info).await.iter().map(|b| b.num_rows()).sum::<usize>() >= 10);

    let info = c
        .get_primary_keys(arrow_flight::sql::CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("sales".into()),
            table: "orders".into(),
        })
        .await
        .unwrap();
    let declared = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    assert_eq!(declared.fields().len(), 6);
}

#[tokio::test]
async fn bulk_ingest_modes() {
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    let batch = |ids: Vec<i64>| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(ids))],
        )
        .unwrap()
    };
    async fn ingest(
        c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
        cmd: CommandStatementIngest,
        b: RecordBatch,
    ) -> Result<i64, FlightError> {
        let stream = futures::stream::iter([Ok::<_, FlightError>(b)]);
        c.execute_ingest(cmd, stream).await
    }
    let cmd = |not_exist: TableNotExistOption, exists: TableExistsOption| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: not_exist as i32,
            if_exists: exists as i32,
        }),
        table: "ing".into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    };
    let n = ingest(
        &mut c,
        cmd(TableNotExistOption::Create, TableExistsOption::Fail),
        batch(vec![1, 2]),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    let e = ingest(
        &mut c,
        cmd(TableNotExistOption::Create, TableExistsOption::Fail),
        batch(vec![3]),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::AlreadyExists), "{e}");
    let n = ingest(
        &mut c,
        cmd(TableNotExistOption::Fail, TableExistsOption::Append),
        batch(vec![3, 4, 5]),
    )
    .await
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        query(&mut c, "SELECT count(*) AS n FROM ing").await,
        "+---+\n| n |\n+---+\n| 5 |\n+---+"
    );
    let n = ingest(
        &mut c,
        cmd(TableNotExistOption::Fail, TableExistsOption::Replace),
        batch(vec![9]),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        query(&mut c, "SELECT sum(id) AS s FROM ing").await,
        "+---+\n| s |\n+---+\n| 9 |\n+---+"
    );
    let mut missing = cmd(TableNotExistOption::Fail, TableExistsOption::Append);
    missing.table = "nope".into();
    let e = ingest(&mut c, missing, batch(vec![1])).await.unwrap_err();
    assert_eq!(code_of(&e), Some(Code::NotFound), "{e}");
}

#[tokio::test]
async fn auth_required_when_users_configured() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_contrail"))
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let config = dir.path().join("contrail.toml");
    std::fs::write(
        &config,
        format!("[[auth.users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let server = TestServer::start(&["--config", config.to_str().unwrap()]);

    let mut anon = server.client().await;
    let e = anon.execute("SELECT 1".into(), None).await.unwrap_err();
    assert_eq!(code_of(&e), Some(Code::Unauthenticated), "{e}");

    let mut bad = server.client().await;
    let e = bad.handshake("alice", "wrong").await.unwrap_err();
    // arrow-flight's client flattens handshake errors into a string.
    assert!(e.to_string().contains("invalid user name or password"), "{e}");

    let mut good = server.client().await;
    good.handshake("alice", "s3cret").await.unwrap();
    assert!(good.token().is_some());
    assert_eq!(
        query(&mut good, "SELECT 1 AS one").await,
        "+-----+\n| one |\n+-----+\n| 1   |\n+-----+"
    );
}

/// DoGet's messages for `sql`, as they came over the wire.
async fn raw_messages(
    c: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Vec<arrow_flight::FlightData> {
    let info = c.execute(sql.to_string(), None).await.expect(sql);
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = c.inner_mut().do_get(ticket).await.expect("do_get").into_inner();
        out.extend(stream.try_collect::<Vec<_>>().await.expect("messages"));
    }
    out
}

/// The rows of raw messages, decoded as any client would.
async fn decoded(messages: Vec<arrow_flight::FlightData>) -> RecordBatch {
    let stream = futures::stream::iter(messages.into_iter().map(Ok));
    let batches: Vec<RecordBatch> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
        .try_collect()
        .await
        .expect("decodable");
    let schema = batches.first().expect("a batch").schema();
    arrow::compute::concat_batches(&schema, &batches).expect("concat")
}

/// Each record batch message's codec (`None`: not compressed).
fn codecs(messages: &[arrow_flight::FlightData]) -> Vec<Option<arrow::ipc::CompressionType>> {
    messages
        .iter()
        .filter_map(|m| {
            arrow::ipc::root_as_message(&m.data_header)
                .ok()?
                .header_as_record_batch()
        })
        .map(|rb| rb.compression().map(|c| c.codec()))
        .collect()
}

#[tokio::test]
async fn results_are_compressed_when_the_session_asks() {
    use arrow::ipc::CompressionType;
    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    // One session for SET and the queries after it (what ADBC's cookie middleware
    // does): the one the server mints and announces with Set-Cookie.
    let announced = c
        .inner_mut()
        .list_actions(arrow_flight::Empty {})
        .await
        .expect("list_actions");
    let cookie = announced
        .metadata()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session announced")
        .to_string();
    c.set_header("cookie", cookie);
    let sql = "SELECT value AS id, value % 7 AS small, concat('row ', CAST(value % 1000 AS VARCHAR)) AS label \
               FROM range(300000) ORDER BY id";
    let size =
        |m: &[arrow_flight::FlightData]| m.iter().map(|m| m.data_header.len() + m.data_body.len()).sum::<usize>();

    let plain = raw_messages(&mut c, sql).await;
    assert!(codecs(&plain).iter().all(Option::is_none), "uncompressed by default");
    let plain_bytes = size(&plain);
    let rows = decoded(plain).await;
    assert_eq!(rows.num_rows(), 300_000);

    for (setting, codec) in [("lz4", CompressionType::LZ4_FRAME), ("'ZSTD'", CompressionType::ZSTD)] {
        query(&mut c, &format!("SET contrail.result_compression = {setting}")).await;
        let messages = raw_messages(&mut c, sql).await;
        let found = codecs(&messages);
        assert!(
            found.len() > 1 && found.iter().all(|c| *c == Some(codec)),
            "{setting}: {found:?}"
        );
        let bytes = size(&messages);
        assert!(
            bytes * 2 < plain_bytes,
            "{setting}: {bytes} bytes vs {plain_bytes} uncompressed"
        );
        assert_eq!(decoded(messages).await, rows, "{setting}: the same rows");
    }

    // A bad value is refused and changes nothing; the server keeps serving.
    let e = c
        .execute("SET contrail.result_compression = 'gzip'".into(), None)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("'none', 'lz4' or 'zstd'"), "{e}");
    assert!(
        codecs(&raw_messages(&mut c, sql).await)
            .iter()
            .all(|c| *c == Some(CompressionType::ZSTD))
    );

    // Another session is not affected; RESET brings this one back to plain.
    let mut other = server.client().await;
    assert!(codecs(&raw_messages(&mut other, sql).await).iter().all(Option::is_none));
    query(&mut c, "RESET contrail.result_compression").await;
    assert!(codecs(&raw_messages(&mut c, sql).await).iter().all(Option::is_none));
}

/// Malformed input is the client's fault (INVALID_ARGUMENT), never a panic: a
/// DoPut whose batch body is shorter than its header says, and a descriptor
/// whose command is not a readable Flight SQL command. The server serves on.
#[tokio::test]
async fn malformed_requests_are_invalid_arguments_and_the_server_serves_on() {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use arrow_flight::sql::ProstMessageExt;
    use arrow_flight::{FlightData, FlightDescriptor};
    use prost::Message;

    let server = TestServer::start(&[]);
    let mut c = server.client().await;
    let cmd = CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: TableExistsOption::Fail as i32,
        }),
        table: "short_body".into(),
        ..Default::default()
    };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let batch = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from_iter_values(0..1000)) as arrow::array::ArrayRef,
    )])
    .expect("batch");
    let mut frames: Vec<FlightData> = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .expect("frames");
    let last = frames.last_mut().expect("a batch frame");
    assert!(last.data_body.len() > 64, "the batch has a body to cut");
    last.data_body = last.data_body.slice(0..16);
    let status = match c.inner_mut().do_put(futures::stream::iter(frames)).await {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .try_collect::<Vec<_>>()
            .await
            .expect_err("a cut body is refused"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("outside"), "{status}");

    // Garbage inside a well-formed Any: a query that is not UTF-8.
    let mut any = arrow_flight::sql::CommandStatementQuery::default().as_any();
    any.value = vec![10u8, 2, 0xff, 0xfe].into();
    let garbage = FlightDescriptor::new_cmd(any.encode_to_vec());
    let status = c
        .inner_mut()
        .get_flight_info(garbage)
        .await
        .expect_err("an unreadable command is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");

    // Strings that are not UTF-8 where the Flight protocol has a `string`, which
    // the generated server fails to decode: an action type, a descriptor path.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let action = vec![0x0a, 2, 0xff, 0xfe];
    let status =
        common::raw::server_streaming(channel.clone(), "/arrow.flight.protocol.FlightService/DoAction", action)
            .await
            .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    let path_descriptor = vec![0x08, 1, 0x1a, 2, 0xff, 0xfe];
    let status = common::raw::unary(
        channel,
        "/arrow.flight.protocol.FlightService/GetFlightInfo",
        path_descriptor,
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");

    assert_eq!(
        query(&mut c, "SELECT 1 AS one").await,
        "+-----+\n| one |\n+-----+\n| 1   |\n+-----+"
    );
    let tables = query(
        &mut c,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'short_body'",
    )
    .await;
    assert!(tables.contains("| 0 "), "nothing was created: {tables}");
}
