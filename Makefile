# Fault-tolerant VMs on rust-vmm. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
BUILD := build
GUEST_DIR := resources/guest
GUEST_ELF := $(BUILD)/guest.elf
VMM := target/release/vmm
# Debian packages the tests and the demo use (qemu-nbd/qemu-storage-daemon come with qemu-utils).
APT_PACKAGES := qemu-utils nbdkit redis-tools iproute2 python3 openssl curl
# promtool checks the metrics endpoints; the etcd tests start their own three-member cluster.
# Installed without recommends (which would add prometheus-node-exporter); the servers the
# packages come with are stopped and never used.
APT_TOOLS := prometheus etcd-server etcd-client

.PHONY: help deps build guest run demo lint test test-long bench bench-compare fuzz clean

help:
	@echo "make deps    install what the build and the tests need (idempotent; apt-get + cargo)"
	@echo "make build   build the VMM and the backends (release)"
	@echo "make guest   build the test guest into $(GUEST_ELF)"
	@echo "make run     boot the test guest interactively (GUEST_CMDLINE=... to choose a mode)"
	@echo "make demo    the product demo"
	@echo "make lint    clippy with the workspace lints, warnings as errors (make test runs it)"
	@echo "make test    every test: unit, guest boots, end-to-end"
	@echo "make test-long  long tests (minutes): twenty joins of a 1 GiB guest under load"
	@echo "make bench   measure and write docs/BENCHMARKS.md"
	@echo "make bench-compare BASE=rev  the FT benchmark against another revision, in one run"
	@echo "make fuzz    fuzz the decoders peers reach: log records, FT control, API (FUZZ_SECONDS=30 each)"
	@echo "make clean   remove build outputs"

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	tools=""; for p in $(APT_TOOLS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || tools="$$tools $$p"; \
	done; \
	if [ -n "$$missing$$tools" ]; then \
		echo "installing:$$missing$$tools"; \
		apt-get update -qq || exit 1; \
	else echo "debian packages: all present"; fi; \
	if [ -n "$$missing" ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; fi; \
	if [ -n "$$tools" ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$tools || exit 1; \
		service prometheus stop >/dev/null 2>&1 || true; \
		service etcd stop >/dev/null 2>&1 || true; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo is required (rustup toolchain)"; exit 1; }
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy rustfmt
	$(CARGO) fetch --locked
	cd $(GUEST_DIR) && $(CARGO) fetch --locked

build:
	$(CARGO) build --release --workspace --locked

guest: $(GUEST_ELF)

# Cargo decides whether the guest is up to date; the copy is cheap.
$(GUEST_ELF): FORCE
	cd $(GUEST_DIR) && $(CARGO) build --release --locked
	@mkdir -p $(BUILD)
	cp $(GUEST_DIR)/target/x86_64-unknown-linux-gnu/release/guest $(GUEST_ELF)
FORCE:

GUEST_CMDLINE ?= guest.mode=spin guest.report=50000000 guest.lines=10
run: build guest
	$(VMM) --kernel $(GUEST_ELF) --cmdline "$(GUEST_CMDLINE)" --stats

# ARBITER=etcd: the pair's arbiter is a three-member etcd cluster instead of `arbiter serve`.
ARBITER ?= builtin
demo: deps build guest
	ARBITER=$(ARBITER) $(CARGO) run --release --locked -q -p integration --bin demo

# Unit tests of every crate, then the tests that boot guests and run real processes.
# The compiler's house rules first (the workspace lints in Cargo.toml): a warning fails.
lint:
	$(CARGO) clippy --release --workspace --all-targets --locked -- -D warnings

test: lint build guest
	$(CARGO) test --release --workspace --locked
	cd $(GUEST_DIR) && $(CARGO) test --lib --locked

# Tests too long for every run (each prints its figures).
test-long: build guest
	$(CARGO) test --release --locked -p integration --test join_soak -- --ignored --nocapture

bench: build guest
	python3 resources/bench/bench.py

# The FT benchmark of this checkout against BASE (a git revision), alternated in one run.
BASE ?= main
ROUNDS ?= 2
bench-compare: build guest
	python3 resources/bench/compare.py $(BASE) $(ROUNDS)

FUZZ_SECONDS ?= 30
fuzz:
	./fuzz/run.sh $(FUZZ_SECONDS)

clean:
	$(CARGO) clean
	cd $(GUEST_DIR) && $(CARGO) clean
	rm -rf $(BUILD)
