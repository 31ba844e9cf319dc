# The two entry points of the README. Both install what they need first (Debian packages, Rust).
.PHONY: demo test deps bench-scale deb reliability

# cargo from PATH, else where rustup installs it.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

deps:
	./scripts/install-deps

# Publish a sample data set into a local-directory store, snapshot it, mount it, read it.
demo: deps
	$(CARGO) build --release --workspace --bins
	./scripts/demo target/release

# Everything: unit tests, integration tests that mount for real against file:// and a local S3
# server, then the Debian package built and its contents checked.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) deb
	$(CARGO) test --test package -- --ignored

# The Debian package (target/debian/lazysnap_*.deb): both binaries, the systemd unit, the mount(8)
# helper link, man pages, completions and an example configuration; debug symbols go to a separate
# lazysnap-dbgsym package. Installs cargo-deb if missing.
deb: deps
	$(CARGO) deb --version >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked
	$(CARGO) build --release -p lazysnap-tools -p lazysnap-mountd
	rm -rf target/release/deb-docs
	target/release/lazysnap generate-docs target/release/deb-docs
	target/release/lazysnap-mountd generate-man target/release/deb-docs/man
	$(CARGO) deb -p lazysnap-tools --no-build --dbgsym

# One daemon with 4096 mounts (a node's vbuckets): threads, memory, mount time, reads across a
# daemon crash and a restart, a stop, 16 clients mounting at once. About 4 minutes on 2 cores.
bench-scale: deps
	$(CARGO) build --release --workspace --bins
	target/release/lazysnap bench --profile scale --mounts 4096

# The reliability suite's long modes, as one table (test, load, faults injected, inputs tried,
# failures, wrong bytes): a million fuzzed inputs per parser, 1 GiB read through a mount at 10% and
# 30% faulty GETs, a 10-minute soak. About 35 minutes on 2 cores; `make test` runs the short modes.
reliability: deps
	./scripts/reliability
