# The README's two commands: `make demo` and `make test`. Both set up everything first.
.PHONY: setup demo test unit lint bench clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	@scripts/test.sh

unit: setup
	@scripts/test.sh tests/unit

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/kvbench bench tiers

clean:
	rm -rf .venv results test-artifacts .pytest_cache .ruff_cache
