# rampart — the two commands a new user needs:
#   make run    bootstrap the local PKI (first run) and start the local secure cluster
#   make test   install what is missing, then fmt + clippy + the whole test suite

SHELL := /bin/bash
CARGO ?= cargo
# Debian packages a fresh machine may lack: libclang for the rocksdb crate, openssl, curl (HTTP endpoints) and
# etcd (server and etcdctl) for the interoperability tests, protoc for the etcd-client crate the
# tests use as a second client stack, with the well-known .proto files it imports (rampart
# itself builds without protoc), python3-venv for the Kubernetes schema validator below.
APT_PACKAGES := clang libclang-dev openssl curl etcd-client etcd-server protobuf-compiler libprotobuf-dev python3-venv
LOCAL_DIR := .local
# A Python venv with kubernetes-validate (it bundles the Kubernetes schemas, so it checks the
# output of `rampart k8s manifests` offline). Debian's pip is externally managed: hence a venv.
VENV ?= $(LOCAL_DIR)/venv
KUBERNETES_VALIDATE := kubernetes-validate==1.37.0
RAMPART := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)/release/rampart

.PHONY: deps build test run fmt lint clean-local bench

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then echo "Error: need root to install:$$missing" >&2; exit 1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true
	@[ -x "$(VENV)/bin/kubernetes-validate" ] || { \
		echo "installing $(KUBERNETES_VALIDATE) into $(VENV)"; \
		python3 -m venv "$(VENV)" && "$(VENV)/bin/pip" install -q "$(KUBERNETES_VALIDATE)"; \
	}

build: deps
	$(CARGO) build --release --bin rampart

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: deps lint
	RAMPART_REQUIRE_INTEROP=1 RAMPART_VENV="$(abspath $(VENV))" $(CARGO) test --all-targets

run: build
	RAMPART=$(RAMPART) bash config/local-cluster.sh

clean-local:
	rm -rf $(LOCAL_DIR)

# Benchmarks (not tests): rampart vs etcd on this machine, and PKI bootstrap time.
bench:
	bash bench/pki-init.sh
	bash bench/kv.sh
	bash bench/compare-etcd.sh
	bash bench/watch.sh
