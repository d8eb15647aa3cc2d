# The two commands a new user types are `make test` and (with the gateway) `make serve`.
.PHONY: setup test serve docker

setup:
	scripts/setup.sh

test:
	scripts/test.sh

# The gateway on http://127.0.0.1:8080: embedded (onnxruntime) backend, the shipped default avatar.
# Extra flags: make serve ARGS="--port 9000".
serve:
	scripts/serve.sh $(ARGS)

# The production GPU image (Triton + gateway); needs a Docker engine. See Dockerfile, docker-compose.yml.
docker:
	docker build -t f2f:latest .
