# ari-agent: `make up` runs the agent with an Asterisk; `make test` runs everything.
SHELL := /bin/bash
PYTHON ?= python3
ROOTFS ?= /var/cache/ari-agent/rootfs
# make test's pytest workers; each through-Asterisk worker starts its own lab.
TEST_WORKERS ?= 2
APT_PACKAGES := debootstrap espeak-ng sox podman runc sip-tester kubernetes-client
# Installed without recommends: only promtool is used (make test checks the alert rules with it);
# nothing needs Debian's prometheus service running, leave it stopped where it starts. Chromium and
# its driver: the console's headless browser test (selenium is pointed at /usr/bin/chromedriver).
# Kamailio: test_kamailio.py runs its own on loopback, never the packaged service. Where systemd
# runs, the services these two packages enable are stopped and disabled when make deps installs them
# (Debian's kamailio listens on *:5060, where an Asterisk on the host would).
APT_BARE_PACKAGES := prometheus chromium chromium-driver kamailio
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install deps rootfs lint test test-unit test-integration test-faults test-live bench soak load up up-agent down logs check clean screenshots

help:
	@echo "make up      run the agent with the bundled Asterisk (container, or the local root filesystem)"
	@echo "make test    install what is needed and run lint, unit and integration tests"
	@echo "make bench   run the benchmarks"
	@echo "make soak    the agent at 1x, 1.5x, 2x its call limit for 10 min each, and a 22-minute call"
	@echo "make load    load-test the running stack with SIPp callers (LOAD_ARGS=\"--calls 50 --rate 2\")"

# Debian packages the tests and the offline voice need (skipped when present).
# kubernetes-client: any kubectl on PATH will do (a packaged one, e.g. Google Cloud SDK's
# `kubectl`, owns /usr/bin/kubectl and makes Debian's fail to install).
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		if [ $$p = kubernetes-client ] && command -v kubectl >/dev/null; then continue; fi; \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@missing=""; for p in $(APT_BARE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing (no recommends):$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		for s in $$missing; do case $$s in kamailio|prometheus) \
			systemctl disable --now $$s >/dev/null 2>&1 || true;; esac; done; \
	fi

install: deps
	# The embeddings extra needs torch: the CPU build named exactly (a wheel on these machines'
	# disk, ~13 s) before the extras, else pip resolves a multi-GB CUDA one.
	$(PYTHON) -m pip install -q 'torch==2.13.0'
	$(PYTHON) -m pip install -q -e '.[dev,openai,deepgram,azure,turn,audio,mcp,otel,embeddings]'
	$(PYTHON) -m pip install -q --no-deps 'pipecat-ai>=1.14,<2'  # the turn model's file only

rootfs: deps
	bash asterisk/rootfs.sh $(ROOTFS)

lint: install
	$(PYTHON) -m ruff check ari_agent providers devstack tests
	$(PYTHON) -m mypy

test-unit: install
	$(PYTHON) -m pytest -q tests/unit

test-integration: install rootfs
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m pytest -q tests/integration

# The quick faults (tests/faults) through the real Asterisk too.
test-faults: install rootfs
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m pytest -q tests/faults

test: install rootfs lint
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=12 tests/unit tests/integration tests/faults

# The console's screenshots for the docs (docs/screenshots/), from its browser test and a real call.
screenshots: install rootfs
	ARI_AGENT_ROOTFS=$(ROOTFS) ARI_AGENT_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PYTHON) -m pytest -q tests/integration/test_console_browser.py

# Percentiles and ratios through the real Asterisk; JSON under tests/bench/results/.
# bench_faults: dead air under provider faults, talkers under a flood, each beside the same figure
# without (BENCH_FAULTS_ARGS="--samples 3" or "--only flood" for a quick look).
bench: install rootfs
	$(PYTHON) -m tests.bench.bench_understanding
	$(PYTHON) -m tests.bench.bench_knowledge
	$(PYTHON) -m tests.bench.bench_media
	$(PYTHON) -m tests.bench.bench_frontend
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_interruptions
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_calls
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_transports
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_faults $(BENCH_FAULTS_ARGS)
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_kamailio  # Kamailio's detection of a dead node
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.bench.bench_capacity  # docs/capacity.md's figures

# The long faults: 1x, 1.5x and 2x the call limit for 10 minutes each beside a 22-minute call
# (about 32 minutes); SOAK_ARGS="--minutes 1 --long-call-minutes 0" for a quick look.
soak: install rootfs
	ARI_AGENT_ROOTFS=$(ROOTFS) $(PYTHON) -m tests.soak.run $(SOAK_ARGS)

# Load test of what `make up` runs (or, with LOAD_ARGS naming a target, your own Asterisk):
# SIPp callers ask a question and say goodbye; exit 1 with the reason on any failed call.
LOAD_ARGS ?= --calls 10 --rate 1
load: deps
	$(PYTHON) -m ari_agent.cli $(if $(wildcard .env),--env-file .env) load $(LOAD_ARGS)

# Against the real vendors, where their keys are set (OPENAI_API_KEY, DEEPGRAM_API_KEY,
# AZURE_SPEECH_KEY + AZURE_SPEECH_REGION); not part of `make test`.
test-live: install
	$(PYTHON) -m pytest -q -rs tests/live

check: install
	ari-agent check

# The development stack (devstack/, from a checkout only; not in the wheel): Docker, else podman, else the local root
# filesystem (which installs what it needs: make install, asterisk/rootfs.sh).
# Settings and generated passwords: .env (see .env.example).
# A pool of agents behind StasisBroadcast, one per core; `make up AGENTS=2` (or
# ARI_AGENT_AGENTS in .env) sets how many.
up:
	$(PYTHON) -m devstack.stack up $(if $(AGENTS),--agents $(AGENTS))

# Only the agent, for sites with their own Asterisk or FreePBX (set AGENT_ARI__* in .env).
up-agent:
	$(PYTHON) -m devstack.stack up-agent

down:
	$(PYTHON) -m devstack.stack down

logs:
	$(PYTHON) -m devstack.stack logs

clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache build *.egg-info
