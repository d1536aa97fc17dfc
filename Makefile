# Two commands matter to a newcomer: `make run` and `make test` (see README.md).
GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
CMDS     := kvserver kvcli kvbench

.PHONY: all build run test test-go smoke lint bench cluster cluster-stop clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Standalone server on its embedded default: 127.0.0.1:8080, data in ./data.
run: build
	./$(BIN)/kvserver

# The whole suite CI runs: install what the tests need (redis-tools), vet,
# unit + end-to-end tests under the race detector, then the redis-cli /
# redis-benchmark smoke script.
test: build
	bash scripts/deps.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	bash scripts/smoke.sh

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

cluster: build
	bash scripts/cluster.sh start

cluster-stop:
	bash scripts/cluster.sh stop

clean:
	rm -rf $(BIN)
