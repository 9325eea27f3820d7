# leadledger — the two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_HOME ?= .leadledger-demo
DEMO_LEADS ?= 3000
export LEADLEDGER_POSTGRES_SCHEMA ?= public

.PHONY: help venv demo test test-fast lint bench clean

help:
	@echo "make demo   - venv with the runtime dependencies only, publish the demo policy, simulate $(DEMO_LEADS) routed leads, show a lead's history, verify"
	@echo "make test   - install dev deps and run the whole suite (PostgreSQL tests need LEADLEDGER_POSTGRES_DSN)"
	@echo "make lint   - ruff, mypy and the import contract (lint-imports)"
	@echo "make demo-kafka - the pipeline through Kafka (bundled broker), ends with the funnel"
	@echo "make bench  - benchmarks (results appended to bench/results.md)"

# Two installs into one venv: the runtime (what `make demo` needs: ~100 MB) and, for tests,
# lint and benchmarks, the dev tools on top (~340 MB). Each is redone when pyproject.toml changes.
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

venv: $(DEV)

demo: $(RUNTIME)
	@rm -rf $(DEMO_HOME) $(DEMO_HOME).simulate.json
	@echo "== the operations policy: two sales teams in Berlin and New York, routing by territory, two SLA clocks"
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger policy publish lifecycle/simulate/default_policy.toml
	@echo "== simulating $(DEMO_LEADS) leads into $(DEMO_HOME) (SQLite, no server needed); leadledger's router"
	@echo "   assigns them and its SLA clocks run, on the simulated clock (operate)"
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger simulate --leads $(DEMO_LEADS) --seed 42 --operate --json > $(DEMO_HOME).simulate.json
	@cat $(DEMO_HOME).simulate.json
	@echo "== operate catches up to now (deadlines since the simulation) and exits"
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger operate --once
	@echo "== the history of one lead that was won"
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger history \
	  $$($(BIN)/python -c "import json; print(json.load(open('$(DEMO_HOME).simulate.json'))['example_won_lead'])")
	@echo "== verifying every hash chain"
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger verify
	@echo "== where do our leads come from, and where do they get stuck? (funnel by source channel)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=120 $(BIN)/leadledger funnel --by channel
	@echo "== how long do they wait in each stage? (velocity)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=120 $(BIN)/leadledger velocity
	@echo "== which channels earn the revenue? (attribution, linear model, won deals)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=120 $(BIN)/leadledger attribution --by channel
	@echo "== how fast does sales respond? (speed to lead by owner)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=120 $(BIN)/leadledger speed --by owner
	@echo "== who got the leads, and who waited in the queue at night? (routing fairness)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger routing fairness
	@echo "== were the response SLAs kept? (sla by owner)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger sla --by owner
	@echo "== would a scoring model that knows what makes these leads buy have picked better MQLs?"
	@echo "   (scoring backtest of two models over the simulated leads; writes nothing)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger scoring backtest \
	  lifecycle/simulate/scoring/fit-and-behaviour.toml --against lifecycle/simulate/scoring/behaviour-only.toml
	@echo "== publish it with automatic MQL (policy v2 = the demo policy + that [scoring]); a new lead's"
	@echo "   touches then score it, the scorer qualifies it and the router assigns it"
	@sed 's/^auto_mql = false/auto_mql = true/' lifecycle/simulate/scoring/fit-and-behaviour.toml | \
	  cat lifecycle/simulate/default_policy.toml - > $(DEMO_HOME)/policy-v2.toml
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger policy publish $(DEMO_HOME)/policy-v2.toml
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger capture --email ada@northwind-demo.example \
	  --channel webinar --employees 1200 --industry software --role executive --country DE --at 2026-06-01T08:00:00Z >/dev/null
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger touch ada@northwind-demo.example \
	  --channel webinar --kind webinar_attended --at 2026-06-01T09:00:00Z >/dev/null
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger touch ada@northwind-demo.example \
	  --channel web --kind pricing_page --at 2026-06-02T10:00:00Z >/dev/null
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger touch ada@northwind-demo.example \
	  --channel web --kind demo_requested --at 2026-06-03T11:00:00Z >/dev/null
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger operate --once --now 2026-06-04T00:00:00Z
	LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger score explain ada@northwind-demo.example --at 2026-06-03T11:00:00Z
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger history ada@northwind-demo.example
	@echo "== the trend: leads per month, and March against February (the differences in the last table)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger funnel --interval month
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger funnel --from 2026-03-01 --to 2026-04-01 --compare-to previous
	@echo "== why were leads lost, and what is open per owner now?"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger reasons --stage lost
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=150 $(BIN)/leadledger pipeline
	@echo "== what would 1.5 million EUR in Q3 take, from the first half's own conversion? (plan; as CSV: --format csv)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= COLUMNS=170 $(BIN)/leadledger plan --revenue 1500000 \
	  --period 2026-07-01..2026-10-01 --by channel --as-of 2026-07-01
	@echo "== the HTML report as of the end of June (one self-contained page with charts, the trend and that plan)"
	@LEADLEDGER_HOME=$(DEMO_HOME) LEADLEDGER_POSTGRES_DSN= $(BIN)/leadledger report --html $(DEMO_HOME)/report.html --as-of 2026-07-01 \
	  --plan-revenue 1500000 --plan-period 2026-07-01..2026-10-01
	@echo "   open it in a browser; 'make report-png' renders it to $(DEMO_HOME)/report.png;"
	@echo "   'LEADLEDGER_HOME=$(DEMO_HOME) $(BIN)/leadledger serve' serves the same queries as JSON on 127.0.0.1:8000"

