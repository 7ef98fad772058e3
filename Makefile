# Thin wrappers around scripts/; each script works on its own too.
.PHONY: demo test bench fmt setup

setup:
	./scripts/setup.sh

demo:
	./scripts/demo.sh

test:
	./scripts/test.sh

bench:
	./scripts/bench.sh

fmt:
	./scripts/fmt.sh
