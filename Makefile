# Keel — the two commands a newcomer needs are `make demo` and `make test`.
BUILD_DIR ?= build
ASAN_DIR  ?= build-asan
TSAN_DIR  ?= build-tsan
FUZZ_DIR  ?= build-fuzz
JOBS      ?= 2
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 30
# Every fuzz/*_fuzz.cc is a target (its corpus is fuzz/corpus/<name without _fuzz>).
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(wildcard fuzz/*_fuzz.cc))))

.PHONY: all build deps deps-build deps-demo deps-test deps-bench deps-fuzz deps-dev demo test test-asan test-tsan bench fuzz format lint clean

all: build

# scripts/install-deps GROUP installs what one target needs (see the script): `make demo` does not
# install the benchmark anchors, `make test` installs etcd and PostgreSQL, `make bench` the rest.
deps:
	@scripts/install-deps all
deps-build deps-demo deps-test deps-bench deps-fuzz deps-dev:
	@scripts/install-deps $(@:deps-%=%)

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: deps-demo build
	$(BUILD_DIR)/keel demo

test: deps-test build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# ASAN_LABELS: a ctest label regex to run only some tests (CI: unit|integration).
ASAN_LABELS ?=
test-asan: deps-test
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKEEL_SANITIZE=ON -DKEEL_BENCH=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS) $(if $(ASAN_LABELS),-L '$(ASAN_LABELS)')

test-tsan: deps-test
	cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_TSAN=ON -DKEEL_BENCH=OFF
	cmake --build $(TSAN_DIR) -j $(JOBS) --target unit_tests
	cd $(TSAN_DIR) && ctest --output-on-failure -j $(JOBS) -L unit

bench: deps-bench build
	bench/resilience.sh $(BUILD_DIR)
	bench/balance.sh $(BUILD_DIR)
	bench/eventlog.sh $(BUILD_DIR)
	bench/election.sh $(BUILD_DIR)
	bench/proxy_vs.sh $(BUILD_DIR)
	bench/proxy_faults.sh $(BUILD_DIR)
	bench/pubsub.sh $(BUILD_DIR)
	bench/node.sh $(BUILD_DIR)
	bench/kafka.sh $(BUILD_DIR)
	bench/cluster.sh $(BUILD_DIR)

# libFuzzer builds need clang; each target runs for FUZZ_SECONDS from its checked-in corpus.
fuzz: deps-fuzz
	CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_FUZZ=ON -DKEEL_BENCH=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(FUZZ_TARGETS)
	for target in $(FUZZ_TARGETS); do \
	  corpus=$${target%_fuzz}; mkdir -p $(FUZZ_DIR)/corpus/$$corpus; \
	  $(FUZZ_DIR)/fuzz/$$target -max_total_time=$(FUZZ_SECONDS) $(FUZZ_DIR)/corpus/$$corpus fuzz/corpus/$$corpus || exit 1; \
	done

format: deps-dev
	git ls-files '*.h' '*.cc' | xargs clang-format -i

# clang-tidy on the C++ files changed against main (or LINT_BASE).
LINT_BASE ?= main
lint: deps-dev $(BUILD_DIR)/build.ninja
	git diff --name-only $(LINT_BASE) -- '*.cc' | xargs -r clang-tidy -p $(BUILD_DIR) --quiet

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)
