# The two commands a new user types are `make test` and (with the gateway) `make serve`.
.PHONY: setup test

setup:
	scripts/setup.sh

test:
	scripts/test.sh