# The demo report as a PNG (headless Chromium: apt-get install -y chromium).
CHROMIUM ?= chromium
REPORT_PNG_SIZE ?= 1280,2400
.PHONY: report-png
report-png: $(RUNTIME)
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { echo "report-png needs Chromium: sudo apt-get update && sudo apt-get install -y chromium (Debian/Ubuntu), or set CHROMIUM=/path/to/chrome"; exit 1; }
	@test -f $(DEMO_HOME)/report.html || $(MAKE) --no-print-directory demo
	@profile=$$(mktemp -d) && \
	  $(CHROMIUM) --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	    --disable-background-networking --disable-component-update --disable-sync \
	    --user-data-dir=$$profile --screenshot=$(abspath $(DEMO_HOME))/report.png \
	    --window-size=$(REPORT_PNG_SIZE) file://$(abspath $(DEMO_HOME))/report.html 2>/dev/null; \
	  status=$$?; rm -rf $$profile; exit $$status
	@echo "wrote $(DEMO_HOME)/report.png"

test: $(DEV)
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Long (tens of minutes: 1M-event stores); results are appended to bench/results.md.
bench: $(DEV)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.projections_bench
	$(BIN)/python -m bench.kafka_bench
	$(BIN)/python -m bench.kafka_projection_bench
	$(BIN)/python -m bench.http_bench
	$(BIN)/python -m bench.operate_bench --record

# Ten million events on one machine (hours: builds ~1.2M leads per backend once, kept in bench-scale-stores/).
.PHONY: bench-scale
bench-scale: $(DEV)
	$(BIN)/python -m bench.scale --keep bench-scale-stores

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache

# The Kafka pipeline on one laptop: the bundled broker, the three roles as processes, a simulated
# stream fed into leadledger.inbound, `status` until caught up, the funnel; everything stopped after.
KAFKA_DEMO_HOME ?= $(DEMO_HOME)/kafka
KAFKA_DEMO_LEADS ?= 1000
.PHONY: demo-kafka
demo-kafka: $(DEV)
	$(BIN)/python -m leadledger.demo_kafka --home $(KAFKA_DEMO_HOME) --leads $(KAFKA_DEMO_LEADS)
