# The two commands a new user types are `make test` and (with the gateway) `make serve`.
.PHONY: setup test serve docker

setup:
	scripts/setup.sh

test:
	scripts/test.sh

# The gateway with the embedded (onnxruntime) backend; extra flags: make serve ARGS="--port 9000".
serve: setup
	.venv/bin/f2f serve $(ARGS)

# The production GPU image (Triton + gateway); needs a Docker engine. See Dockerfile, docker-compose.yml.
docker:
	docker build -t f2f:latest .
