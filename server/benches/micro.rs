//! Criterion micro-benchmarks of the per-request fixed costs: signed tickets,
//! SQL planning, a whole statement in the engine, and encoding record batches
//! into Flight messages; and of
//! turning `Utf8View` results into the `Utf8` clients get, against arrow's cast.
//!
//! `cargo bench -p contrail-server --bench micro`; the side-by-side system
//! benchmarks are `make bench` (benches/run.py).

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, StringViewArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use contrail_planner::{Engine, EngineOptions, SessionSettings, types};
use contrail_server::handle::{Signer, StatementTicket, TicketBody};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;

fn tickets(c: &mut Criterion) {
    let signer = Signer::new(&[7u8; 32]);
    let ticket = StatementTicket {
        id: "0b6b3c52-62f4-4a0c-9c55-bd2d6b3c9a51".into(),
        body: TicketBody::Query {
            sql: "SELECT l_returnflag, sum(l_quantity) FROM tpch.lineitem GROUP BY 1".into(),
            params: None,
        },
        settings: SessionSettings::default(),
    };
    let bytes = signer.encode_ticket(&ticket).expect("encode");
    let mut g = c.benchmark_group("ticket");
    g.bench_function("encode", |b| {
        b.iter(|| signer.encode_ticket(black_box(&ticket)).expect("encode"))
    });
    g.bench_function("decode", |b| {
        b.iter(|| signer.decode_ticket(black_box(&bytes)).expect("decode"))
    });
    g.finish();
}

fn planning(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = rt.block_on(async {
        let engine = Engine::open(EngineOptions::new(dir.path())).await.expect("engine");
        let mut s = SessionSettings::default();
        for ddl in [
            "CREATE TABLE orders (o_orderkey BIGINT, o_custkey BIGINT, o_orderdate DATE, o_totalprice DECIMAL(15, 2))",
            "CREATE TABLE customer (c_custkey BIGINT, c_name VARCHAR, c_nationkey BIGINT)",
        ] {
            engine.sql(&mut s, ddl).await.expect("ddl");
        }
        engine
    });
    let settings = SessionSettings::default();
    let mut g = c.benchmark_group("plan");
    for (name, sql) in [
        ("select 1", "SELECT 1"),
        (
            "join + aggregate",
            "SELECT c_name, sum(o_totalprice) FROM customer JOIN orders ON o_custkey = c_custkey \
             WHERE o_orderdate >= DATE '1995-01-01' GROUP BY c_name ORDER BY 2 DESC LIMIT 10",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(engine.plan(&settings, black_box(sql))).expect("plan"))
        });
    }
    g.finish();
}

fn flight_encoding(c: &mut Criterion) {
    let rows = 65_536;
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Int64, false),
        Field::new("c", DataType::Int64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let ints = || Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let strings = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|i| format!("comment {i:08}")),
    ));
    let batch = RecordBatch::try_new(schema, vec![ints(), ints(), ints(), strings]).expect("batch");
    let bytes = batch.get_array_memory_size() as u64;
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut g = c.benchmark_group("flight_data");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("encode 64K rows", |b| {
        b.iter(|| {
            rt.block_on(async {
                let input = futures::stream::iter([Ok(batch.clone())]);
                let encoded = FlightDataEncoderBuilder::new().build(input);
                encoded
                    .map_ok(|fd| fd.data_body.len())
                    .try_collect::<Vec<_>>()
                    .await
                    .expect("encode")
            })
        })
    });
    g.finish();
}

/// lineitem's string columns in a Parquet reader's batch: 1-byte flags,
/// 3-7 byte modes (inline views) and 10-43 byte comments (mostly out of line).
fn view_results(c: &mut Criterion) {
    let rows = 8192;
    let flags = StringViewArray::from_iter_values((0..rows).map(|i| ["A", "N", "R"][i % 3]));
    let modes = StringViewArray::from_iter_values((0..rows).map(|i| ["AIR", "MAIL", "TRUCK", "REG AIR"][i % 4]));
    // Lengths scattered as in lineitem (a multiplicative hash of the row).
    let comments = StringViewArray::from_iter_values((0..rows).map(|i| {
        &"furiously regular deposits haggle slyly across the"[..10 + (i.wrapping_mul(2_654_435_761) >> 7) % 34]
    }));
    let columns: Vec<ArrayRef> = vec![Arc::new(flags), Arc::new(modes), Arc::new(comments)];
    let view_schema = Arc::new(Schema::new(
        ["flag", "mode", "comment"]
            .map(|n| Field::new(n, DataType::Utf8View, false))
            .to_vec(),
    ));
    let plain = Arc::new(Schema::new(
        ["flag", "mode", "comment"]
            .map(|n| Field::new(n, DataType::Utf8, false))
            .to_vec(),
    ));
    let batch = RecordBatch::try_new(view_schema, columns).expect("batch");
    let mut g = c.benchmark_group("utf8view_to_utf8");
    g.throughput(Throughput::Elements(rows as u64 * 3));
    g.bench_function("contrail", |b| {
        b.iter(|| types::cast_batch(black_box(&batch), &plain).expect("cast"))
    });
    g.bench_function("arrow cast", |b| {
        b.iter(|| {
            let columns = black_box(&batch)
                .columns()
                .iter()
                .map(|c| cast(c, &DataType::Utf8))
                .collect::<Result<Vec<_>, _>>()
                .expect("cast");
            RecordBatch::try_new(plain.clone(), columns).expect("batch")
        })
    });
    g.finish();
}

/// A statement's own cost in the engine, without gRPC: the shared state of its
/// session's settings, planning and running `SELECT 1`; and, beside it, what a
/// copy of a session state costs (what every statement paid before the state
/// was shared).
fn statement(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = rt
        .block_on(Engine::open(EngineOptions::new(dir.path())))
        .expect("engine");
    let settings = SessionSettings::default();
    let mut g = c.benchmark_group("statement");
    let context = engine.statement(&settings).expect("statement context");
    g.bench_function("copy of a session state", |b| b.iter(|| context.session()));
    g.bench_function("select 1: plan and run", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut settings = settings.clone();
                let context = engine.statement(&settings).expect("statement context");
                let planned = engine.plan_with(&context, black_box("SELECT 1")).await.expect("plan");
                let outcome = engine.execute_in(&context, &mut settings, planned).await.expect("run");
                let contrail_planner::Outcome::Rows(rows) = outcome else {
                    panic!("rows")
                };
                rows.try_collect::<Vec<_>>().await.expect("row")
            })
        })
    });
    g.finish();
}

criterion_group!(benches, tickets, planning, statement, flight_encoding, view_results);
criterion_main!(benches);
