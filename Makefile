# The two entry points of the README. Both install what they need first (Debian packages, Rust).
.PHONY: demo test deps bench-scale

# cargo from PATH, else where rustup installs it.
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

deps:
	./scripts/install-deps

# Publish a sample data set into a local-directory store, snapshot it, mount it, read it.
demo: deps
	$(CARGO) build --release --workspace --bins
	./scripts/demo target/release

# Everything: unit tests, and integration tests that mount for real against file:// and a local S3 server.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# One daemon with 4096 mounts (a node's vbuckets): threads, memory, mount time, reads across a
# daemon crash and a restart, a stop, 16 clients mounting at once. About 4 minutes on 2 cores.
bench-scale: deps
	$(CARGO) build --release --workspace --bins
	target/release/lazysnap bench --profile scale --mounts 4096
