# The two commands of README.md:
#   make demo     install what is missing (and put `torpor` on PATH), then run the main job
#   make test     install what is missing, then run the whole suite
#   make install  link /usr/local/bin/torpor to this checkout's .venv/bin/torpor
#   make bench    run every benchmark in bench/ and rewrite docs/benchmarks.md's measured block
#                 (about 20 minutes; BENCH_ARGS=--quick for a check that they run)
# All are idempotent: a second run installs nothing.

PY := .venv/bin/python
export TORPOR_TOOLS ?= /opt/torpor

.PHONY: demo test install bench setup setup-test criu minio proto check-proto clean

demo: setup install
	$(PY) -m torpor.cli doctor
	$(PY) scripts/demo.py

test: setup-test
	scripts/run-tests.sh

install: setup
	scripts/setup.sh link

bench: setup-test
	$(PY) scripts/bench.py $(BENCH_ARGS)

setup:
	scripts/setup.sh base criu venv

setup-test:
	scripts/setup.sh base criu minio venv

criu:
	scripts/setup.sh criu

minio:
	scripts/setup.sh minio

proto: setup
	$(PY) scripts/gen_protos.py

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache
