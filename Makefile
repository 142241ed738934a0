# make run   - install what is missing, build, initialise ./gatehouse-data, serve on 127.0.0.1:8080
# make test  - install what is missing, build, run every test (what CI runs)
# make bench - side-by-side benchmarks against nginx and HAProxy (bench/RESULTS.md)
BUILD      ?= build
FUZZ_BUILD ?= build-fuzz
DATA_DIR   ?= ./gatehouse-data
OWNER_EMAIL ?= owner@example.com
GATEHOUSE  := $(BUILD)/src/gatehouse
JOBS       ?= $(shell nproc)

.PHONY: run test bench deps build build-fuzz fuzz lint-openapi clean

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@$(GATEHOUSE) init --data-dir $(DATA_DIR) --owner-email $(OWNER_EMAIL)
	@scripts/tour $(DATA_DIR)
	exec $(GATEHOUSE) serve --data-dir $(DATA_DIR)

# ctest runs last, so that its summary line closes the output.
test: build build-fuzz
	$(MAKE) --no-print-directory lint-openapi
	$(MAKE) --no-print-directory fuzz
	@echo "integration tests against the clang-14 AddressSanitizer build of the server:"
	GATEHOUSE_BIN=$(FUZZ_BUILD)/src/gatehouse ASAN_OPTIONS=detect_leaks=0 \
	  $(BUILD)/tests/integration_tests --gtest_brief=1
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 300

$(FUZZ_BUILD)/build.ninja:
	CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DGATEHOUSE_FUZZ=ON

build-fuzz: deps $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Each target runs briefly from its seed corpus; a crash fails the build.
fuzz: build-fuzz
	@for t in key_parser config_loader json_body cidr_parser request_target http_framing audit_query sign_in_input json_schema journal_record; do \
	  echo "fuzz: $$t"; \
	  mkdir -p $(FUZZ_BUILD)/corpus-$$t; \
	  $(FUZZ_BUILD)/fuzz/fuzz_$$t -max_total_time=20 -timeout=5 -rss_limit_mb=2048 \
	    $(FUZZ_BUILD)/corpus-$$t fuzz/$$t/corpus > $(FUZZ_BUILD)/fuzz-$$t.log 2>&1 \
	    || { tail -n 40 $(FUZZ_BUILD)/fuzz-$$t.log; exit 1; }; \
	  tail -n 1 $(FUZZ_BUILD)/fuzz-$$t.log; \
	done

lint-openapi:
	@cd tools && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	tools/node_modules/.bin/redocly lint --format=stylish openapi.yaml

bench: deps
	@scripts/install-deps --bench
	$(MAKE) --no-print-directory build
	bench/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)
