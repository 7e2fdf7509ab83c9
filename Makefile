# Thin wrapper around CMake. `make run` and `make test` are the README's two commands:
# each installs what is missing (Debian, as root), builds, then runs the server / the tests.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps run test test-servers test-release test-asan fuzz bench faults format clean

all: $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS)

$(BUILD)/Makefile:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

$(BUILD_ASAN)/Makefile:
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DCU_SANITIZE=ON >/dev/null

$(BUILD_FUZZ)/Makefile:
	@cmake -S . -B $(BUILD_FUZZ) -DCMAKE_C_COMPILER=clang -DCU_FUZZ=ON >/dev/null

deps:
	@./scripts/install-deps.sh

run: deps all
	@./init.sh --quiet
	@port=$$(sed -n 's/^SERVER_PORT=//p' .env | tr -d '"'"'"); \
	 echo "chunked-uploader: http://localhost:$${port:-3000}  (API key: API_KEY in $(CURDIR)/.env)"; \
	 exec ./$(BUILD)/chunked-uploader

# The whole suite twice: the release build, then under AddressSanitizer + UBSan. The release
# pass also runs every fuzz target once over its corpus (built with clang beforehand, so the
# build does not compete with the timed tests).
test:
	@./scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory test-servers
	@$(MAKE) --no-print-directory test-release test-asan

# The S3 test server (s3rver behind a SigV4-checking launcher), pinned in tests/s3, and the
# real clients and tools the tests drive (tus-js-client, flow.js, resumable.js, Uppy,
# playwright-core, an OpenAPI validator, @tus/server for the bench), pinned in tests/js.
test-servers:
	@cd tests/s3 && npm ci --silent --no-audit --no-fund >/dev/null
	@cd tests/js && npm ci --loglevel=error --no-audit --no-fund >/dev/null

test-release: all
	@cmake --build $(BUILD) --target fuzz_targets -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j 2

test-asan: $(BUILD_ASAN)/Makefile
	@cmake --build $(BUILD_ASAN) -j $(JOBS)
	@cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

# Fuzzes every target in tests/fuzz for FUZZ_SECONDS each, one after the other (one core);
# fails on any crash, leak or sanitizer report (kept in $(BUILD_FUZZ)/fuzz-findings/).
fuzz:
	@./scripts/install-deps.sh --fuzz
	@$(MAKE) --no-print-directory $(BUILD_FUZZ)/Makefile
	@cmake --build $(BUILD_FUZZ) -j $(JOBS)
	@./scripts/fuzz.sh run $(BUILD_FUZZ) $(FUZZ_SECONDS)

bench: all
	@./scripts/install-deps.sh --bench
	@./bench/bench.sh
	@./bench/http_bench.py

# The fault loops, long: FAULT_ROUNDS rounds (default 20) of every scenario, on the release
# build (as root: the disk-full scenario mounts a small tmpfs).
FAULT_ROUNDS ?= 20
faults: all
	@./scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory test-servers
	@CU_BINARY=$(CURDIR)/$(BUILD)/chunked-uploader ./tests/faults/fault_loop.py --rounds $(FAULT_ROUNDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
