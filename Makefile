# sipedge — see README.md. Two commands matter: `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin

.PHONY: all build run test test-unit test-integration deps bench-deps bench bench-go bench-sipp bench-propagation bench-compare bench-flat lint clean

all: build

# --version names the commit (git describe) when built from a clone.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "-X github.com/sipedge/sipedge/internal/version.Version=$(VERSION)" -o $(BIN)/ ./cmd/...

# Start sipedge (embedded Redis) and two demo confnodes in the foreground.
run: build
	./scripts/run-demo.sh

# Install what the tests need (redis-server, sipp) when missing, then run
# every test: unit and integration.
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	@# the patched sipgo (third_party/sipgo/SIPEDGE.md): its sip package, and
	@# the race detector over the transaction and worker tests (upstream's
	@# transport tests race under -race unpatched too)
	cd third_party/sipgo && $(GO) test -count=1 ./sip/ && \
		$(GO) test -race -count=1 -run 'MsgWorkers|Transaction|ServerTx|ClientTx' ./sip/
	@# RFC 4475 torture messages name foreign hosts: replay them only where
	@# nothing can leave the machine (a loopback-only network namespace).
	unshare --net sh -c 'ip link set lo up && $(GO) test -count=1 -run Torture ./proxy/'

test-unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

test-integration: deps
	$(GO) test -count=1 -v -timeout 15m ./integration/

deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v baresip >/dev/null || missing="$$missing baresip-core"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $$missing; \
	fi

# Benchmarks: Go micro-benchmarks, sipp stepped call rates, then sipedge
# side by side with Kamailio and rtpengine (installed here when missing).
bench: bench-go bench-sipp bench-propagation bench-compare bench-flat

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./ring/ ./proxy/ ./media/...

bench-sipp: deps build
	./scripts/bench.sh

# Time from a deservice write (plain redis-cli, and sipedgectl) to the first
# 503 a client sees, with real redis-server, sipedge and sipp.
bench-propagation: deps
	$(GO) test -count=1 -v -run 'TestPropagation' ./integration/ | grep -E 'first 503|prober:|^(ok|FAIL|---)'

# What only the benchmarks need: Kamailio and rtpengine (Debian packages),
# on top of what the tests need. Never part of `make test`.
bench-deps: deps
	@SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"; \
	if ! command -v kamailio >/dev/null; then \
		echo "installing: kamailio kamailio-extra-modules"; \
		$$APT update && $$APT install -y kamailio kamailio-extra-modules || exit 1; \
	fi; \
	if ! command -v rtpengine >/dev/null; then \
		echo "installing: rtpengine-daemon"; \
		$$APT update && $$APT install -y rtpengine-daemon || \
			echo "rtpengine-daemon could not be installed: the anchored Kamailio column is skipped"; \
	fi

# sipedge against Kamailio (+ rtpengine) through the same steps; one table
# of ratios. Knobs: see scripts/bench-compare.sh (RATES, SECONDS_PER_STEP...).
bench-compare: bench-deps build
	./scripts/bench-compare.sh

# sipedge's CPU per extra call set-up and per call end while sipp holds
# 100, then 10000 concurrent anchored calls (LEVELS=...; capped by the hard
# ulimit -n: 4 sockets a call), with the ratio. Knobs: see scripts/bench-flat.sh.
bench-flat: deps build
	./scripts/bench-flat.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
